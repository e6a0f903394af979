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
a threshold on the worst region's LaSSIM (``lassim_local_1``) at quantiles of the good slices', and
keeps the combination that flags the most lost slices within the false-alarm budget. Severe
thresholds, below which one slice loses a whole volume, sit as far below each threshold as the
good slices' median is above it; ``slice_false_alarm`` records the budget, from which the guard
derives how many flagged slices a good volume may show. :func:`confusion`
counts hits, misses and false alarms of given thresholds; :func:`cross_validated` counts them on
slices the thresholds were not calibrated on.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from collections.abc import Sequence

import numpy as np

from napari_uspmie.metric.structure_check import CHECKERBOARD_FLOOR, LEVELS, StructureThresholds
from napari_uspmie.research.evaluation_cases import CASES, VOLUME_GROUP

__all__ = [
    "reference_lost",
    "guard_flags",
    "severe",
    "confusion",
    "calibrate",
    "cross_validated",
    "volume_verdicts",
    "describe",
]

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
    if 0 < thresholds.min_local_lassim and row["lassim_local_1"] < thresholds.min_local_lassim:
        return True
    levels = thresholds.for_noise(row.get("noise_in", np.inf))
    return any(row[f"lassim_in_out_{k}"] < t for k, t in levels.items())


def severe(row: dict, thresholds: StructureThresholds) -> bool:
    """Whether ``row`` falls below a severe threshold, which loses its volume alone."""
    local = thresholds.severe_local_lassim
    if 0 < local and row["lassim_local_1"] < local:
        return True
    return any(row[f"lassim_in_out_{k}"] < t for k, t in thresholds.severe_lassim.items())


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
    """Thresholds, banded by input noise and with a regional one where that flags more lost rows.

    Args:
        rows: evaluation rows of enhanced outputs (not of the unenhanced input), with ``noise_in``
            for banding (rows without it get one set of thresholds).
        max_false_alarm: largest share of good rows the guard may flag, in each band and overall.
    """
    good = [r for r in rows if not reference_lost(r)]
    best, best_key = StructureThresholds(), (-1, 0.0)
    local_values = np.array([r["lassim_local_1"] for r in good]) if good else np.zeros(1)
    for q in np.linspace(0.0, max_false_alarm, 6):
        local = round(float(np.quantile(local_values, q)), 3) if q > 0 and good else 0.0
        candidate = _banded(rows, max_false_alarm, StructureThresholds(min_local_lassim=local))
        counts = confusion(rows, candidate)
        key = (counts["hit"], -counts["false_alarm_rate"])
        if counts["false_alarm_rate"] <= max_false_alarm and key > best_key:
            best, best_key = candidate, key
    return _with_severe(best, good, max_false_alarm)


def _with_severe(thresholds: StructureThresholds, good: Sequence[dict], rate: float) -> StructureThresholds:
    """``thresholds`` with severe ones (module docstring) and their false-alarm budget."""
    if not good:
        return thresholds
    median = {k: float(np.median([r[f"lassim_in_out_{k}"] for r in good])) for k in LEVELS}
    lowest = {k: min([thresholds.min_lassim[k]] + [b[k] for _, b in thresholds.by_noise]) for k in LEVELS}
    severe = {k: round(max(0.0, 2 * lowest[k] - median[k]), 3) for k in LEVELS}
    local = thresholds.min_local_lassim
    median_local = float(np.median([r["lassim_local_1"] for r in good]))
    severe_local = round(max(0.0, 2 * local - median_local), 3) if local > 0 else 0.0
    return dataclasses.replace(
        thresholds, slice_false_alarm=rate, severe_lassim=severe, severe_local_lassim=severe_local
    )


