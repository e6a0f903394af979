"""Model scope (refusal and override) and enhancement at the model's pixel size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_uspmie.errors import OutOfScopeError
from napari_uspmie.inference.enhancer import Enhancer, load_enhancer
from napari_uspmie.inference.geometry import resample_factors, resampled_enhancement
from napari_uspmie.inference.pipeline import slice_spacing
from napari_uspmie.inference.scope import ModelScope, check_scope, read_metadata, scope_problems
from napari_uspmie.io.packaged_data import bundle_path
from tests.io_factories import mni_slices

MR_1MM = ModelScope(modalities=("MR",), channels=1, pixel_spacing_mm=(1.0, 1.0), spacing_range_mm=(0.25, 6.0))


def test_shipped_bundle_states_its_scope():
    scope = ModelScope.from_metadata(read_metadata(bundle_path()))
    assert scope == MR_1MM
    assert scope.describe() == "MR, grey, 1 x 1 mm pixels"
    assert ModelScope.from_metadata({}) == ModelScope() and read_metadata(None) == {}


@pytest.mark.parametrize(
    ("channels", "modality", "spacing", "reason"),
    [
        (1, "CT", None, "modality CT (the model was trained on MR)"),
        (3, None, None, "a colour (RGB) image into a grey model"),
        (1, "MR", (0.1, 0.1), "pixel size 0.1 x 0.1 mm (outside the 0.25-6 mm"),
        (1, "mr ", (8.0, 1.0), "pixel size 8 x 1 mm"),
    ],
)
def test_out_of_scope_inputs_are_refused_by_name_unless_allowed(channels, modality, spacing, reason):
    with pytest.raises(OutOfScopeError) as caught:
        check_scope("scan.dcm", MR_1MM, channels=channels, modality=modality, spacing=spacing)
    message = str(caught.value)
    assert message.startswith("scan.dcm: outside this model's scope") and reason in message
    assert "--allow-out-of-scope" in message and "\n" not in message
    allowed = check_scope(
        "scan.dcm", MR_1MM, channels=channels, modality=modality, spacing=spacing, allow_out_of_scope=True
    )
    assert len(allowed) == 1 and reason in allowed[0]


def test_inputs_inside_or_of_unknown_scope_pass():
    assert scope_problems(MR_1MM, channels=1, modality="MR", spacing=(2.0, 2.0)) == []
    assert scope_problems(MR_1MM, channels=1) == []  # nothing known about the input
    assert scope_problems(ModelScope(), channels=3, modality="CT", spacing=(50.0, 50.0)) == []


def test_resample_factors_and_spacing_of_read_images():
    assert resample_factors((2.0, 1.0), (1.0, 1.0)) == (2.0, 1.0)
    assert resample_factors((1.1, 0.9), (1.0, 1.0)) is None  # within tolerance: as it is
    assert resample_factors(None, (1.0, 1.0)) is None and resample_factors((2.0, 2.0), None) is None
    meta = {"affine": np.eye(4), "spacing": (3.0, 0.8, 0.7)}
    assert slice_spacing(meta, 0) == (0.8, 0.7) and slice_spacing(meta, 1) == (3.0, 0.7)
    assert slice_spacing({"affine": None, "spacing": (1.0, 1.0)}) is None  # plain pictures


def test_the_network_runs_at_the_model_pixel_size_and_its_change_comes_back():
    x = torch.linspace(-0.5, 0.5, 2 * 60 * 80).reshape(2, 1, 60, 80)
    seen = []

    def network(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        return t + 0.25

    out = resampled_enhancement(x, (2.0, 0.5), network)  # 2 mm rows, 0.5 mm columns -> 1 mm
    assert seen == [(120, 40)] and out.shape == x.shape
    torch.testing.assert_close(out, x + 0.25)  # a uniform change survives the round trip exactly
    # detail finer than the model's pixels is kept: only the change is resampled
    detail = torch.zeros(1, 1, 64, 64)
    detail[..., ::2, :] = 0.5
    kept = resampled_enhancement(detail, (0.5, 0.5), lambda t: t)
    torch.testing.assert_close(kept, detail)


def test_enhancer_records_resampling_and_refuses_out_of_scope():
    enhancer = load_enhancer(device="cpu")
    image = mni_slices(1, 2)[0]
    record: dict = {}
    two_mm = enhancer.enhance(image, spacing=(2.0, 2.0), record=record)
    assert record == {"scope_problems": [], "resample_factors": (2.0, 2.0), "spacing": (2.0, 2.0)}
    as_is = enhancer.enhance(image)
    assert two_mm.shape == as_is.shape == image.shape and two_mm.dtype == image.dtype
    assert not np.array_equal(two_mm, as_is)  # the 2 mm slice was enhanced at 1 mm
    with pytest.raises(OutOfScopeError, match="slice.png: outside .* modality CT"):
        enhancer.enhance(image, modality="CT", source="slice.png")
    record = {}
    enhancer.enhance(np.stack([image] * 3, axis=-1), allow_out_of_scope=True, record=record)
    assert record["scope_problems"] == ["a colour (RGB) image into a grey model"]
    bare = Enhancer(enhancer.network, device="cpu")  # a bare network: scope unknown, nothing refused
    assert bare.enhance(image, modality="CT").shape == image.shape


def test_model_metadata_that_cannot_be_read_is_named(tmp_path):
    from napari_uspmie.errors import CheckpointError

    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="metadata.json: unreadable model metadata"):
        read_metadata(bundle)
    (bundle / "configs" / "metadata.json").write_text(json.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_metadata(bundle)
