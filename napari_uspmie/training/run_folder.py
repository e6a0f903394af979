"""Where a training run writes: a run folder of its own, never the shipped bundle.

Checkpoints, the exported generator, logs and samples go under ``run_dir`` (``runs/train`` in the
current directory unless ``--run_dir``, ``--ckpt_dir`` or ``--output_dir`` say otherwise). The
folder is printed when the run starts. The shipped bundle's ``models/`` holds the weights that
napari, the demo and the command line use by default: a run that would write there is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from napari_uspmie.errors import ExplainedError, log_error

__all__ = ["ShippedBundleWriteError", "announce_run_folder"]

logger = logging.getLogger(__name__)


class ShippedBundleWriteError(ValueError, ExplainedError):
    """A training run was pointed at the shipped bundle's weights folder."""


def announce_run_folder(
    ckpt_dir: str | os.PathLike, output_dir: str | os.PathLike, bundle_root: str | os.PathLike
) -> bool:
    """Refuse run folders inside the shipped bundle's ``models/``, then say where the run writes.

    Args:
        ckpt_dir: where checkpoints and the exported generator go.
        output_dir: where logs and samples go.
        bundle_root: the bundle whose configs are running.

    Returns:
        ``True`` (a value for the config's ``initialize`` list).

    Raises:
        ShippedBundleWriteError: ``ckpt_dir`` or ``output_dir`` is (inside) the bundle's ``models/``.
    """
    models = (Path(bundle_root) / "models").resolve()
    for name, folder in (("ckpt_dir", ckpt_dir), ("output_dir", output_dir)):
        resolved = Path(folder).resolve()
        if resolved == models or models in resolved.parents:
            error = ShippedBundleWriteError(
                f"--{name} {folder} is the shipped bundle's models folder; training never writes there. "
                "Give another folder (default: runs/train in the current directory)."
            )
            log_error(logger, error)
            raise error
    logger.info(
        "this run writes checkpoints and the trained generator to %s, logs and samples to %s", ckpt_dir, output_dir
    )
    return True
