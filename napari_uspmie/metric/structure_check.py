"""The structure guard: did an enhancement keep its input's structure?

:func:`check_structure` compares every slice of an enhancement with its input: LaSSIM(input,
output) at Laplacian levels 1-3 (level ``k`` compares structures about ``2**k`` pixels wide; a
level is skipped on slices too small for it), the worst 16 x 16 pixel region's LaSSIM at level 1
(:func:`local_lassim`: a local loss the slice's score averages away), the checkerboard index of the
output against the input's (a grid the network drew), and finite values. A slice whose LaSSIM at a
level (or whose worst region) falls below its threshold, or whose checkerboard index exceeds the
input's by more than the allowed ratio, is flagged; the verdict names the worst slice and level.
Thresholds belong to a model (its bundle's ``metadata.json``, key ``structure_thresholds``), since
how much an enhancement may change the finest band depends on what it was trained to remove.

Thresholds calibrated to flag a share ``p`` of good slices (``slice_false_alarm``) flag a few
slices of any long volume, so a volume's verdict counts: structure is lost when more slices are
flagged than a good enhancement shows in 19 volumes of 20 (the binomial bound of
:meth:`StructureThresholds.allowed_flagged`; none for a single image), when one slice falls below
the severe thresholds (as far below the threshold as good outputs typically are above it), or
when the output holds NaN. Flagged slices of a kept volume are still named, for a look.

How much a good enhancement changes the fine bands also depends on the input: denoising a noisy
slice rewrites its finest bands, while a clean-looking slice should keep them. So thresholds may
come in bands of the input's noise level (:func:`noise_level`, measured on the input alone):
a slice whose noise is below a band's bound is held to that band's (stricter) thresholds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from napari_uspmie.metric.checkerboard import checkerboard_index
from napari_uspmie.metric.lassim import WINDOW, lassim, lassim_map, min_size_for_level
from napari_uspmie.metric.luma import GRAY_WEIGHTS

__all__ = [
    "LEVELS",
    "LOCAL_WINDOW",
    "StructureThresholds",
    "StructureVerdict",
    "check_structure",
    "local_lassim",
    "noise_level",
]

#: the Laplacian levels the guard checks
LEVELS = (1, 2, 3)
#: slack on the checkerboard ratio for images with almost no pattern at all (index below this)
CHECKERBOARD_FLOOR = 2e-5
#: share of good volumes whose count of flagged slices may exceed :meth:`StructureThresholds.allowed_flagged`
VOLUME_FALSE_ALARM = 0.05
#: the level of :func:`local_lassim` the guard checks
LOCAL_LEVEL = 1
#: side, in pixels of the band, of the regions :func:`local_lassim` averages: 8 band pixels are
#: ``8 * 2**level`` image pixels, about a ventricle's width at levels 1-2 of a 1 mm brain slice
LOCAL_WINDOW = 8


def _luma(x: np.ndarray) -> np.ndarray:
    return x[:, 0] if x.shape[1] == 1 else np.tensordot(np.asarray(GRAY_WEIGHTS), x[:, :3], axes=(0, 1))


def noise_level(slices: np.ndarray) -> np.ndarray:
    """Per slice, the noise's standard deviation relative to the slice's intensity range.

    Donoho's robust estimate on the luma's 5-point Laplacian (which cancels smooth content):
    median absolute value / 0.6745, scaled to one pixel's noise, divided by the slice's 0.5-99.5
    percentile range, so the level does not depend on the units of the data.

    Args:
        slices: ``(N, C, H, W)`` with C 1 or 3, at least 3 x 3 pixels.

    Returns:
        ``(N,)`` noise levels (0 for a constant slice).
    """
    x = _luma(np.asarray(slices, dtype=np.float64))
    lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    sigma = np.median(np.abs(lap), axis=(1, 2)) / 0.6745 / np.sqrt(20.0)
    low, high = np.percentile(x, [0.5, 99.5], axis=(1, 2))
    span = high - low
    return np.where(span > 0, sigma / np.where(span > 0, span, 1.0), 0.0)


def local_lassim(pred: np.ndarray, ref: np.ndarray, level: int) -> np.ndarray:
    """Per slice, the lowest LaSSIM of any region of :data:`LOCAL_WINDOW` band pixels.

    The slice's LaSSIM averages the whole band, so a local loss (a dark blob where tissue was, an
    enlarged ventricle) in a slice that is otherwise kept barely moves it; the worst region shows it.
    The band's border (where SSIM's window met padding) is left out, as in the score; a band
    smaller than a region gives its inner mean, the score itself.

    Args:
        pred, ref: ``(N, C, H, W)`` slices, C 1 or 3, each at least :func:`min_size_for_level`.
        level: the Laplacian band.

    Returns:
        ``(N,)`` lowest regional LaSSIM.
    """
    heat = lassim_map(
        torch.as_tensor(np.asarray(pred, dtype=np.float64)),
        torch.as_tensor(np.asarray(ref, dtype=np.float64)),
        level=level,
        max_level=max(level, 5),
        upsample=False,
    )
    pad = (WINDOW - 1) // 2
    inner = heat[:, :, pad : heat.shape[2] - pad, pad : heat.shape[3] - pad]
    if min(inner.shape[2:]) >= LOCAL_WINDOW:
        regional = torch.nn.functional.avg_pool2d(inner, LOCAL_WINDOW, stride=1)
    else:
        regional = inner.mean(dim=(2, 3), keepdim=True)
    return regional.flatten(1).amin(dim=1).numpy()


@dataclass(frozen=True)
class StructureThresholds:
    """What the guard holds a slice and a volume to (see the module docstring).

    Attributes:
        min_lassim: lowest per-slice LaSSIM(input, output) per level.
        max_checkerboard_ratio: highest checkerboard index of the output over the input's.
        by_noise: ``(bound, min_lassim)`` bands in increasing bound: a slice whose input noise level
            (:func:`noise_level`) is below a band's bound gets that band's thresholds; slices above
            every bound get ``min_lassim``.
        min_local_lassim: lowest LaSSIM of a slice's worst region (:func:`local_lassim` at
            :data:`LOCAL_LEVEL`); 0 leaves regions unchecked.
        slice_false_alarm: share of a good enhancement's slices these thresholds flag (what they were
            calibrated for); 0: any flagged slice loses the volume.
        severe_lassim: per level, a LaSSIM below which one slice loses the volume (empty: none).
        severe_local_lassim: the same for the worst region (0: none).
    """

    min_lassim: dict[int, float] = field(default_factory=lambda: {1: 0.3, 2: 0.5, 3: 0.6})
    max_checkerboard_ratio: float = 1.5
    by_noise: tuple[tuple[float, dict[int, float]], ...] = ()
    min_local_lassim: float = 0.0
    slice_false_alarm: float = 0.0
    severe_lassim: dict[int, float] = field(default_factory=dict)
    severe_local_lassim: float = 0.0

    def for_noise(self, noise: float) -> dict[int, float]:
        """The per-level thresholds of a slice whose input noise level is ``noise``."""
        for bound, levels in self.by_noise:
            if noise < bound:
                return levels
        return self.min_lassim

    def allowed_flagged(self, slices: int) -> int:
        """Most flagged slices that leave a volume of ``slices`` slices kept.

        The smallest ``k`` with P(Binomial(slices, slice_false_alarm) > k) at most
        :data:`VOLUME_FALSE_ALARM`: 0 for one image, about 9 of 100 slices at a 5% slice rate.
        """
        p = self.slice_false_alarm
        if p <= 0 or slices <= 0:
            return 0
        if p >= 1:
            return slices
        cdf = 0.0
        for k in range(slices + 1):
            log_pmf = (
                math.lgamma(slices + 1)
                - math.lgamma(k + 1)
                - math.lgamma(slices - k + 1)
                + k * math.log(p)
                + (slices - k) * math.log1p(-p)
            )
            cdf += math.exp(log_pmf)
            if 1.0 - cdf <= VOLUME_FALSE_ALARM + 1e-9:
                return k
        return slices

    def as_dict(self) -> dict[str, Any]:
        """The ``structure_thresholds`` entry of a bundle's ``metadata.json``."""
        out: dict[str, Any] = {
            "min_lassim": _by_level(self.min_lassim),
            "max_checkerboard_ratio": self.max_checkerboard_ratio,
        }
        if self.by_noise:
            out["by_noise"] = [
                {"noise_below": bound, "min_lassim": _by_level(levels)} for bound, levels in self.by_noise
            ]
        if self.min_local_lassim:
            out["min_local_lassim"] = self.min_local_lassim
        if self.slice_false_alarm:
            out["slice_false_alarm"] = self.slice_false_alarm
        if self.severe_lassim:
            out["severe_lassim"] = _by_level(self.severe_lassim)
        if self.severe_local_lassim:
            out["severe_local_lassim"] = self.severe_local_lassim
        return out

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> StructureThresholds:
        """Read ``structure_thresholds`` of a bundle's ``metadata.json`` (defaults where absent).

        Raises:
            ValueError: malformed thresholds.
        """
        raw = metadata.get("structure_thresholds") or {}
        default = cls()
        try:
            levels = _levels(raw.get("min_lassim", default.min_lassim))
            ratio = float(raw.get("max_checkerboard_ratio", default.max_checkerboard_ratio))
            bands = tuple((float(band["noise_below"]), _levels(band["min_lassim"])) for band in raw.get("by_noise", []))
            local = float(raw.get("min_local_lassim", 0.0))
            rate = float(raw.get("slice_false_alarm", 0.0))
            severe = _levels(raw.get("severe_lassim", {}))
            severe_local = float(raw.get("severe_local_lassim", 0.0))
        except (AttributeError, TypeError, ValueError, KeyError) as e:
            raise ValueError(f"malformed structure_thresholds {raw!r}: {e}") from e
        if any(a[0] >= b[0] for a, b in zip(bands, bands[1:], strict=False)):
            raise ValueError(f"malformed structure_thresholds {raw!r}: noise bands must rise")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"malformed structure_thresholds {raw!r}: slice_false_alarm must be in [0, 1)")
        return cls(levels, ratio, bands, local, rate, severe, severe_local)


