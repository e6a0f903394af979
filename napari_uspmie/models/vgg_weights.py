"""Find the ImageNet VGG19 weights for the Laplacian perceptual loss.

The paper's perceptual term uses torchvision's ``vgg19-dcbb9e9d.pth``. This package
never imports torchvision: the file is a plain state dict, loaded with
``torch.load(..., weights_only=True)`` into :class:`~napari_uspmie.models.networks.VGG19Features`.

Lookup order (the first that exists wins):

1. an explicit path (the bundle's ``vgg_weights`` setting);
2. the torch hub cache, ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``
   (where torchvision itself would have stored it; ``TORCH_HOME`` moves it);
3. a download into that cache with ``torch.hub.load_state_dict_from_url`` (hash checked).

With none of these (offline, no file), :class:`VGGWeightsUnavailableError` names the
ways out before any training starts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from napari_uspmie.errors import ExplainedError
from napari_uspmie.models.networks import VGG19Features

__all__ = [
    "VGG19_FILENAME",
    "VGG19_URL",
    "VGGWeightsUnavailableError",
    "hub_checkpoint_path",
    "load_vgg19_state_dict",
    "build_vgg19_features",
]

logger = logging.getLogger(__name__)

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILENAME}"
#: Environment variable that replaces :data:`VGG19_URL` (a mirror inside a closed network).
URL_ENV = "NAPARI_USPMIE_VGG19_URL"


class VGGWeightsUnavailableError(ValueError, ExplainedError):
    """The VGG19 weights are neither given, cached nor downloadable."""


def hub_checkpoint_path() -> Path:
    """Where torch hub (and torchvision) keep ``vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME


def _ways_out(reason: str, url: str) -> str:
    return (
        f"VGG19 weights for the 'vgg19' perceptual loss are not available: {reason}.\n"
        "Do one of:\n"
        f"  1. pass the file explicitly: --vgg_weights /path/to/{VGG19_FILENAME};\n"
        f"  2. copy {VGG19_FILENAME} into the torch hub cache: {hub_checkpoint_path()};\n"
        f"  3. run once with internet access so it downloads from {url}.\n"
        "Or train without pretrained weights: --perceptual_loss lassim (LaSSIM structure term) "
        "or --perceptual_loss none (plain CycleGAN)."
    )


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or not a tensor file
        raise VGGWeightsUnavailableError(f"cannot read VGG19 weights from {path}: {err}") from None
    if not isinstance(state, dict):
        raise VGGWeightsUnavailableError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return state


def load_vgg19_state_dict(
    path: str | os.PathLike | None = None, url: str | None = None, download: bool = True
) -> dict[str, torch.Tensor]:
    """Return torchvision's VGG19 state dict from a file, the hub cache or a download.

    Args:
        path: explicit weights file; when given, nothing else is tried.
        url: download address; default :data:`VGG19_URL`, or the ``NAPARI_USPMIE_VGG19_URL`` variable.
        download: allow the download step.

    Returns:
        The state dict (CPU tensors).

    Raises:
        VGGWeightsUnavailableError: the explicit file is missing/unreadable, or no cached file
            exists and the download is disabled or fails; the message lists the ways out.
    """
    url = url or os.environ.get(URL_ENV) or VGG19_URL
    if path is not None and str(path) != "":
        path = Path(path).expanduser()
        if not path.is_file():
            raise VGGWeightsUnavailableError(_ways_out(f"the file given as vgg_weights does not exist: {path}", url))
        return _load_file(path)
    cached = hub_checkpoint_path()
    if cached.is_file():
        logger.info("using VGG19 weights from the torch hub cache: %s", cached)
        return _load_file(cached)
    if not download:
        raise VGGWeightsUnavailableError(_ways_out(f"no file given and none cached at {cached}", url))
    logger.info("downloading VGG19 weights from %s to %s", url, cached.parent)
    try:
        # A hash prefix in the file name is checked when the name carries one (torchvision's does).
        return torch.hub.load_state_dict_from_url(
            url,
            model_dir=str(cached.parent),
            map_location="cpu",
            progress=False,
            check_hash=True,
            file_name=VGG19_FILENAME,
            weights_only=True,
        )
    except Exception as err:  # offline (URLError), proxy refusal, hash mismatch, disk full ...
        raise VGGWeightsUnavailableError(_ways_out(f"download failed ({err})", url)) from None


def build_vgg19_features(
    path: str | os.PathLike | None = None, url: str | None = None, download: bool = True
) -> VGG19Features:
    """A frozen :class:`VGG19Features` (conv1_1 .. pool2) loaded with ImageNet weights.

    Args:
        path, url, download: as for :func:`load_vgg19_state_dict`.

    Raises:
        VGGWeightsUnavailableError: as for :func:`load_vgg19_state_dict`, or the file is not
            torchvision's VGG19 (keys or shapes differ).
    """
    state = load_vgg19_state_dict(path, url=url, download=download)
    features = VGG19Features()
    try:
        features.load_torchvision_state_dict(state)
    except ValueError as err:
        raise VGGWeightsUnavailableError(f"{err} (file: {path or hub_checkpoint_path()})") from None
    return features
