"""Calibrating the structure guard: against the clean truth, banded by input noise where that pays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_uspmie.research.evaluation_cases import CASES
from napari_uspmie.research.guard_calibration import calibrate, confusion, cross_validated, reference_lost


def _row(case: str, in_out: float, noise: float, lost: bool, local: float | None = None) -> dict:
    """An evaluation row: LaSSIM(in, out) ``in_out`` at every level (its worst region: ``local``,
    default ``in_out``); the truth says ``lost`` or not."""
    truth = {"lassim_in_clean": 0.8, "lassim_out_clean": 0.7 if lost else 0.9}
    return {
        "case": case,
        **{f"lassim_in_out_{k}": in_out for k in (1, 2, 3)},
        "lassim_local_1": in_out if local is None else local,
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


def test_a_regional_threshold_catches_local_losses_and_severe_ones_sit_below_every_good_slice():
    """Losses confined to one region leave the slice's score among the good ones; only their worst
    region tells them apart. The severe thresholds lie as far below the thresholds as the good
    slices' median lies above, so no good slice reaches them."""
    rng = np.random.default_rng(2)
    rows = [_row(CASES["a"], v, 0.02, False, local=v - 0.2 * rng.random()) for v in rng.uniform(0.9, 0.99, 80)]
    rows += [_row(CASES["a"], v, 0.02, True, local=0.1 * rng.random()) for v in rng.uniform(0.9, 0.99, 10)]
    for k, row in enumerate(rows):
        row["name"], row["method"] = f"slice_{k:03d}", "m"
    thresholds = calibrate(rows)
    counts = confusion(rows, thresholds)
    assert counts["hit"] == 10 and counts["false_alarm_rate"] <= 0.05, counts
    assert 0.1 < thresholds.min_local_lassim < 0.75
    assert thresholds.slice_false_alarm == 0.05
    good = [r for r in rows if not reference_lost(r)]
    for k in (1, 2, 3):
        median = np.median([r[f"lassim_in_out_{k}"] for r in good])
        assert thresholds.severe_lassim[k] == pytest.approx(2 * thresholds.min_lassim[k] - median, abs=1e-3)
        assert all(r[f"lassim_in_out_{k}"] >= thresholds.severe_lassim[k] for r in good)
    assert all(r["lassim_local_1"] >= thresholds.severe_local_lassim for r in good)
    without = calibrate([{**r, "lassim_local_1": r["lassim_in_out_1"]} for r in rows])
    assert without.min_local_lassim == 0.0 and confusion(rows, without)["hit"] < 5


def test_volume_verdicts_count_flagged_slices_against_what_good_volumes_show():
    from napari_uspmie.metric.structure_check import StructureThresholds
    from napari_uspmie.research.evaluation_cases import VOLUME_GROUP
    from napari_uspmie.research.guard_calibration import volume_verdicts

    thresholds = StructureThresholds({1: 0.9, 2: 0.9, 3: 0.9}, slice_false_alarm=0.05, severe_lassim={1: 0.5})
    few = [_row(CASES["a"], 0.95, 0.02, False) for _ in range(28)] + [_row(CASES["a"], 0.85, 0.02, False)] * 2
    many = [_row(CASES["b"], 0.95, 0.02, False) for _ in range(24)] + [_row(CASES["b"], 0.85, 0.02, True)] * 6
    one_severe = [_row(CASES["c"], 0.95, 0.02, False) for _ in range(29)] + [_row(CASES["c"], 0.4, 0.02, True)]
    loose = [_row(CASES["a"], 0.1, 0.02, True)]  # a slice of no volume: not counted
    for rows, name in ((few, "few"), (many, "many"), (one_severe, "severe")):
        for row in rows:
            row["group"] = f"{VOLUME_GROUP} {name}"
    verdicts = {v["group"].split()[-1]: v for v in volume_verdicts(few + many + one_severe + loose, thresholds)}
    assert set(verdicts) == {"few", "many", "severe"}
    assert verdicts["few"] == {
        "case": CASES["a"], "group": f"{VOLUME_GROUP} few", "slices": 30, "lost": 0, "flagged": 2,
        "allowed": 4, "severe": 0, "kept": True,
    }  # fmt: skip
    assert not verdicts["many"]["kept"] and verdicts["many"]["flagged"] == 6 and verdicts["many"]["lost"] == 6
    assert not verdicts["severe"]["kept"] and verdicts["severe"]["flagged"] == 1 and verdicts["severe"]["severe"] == 1
