"""The MONAI model zoo's pre-merge checks of a bundle, run against ours in "min" and "full" (CPU) mode.

The zoo's ``ci/verify_bundle.py`` checks, in "min" mode, the necessary files, the version in the
changelog and the metadata against the schema; "full" mode adds the inference workflow's required
properties, ``verify_net_in_out`` and ``ckpt_export`` at their defaults. These tests make the same
calls through MONAI's public API (the schema is the local copy: nothing is downloaded), plus the
ONNX export with dynamic shapes the model card documents, and the zoo's habit of instantiating
workflows before pointing them at data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, create_workflow, onnx_export, verify_metadata, verify_net_in_out
from monai.bundle.properties import InferProperties, MetaProperties

from napari_uspmie.inference.checkpoint import load_generator
from tests.unpaired_data import REPO

BUNDLE = REPO / "monai_bundle"
SCHEMA = REPO / "tests" / "data" / "meta_schema_20240725.json"
ZOO_FILES = [
    "configs/metadata.json", "configs/inference.json", "models/model.pt", "LICENSE", "docs/README.md",
    "docs/data_license.txt",
]  # fmt: skip
MODEL_CARD_HEADINGS = [
    "# Model Overview", "## Data", "## Training configuration", "### Input", "### Output", "## Performance",
    "## MONAI Bundle Commands", "# References", "# License",
]  # fmt: skip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A copy of the bundle: exports write beside the weights, as the zoo's script does."""
    copy = tmp_path_factory.mktemp("zoo") / "napari_uspmie_lamegan"
    shutil.copytree(BUNDLE, copy)
    return copy


def _config(bundle: Path, name: str) -> str:
    return str(bundle / "configs" / name)


def test_min_mode_files_version_and_metadata(bundle):
    for name in ZOO_FILES:
        assert (bundle / name).is_file(), name
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["version"] in metadata["changelog"]
    verify_metadata(meta_file=_config(bundle, "metadata.json"), filepath=str(SCHEMA),
                    hash_val=hashlib.md5(SCHEMA.read_bytes()).hexdigest())  # fmt: skip
    card = (bundle / "docs" / "README.md").read_text().splitlines()
    positions = [card.index(h) for h in MODEL_CARD_HEADINGS]  # ValueError: a heading is missing
    assert positions == sorted(positions)


def test_full_mode_inference_workflow_has_the_required_properties(bundle):
    workflow = create_workflow(
        workflow_type="inference", config_file=_config(bundle, "inference.json"),
        meta_file=_config(bundle, "metadata.json"), logging_file=_config(bundle, "logging.conf"),
        bundle_root=str(bundle),
    )  # fmt: skip
    workflow.properties = {**MetaProperties, **InferProperties}
    assert workflow.check_properties() == []


def test_full_mode_shapes_and_exports_at_their_defaults(bundle, tmp_path):
    common = {"meta_file": _config(bundle, "metadata.json"), "config_file": _config(bundle, "inference.json"),
              "bundle_root": str(bundle)}  # fmt: skip
    verify_net_in_out(net_id="network_def", **common)  # default n: the smallest input the metadata admits
    ckpt_export(net_id="network_def", filepath=str(bundle / "models" / "verify_model.ts"),
                ckpt_file=str(bundle / "models" / "model.pt"), **common)  # fmt: skip
    scripted = torch.jit.load(str(bundle / "models" / "verify_model.ts"))
    weights = str(bundle / "models" / "model.pt")
    onnx_export(net_id="network_def", filepath=str(tmp_path / "fixed.onnx"), ckpt_file=weights, **common)
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "enhanced")}
    onnx_export(
        net_id="network_def", filepath=str(tmp_path / "dynamic.onnx"), ckpt_file=weights,
        converter_kwargs={"input_names": ["image"], "output_names": ["enhanced"], "dynamic_axes": axes}, **common,
    )  # fmt: skip
    import onnxruntime

    net = load_generator(bundle / "models" / "model.pt")[0].eval()
    session = onnxruntime.InferenceSession(str(tmp_path / "dynamic.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((1, 1, 64, 96), (2, 1, 120, 80)):  # sizes the export never saw
        x = torch.rand(shape) * 2 - 1
        with torch.no_grad():
            expected = net(x)
            torch.testing.assert_close(scripted(x), expected, atol=1e-5, rtol=1e-4)
        got = session.run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("configs", [["inference.json"], ["inference.json", "evaluate.json"], ["train.json"]])
def test_workflows_initialise_without_data(bundle, configs):
    workflow = create_workflow(
        workflow_type="train" if configs == ["train.json"] else "inference",
        config_file=[_config(bundle, c) for c in configs], meta_file=_config(bundle, "metadata.json"),
        bundle_root=str(bundle), run_dir=str(bundle.parent / "run"),
    )  # fmt: skip
    assert workflow.parser.get_parsed_content("dataset_dir") is None  # initialised, no exit


def test_inference_run_without_data_is_one_line(bundle, tmp_path):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config(bundle, "inference.json"),
           "--bundle_root", str(bundle), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output[-2000:]
    assert "error: no input: pass --dataset_dir" in proc.stderr


def test_monailabel_metadata_override_fits_monailabels_environment(bundle):
    """MONAI Label pins numpy < 2 and pydicom < 3; the override's versions are those of its environment."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    override = json.loads((bundle / "configs" / "metadata_monailabel.json").read_text())
    script = (REPO / "scripts" / "monailabel_check.sh").read_text()
    for name, spec in (("numpy", "<2"), ("pydicom", "<3"), ("monailabel", "==0.8.5")):
        assert f'"{name}{spec}"' in script, name  # what the MONAI Label environment installs
        version = override.get(f"{name}_version") or override["required_packages_version"][name]
        assert Version(version) in SpecifierSet(spec), (name, version)
    metadata = [_config(bundle, "metadata.json"), _config(bundle, "metadata_monailabel.json")]
    verify_metadata(meta_file=metadata, filepath=str(SCHEMA), hash_val=hashlib.md5(SCHEMA.read_bytes()).hexdigest())
    main = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert "monailabel" in main["supported_apps"]
    assert "napari-uspmie" not in main["required_packages_version"]  # not on a package index: pip cannot get it
