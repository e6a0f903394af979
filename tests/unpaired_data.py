"""Small real unpaired datasets, a VGG19-format weights file and the offline environment of the
training tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from scipy import ndimage
from skimage import data

from napari_uspmie.models.networks import ResnetGenerator, VGG19Features

ANATOMICAL = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
REPO = Path(__file__).resolve().parents[1]
#: the repository's bundle configs (the README's commands run them from ``REPO``)
CONFIGS = REPO / "monai_bundle" / "configs"


def camera_crops(n: int = 3, size: int = 96) -> list[np.ndarray]:
    """``n`` different ``size``-square crops of scikit-image's camera photograph (uint8)."""
    cam = data.camera()
    corners = [(40, 180), (250, 60), (300, 300), (120, 330), (20, 20)]
    return [cam[y : y + size, x : x + size].copy() for y, x in corners[:n]]


def write_unpaired_dataset(root: str | os.PathLike, n_png: int = 3, nifti_slices: int = 2) -> Path:
    """``root/A``: blurred camera crops + a NIfTI T1 volume; ``root/B``: sharp crops + a CT DICOM file.

    Returns:
        ``root``; domain A has ``n_png + nifti_slices`` items, B has ``n_png + 1``.
    """
    root = Path(root)
    (root / "A").mkdir(parents=True, exist_ok=True)
    (root / "B").mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(camera_crops(n_png)):
        Image.fromarray(crop).save(root / "B" / f"sharp{i}.png")
        blurred = ndimage.gaussian_filter(crop.astype(np.float64), 2.0)
        Image.fromarray(np.clip(blurred, 0, 255).astype(np.uint8)).save(root / "A" / f"blurred{i}.png")
    anat = nibabel.load(str(ANATOMICAL))
    volume = np.asanyarray(anat.dataobj)[:, :, 12 : 12 + nifti_slices]
    nibabel.save(nibabel.Nifti1Image(volume, anat.affine), str(root / "A" / "t1.nii.gz"))
    shutil.copy(CT_SMALL, root / "B" / "ct.dcm")
    return root


def write_fake_vgg19(path: str | os.PathLike) -> Path:
    """A state dict with torchvision's VGG19 key names (random weights: the real file cannot be
    downloaded here); includes a later layer and a classifier key, as the real file does."""
    torch.manual_seed(0)
    state = dict(VGG19Features().state_dict())
    state["features.10.weight"] = torch.randn(256, 128, 3, 3) * 0.01
    state["classifier.0.bias"] = torch.zeros(16)
    path = Path(path)
    torch.save(state, path)
    return path


#: train.json overrides of the tiny CPU configuration (grayscale, ngf 8, 2 blocks, 64x64)
TINY_SETTINGS = {
    "in_channels": 1, "ngf": 8, "ndf": 8, "n_blocks": 2, "load_size": [64, 64], "patch_size": 64, "num_workers": 0,
    "val_interval": 1, "num_val_samples": 2, "log_interval": 1, "pool_size": 3,
}  # fmt: skip
#: the generator those settings build (``ResnetGenerator`` keyword arguments, as checkpoints store them)
TINY_GENERATOR = {"in_channels": 1, "out_channels": 1, "ngf": 8, "n_blocks": 2, "norm": "instance"}


def tiny_overrides() -> list[str]:
    """``TINY_SETTINGS`` as command-line overrides (``--ngf 8 --load_size [64,64] ...``)."""
    return [
        arg for key, value in TINY_SETTINGS.items() for arg in (f"--{key}", json.dumps(value, separators=(",", ":")))
    ]


def offline_env(tmp_path: str | os.PathLike) -> dict[str, str]:
    """Environment of a training command: one thread per process, an empty torch hub cache under
    ``tmp_path`` and a VGG19 download address that can never answer."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",  # two shared cores: one thread per process is fastest and steady
        TORCH_HOME=str(Path(tmp_path) / "torch_home"),
        # A closed local port: nothing can ever be downloaded by these tests.
        NAPARI_USPMIE_VGG19_URL="http://127.0.0.1:9/vgg19-dcbb9e9d.pth",
    )
    return env


def run_train_bundle(config: str, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` of ``config`` with the tiny settings and ``args``, from ``cwd``."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, *tiny_overrides(), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def tensorboard_tags(folder: Path) -> set[str]:
    """Scalar tags of every TensorBoard event file in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def save_tiny_generator(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny generator saved as ``model.pt`` with its ``model_config.json``."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ResnetGenerator(**TINY_GENERATOR).state_dict(), folder / "model.pt")
    (folder / "model_config.json").write_text(json.dumps(TINY_GENERATOR))
    return folder / "model.pt"
