"""The structure guard's section of the evaluation page: thresholds, confusion per slice, verdict per volume."""

from __future__ import annotations

from napari_uspmie.research import guard_calibration as guard

__all__ = ["guard_section"]


def guard_section(result: dict, enhanced: list[dict]) -> list[str]:
    """Markdown lines: per method, the guard's thresholds calibrated on its outputs (thresholds belong to
    a model), its confusion per slice and its verdict per held-out volume. The last method's thresholds
    are ``result["guard_thresholds"]``.

    Args:
        result: the evaluation's result; the thresholds are added to it.
        enhanced: its rows of enhanced outputs (not of the unenhanced input).
    """
    if not enhanced:
        return []
    methods = list(dict.fromkeys(r["method"] for r in enhanced))
    fitted = {m: guard.calibrate([r for r in enhanced if r["method"] == m]) for m in methods}
    result["guard_thresholds_by_method"] = {m: t.as_dict() for m, t in fitted.items()}
    result["guard_thresholds"] = fitted[methods[-1]].as_dict()
    lines = ["", "Structure guard, thresholds calibrated on each method's outputs (at most 5% false alarms per slice):"]
    lines += ["", *(f"- {m}: {guard.describe(t)}" for m, t in fitted.items())]
    lines += [
        "",
        "Lost = the clean truth says so (LaSSIM to clean below the input's; clean input changed below 0.8 at "
        "level 1; a checkerboard).",
        "",
        "| method | thresholds from | lost, flagged | lost, missed | good, flagged (false alarm) | good, passed "
        "| false-alarm rate |",
        "|---|---|---|---|---|---|---|",
    ]
    volumes = ["", "| method | case | volume | slices | lost (truth) | flagged / allowed | severe | verdict |"]
    volumes.append("|---|---|---|---|---|---|---|---|")
    for method in methods:
        rows = [r for r in enhanced if r["method"] == method]
        held_out = guard.cross_validated(rows)[method]
        for source, c in (("all slices", guard.confusion(rows, fitted[method])), ("the other half (2-fold)", held_out)):
            rate = f"{100 * c['false_alarm_rate']:.1f}%"
            lines.append(
                f"| {method} | {source} | {c['hit']} | {c['miss']} | {c['false_alarm']} | {c['pass']} | {rate} |"
            )
        for v in guard.volume_verdicts(rows, fitted[method]):
            verdict = "kept" if v["kept"] else "LOST"
            volumes.append(
                f"| {method} | {v['case']} | {v['group']} | {v['slices']} | {v['lost']} | "
                f"{v['flagged']} / {v['allowed']} | {v['severe']} | {verdict} |"
            )
    lines += [
        "",
        'Rows "all slices" judge the slices the thresholds were calibrated on; rows "the other half" judge '
        "each half of the slices (split by name) with thresholds calibrated on the other half: what to expect "
        "on new scans. Per held-out volume (its evaluated slices), the verdict the product gives a volume:",
        *volumes,
    ]
    return lines
