"""Compiled generators cached across runs: compiled speed on the default CPU path, without a compile per run.

``torch.compile`` specialises to each input shape and compiles anew in every process (seconds to
tens of seconds per shape on a CPU), which a one-off enhancement never earns back. AOTInductor
compiles a generator once into a shared library whose batch, height and width stay dynamic
(sides in multiples of 4, as the inferer pads them); the library is stored in a per-user cache
under a key covering everything it depends on (the weights and architecture, the torch and Python
versions, the machine and its CPU flags) and later runs load it in a fraction of a second.

The first run that lacks it starts the build in a separate process at low priority (minutes on a
small CPU) and enhances eagerly meanwhile. The build writes to a temporary name and links it into
place, so no reader sees a partial library; a lock file keeps two runs from building one key, and
a failed build leaves a ``.failed`` note (with the error) so that later runs do not retry it.

Conventions: float32 on the CPU only (CUDA runs cuDNN's own algorithms; bfloat16 is opt-in); the
library runs :func:`~napari_uspmie.inference.compilation.compile_layers`' module and agrees with the
eager network to about 1e-5. Shapes outside the compiled range run eagerly.

Environment: ``NAPARI_USPMIE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/napari-uspmie``, else
``~/.cache/napari-uspmie``); ``NAPARI_USPMIE_COMPILED_CACHE=off`` neither loads nor builds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_uspmie import __version__
from napari_uspmie.inference.channels import network_channels
from napari_uspmie.inference.checkpoint import load_generator
from napari_uspmie.inference.compilation import compile_layers, eager_layers
from napari_uspmie.inference.inferer import mark_compiled
from napari_uspmie.inference.precision import cpu_flags
from napari_uspmie.io.atomic import staged_output

__all__ = [
    "MAX_BATCH",
    "MAX_SIDE",
    "CompiledGenerator",
    "cache_dir",
    "cache_enabled",
    "artifact_key",
    "artifact_path",
    "save_build_source",
    "build_artifact",
    "start_build",
    "cached_runner",
    "main",
]

logger = logging.getLogger(__name__)

#: the compiled range: batch 1..MAX_BATCH, sides multiples of 4 from MIN_SIDE to MAX_SIDE pixels
MAX_BATCH = 64
MIN_SIDE = 16
MAX_SIDE = 4096
#: a lock older than this belongs to a build that died; the next run may build again
STALE_LOCK_S = 2 * 3600
#: format of the cache entries; raise it when what a build writes changes
CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Folder of the compiled generators (see the module docstring for the environment)."""
    explicit = os.environ.get("NAPARI_USPMIE_CACHE_DIR")
    if explicit:
        return Path(explicit) / "compiled"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-uspmie" / "compiled"


def cache_enabled() -> bool:
    """Whether the cache is on (``NAPARI_USPMIE_COMPILED_CACHE`` is not ``off``, ``0`` or ``false``)."""
    return os.environ.get("NAPARI_USPMIE_COMPILED_CACHE", "on").strip().lower() not in ("off", "0", "false", "no")


def artifact_key(network: nn.Module, architecture: dict[str, Any]) -> str:
    """The cache key of ``network``: a hash of its weights, architecture and the machine it runs on.

    Args:
        network: the eager generator (its state dict is hashed).
        architecture: its constructor arguments (as recorded by the loader).
    """
    digest = hashlib.sha256()
    context = {
        "format": CACHE_FORMAT,
        "package": __version__,
        "class": type(network).__qualname__,
        "architecture": {k: architecture[k] for k in sorted(architecture)},
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu": " ".join(sorted(cpu_flags())) or platform.processor(),
    }
    digest.update(json.dumps(context, sort_keys=True, default=str).encode())
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def artifact_path(key: str) -> Path:
    """Where the compiled library of ``key`` lives (it may not exist yet)."""
    return cache_dir() / f"{key}.pt2"


