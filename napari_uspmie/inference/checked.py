"""One checked enhancement: the path the command line, the bundle and napari all take.

:func:`enhance_checked` refuses inputs outside the model's scope (unless allowed), enhances at the
model's pixel size when the input's is known, checks the result with the structure guard
(:mod:`napari_uspmie.metric.structure_check`) and applies the user's policy for a result that
lost structure: ``"warn"`` (keep the enhancement, flagged), ``"keep-input"`` (return the input
unchanged, flagged) or ``"fail"`` (raise :class:`StructureLossError`; nothing is to be written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_uspmie.errors import ExplainedError, SettingError
from napari_uspmie.inference.pipeline import colour_channels, to_slices
from napari_uspmie.metric.structure_check import StructureThresholds, StructureVerdict, check_structure

__all__ = ["STRUCTURE_POLICIES", "check_policy", "Enhancement", "StructureLossError", "enhance_checked"]

STRUCTURE_POLICIES = ("warn", "keep-input", "fail")


def check_policy(on_structure_loss: str) -> str:
    """``on_structure_loss`` if it is one of :data:`STRUCTURE_POLICIES`.

    Raises:
        SettingError: any other value.
    """
    if on_structure_loss not in STRUCTURE_POLICIES:
        raise SettingError(f"on_structure_loss must be one of {STRUCTURE_POLICIES}, got {on_structure_loss!r}.")
    return on_structure_loss


class StructureLossError(ValueError, ExplainedError):
    """An enhancement lost structure and the policy is ``"fail"``; ``enhancement`` holds the record
    (``None`` where the caller keeps its own)."""

    def __init__(self, message: str, enhancement: Enhancement | None) -> None:
        super().__init__(message)
        self.enhancement = enhancement


@dataclass
class Enhancement:
    """A checked enhancement.

    Attributes:
        source: the input's name.
        output: what to show or write: the enhancement, or the input under ``"keep-input"``
            when structure was lost.
        enhanced: the network's enhancement (even when not used).
        verdict: the structure guard's verdict.
        policy: the policy applied.
        scope_problems: why the input is out of scope (empty when inside; filled only when allowed).
        resample_factors: size factors to the model's pixel size, ``None`` when enhanced as it was.
        spacing: the input's in-plane pixel size in mm, ``None`` when unknown.
        seconds: time spent enhancing.
    """

    source: str
    output: np.ndarray
    enhanced: np.ndarray
    verdict: StructureVerdict
    policy: str
    scope_problems: list[str]
    resample_factors: tuple[float, float] | None
    spacing: tuple[float, float] | None
    seconds: float

    @property
    def kept_input(self) -> bool:
        """The input was returned in place of an enhancement that lost structure."""
        return self.policy == "keep-input" and not self.verdict.kept

    def geometry_note(self) -> str:
        """How the pixel size was handled, for the user."""
        if self.spacing is None:
            return "pixel size unknown: enhanced at the image's own pixels"
        size = " x ".join(f"{s:g}" for s in self.spacing)
        if self.resample_factors is None:
            return f"{size} mm pixels: enhanced as they are"
        return f"{size} mm pixels: enhanced at the model's pixel size and brought back to the input's grid"

    def report(self) -> dict[str, Any]:
        """A JSON-able record: ``input``, ``flagged`` (structure lost), ``flagged_slices`` (slices that failed a
        check, also of a kept volume), ``lassim`` (per level, per slice), ``worst_slice``,
        ``worst_level``, the full verdict, scope problems, pixel-size handling; callers add ``output``."""
        worst = self.verdict.worst
        return {
            "input": self.source,
            "flagged": not self.verdict.kept,
            "lassim": {str(k): v for k, v in self.verdict.lassim.items()},
            "flagged_slices": self.verdict.flagged_slices,
            "worst_slice": worst.get("slice"),
            "worst_level": worst.get("level"),
            "policy": self.policy,
            "output_is_input": self.kept_input,
            "structure": self.verdict.as_dict(),
            "scope_problems": self.scope_problems,
            "spacing_mm": None if self.spacing is None else list(self.spacing),
            "resample_factors": None if self.resample_factors is None else list(self.resample_factors),
            "geometry": self.geometry_note(),
            "seconds": round(self.seconds, 3),
        }


def _slices(array: np.ndarray, channel_axis: int | None, slice_axis: int) -> np.ndarray:
    work, _ = to_slices(array, channel_axis, slice_axis)
    colour = colour_channels(work.shape[-1])
    return np.ascontiguousarray(work[..., :colour].transpose(0, 3, 1, 2))


def enhance_checked(
    enhancer: Any,
    image: np.ndarray,
    *,
    source: str = "image",
    channel_axis: int | None = None,
    slice_axis: int = 0,
    spacing: Sequence[float] | None = None,
    modality: str | None = None,
    allow_out_of_scope: bool = False,
    on_structure_loss: str = "warn",
    thresholds: StructureThresholds | None = None,
    batch_size: int | None = None,
    tile_size: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Any = None,
) -> Enhancement:
    """Enhance ``image`` with ``enhancer`` (an :class:`~napari_uspmie.inference.enhancer.Enhancer`) and check it.

    Args:
        enhancer: the loaded model.
        image: the input array (as read, or a napari layer's data).
        source: its name in messages and the report.
        channel_axis, slice_axis, batch_size, tile_size, progress, cancel: as for ``Enhancer.enhance``.
        spacing: in-plane pixel size in mm, ``None`` when unknown.
        modality: DICOM modality code from the header or the user.
        allow_out_of_scope: enhance inputs outside the model's scope instead of refusing them.
        on_structure_loss: one of :data:`STRUCTURE_POLICIES`.
        thresholds: the structure guard's thresholds (default: the enhancer's, else the defaults).

    Raises:
        OutOfScopeError: out of scope and not allowed.
        StructureLossError: structure lost under ``"fail"``.
        ValueError: unknown policy; InvalidImageError for unusable values.
    """
    check_policy(on_structure_loss)
    record: dict[str, Any] = {}
    start = time.perf_counter()
    enhanced = enhancer.enhance(
        image,
        channel_axis=channel_axis,
        slice_axis=slice_axis,
        batch_size=batch_size,
        tile_size=tile_size,
        progress=progress,
        cancel=cancel,
        spacing=spacing,
        modality=modality,
        allow_out_of_scope=allow_out_of_scope,
        source=source,
        record=record,
    )
    seconds = time.perf_counter() - start
    thresholds = thresholds or getattr(enhancer, "structure_thresholds", None)
    verdict = check_structure(
        _slices(image, channel_axis, slice_axis), _slices(enhanced, channel_axis, slice_axis), thresholds
    )
    lost = not verdict.kept
    result = Enhancement(
        source=source,
        output=image.copy() if lost and on_structure_loss == "keep-input" else enhanced,
        enhanced=enhanced,
        verdict=verdict,
        policy=on_structure_loss,
        scope_problems=record.get("scope_problems", []),
        resample_factors=record.get("resample_factors"),
        spacing=None if record.get("spacing") is None else tuple(float(s) for s in record["spacing"]),
        seconds=seconds,
    )
    if lost and on_structure_loss == "fail":
        raise StructureLossError(f"{source}: {verdict.summary()}; nothing written (--on-structure-loss fail).", result)
    return result
