"""The compact training override that produced the shipped model: consistent and runnable."""

from __future__ import annotations

import shutil

import torch
from monai.bundle import ConfigParser

from napari_uspmie.io.packaged_data import bundle_path
from napari_uspmie.models.networks import ResnetGenerator
from napari_uspmie.research.mri_dataset import build_mri_dataset
from napari_uspmie.training.data import check_training_sizes

COMPACT_CONFIGS = [str(bundle_path() / "configs" / f) for f in ("train.json", "train_compact.json")]


def _merged() -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(COMPACT_CONFIGS)
    return parser


def test_compact_override_matches_the_shipped_architecture(shipped_architecture):
    parser = _merged()
    kwargs = parser.get_parsed_content("generator_kwargs")
    assert dict(kwargs) == {"residual": False, **shipped_architecture}  # model_config.json leaves out defaults
    infer = ConfigParser()
    infer.read_config(str(bundle_path() / "configs" / "inference.json"))
    net = infer.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle_path() / "models" / "model.pt", map_location="cpu", weights_only=True))
    assert parser["perceptual_loss"] == "lassim" and parser["patch_size"] == 128
    assert check_training_sizes(parser["load_size"], parser["patch_size"], parser["level"], "lassim")
    # train.json itself keeps the paper's defaults.
    base = ConfigParser()
    base.read_config(COMPACT_CONFIGS[0])
    assert base["ngf"] == 64 and base["n_blocks"] == 9 and base.get_parsed_content("perceptual_loss") == "vgg19"


def test_compact_training_runs_on_the_mri_dataset(tmp_path, shipped_architecture):
    from monai.bundle import run

    data = tmp_path / "data"
    build_mri_dataset(data, seed=0, orientations=("axial",), volumes=(), fit_niqe=False)
    for domain in ("A", "B"):  # two images per domain: two iterations
        for extra in sorted((data / domain).glob("*.png"))[2:]:
            extra.unlink()
    shutil.rmtree(data / "heldout")
    run(
        config_file=COMPACT_CONFIGS,
        bundle_root=str(bundle_path()),
        dataset_dir=str(data),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "runs"),
        n_epochs=1,
        n_epochs_decay=0,
        device="$torch.device('cpu')",
    )
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    first_conv = (shipped_architecture["ngf"], shipped_architecture["in_channels"], 7, 7)
    assert state["model.1.weight"].shape == first_conv
    ResnetGenerator(**shipped_architecture).load_state_dict(state)  # the shipped architecture, every layer