def save_build_source(network: nn.Module, architecture: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``network``'s weights and architecture where :func:`build_artifact` reads them."""
    with staged_output(path, overwrite=True) as tmp:
        torch.save({"generator_ab": network.state_dict(), "network_def_kwargs": dict(architecture)}, tmp)


def build_artifact(weights: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Compile the generator in ``weights`` (any layout the package loads) into the library ``out``.

    Raises:
        CheckpointError: the weights do not load; RuntimeError and friends from the compiler.
        ImageWriteError: ``out`` appeared meanwhile (another build won).
    """
    network = compile_layers(load_generator(weights)[0].eval(), fast_layers=True)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    rows = torch.export.Dim("rows", min=MIN_SIDE // 4, max=MAX_SIDE // 4)
    cols = torch.export.Dim("cols", min=MIN_SIDE // 4, max=MAX_SIDE // 4)
    example = torch.zeros(2, network_channels(network)[0], 64, 64)
    with torch.no_grad():
        program = torch.export.export(network, (example,), dynamic_shapes=({0: batch, 2: 4 * rows, 3: 4 * cols},))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_output(out) as tmp:
        # freezing lets Inductor pre-pack the convolution weights, as compile_network does
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp), inductor_configs={"freezing": True})
    return out


class CompiledGenerator(nn.Module):
    """A cached compiled library in front of its eager generator.

    Calls inside the compiled range (float32 CPU tensors, batch and sides as in the module
    docstring) run the library; anything else, or a library that fails, runs ``network``.
    """

    def __init__(self, network: nn.Module, library: Any, path: Path) -> None:
        super().__init__()
        self.network = network
        self.library = library
        self.path = path
        self.channels = network_channels(network)[0]

    @property
    def eager_network(self) -> nn.Module:
        """The eager module behind the library (what :mod:`napari_uspmie.inference.layer_stream` streams)."""
        return self.network

    def fits(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is inside the compiled range."""
        n, c, h, w = x.shape
        return (
            self.library is not None
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and c == self.channels
            and 1 <= n <= MAX_BATCH
            and all(MIN_SIDE <= s <= MAX_SIDE and s % 4 == 0 for s in (h, w))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and self.fits(x):
            try:
                return self.library(x.contiguous())
            except Exception as e:  # noqa: BLE001 - any failure of the library falls back to eager
                logger.warning("compiled generator %s failed (%s); running eagerly from now on", self.path, e)
                self.library = None
        return self.network(x)


def _lock_is_stale(lock: Path) -> bool:
    try:
        return time.time() - lock.stat().st_mtime > STALE_LOCK_S
    except OSError:
        return False


def start_build(network: nn.Module, architecture: dict[str, Any], key: str) -> subprocess.Popen | None:
    """Start building ``key``'s library in a separate low-priority process, unless one is under way.

    Returns:
        The build process, or ``None`` when another run holds the lock or the build failed before.
    """
    folder = cache_dir()
    library = artifact_path(key)
    lock, failed = library.with_suffix(".lock"), library.with_suffix(".failed")
    if failed.exists():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    if _lock_is_stale(lock):
        lock.unlink(missing_ok=True)
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(descriptor, "w") as f:
        f.write(f"{os.getpid()} {time.time():.0f}\n")
    source = library.with_suffix(".weights.pt")
    save_build_source(network, architecture, source)
    command = [sys.executable, "-m", "napari_uspmie.inference.compiled_cache", str(source), str(library)]
    with open(library.with_suffix(".log"), "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    logger.info("building a compiled generator in the background (pid %d): %s", process.pid, library)
    return process


def cached_runner(
    network: nn.Module, architecture: dict[str, Any], device: torch.device, bf16: bool = False, build: bool = True
) -> nn.Module:
    """What the default CPU path runs: the cached library of ``network`` when there is one, else
    ``network`` as the CPU runs it eagerly (:func:`napari_uspmie.inference.compilation.eager_layers`).

    Args:
        network: the eager generator, in evaluation mode.
        architecture: its constructor arguments; without them nothing is cached.
        device: where it runs; only the CPU uses the cache.
        bf16: bfloat16 autocast requested (the library is float32: not used).
        build: start a background build when the library is missing.
    """
    eager = eager_layers(network, bf16) if device.type == "cpu" else network
    usable = (
        cache_enabled()
        and device.type == "cpu"
        and not bf16
        and bool(architecture)
        and not isinstance(network, torch.jit.ScriptModule)
    )
    if not usable:
        return eager
    key = artifact_key(network, architecture)
    library = artifact_path(key)
    if library.is_file():
        try:
            loaded = torch._inductor.aoti_load_package(str(library))
        except Exception as e:  # noqa: BLE001 - a library that does not load is only a missed speed-up
            logger.warning("compiled generator %s does not load (%s); running eagerly", library, e)
            return eager
        return mark_compiled(CompiledGenerator(eager, loaded, library))
    if build:
        start_build(network, architecture, key)
    return eager


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_uspmie.inference.compiled_cache WEIGHTS LIBRARY``: the background build."""
    parser = argparse.ArgumentParser(prog="compiled_cache", description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="generator weights (as written by start_build)")
    parser.add_argument("library", help="the .pt2 library to write")
    args = parser.parse_args(argv)
    library = Path(args.library)
    if hasattr(os, "nice"):
        os.nice(10)  # the user's own work comes first
    try:
        build_artifact(args.weights, library)
    except Exception as e:  # noqa: BLE001 - recorded so that later runs do not retry a build that fails
        library.with_suffix(".failed").write_text(f"{type(e).__name__}: {e}\n")
        print(f"compiled_cache: building {library} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        Path(args.weights).unlink(missing_ok=True)
        library.with_suffix(".lock").unlink(missing_ok=True)
    print(f"compiled_cache: wrote {library}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
