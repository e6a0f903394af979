"""The paper's comparison (Table II) reproduced on held-out MRI: CycleGAN, StillGAN, MIINet, LaMEGAN.

Runs :func:`napari_uspmie.research.evaluation.evaluate` on generators trained with the same data,
configuration and budget (``scripts/compare_methods.sh`` trains them) and writes:

* the paper-style table per case with a clean reference (a: our degradation, b: an unseen one):
  NIQE (no-reference quality, lower is better), LaSSIM(in, out) at levels 1-3 (the paper's proxy
  for originality), and against the clean image SSIM, PSNR and LaSSIM(out, clean);
* whether the paper's ordering holds here: quality CycleGAN <= LaMEGAN < StillGAN, MIINet (NIQE),
  structure LaMEGAN > CycleGAN (LaSSIM(in, out));
* one figure with the same slice through every method.

BRISQUE is not reported: its standard model (an SVR fitted on the LIVE database) is not part of
any installed package and cannot be fetched offline; a BRISQUE fitted on our own data would not
be the paper's metric. Methods that could not be trained (e.g. no VGG19 weights offline) are
listed with the reason instead of a row.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from napari_uspmie.io.atomic import staged_output
from napari_uspmie.research.evaluation import (
    INPUT,
    LEVEL,
    evaluate,
    evaluation_arguments,
    format_markdown,
    load_generators,
    summarize,
)
from napari_uspmie.research.evaluation_cases import CASES

__all__ = ["BRISQUE_NOTE", "paper_table", "ordering_checks", "save_methods_figure", "main"]

BRISQUE_NOTE = (
    "BRISQUE: not reported. Its standard model (an SVR fitted on the LIVE database) ships with no installed "
    "package and cannot be downloaded offline; one fitted on this data would not be the paper's BRISQUE."
)
#: the paper's names, by the lower-case method id used for runs
PAPER_NAMES = {"cyclegan": "CycleGAN", "stillgan": "StillGAN", "miinet": "MIINet", "lamegan": "LaMEGAN"}


def paper_table(summary: list[dict], case: str) -> list[str]:
    """Markdown lines of the paper-style table of ``case`` (one row per method, the input first)."""
    lines = [
        f"| {case} | n | NIQE (lower better) | LaSSIM(in, out) L1 / L2 / L3 | SSIM | PSNR | LaSSIM(out, clean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if s["case"] != case:
            continue
        lines.append(
            f"| {s['method']} | {s['n']} | {s['niqe']:.2f} | {s['lassim_in_out_1']:.3f} / "
            f"{s['lassim_in_out_2']:.3f} / {s['lassim_in_out_3']:.3f} | {s['ssim']:.3f} | {s['psnr']:.2f} | "
            f"{s['lassim_out_clean']:.3f} |"
        )
    return lines


def _by_method(summary: list[dict], case: str) -> dict[str, dict]:
    return {s["method"].lower(): s for s in summary if s["case"] == case and s["method"] != INPUT}


def ordering_checks(summary: list[dict], case: str) -> list[dict]:
    """The paper's claims checked on ``case``: ``[{"claim", "holds", "values"}]`` (claims whose methods
    are all present only)."""
    m = _by_method(summary, case)
    niqe = {k: m[k]["niqe"] for k in m}
    structure = {k: (m[k]["lassim_in_out_2"] + m[k]["lassim_in_out_3"]) / 2 for k in m}
    claims = []
    if {"cyclegan", "lamegan"} <= set(m):
        claims.append(("quality: CycleGAN >= LaMEGAN (NIQE, lower is better)", niqe["cyclegan"] <= niqe["lamegan"]))
        claims.append(
            ("structure: LaMEGAN > CycleGAN (mean LaSSIM(in, out) at levels 2-3)",
             structure["lamegan"] > structure["cyclegan"])
        )  # fmt: skip
    for other in ("stillgan", "miinet"):
        if {"lamegan", other} <= set(m):
            name = PAPER_NAMES[other]
            claims.append((f"quality: LaMEGAN > {name} (NIQE)", niqe["lamegan"] < niqe[other]))
    values = {k: {"niqe": round(niqe[k], 3), "structure": round(structure[k], 3)} for k in m}
    return [{"claim": c, "holds": bool(h), "values": values} for c, h in claims]


def save_methods_figure(result: dict, case: str, path: str | Path) -> Path:
    """The first example slice of ``case`` through every method: input, output, clean, LaSSIM(in, out)."""
    from napari_uspmie.io.figures import save_comparison_grid
    from napari_uspmie.metric.lassim import lassim_map

    group, name, inp, outputs, clean = result["examples"][case][0]
    rows = []
    for method, out in outputs.items():
        if method != INPUT:
            rows.append((method, [inp, out, clean], lassim_map(out, inp, level=LEVEL)))
    columns = ["input", "output", "clean", f"LaSSIM(input, output), level {LEVEL}"]
    return save_comparison_grid(rows, columns, path, title=f"{case}: {group} {name}", overwrite=True)


def comparison_markdown(summary: list[dict], skipped: dict[str, str]) -> str:
    """The comparison section: tables of cases a and b, the ordering checks, BRISQUE and skipped methods."""
    lines = [
        "Means over held-out slices. LaSSIM(in, out) is the paper's structure (originality) proxy; SSIM, PSNR "
        f"and LaSSIM(out, clean) (level {LEVEL}) need the clean image, which these cases have.",
    ]
    for key in "ab":
        case = CASES[key]
        lines += ["", *paper_table(summary, case), "", f"Paper's claims on {case}:", ""]
        checks = ordering_checks(summary, case)
        lines += [f"- {c['claim']}: {'holds' if c['holds'] else 'does NOT hold'}" for c in checks] or ["- (none)"]
    lines += ["", BRISQUE_NOTE]
    for method, reason in skipped.items():
        lines.append(f"\nNot trained: {method}: {reason}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``compare-methods DATASET --model NAME=PATH ... [--skipped NAME=REASON] --out comparison.md``."""
    parser = evaluation_arguments(argparse.ArgumentParser(prog="compare-methods", description=__doc__.splitlines()[0]))
    parser.add_argument("--skipped", action="append", default=[], metavar="NAME=REASON", help="a method not trained")
    args = parser.parse_args(argv)
    gens = load_generators(parser, args)
    skipped = dict(s.partition("=")[::2] for s in args.skipped)
    result = evaluate(args.dataset_dir, gens, every=args.every)
    summary = summarize(result)
    text = comparison_markdown(summary, skipped) + "\n## Every case and the structure guard\n\n"
    text += format_markdown(summary, result)
    print(text)
    if args.out:  # a rerun replaces its own report, through a temporary name
        out = Path(args.out)
        with staged_output(out, overwrite=True) as tmp:
            tmp.write_text(text)
        if gens:
            save_methods_figure(result, CASES["a"], out.with_name(out.stem + "_slice.png"))
        result.pop("examples")
        checks = {CASES[k]: ordering_checks(summary, CASES[k]) for k in "ab"}
        payload = {**result, "summary": summary, "claims": checks, "skipped": skipped}
        with staged_output(out.with_suffix(".json"), overwrite=True) as tmp:
            tmp.write_text(json.dumps(payload, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
