"""Bundle settings renamed to the package's one name per setting: the old ids still work for one
release, with a FutureWarning naming the new id; the new ids give the same result without warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from napari_uspmie.io.intensity import DEFAULT_PERCENTILES
from napari_uspmie.io.packaged_data import bundle_path
from napari_uspmie.io.readers import read_image

INFERENCE = bundle_path() / "configs" / "inference.json"
EVALUATE = bundle_path() / "configs" / "evaluate.json"


def parsed(config_workflow, config_file, name: str, **overrides):
    """``name`` resolved from the config as ``python -m monai.bundle run --ID VALUE ...`` would."""
    workflow = config_workflow(config_file, workflow_type="infer", initialize=False, **overrides)
    return workflow.parser.get_parsed_content(name)


@pytest.mark.parametrize(
    ("old", "new", "value", "config", "component", "attribute"),
    [
        ("roi_size", "tile_size", 512, INFERENCE, "inferer", "tile_size"),
        ("sw_batch_size", "batch_size", 2, INFERENCE, "inferer", "batch_size"),
        ("lassim_level", "level", 2, [INFERENCE, EVALUATE], "lassim_report", "level"),
        ("lassim_max_level", "max_level", 4, [INFERENCE, EVALUATE], "lassim_report", "max_level"),
    ],
)
def test_old_config_ids_still_set_the_value_and_warn(config_workflow, old, new, value, config, component, attribute):
    with pytest.warns(FutureWarning, match=rf"'{old}' is deprecated.*'--{new}'"):
        old_way = parsed(config_workflow, config, component, **{old: value})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        new_way = parsed(config_workflow, config, component, **{new: value})
        default = parsed(config_workflow, config, component)
    assert getattr(old_way, attribute) == getattr(new_way, attribute) == value
    assert getattr(default, attribute) != value  # the override, not the default, was taken


def test_default_percentiles_are_the_packages(config_workflow):
    """inference.json takes its intensity window from the package, so the two cannot drift apart."""
    prepare = parsed(config_workflow, INFERENCE, "preprocessing").transforms[1]
    assert prepare.percentiles == DEFAULT_PERCENTILES
    override = parsed(config_workflow, INFERENCE, "preprocessing", percentiles=[1, 99]).transforms[1]
    assert override.percentiles == (1.0, 99.0)


def test_roi_size_on_a_real_run_tiles_like_tile_size(tmp_path):
    """``monai.bundle.run`` (what the command line calls) with ``roi_size=32`` writes what ``tile_size=32``
    writes, and both agree with whole-image enhancement (large slices stream with the whole slice's
    instance-norm statistics), within one grey level."""
    from monai.bundle import run

    data = tmp_path / "in"
    data.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 80)) * 255).astype(np.uint8)).save(data / "noise.png")

    def enhanced(name: str, **settings) -> np.ndarray:
        out = tmp_path / name
        run(config_file=str(INFERENCE), dataset_dir=str(data), output_dir=str(out), **settings)
        return read_image(out / "noise_enhanced.png")[0]

    with pytest.warns(FutureWarning, match="'roi_size' is deprecated"):
        old_way = enhanced("old", roi_size=32)
    new_way = enhanced("new", tile_size=32)
    np.testing.assert_array_equal(old_way, new_way)
    assert np.abs(old_way.astype(int) - enhanced("whole").astype(int)).max() <= 1


TRAIN = bundle_path() / "configs" / "train.json"


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("False", False), ("on", True), ("0", False)])
def test_yes_no_settings_typed_on_the_command_line_are_bools(config_workflow, text, expected):
    """``--residual false`` arrives as the string "false", which Python would take as true."""
    kwargs = parsed(config_workflow, TRAIN, "generator_kwargs", residual=text)
    assert kwargs["residual"] is expected
    assert parsed(config_workflow, TRAIN, "network_def", residual=text).residual is expected
    inferer = parsed(config_workflow, INFERENCE, "inferer", bf16=text, amp=text)
    assert inferer.bf16 is expected and inferer.amp is expected


def test_a_yes_no_setting_that_is_neither_is_refused_by_name(config_workflow):
    from napari_uspmie.errors import SettingError

    with pytest.raises(RuntimeError) as failure:  # MONAI wraps what a config expression raises
        parsed(config_workflow, TRAIN, "generator_kwargs", residual="maybe")
    causes, error = [], failure.value
    while error is not None:
        causes.append(error)
        error = error.__cause__
    refusal = [e for e in causes if isinstance(e, SettingError)]
    assert refusal and "residual must be true or false, got 'maybe'" in str(refusal[0])