def _by_level(levels: dict[int, float]) -> dict[str, float]:
    return {str(k): v for k, v in levels.items()}


def _levels(raw: Any) -> dict[int, float]:
    return {int(k): float(v) for k, v in raw.items()}


@dataclass
class StructureVerdict:
    """What :func:`check_structure` found (JSON-able through :meth:`as_dict`).

    Attributes:
        kept: the output kept its input's structure (the volume's verdict, module docstring).
        lassim: per level, LaSSIM(input, output) of each slice (``None`` where too small).
        checkerboard: ``(input, output)`` checkerboard index of each slice.
        worst: the slice and level with the lowest LaSSIM relative to its threshold.
        reasons: why structure was lost, then one line per flagged slice (empty when none).
        checked: whether the slices were large enough for any LaSSIM band; an output that could
            not be checked is never reported as kept.
        noise: the input noise level of each slice (:func:`noise_level`), which chose its thresholds.
        local: the worst region's LaSSIM of each slice (:func:`local_lassim`; empty where too small).
        flagged_slices: slices that failed a per-slice check, in order.
        allowed_flagged: how many flagged slices a good enhancement of this many slices may show.
    """

    kept: bool
    lassim: dict[int, list[float | None]]
    checkerboard: list[tuple[float, float]]
    worst: dict[str, Any]
    reasons: list[str]
    checked: bool = True
    noise: list[float] = field(default_factory=list)
    local: list[float] = field(default_factory=list)
    flagged_slices: list[int] = field(default_factory=list)
    allowed_flagged: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lassim"] = {str(k): v for k, v in self.lassim.items()}
        return out

    def summary(self) -> str:
        """One line: ``structure kept (worst LaSSIM 0.91 at level 2, slice 3)`` or the first reason."""
        if not self.checked:
            return "structure NOT CHECKED: " + self.reasons[0]
        if not self.kept:
            more = len(self.reasons) - 1
            return "structure LOST: " + self.reasons[0] + (f" (+{more} more)" if more else "")
        w = self.worst
        line = f"structure kept (worst LaSSIM {w['lassim']:.3f} at level {w['level']}, slice {w['slice']}"
        if self.flagged_slices:
            n = len(self.flagged_slices)
            named = ", ".join(str(i) for i in self.flagged_slices[:5]) + (", ..." if n > 5 else "")
            line += (
                f"; {n} slice{'s' if n > 1 else ''} below the per-slice thresholds, within the "
                f"{self.allowed_flagged} a good enhancement may show: {named}"
            )
        return line + ")"