def _banded(rows: Sequence[dict], max_false_alarm: float, base: StructureThresholds) -> StructureThresholds:
    """Per-level thresholds on top of ``base`` (its regional threshold), in noise bands if that flags more."""
    best = _one_band(rows, max_false_alarm, base)
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
            fitted = [_one_band(band, max_false_alarm, base) for band in bands]
            candidate = dataclasses.replace(
                base,
                min_lassim=fitted[-1].min_lassim,
                by_noise=tuple((bound, t.min_lassim) for bound, t in zip(bounds, fitted, strict=False)),
            )
            counts = confusion(rows, candidate)
            if counts["false_alarm_rate"] <= max_false_alarm and counts["hit"] > best_hits:
                best, best_hits = candidate, counts["hit"]
    return best


def _one_band(rows: Sequence[dict], max_false_alarm: float, base: StructureThresholds) -> StructureThresholds:
    """Per-level thresholds at one quantile of the good rows, the largest within ``max_false_alarm``."""
    good = [r for r in rows if not reference_lost(r)]
    if not good:
        return base
    values = {k: np.array([r[f"lassim_in_out_{k}"] for r in good]) for k in LEVELS}
    best = dataclasses.replace(base, min_lassim={k: 0.0 for k in LEVELS})
    for q in np.linspace(0.0, max_false_alarm, 51):
        levels = {k: round(float(np.quantile(v, q)), 3) for k, v in values.items()}
        candidate = dataclasses.replace(base, min_lassim=levels)
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


def volume_verdicts(rows: Sequence[dict], thresholds: StructureThresholds) -> list[dict]:
    """The guard's verdict on each held-out volume of each case, as the product gives it.

    Returns:
        Per ``(case, group)`` of a held-out volume: ``slices`` evaluated, ``lost`` (by the clean
        truth), ``flagged`` and ``allowed`` slices, ``severe`` slices and ``kept`` (the verdict).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if str(row.get("group", "")).startswith(VOLUME_GROUP):
            groups.setdefault((row["case"], row["group"]), []).append(row)
    out = []
    for (case, group), members in groups.items():
        flagged = sum(guard_flags(r, thresholds) for r in members)
        allowed = thresholds.allowed_flagged(len(members))
        severe_slices = sum(severe(r, thresholds) for r in members)
        out.append(
            {
                "case": case,
                "group": group,
                "slices": len(members),
                "lost": sum(reference_lost(r) for r in members),
                "flagged": flagged,
                "allowed": allowed,
                "severe": severe_slices,
                "kept": flagged <= allowed and not severe_slices,
            }
        )
    return out


def describe(thresholds: StructureThresholds) -> str:
    """The thresholds in words, for the evaluation pages."""

    def levels(values: dict[int, float]) -> str:
        return ", ".join(f"level {k} >= {v:.3f}" for k, v in values.items())

    bands = "".join(f"input noise below {b:.4f}: {levels(v)}; " for b, v in thresholds.by_noise)
    rest = "other inputs: " if thresholds.by_noise else ""
    by_noise = " by the input's noise level:" if thresholds.by_noise else ""
    text = f"LaSSIM(in, out){by_noise} {bands}{rest}{levels(thresholds.min_lassim)}"
    if thresholds.min_local_lassim:
        text += f"; worst 16 x 16 region at level 1 >= {thresholds.min_local_lassim:.3f}"
    text += f"; checkerboard <= {thresholds.max_checkerboard_ratio:g}x the input's."
    if thresholds.slice_false_alarm:
        examples = ", ".join(f"{thresholds.allowed_flagged(n)} of {n}" for n in (1, 30, 100))
        text += (
            f" A volume keeps its structure with up to {examples} slices flagged (a good enhancement's "
            f"{thresholds.slice_false_alarm:.0%} of slices, in 19 volumes of 20)"
        )
        if thresholds.severe_lassim:
            severe = ", ".join(f"level {k} {v:.3f}" for k, v in thresholds.severe_lassim.items())
            if thresholds.severe_local_lassim:
                severe += f", region {thresholds.severe_local_lassim:.3f}"
            text += f", unless one slice falls below the severe thresholds ({severe})"
        text += "."
    return text
