"""MONAI Label's BundleInferTask on this package's bundle (random weights of the shipped architecture)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.io_factories import SHIPPED, ct_volume, random_bundle, write_dicom_series, write_oblique_nifti


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from monailabel.tasks.infer.bundle import BundleInferTask

    bundle = random_bundle(tmp_path_factory.mktemp("ml") / "lamegan_enhancement")
    task = BundleInferTask(str(bundle), {}, type="others")
    assert task.is_valid()
    return task


def test_network_and_keys(task):
    from napari_uspmie.models.networks import ResnetGenerator

    assert (task.input_key, task.output_label_key) == ("image", "pred")
    assert isinstance(task.network, ResnetGenerator)
    assert sum(p.numel() for p in task.network.parameters()) == sum(
        p.numel() for p in ResnetGenerator(**SHIPPED).parameters()
    )
    post = task.post_transforms()
    assert [type(t).__name__ for t in post] == ["RestoreFromNetworkd", "StructureGuardd", "Restored"]  # no saver


@pytest.mark.parametrize("infer_type", ["others", ""])  # "": MONAI Label's default (segmentation), as monaibundle
def test_nifti_through_monai_label(task, infer_type, tmp_path):
    if infer_type != "others":
        from monailabel.tasks.infer.bundle import BundleInferTask

        task = BundleInferTask(task.bundle_path, {})
    path = tmp_path / "brain.nii.gz"
    src = write_oblique_nifti(path)
    result_file, _ = task({"image": str(path), "device": "cpu", "result_extension": ".nii.gz"})
    out = nib.load(result_file)
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
    data = np.asanyarray(out.dataobj)
    ref = np.asanyarray(src.dataobj)
    assert ref.min() <= data.min() and data.max() <= ref.max() and not np.array_equal(data, ref)


def test_dicom_series_folder_through_monai_label(task, tmp_path):
    volume = ct_volume(6) + 1000  # MR-like non-negative values
    write_dicom_series(tmp_path / "ct", volume, modality="MR", intercept=0.0)
    result_file, _ = task({"image": str(tmp_path / "ct"), "device": "cpu", "result_extension": ".nii.gz"})
    out = nib.load(result_file)
    assert out.shape == volume.shape[::-1]  # MONAI layout (x, y, z)
    data = np.asanyarray(out.dataobj)
    assert volume.min() <= data.min() and data.max() <= volume.max()


def test_torchscript_only_bundle(tmp_path):
    """Without model.pt, MONAI Label loads models/model.ts (what ckpt_export writes)."""
    from monailabel.tasks.infer.bundle import BundleInferTask

    from napari_uspmie.models.networks import ResnetGenerator

    bundle = random_bundle(tmp_path / "b")
    net = ResnetGenerator(**SHIPPED)
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    torch.jit.script(net.eval()).save(str(bundle / "models" / "model.ts"))
    (bundle / "models" / "model.pt").unlink()
    task = BundleInferTask(str(bundle), {}, type="others")
    path = tmp_path / "brain.nii.gz"
    src = write_oblique_nifti(path)
    result_file, _ = task({"image": str(path), "device": "cpu", "result_extension": ".nii.gz"})
    assert nib.load(result_file).shape == src.shape


def test_monailabel_metadata_override_names_this_environment():
    import importlib.metadata
    import json

    from napari_uspmie.io.packaged_data import bundle_path

    override = json.loads((bundle_path() / "configs" / "metadata_monailabel.json").read_text())
    assert override["numpy_version"] == importlib.metadata.version("numpy")
    for name, version in override["required_packages_version"].items():
        assert importlib.metadata.version(name).split("+")[0] == version, name