def check_structure(
    image: np.ndarray, enhanced: np.ndarray, thresholds: StructureThresholds | None = None
) -> StructureVerdict:
    """Check every slice of ``enhanced`` against ``image``, then the whole (see the module docstring).

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
    failures: dict[int, list[str]] = {}
    severe: list[str] = []
    scores: dict[int, list[float | None]] = {}
    worst: dict[str, Any] = {}
    margin = np.inf
    noise = [float(v) for v in noise_level(a)]
    for level in LEVELS:
        if min(a.shape[-2:]) < min_size_for_level(level):
            scores[level] = [None] * a.shape[0]
            continue
        values = lassim(torch.from_numpy(b), torch.from_numpy(a), level=level, max_level=max(level, 5))
        scores[level] = [float(v) for v in np.atleast_1d(values.numpy())]
        for i, v in enumerate(scores[level]):
            limit = thresholds.for_noise(noise[i]).get(level)
            gap = v - (limit if limit is not None else 0.0)
            if gap < margin:
                margin, worst = gap, {"slice": i, "level": level, "lassim": v, "threshold": limit}
            if limit is not None and v < limit:
                failures.setdefault(i, []).append(
                    f"slice {i}: LaSSIM(input, output) {v:.3f} at level {level} < {limit:g}"
                )
            floor = thresholds.severe_lassim.get(level)
            if floor is not None and v < floor:
                severe.append(f"slice {i}: LaSSIM(input, output) {v:.3f} at level {level}, below the severe {floor:g}")
    local = [float(v) for v in local_lassim(b, a, LOCAL_LEVEL)]
    low, floor = thresholds.min_local_lassim, thresholds.severe_local_lassim
    for i, v in enumerate(local):
        region = f"slice {i}: a region's LaSSIM(input, output) {v:.3f} at level {LOCAL_LEVEL}"
        if low > 0 and v < low:
            failures.setdefault(i, []).append(f"{region} < {low:g}")
        if floor > 0 and v < floor:
            severe.append(f"{region}, below the severe {floor:g}")
    checker: list[tuple[float, float]] = []
    if min(a.shape[-2:]) >= 8:
        before, after = np.atleast_1d(checkerboard_index(_luma(a))), np.atleast_1d(checkerboard_index(_luma(b)))
        checker = [(float(x), float(y)) for x, y in zip(before, after, strict=True)]
        for i, (x, y) in enumerate(checker):
            if y > thresholds.max_checkerboard_ratio * max(x, CHECKERBOARD_FLOOR):
                failures.setdefault(i, []).append(
                    f"slice {i}: a checkerboard pattern the input does not have (index {y:.2g} vs {x:.2g})"
                )
    flagged = sorted(failures)
    allowed = thresholds.allowed_flagged(a.shape[0])
    reasons = [line for i in flagged for line in failures[i]]
    lost = bool(severe) or len(flagged) > allowed
    if len(flagged) > allowed and allowed > 0:
        reasons.insert(
            0,
            f"{len(flagged)} of {a.shape[0]} slices below the per-slice thresholds, more than the {allowed} "
            f"a good enhancement shows (first: {reasons[0]})",
        )
    reasons = severe + reasons if severe else reasons
    return StructureVerdict(
        not lost,
        scores,
        checker,
        worst,
        reasons,
        noise=noise,
        local=local,
        flagged_slices=flagged,
        allowed_flagged=allowed,
    )
