"""What a model was trained on, and whether an input lies inside it.

A bundle states its model's scope in ``configs/metadata.json``, in the input description of
``network_data_format`` (MONAI's place for it): ``modality`` (DICOM modality codes, ``"any"``
for no restriction), ``num_channels`` (1 grey, 3 RGB), and this package's ``pixel_spacing_mm``
(the in-plane pixel size the network learned, ``[row, column]`` in mm) and
``pixel_spacing_range_mm`` (the pixel sizes it may be given once resampled). A model without
these records (a bare checkpoint) has an unknown scope: nothing is refused, nothing resampled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_uspmie.errors import CheckpointError, OutOfScopeError

__all__ = ["ModelScope", "OVERRIDE_HINT", "read_metadata", "scope_problems", "check_scope"]

#: how every adapter names the override in refusals (the CLI flag; napari shows a checkbox of this name)
OVERRIDE_HINT = (
    "pass --allow-out-of-scope (bundle: --allow_out_of_scope true; napari: tick 'allow out of scope') "
    "to enhance it anyway"
)


@dataclass(frozen=True)
class ModelScope:
    """A model's training scope (see the module docstring).

    Attributes:
        modalities: DICOM modality codes the model was trained on; empty: any.
        channels: image channels it was trained on (1 grey, 3 RGB); ``None``: any.
        pixel_spacing_mm: in-plane pixel size ``(row, column)`` it learned; ``None``: unknown.
        spacing_range_mm: smallest and largest input pixel size it may be given.
    """

    modalities: tuple[str, ...] = ()
    channels: int | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_range_mm: tuple[float, float] | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> ModelScope:
        """Read the scope from a bundle's parsed ``metadata.json``."""
        image = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
        modality = image.get("modality", "any")
        modalities = () if modality in ("any", "", None) else tuple(str(m).upper() for m in _as_list(modality))
        spacing = image.get("pixel_spacing_mm")
        spacing_range = image.get("pixel_spacing_range_mm")
        return cls(
            modalities=modalities,
            channels=int(image["num_channels"]) if "num_channels" in image else None,
            pixel_spacing_mm=(float(spacing[0]), float(spacing[-1])) if spacing else None,
            spacing_range_mm=(float(spacing_range[0]), float(spacing_range[1])) if spacing_range else None,
        )

    def describe(self) -> str:
        """One line for the user, e.g. ``MR, grey, 1.0 mm pixels``."""
        parts = ["/".join(self.modalities) or "any modality"]
        parts.append({None: "any channels", 1: "grey", 3: "RGB"}.get(self.channels, f"{self.channels} channels"))
        if self.pixel_spacing_mm:
            parts.append(f"{self.pixel_spacing_mm[0]:g} x {self.pixel_spacing_mm[1]:g} mm pixels")
        return ", ".join(parts)


def read_metadata(bundle_dir: str | Path | None) -> dict[str, Any]:
    """A bundle's parsed ``configs/metadata.json``; ``{}`` without a bundle or file.

    Raises:
        CheckpointError: the file exists but is not a readable JSON object.
    """
    path = Path(bundle_dir) / "configs" / "metadata.json" if bundle_dir else None
    if path is None or not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable model metadata ({e}).") from e
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: model metadata is not a JSON object.")
    return metadata


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def scope_problems(
    scope: ModelScope, *, channels: int, modality: str | None = None, spacing: Sequence[float] | None = None
) -> list[str]:
    """Reasons why an input is outside ``scope`` (empty when it is inside or nothing is known).

    Args:
        scope: the model's scope.
        channels: the input's colour channels (1 grey, 3 RGB; alpha not counted).
        modality: its DICOM modality code (header or the user's declaration); ``None``: unknown.
        spacing: its in-plane pixel size in mm; ``None``: unknown.
    """
    problems = []
    if modality and scope.modalities and modality.strip().upper() not in scope.modalities:
        problems.append(f"modality {modality.strip().upper()} (the model was trained on {'/'.join(scope.modalities)})")
    if scope.channels is not None and channels != scope.channels:
        kinds = {1: "grey", 3: "colour (RGB)"}
        given, trained = (kinds.get(c, f"{c}-channel") for c in (channels, scope.channels))
        problems.append(f"a {given} image into a {trained} model")
    if spacing is not None and scope.spacing_range_mm is not None:
        low, high = scope.spacing_range_mm
        outside = [s for s in spacing if not low <= s <= high]
        if outside:
            size = " x ".join(f"{s:g}" for s in spacing)
            problems.append(f"pixel size {size} mm (outside the {low:g}-{high:g} mm the model may be given)")
    return problems


def check_scope(
    source: str,
    scope: ModelScope,
    *,
    channels: int,
    modality: str | None = None,
    spacing: Sequence[float] | None = None,
    allow_out_of_scope: bool = False,
) -> list[str]:
    """Refuse an input outside ``scope`` unless allowed; return the reasons (for the record).

    Raises:
        OutOfScopeError: outside the scope and ``allow_out_of_scope`` is false; the message names
            ``source``, every reason and the override.
    """
    problems = scope_problems(scope, channels=channels, modality=modality, spacing=spacing)
    if problems and not allow_out_of_scope:
        raise OutOfScopeError(
            f"{source}: outside this model's scope: {'; '.join(problems)}. Its output would not be trustworthy; "
            f"{OVERRIDE_HINT}."
        )
    return problems
