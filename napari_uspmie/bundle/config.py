"""Helpers that bundle configs call while MONAI parses them."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

__all__ = ["running_bundle_root", "renamed_setting", "flag"]


def running_bundle_root() -> str:
    """Absolute folder of the bundle whose config is being run.

    MONAI's ``ConfigWorkflow`` (behind ``python -m monai.bundle run``) knows the folder of
    the config files it was given but exposes no config id for it. This walks the call
    stack to that workflow and returns the folder above ``configs/``, so that
    ``"bundle_root": "$napari_uspmie.bundle.config.running_bundle_root()"`` points at the
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
    from napari_uspmie.io.packaged_data import bundle_path

    return str(bundle_path())


def renamed_setting(new_id: str, new_value: Any, old_id: str, old_value: Any) -> Any:
    """The value of a bundle setting whose config id was renamed, honouring the old id for one release.

    Configs keep the old id with the value ``None``; ``--OLD_ID VALUE`` on the command line then
    still takes effect, with a deprecation warning that names the new id.

    Args:
        new_id: the setting's id now (e.g. ``"tile_size"``).
        new_value: its resolved value.
        old_id: the id it replaced (e.g. ``"roi_size"``).
        old_value: the old id's resolved value; ``None`` when the user did not set it.

    Returns:
        ``old_value`` when it was given, else ``new_value``.
    """
    if old_value is None:
        return new_value
    warnings.warn(
        f"bundle setting '{old_id}' is deprecated and will be removed in the next release; use '--{new_id}' instead.",
        FutureWarning,
        stacklevel=2,
    )
    return old_value


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def flag(name: str, value: Any) -> bool:
    """A yes/no bundle setting as a bool, whether the config or the command line gave it.

    ``python -m monai.bundle run --amp false`` passes the *string* ``"false"``, which Python takes
    as true; the configs read their yes/no settings through this.

    Args:
        name: the setting's id, for the message.
        value: a bool, or a string or number meaning one (true/false, yes/no, on/off, 1/0).

    Raises:
        SettingError: any other value.
    """
    from napari_uspmie.errors import SettingError

    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingError(f"{name} must be true or false, got {value!r}; pass e.g. --{name} true.")
