"""Calibrate the structure guard on the held-out evaluation, and measure how often it is right.

The guard sees only the input and the output. The evaluation also knows the clean truth, so for
every enhanced slice it can say whether structure was really lost (:func:`reference_lost`):

* on a degraded input (cases a and b): LaSSIM(output, clean) below LaSSIM(input, clean), i.e. the
  enhancement moved the image away from the truth's structure;
* on a clean input (case c): LaSSIM(input, output) at level 1 below 0.8;
* on any input: a visible checkerboard (index above 1.5 times the input's).

:func:`calibrate` picks per-level thresholds as one low quantile of the good slices' LaSSIM(input,
output), the largest that keeps false alarms at most ``max_false_alarm``. It also tries splitting
the slices into up to three bands of the input's noise level (cut at quantiles of the rows' noise,
each band holding at least ``MIN_GOOD_PER_BAND`` good slices) with thresholds of their own, and
keeps the split that flags the most lost slices within the false-alarm budget. :func:`confusion`
counts hits, misses and false alarms of given thresholds; :func:`cross_validated` counts them on
slices the thresholds were not calibrated on.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence

import numpy as np

from napari_uspmie.metric.structure_check import CHECKERBOARD_FLOOR, LEVELS, StructureThresholds
from napari_uspmie.research.evaluation_cases import CASES

__all__ = ["reference_lost", "guard_flags", "confusion", "calibrate", "cross_validated"]

CLEAN_LEVEL_1 = 0.8
#: fewest good slices a noise band must hold for thresholds of its own (fewer: quantiles of noise)
MIN_GOOD_PER_BAND = 20
#: candidate noise cuts: these quantiles of the rows' input noise levels
CUT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _grid_ratio(row: dict) -> float:
    return row["checker_out"] / max(row["checker_in"], CHECKERBOARD_FLOOR)


def reference_lost(row: dict) -> bool:
    """Whether the clean truth says ``row`` (an evaluation row) lost structure (module docstring)."""
    if _grid_ratio(row) > 1.5:
        return True
    if row["case"] == CASES["c"]:
        return row["lassim_in_out_1"] < CLEAN_LEVEL_1
    return row["lassim_out_clean"] < row["lassim_in_clean"]


def guard_flags(row: dict, thresholds: StructureThresholds) -> bool:
    """Whether the guard, which sees only input and output, flags ``row``."""
    if _grid_ratio(row) > thresholds.max_checkerboard_ratio:
        return True
    levels = thresholds.for_noise(row.get("noise_in", np.inf))
    return any(row[f"lassim_in_out_{k}"] < t for k, t in levels.items())


def confusion(rows: Sequence[dict], thresholds: StructureThresholds) -> dict[str, float]:
    """Hits, misses, false alarms and correct passes of the guard against the reference."""
    counts = {"hit": 0, "miss": 0, "false_alarm": 0, "pass": 0}
    for row in rows:
        lost, flagged = reference_lost(row), guard_flags(row, thresholds)
        counts[("hit" if flagged else "miss") if lost else ("false_alarm" if flagged else "pass")] += 1
    return _with_rates(counts)


def _with_rates(counts: dict[str, int]) -> dict[str, float]:
    """``counts`` with the false-alarm rate (of good rows) and the miss rate (of lost rows)."""
    good, bad = counts["false_alarm"] + counts["pass"], counts["hit"] + counts["miss"]
    return {
        **counts,
        "false_alarm_rate": counts["false_alarm"] / good if good else 0.0,
        "miss_rate": counts["miss"] / bad if bad else 0.0,
    }


def calibrate(rows: Sequence[dict], max_false_alarm: float = 0.05) -> StructureThresholds:
    """Thresholds, banded by input noise where that flags more lost rows (module docstring).

    Args:
        rows: evaluation rows of enhanced outputs (not of the unenhanced input), with ``noise_in``
            for banding (rows without it get one set of thresholds).
        max_false_alarm: largest share of good rows the guard may flag, in each band and overall.
    """
    best = _one_band(rows, max_false_alarm)
    if not rows or any("noise_in" not in r for r in rows):
        return best
    best_hits = confusion(rows, best)["hit"]
    noise = np.array([r["noise_in"] for r in rows])
    cuts = sorted({round(float(np.quantile(noise, q)), 5) for q in CUT_QUANTILES})
    for count in (1, 2):
        for bounds in itertools.combinations(cuts, count):
            edges = (-np.inf, *bounds, np.inf)
            bands = [[r for r in rows if lo <= r["noise_in"] < hi] for lo, hi in itertools.pairwise(edges)]
            if any(sum(not reference_lost(r) for r in band) < MIN_GOOD_PER_BAND for band in bands):
                continue
            fitted = [_one_band(band, max_false_alarm) for band in bands]
            candidate = StructureThresholds(
                fitted[-1].min_lassim,
                best.max_checkerboard_ratio,
                tuple((bound, t.min_lassim) for bound, t in zip(bounds, fitted, strict=False)),
            )
            counts = confusion(rows, candidate)
            if counts["false_alarm_rate"] <= max_false_alarm and counts["hit"] > best_hits:
                best, best_hits = candidate, counts["hit"]
    return best


def _one_band(rows: Sequence[dict], max_false_alarm: float) -> StructureThresholds:
    """Per-level thresholds at one quantile of the good rows, the largest within ``max_false_alarm``."""
    good = [r for r in rows if not reference_lost(r)]
    if not good:
        return StructureThresholds()
    values = {k: np.array([r[f"lassim_in_out_{k}"] for r in good]) for k in LEVELS}
    best = StructureThresholds({k: 0.0 for k in LEVELS})
    for q in np.linspace(0.0, max_false_alarm, 51):
        candidate = StructureThresholds({k: round(float(np.quantile(v, q)), 3) for k, v in values.items()})
        if confusion(rows, candidate)["false_alarm_rate"] <= max_false_alarm:
            best = candidate
    return best


def cross_validated(rows: Sequence[dict], max_false_alarm: float = 0.05, folds: int = 2) -> dict[str, dict]:
    """Per method, hits, misses and false alarms of thresholds calibrated without the row's slice.

    Slices are split into ``folds`` groups by a hash of their name (every method's output of one
    slice falls in the same group); each group is judged by thresholds calibrated on the others.

    Returns:
        ``{method: confusion counts}`` (as :func:`confusion`), summed over the groups.
    """
    fold_of = [zlib.crc32(str(r["name"]).encode()) % folds for r in rows]
    totals: dict[str, dict] = {}
    for fold in range(folds):
        thresholds = calibrate([r for r, f in zip(rows, fold_of, strict=True) if f != fold], max_false_alarm)
        held = [r for r, f in zip(rows, fold_of, strict=True) if f == fold]
        for method in dict.fromkeys(r["method"] for r in held):
            counts = confusion([r for r in held if r["method"] == method], thresholds)
            total = totals.setdefault(method, {"hit": 0, "miss": 0, "false_alarm": 0, "pass": 0})
            for key in total:
                total[key] += counts[key]
    return {method: _with_rates(total) for method, total in totals.items()}
