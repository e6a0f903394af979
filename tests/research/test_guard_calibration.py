"""Calibrating the structure guard: against the clean truth, banded by input noise where that pays."""

from __future__ import annotations

import numpy as np

from napari_uspmie.research.evaluation_cases import CASES
from napari_uspmie.research.guard_calibration import calibrate, confusion, cross_validated, reference_lost


def _row(case: str, in_out: float, noise: float, lost: bool) -> dict:
    """An evaluation row: LaSSIM(in, out) ``in_out`` at every level; the truth says ``lost`` or not."""
    truth = {"lassim_in_clean": 0.8, "lassim_out_clean": 0.7 if lost else 0.9}
    return {
        "case": case,
        **{f"lassim_in_out_{k}": in_out for k in (1, 2, 3)},
        "checker_in": 1e-3,
        "checker_out": 1e-3,
        "noise_in": noise,
        **truth,
    }


def _rows() -> list[dict]:
    """Noisy inputs changed a lot by good enhancements; quiet inputs changed a little when good and
    moderately when structure was lost: one threshold cannot tell the quiet losses from noisy successes."""
    rng = np.random.default_rng(0)
    rows = [_row(CASES["a"], v, 0.03 + 0.005 * rng.random(), False) for v in rng.uniform(0.45, 0.75, 60)]
    rows += [_row(CASES["b"], v, 0.005 + 0.005 * rng.random(), False) for v in rng.uniform(0.93, 0.99, 60)]
    rows += [_row(CASES["b"], v, 0.005 + 0.005 * rng.random(), True) for v in rng.uniform(0.7, 0.88, 30)]
    for k, row in enumerate(rows):
        row["name"], row["method"] = f"slice_{k:03d}", "m" if k % 3 else "n"
    return rows


def test_reference_lost_follows_the_clean_truth():
    assert reference_lost(_row(CASES["a"], 0.9, 0.01, True))
    assert not reference_lost(_row(CASES["a"], 0.5, 0.01, False))
    clean = {**_row(CASES["c"], 0.79, 0.001, False)}
    assert reference_lost(clean)  # a clean input changed below 0.8 at level 1
    grid = {**_row(CASES["a"], 0.99, 0.01, False), "checker_out": 1.0}
    assert reference_lost(grid)


def test_noise_bands_catch_the_losses_one_threshold_misses():
    rows = _rows()
    banded = calibrate(rows)
    assert banded.by_noise, "a split by input noise should have been kept"
    bound, quiet = banded.by_noise[0]
    assert 0.01 <= bound <= 0.03 and min(quiet.values()) > 0.88
    counts = confusion(rows, banded)
    assert counts["false_alarm_rate"] <= 0.05 and counts["miss"] <= 3
    flat = calibrate([{k: v for k, v in r.items() if k != "noise_in"} for r in rows])
    assert not flat.by_noise
    assert confusion(rows, flat)["miss"] >= 20  # the one threshold sits below the noisy successes


def test_cross_validation_judges_every_slice_once_with_thresholds_calibrated_without_it():
    rows = _rows()
    held_out = cross_validated(rows)
    assert set(held_out) == {"m", "n"}
    assert sum(c["hit"] + c["miss"] + c["false_alarm"] + c["pass"] for c in held_out.values()) == len(rows)
    total = {k: sum(c[k] for c in held_out.values()) for k in ("hit", "miss", "false_alarm", "pass")}
    assert total["miss"] <= 6 and total["false_alarm"] <= 12  # new slices: close to the fitted figures
    assert all(0.0 <= c["false_alarm_rate"] <= 1.0 and 0.0 <= c["miss_rate"] <= 1.0 for c in held_out.values())
