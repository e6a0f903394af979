"""Report of the LaSSIM validation experiment: CSV tables, Jensen-Shannon divergences, plots.

The divergence between the score distributions ``f(GT, blur)`` and ``f(GT, deform+blur)`` is
computed from Gaussian kernel density estimates (Scott's bandwidth) on a shared grid, in
bits, so it lies in ``[0, 1]``: 0 for identical distributions, 1 for disjoint ones.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_uspmie.io.atomic import check_output_folder, staged_output
from napari_uspmie.io.figures import kde_density, save_density_grid

__all__ = ["LEVEL_NAMES", "REPORT_FILES", "jensen_shannon", "is_report_file", "write_report"]

METRICS = ("ssim", "lassim")
METRIC_LABELS = {"ssim": "SSIM", "lassim": "LaSSIM"}
#: Low / medium / high, by position in the settings (the paper's names).
LEVEL_NAMES = ("L", "M", "H")
#: What a report folder holds; ``--overwrite`` replaces a folder that holds nothing else.
REPORT_FILES = ("scores.csv", "jsd.csv", "report.md", "density_Mdef_Hblur.png", "density_grid.png")


def jensen_shannon(a: np.ndarray, b: np.ndarray, points: int = 2048) -> float:
    """Jensen-Shannon divergence (base 2) between the densities of samples ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    both = np.concatenate([a, b])
    spread = max(float(both.std()), 1e-4)
    grid = np.linspace(both.min() - 4 * spread, both.max() + 4 * spread, points)
    p, q = kde_density(a, grid), kde_density(b, grid)
    p, q = p / p.sum(), q / q.sum()

    def kl_to_mixture(u: np.ndarray, v: np.ndarray) -> float:
        # u / m written as 2u / (u + v): the mixture m = (u + v) / 2 itself underflows to 0 where u
        # is the smallest subnormal and v is 0, which made the ratio infinite and the divergence 1.
        keep = u > 0
        return float(np.sum(u[keep] * np.log2(2 * u[keep] / (u[keep] + v[keep]))))

    return float(np.clip(0.5 * kl_to_mixture(p, q) + 0.5 * kl_to_mixture(q, p), 0.0, 1.0))


def _level_name(index: int, count: int) -> str:
    return LEVEL_NAMES[index] if count == len(LEVEL_NAMES) else str(index + 1)


def is_report_file(path: Path) -> bool:
    """Whether ``path`` is a file that :func:`write_report` writes (an earlier report's, in its folder)."""
    return path.name in REPORT_FILES


def write_report(
    out_dir: str | Path,
    names: Sequence[str],
    results: Sequence[dict[str, np.ndarray]],
    skipped: Sequence[tuple[str, str]],
    blur_sizes: Sequence[int],
    alphas: Sequence[float],
    settings: dict,
    overwrite: bool = False,
) -> dict:
    """Write ``scores.csv``, ``jsd.csv``, ``report.md`` and the density plots into ``out_dir``.

    The folder is written under a temporary name and renamed into place: an existing folder is
    filled only when empty, and replaced only with ``overwrite`` when it holds an earlier report alone.

    Args:
        out_dir: report folder (created).
        names: image names, one per result.
        results: outputs of :func:`napari_uspmie.research.lassim_validation.score_image`.
        skipped: ``(name, reason)`` of images left out.
        blur_sizes, alphas: the settings' axes.
        settings: run settings shown in the report (size, level, seed, sigma).
        overwrite: replace an earlier report in ``out_dir``.

    Returns:
        Summary dict: ``images``, ``skipped``, ``jsd`` (rows), ``table`` (Markdown) and ``files``.

    Raises:
        ImageWriteError: ``out_dir`` is a file, holds other files, or cannot be written.
    """
    out = Path(out_dir)
    replace = check_output_folder(out, "lassim-experiment", overwrite, is_report_file)
    with staged_output(out, folder=True, overwrite=replace, written_by_package=is_report_file) as tmp:
        summary = _write_files(tmp, names, results, skipped, blur_sizes, alphas, settings)
    summary["files"] = {key: out / path.name for key, path in summary["files"].items()}
    return summary


