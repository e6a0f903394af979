"""The one generator loader: weights files of every layout, and the architecture that fits them.

Weights: a generator state dict, a dict holding it under ``"model"`` (MONAI Label) or
``"generator_ab"`` (a training checkpoint), DistributedDataParallel's ``module.`` prefixes, or a
TorchScript file. The architecture comes from the checkpoint's ``"network_def_kwargs"``, else from
``model_config.json`` beside the weights, else from the shapes of the weights themselves, so
checkpoints of any width, depth or upsampling load without editing configs.

A file is read once per process while it is unchanged (its path, size and modification time are
the key), so a bundle run that checks the weights before it starts and then builds the network
reads them once.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_uspmie.errors import CheckpointError
from napari_uspmie.models.networks import ResnetGenerator

__all__ = [
    "MODEL_CONFIG",
    "read_architecture",
    "shipped_architecture",
    "generator_from_config",
    "infer_architecture",
    "generator_state",
    "load_generator",
]

#: file beside the weights holding the generator's ``ResnetGenerator`` arguments
MODEL_CONFIG = "model_config.json"
_CKPT_KEYS = ("generator_ab", "model", "state_dict", "network", "net")


def read_architecture(path: str | os.PathLike) -> dict[str, Any]:
    """The ``ResnetGenerator`` arguments stored in a ``model_config.json``.

    Raises:
        CheckpointError: missing or unreadable file, or JSON that is not an object.
    """
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable model config ({e}).") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the model config must be a JSON object of ResnetGenerator arguments.")
    return config


def shipped_architecture() -> dict[str, Any]:
    """Arguments of the shipped generator: the bundle's ``models/model_config.json``."""
    from napari_uspmie.io.packaged_data import bundle_path

    return read_architecture(bundle_path() / "models" / MODEL_CONFIG)


def generator_from_config(path: str | os.PathLike) -> nn.Module:
    """A freshly initialised ``ResnetGenerator`` built from a ``model_config.json``.

    Raises:
        CheckpointError: unreadable config, or arguments the generator does not take.
    """
    config = read_architecture(path)
    try:
        return ResnetGenerator(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid ResnetGenerator arguments ({e}).") from e


def infer_architecture(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``ResnetGenerator`` arguments that fit a state dict.

    ``norm`` is ``"batch"`` when the weights carry running statistics, else ``"instance"``;
    ``upsample: "resize"`` is added when the upsampling layers are resize-convolutions (the
    generator's default, transposed convolutions, is left out as configs leave it out);
    ``residual: True`` when the weights carry the residual generator's ``residual_scale``.

    Raises:
        CheckpointError: the weights do not look like a ResNet generator.
    """
    try:
        stem = state["model.1.weight"]
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
        convs = [k for k in state if k.endswith(".weight") and state[k].ndim == 4 and ".conv_block." not in k]
        last = max(convs, key=lambda k: int(k.split(".")[1]))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"weights do not look like a ResNet generator (missing {e}).") from e
    architecture: dict[str, Any] = {
        "in_channels": int(stem.shape[1]),
        "out_channels": int(state[last].shape[0]),
        "ngf": int(stem.shape[0]),
        "n_blocks": len(blocks),
        "norm": "batch" if any(k.endswith("running_mean") for k in state) else "instance",
    }
    if any(re.match(r"model\.\d+\.conv\.weight$", k) for k in state):
        architecture["upsample"] = "resize"
    if "residual_scale" in state:
        architecture["residual"] = True
    return architecture


def generator_state(obj: Any, path: str | os.PathLike = "checkpoint") -> tuple[dict[str, torch.Tensor], dict | None]:
    """The generator's state dict inside a loaded checkpoint, and its ``network_def_kwargs`` if stored.

    Raises:
        CheckpointError: ``obj`` is not a dict or holds no weights.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict or a checkpoint dict, got {type(obj).__name__}.")
    state = obj
    for key in _CKPT_KEYS:
        if isinstance(obj.get(key), dict):
            state = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: no generator weights found (keys: {sorted(map(str, obj))[:8]}).")
    return state, obj.get("network_def_kwargs")


@functools.lru_cache(maxsize=2)
def _read_weights(path: Path, size: int, mtime_ns: int) -> Any:
    """The loaded file (cached while it is unchanged); a TorchScript module for TorchScript files."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as load_error:  # TorchScript archives refuse torch.load; try them as such
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception:
            # torch's own text advises loading untrusted code (weights_only=False): never shown
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint of plain tensors or a TorchScript file "
                f"({type(load_error).__name__}); objects other than tensors are never loaded. Export the "
                "generator's state dict (torch.save(net.state_dict(), path)) and load that."
            ) from None


def load_generator(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Build the generator stored in ``path`` and load its weights (eval mode, on CPU).

    Args:
        path: a state dict / checkpoint ``.pt`` or a TorchScript file.

    Returns:
        ``(network, architecture)``; ``architecture`` is empty for TorchScript.

    Raises:
        CheckpointError: missing or unreadable file, non-finite weights, or weights that do not
            fit the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file.")
    info = path.stat()
    obj = _read_weights(path.resolve(), info.st_size, info.st_mtime_ns)
    if isinstance(obj, torch.jit.ScriptModule):
        return obj.eval(), {}
    state, architecture = generator_state(obj, path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} weight tensors hold NaN/Inf values ({bad[0]}, ...); retrain or re-export."
        )
    if architecture is None and (path.parent / MODEL_CONFIG).is_file():
        architecture = read_architecture(path.parent / MODEL_CONFIG)
    inferred = infer_architecture(state)
    architecture = dict(architecture or inferred)
    try:
        net = ResnetGenerator(**architecture)
        net.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        detail = (lines[1] if len(lines) > 1 else lines[0])[:200]  # torch's first line is a header
        hint = (
            f"the weights look like {inferred}; fix {MODEL_CONFIG} or the checkpoint's network_def_kwargs"
            if inferred != architecture
            else "the checkpoint is damaged or holds another network; retrain or re-export it"
        )
        raise CheckpointError(f"{path}: weights do not fit ResnetGenerator({architecture}) ({detail}); {hint}.") from e
    return net.eval(), architecture
