"""The structure guard: did an enhancement keep its input's structure?

:func:`check_structure` compares every slice of an enhancement with its input: LaSSIM(input,
output) at Laplacian levels 1-3 (level ``k`` compares structures about ``2**k`` pixels wide; a
level is skipped on slices too small for it), the checkerboard index of the output against the
input's (a grid the network drew), and finite values. A slice whose LaSSIM at a level falls below
that level's threshold, or whose checkerboard index exceeds the input's by more than the allowed
ratio, has lost structure; the verdict names the worst slice and level. Thresholds belong to a
model (its bundle's ``metadata.json``, key ``structure_thresholds``), since how much an
enhancement may change the finest band depends on what it was trained to remove.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from napari_uspmie.metric.checkerboard import checkerboard_index
from napari_uspmie.metric.lassim import lassim, min_size_for_level
from napari_uspmie.metric.luma import GRAY_WEIGHTS

__all__ = ["LEVELS", "StructureThresholds", "StructureVerdict", "check_structure"]

#: the Laplacian levels the guard checks
LEVELS = (1, 2, 3)
#: slack on the checkerboard ratio for images with almost no pattern at all (index below this)
CHECKERBOARD_FLOOR = 2e-5


@dataclass(frozen=True)
class StructureThresholds:
    """Lowest per-slice LaSSIM(input, output) per level, highest checkerboard ratio (output / input)."""

    min_lassim: dict[int, float] = field(default_factory=lambda: {1: 0.3, 2: 0.5, 3: 0.6})
    max_checkerboard_ratio: float = 1.5

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> StructureThresholds:
        """Read ``structure_thresholds`` of a bundle's ``metadata.json`` (defaults where absent).

        Raises:
            ValueError: malformed thresholds.
        """
        raw = metadata.get("structure_thresholds") or {}
        default = cls()
        try:
            levels = {int(k): float(v) for k, v in raw.get("min_lassim", default.min_lassim).items()}
            ratio = float(raw.get("max_checkerboard_ratio", default.max_checkerboard_ratio))
        except (AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"malformed structure_thresholds {raw!r}: {e}") from e
        return cls(levels, ratio)


@dataclass
class StructureVerdict:
    """What :func:`check_structure` found (JSON-able through :meth:`as_dict`).

    Attributes:
        kept: every slice kept its structure.
        lassim: per level, LaSSIM(input, output) of each slice (``None`` where too small).
        checkerboard: ``(input, output)`` checkerboard index of each slice.
        worst: the slice and level with the lowest LaSSIM relative to its threshold.
        reasons: one line per failed check (empty when kept).
        checked: whether the slices were large enough for any LaSSIM band; an output that could
            not be checked is never reported as kept.
    """

    kept: bool
    lassim: dict[int, list[float | None]]
    checkerboard: list[tuple[float, float]]
    worst: dict[str, Any]
    reasons: list[str]
    checked: bool = True

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lassim"] = {str(k): v for k, v in self.lassim.items()}
        return out

    def summary(self) -> str:
        """One line: ``structure kept (worst LaSSIM 0.91 at level 2, slice 3)`` or the first reason."""
        if not self.checked:
            return "structure NOT CHECKED: " + self.reasons[0]
        if not self.kept:
            return (
                "structure LOST: " + self.reasons[0] + (f" (+{len(self.reasons) - 1} more)" if self.reasons[1:] else "")
            )
        w = self.worst
        return f"structure kept (worst LaSSIM {w['lassim']:.3f} at level {w['level']}, slice {w['slice']})"


def _luma(x: np.ndarray) -> np.ndarray:
    return x[:, 0] if x.shape[1] == 1 else np.tensordot(np.asarray(GRAY_WEIGHTS), x[:, :3], axes=(0, 1))


def check_structure(
    image: np.ndarray, enhanced: np.ndarray, thresholds: StructureThresholds | None = None
) -> StructureVerdict:
    """Check every slice of ``enhanced`` against ``image`` (see the module docstring).

    Args:
        image: ``(N, C, H, W)`` input slices, C 1 or 3, any real values.
        enhanced: the enhancement, same shape (may hold NaN or Inf: a failed check).
        thresholds: the model's thresholds (default :class:`StructureThresholds`).

    Raises:
        ValueError: shapes differ or are not ``(N, C, H, W)``.
    """
    thresholds = thresholds or StructureThresholds()
    a, b = np.asarray(image, dtype=np.float64), np.asarray(enhanced, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) arrays of one shape, got {a.shape} and {b.shape}.")
    bad = ~np.isfinite(b).all(axis=(1, 2, 3))
    reasons = [f"slice {i}: the output holds NaN or infinite values" for i in np.flatnonzero(bad)]
    if bad.any():
        return StructureVerdict(False, {}, [], {"slice": int(np.flatnonzero(bad)[0])}, reasons)
    smallest = min_size_for_level(min(LEVELS))
    if min(a.shape[-2:]) < smallest:
        size = " x ".join(str(s) for s in a.shape[-2:])
        reason = (
            f"slices of {size} pixels are smaller than the {smallest} x {smallest} the structure check needs; "
            "the output could not be checked"
        )
        return StructureVerdict(False, {k: [None] * a.shape[0] for k in LEVELS}, [], {}, [reason], checked=False)
    scores: dict[int, list[float | None]] = {}
    worst: dict[str, Any] = {}
    margin = np.inf
    for level in LEVELS:
        if min(a.shape[-2:]) < min_size_for_level(level):
            scores[level] = [None] * a.shape[0]
            continue
        values = lassim(torch.from_numpy(b), torch.from_numpy(a), level=level, max_level=max(level, 5))
        scores[level] = [float(v) for v in np.atleast_1d(values.numpy())]
        limit = thresholds.min_lassim.get(level)
        for i, v in enumerate(scores[level]):
            gap = v - (limit if limit is not None else 0.0)
            if gap < margin:
                margin, worst = gap, {"slice": i, "level": level, "lassim": v, "threshold": limit}
            if limit is not None and v < limit:
                reasons.append(f"slice {i}: LaSSIM(input, output) {v:.3f} at level {level} < {limit:g}")
    checker: list[tuple[float, float]] = []
    if min(a.shape[-2:]) >= 8:
        before, after = np.atleast_1d(checkerboard_index(_luma(a))), np.atleast_1d(checkerboard_index(_luma(b)))
        checker = [(float(x), float(y)) for x, y in zip(before, after, strict=True)]
        for i, (x, y) in enumerate(checker):
            if y > thresholds.max_checkerboard_ratio * max(x, CHECKERBOARD_FLOOR):
                reasons.append(f"slice {i}: a checkerboard pattern the input does not have (index {y:.2g} vs {x:.2g})")
    return StructureVerdict(not reasons, scores, checker, worst, reasons)