def _write_files(
    out: Path,
    names: Sequence[str],
    results: Sequence[dict[str, np.ndarray]],
    skipped: Sequence[tuple[str, str]],
    blur_sizes: Sequence[int],
    alphas: Sequence[float],
    settings: dict,
) -> dict:
    """The report's files, written into the (temporary) folder ``out``; arguments as :func:`write_report`."""
    stacked = {key: np.stack([r[key] for r in results]) for key in results[0]}
    nb, na = len(blur_sizes), len(alphas)

    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["image", "blur", "alpha", "ssim_blur", "ssim_deform_blur", "lassim_blur", "lassim_deform_blur"]
        )
        for i, name in enumerate(names):
            for ia, alpha in enumerate(alphas):
                for ib, k in enumerate(blur_sizes):
                    writer.writerow(
                        [name, k, alpha]
                        + [
                            f"{stacked[f'{m}_{kind}'][(i, ib) if kind == 'blur' else (i, ia, ib)]:.6f}"
                            for m in METRICS
                            for kind in ("blur", "deform_blur")
                        ]
                    )

    rows = []
    for ia, alpha in enumerate(alphas):
        for ib, k in enumerate(blur_sizes):
            row = {"deformation": _level_name(ia, na), "alpha": alpha, "blur_level": _level_name(ib, nb), "blur": k}
            for m in METRICS:
                blur = stacked[f"{m}_blur"][:, ib]
                deform = stacked[f"{m}_deform_blur"][:, ia, ib]
                row[f"{m}_mean_blur"] = float(blur.mean())
                row[f"{m}_mean_deform_blur"] = float(deform.mean())
                row[f"{m}_separated"] = float(np.mean(blur > deform))
                row[f"{m}_jsd"] = jensen_shannon(blur, deform)
            rows.append(row)
    with open(out / "jsd.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: f"{v:.6f}" if isinstance(v, float) and k != "alpha" else f"{v:g}" if k == "alpha" else v
                    for k, v in row.items()
                }
            )

    table = _markdown_table(rows)
    panels, main_panels = [], []
    for m in METRICS:
        for ia, alpha in enumerate(alphas):
            for ib, k in enumerate(blur_sizes):
                row = rows[ia * nb + ib]
                panel = {
                    "blur": stacked[f"{m}_blur"][:, ib],
                    "deform_blur": stacked[f"{m}_deform_blur"][:, ia, ib],
                    "title": f"{METRIC_LABELS[m]}  alpha {alpha:g}, blur {k}  (JSD {row[f'{m}_jsd']:.3f})",
                    "xlabel": METRIC_LABELS[m],
                }
                panels.append(panel)
                if ia == min(1, na - 1) and ib == nb - 1:  # the paper's panel: medium deformation, high blur
                    main_panels.append(panel)
    # Grid: one row per deformation level; SSIM columns, then LaSSIM columns.
    grid_order = [panels[mi * na * nb + ia * nb + ib] for ia in range(na) for mi in range(2) for ib in range(nb)]
    n = len(names)
    files = {
        "scores": out / "scores.csv",
        "jsd": out / "jsd.csv",
        "main_plot": save_density_grid(
            main_panels,
            out / "density_Mdef_Hblur.png",
            ncols=2,
            panel_size=(4.4, 3.0),
            title=f"f(GT, blur) vs f(GT, deform+blur), {n} images",
        ),
        "grid_plot": save_density_grid(
            grid_order,
            out / "density_grid.png",
            ncols=2 * nb,
            panel_size=(3.3, 2.3),
            dpi=80,
            title=f"SSIM (left) and LaSSIM (right), {n} images; rows: alpha {', '.join(f'{a:g}' for a in alphas)}",
        ),
        "report": out / "report.md",
    }
    lines = [
        "# LaSSIM validation experiment",
        "",
        f"{n} images, resized to {settings['size']}x{settings['size']}; LaSSIM level {settings['level']}; "
        f"elastic sigma {settings['sigma']:g}; seed {settings['seed']}.",
        "Blur: box filter k x k. Deformation: elastic transform of strength alpha, then the same blur.",
        "JSD: Jensen-Shannon divergence (bits) between the densities of f(GT, blur) and f(GT, deform+blur);",
        "separated: share of images with f(GT, blur) > f(GT, deform+blur).",
        "",
        table,
        "",
        "![medium deformation, high blur](density_Mdef_Hblur.png)",
        "",
        "![all settings](density_grid.png)",
        "",
    ]
    if skipped:
        lines += ["## Skipped files", ""] + [f"- `{name}`: {reason}" for name, reason in skipped] + [""]
    files["report"].write_text("\n".join(lines))
    return {"images": list(names), "skipped": list(skipped), "jsd": rows, "table": table, "files": files}


def _markdown_table(rows: Sequence[dict]) -> str:
    head = (
        "| deformation (alpha) | blur (k) | JSD SSIM | JSD LaSSIM | SSIM blur / deform+blur | "
        "LaSSIM blur / deform+blur | separated SSIM | separated LaSSIM |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['deformation']} ({r['alpha']:g}) | {r['blur_level']} ({r['blur']}) | {r['ssim_jsd']:.3f} | "
            f"{r['lassim_jsd']:.3f} | {r['ssim_mean_blur']:.4f} / {r['ssim_mean_deform_blur']:.4f} | "
            f"{r['lassim_mean_blur']:.4f} / {r['lassim_mean_deform_blur']:.4f} | {100 * r['ssim_separated']:.0f}% | "
            f"{100 * r['lassim_separated']:.0f}% |"
        )
    return "\n".join(lines)
