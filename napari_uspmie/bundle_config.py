"""Helpers that bundle configs call while MONAI parses them."""

from __future__ import annotations

import inspect
from pathlib import Path

__all__ = ["running_bundle_root"]


def running_bundle_root() -> str:
    """Absolute folder of the bundle whose config is being run.

    MONAI's ``ConfigWorkflow`` (behind ``python -m monai.bundle run``) knows the folder of
    the config files it was given but exposes no config id for it. This walks the call
    stack to that workflow and returns the folder above ``configs/``, so that
    ``"bundle_root": "$napari_uspmie.bundle_config.running_bundle_root()"`` points at the
    bundle from any working directory. ``--bundle_root DIR`` on the command line still
    overrides it. Outside a workflow (a bare ``ConfigParser``) it returns the bundle that
    ships with the package.
    """
    try:
        from monai.bundle import ConfigWorkflow
    except ImportError:  # pragma: no cover - monai is a dependency
        ConfigWorkflow = None  # noqa: N806
    frame = inspect.currentframe()
    try:
        while frame is not None and ConfigWorkflow is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigWorkflow) and getattr(owner, "config_root_path", None) is not None:
                root = Path(owner.config_root_path).resolve()
                return str(root.parent if root.name == "configs" else root)
            frame = frame.f_back
    finally:
        del frame  # break the reference cycle frames make
    from napari_uspmie.bundle import bundle_path

    return str(bundle_path())
