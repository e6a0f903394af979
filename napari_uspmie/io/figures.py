"""Figures for the command line: LaSSIM heatmap overlays and score density plots.

Uses matplotlib's object API (``Figure`` + Agg canvas), never ``pyplot``: no GUI backend is
selected, so the figures render the same on headless machines and beside a running Qt app.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from napari_uspmie.io.atomic import staged_output
from napari_uspmie.io.heatmap import HEATMAP_RANGE, heatmap_cmap
from napari_uspmie.io.intensity import DEFAULT_PERCENTILES
from napari_uspmie.metric.luma import GRAY_WEIGHTS

__all__ = ["display_gray", "save_heatmap_overlay", "save_comparison_grid", "kde_density", "save_density_grid"]

#: Colours of the two distributions in density plots.
BLUR_COLOR = "tab:blue"
DEFORM_COLOR = "tab:red"


def display_gray(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` image to a gray ``(H, W)`` array in ``[0, 1]`` for display.

    RGB uses the luma weights LaSSIM uses (:data:`napari_uspmie.metric.luma.GRAY_WEIGHTS`); the intensity
    window is the :data:`~napari_uspmie.io.intensity.DEFAULT_PERCENTILES` range, robust to a few extreme pixels.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[-1] >= 3:
        arr = arr[..., :3] @ np.asarray(GRAY_WEIGHTS)
    elif arr.ndim == 3:
        arr = arr[..., 0]
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape[:2])
    lo, hi = np.percentile(finite, DEFAULT_PERCENTILES)
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    return np.clip((arr - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros(arr.shape[:2])


def _save(fig: Figure, out_path: str | os.PathLike, overwrite: bool) -> Path:
    """Render through a temporary file beside ``out_path``, then rename: no half-written PNGs."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    with staged_output(out, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png")
    return out


def save_heatmap_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    out_path: str | os.PathLike,
    title: str | None = None,
    alpha: float = 0.45,
    overwrite: bool = False,
) -> Path:
    """Draw a LaSSIM heatmap, translucent, over the gray image, with a colour bar.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` image.
        heatmap: ``(H, W)`` map (SSIM values, 1 = structure kept, low = changed).
        out_path: PNG (or any format matplotlib writes) to create; folders are created.
        title: figure title, e.g. the score.
        alpha: opacity of the heatmap, drawn in the package's one heatmap colour map over its
            fixed range (:mod:`napari_uspmie.io.heatmap`).
        overwrite: replace an existing file at ``out_path``.

    Returns:
        The written path.

    Raises:
        ValueError: when the image and the heatmap differ in size.
    """
    gray = display_gray(image)
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != gray.shape:
        raise ValueError(f"heatmap of shape {heat.shape} does not match the image's {gray.shape}.")
    h, w = gray.shape
    width = 7.0
    fig = Figure(figsize=(width, max(2.5, width * h / w * 0.85)), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    lo, hi = HEATMAP_RANGE
    shown = ax.imshow(heat, cmap=heatmap_cmap(), alpha=alpha, vmin=lo, vmax=hi, interpolation="bilinear")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    bar = fig.colorbar(shown, ax=ax, shrink=0.85)
    bar.set_label("LaSSIM map (low = structure changed)")
    return _save(fig, out_path, overwrite)


def kde_density(samples: np.ndarray, grid: np.ndarray, bandwidth: float | None = None) -> np.ndarray:
    """Gaussian kernel density estimate of 1-D ``samples`` on ``grid`` (integrates to ~1).

    Args:
        samples: 1-D values.
        grid: points where the density is evaluated.
        bandwidth: kernel standard deviation; default Scott's rule ``std * n ** (-1/5)``,
            never below ``1e-4`` (a sample of equal values then gives a narrow spike).

    Returns:
        Density values, same shape as ``grid``.
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        return np.zeros_like(grid, dtype=np.float64)
    if bandwidth is None:
        bandwidth = float(np.std(x, ddof=1)) * x.size ** (-0.2) if x.size > 1 else 0.0
    bandwidth = max(bandwidth, 1e-4)
    z = (np.asarray(grid, dtype=np.float64)[:, None] - x[None, :]) / bandwidth
    return np.exp(-0.5 * z * z).sum(axis=1) / (x.size * bandwidth * np.sqrt(2 * np.pi))


def save_density_grid(
    panels: Sequence[Mapping],
    out_path: str | os.PathLike,
    ncols: int,
    title: str | None = None,
    panel_size: tuple[float, float] = (3.6, 2.6),
    dpi: int = 90,
    overwrite: bool = False,
) -> Path:
    """Density plots of ``f(GT, blur)`` against ``f(GT, deform+blur)``, one panel per setting.

    Args:
        panels: per panel a mapping with ``"blur"`` and ``"deform_blur"`` (1-D score arrays),
            ``"title"`` and optionally ``"xlabel"``.
        out_path: PNG to write.
        ncols: panels per row.
        title: figure title.
        panel_size: inches per panel.
        dpi: resolution.
        overwrite: replace an existing file at ``out_path``.

    Returns:
        The written path.
    """
    nrows = -(-len(panels) // ncols)
    width, height = panel_size[0] * ncols, panel_size[1] * nrows + 0.5
    fig = Figure(figsize=(width, height), dpi=dpi)
    # Fixed margins (in inches, converted to figure fractions): constrained layout costs seconds on big grids.
    fig.subplots_adjust(
        left=0.25 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.75 / height, wspace=0.12, hspace=0.75
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        a = np.asarray(panel["blur"], dtype=np.float64)
        b = np.asarray(panel["deform_blur"], dtype=np.float64)
        both = np.concatenate([a, b])
        lo, hi = float(both.min()), float(both.max())
        pad = max(0.1 * (hi - lo), 1e-3)
        grid = np.linspace(lo - pad, hi + pad, 400)
        for values, color, label in ((a, BLUR_COLOR, "GT vs blur"), (b, DEFORM_COLOR, "GT vs deform+blur")):
            density = kde_density(values, grid)
            ax.fill_between(grid, density, color=color, alpha=0.35, linewidth=0)
            ax.plot(grid, density, color=color, linewidth=1.2, label=label)
            ax.plot(values, np.zeros_like(values), "|", color=color, markersize=6, alpha=0.6)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel(panel.get("xlabel", "score"), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in axes.ravel()[len(panels) :]:
        ax.set_axis_off()
    axes.ravel()[0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, out_path, overwrite)


def save_comparison_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray], np.ndarray]],
    columns: Sequence[str],
    out_path: str | os.PathLike,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Rows of grey images side by side, each row ending with its LaSSIM heatmap, one colour bar.

    Grey panels are shown at ``[0, 1]`` as they are (no window: an output darker than its input
    looks darker); heatmaps in the package's one colour map over its fixed range.

    Args:
        rows: ``(label, images, heatmap)`` per row; every row has ``len(columns) - 1`` images.
        columns: column titles, the heatmap's last.
        out_path: PNG to create.
        title: figure title.
        overwrite: replace an existing file.

    Returns:
        The written path.
    """
    n_cols = len(columns)
    fig = Figure(figsize=(2.6 * n_cols + 0.8, 2.7 * len(rows) + 0.5), dpi=110, layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    lo, hi = HEATMAP_RANGE
    shown = None
    for r, (label, images, heat) in enumerate(rows):
        for c, image in enumerate([*images, heat]):
            ax = axes[r][c]
            if c < n_cols - 1:
                ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                shown = ax.imshow(heat, cmap=heatmap_cmap(), vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
        axes[r][0].set_ylabel(label, fontsize=8)
    if shown is not None:
        fig.colorbar(shown, ax=axes[:, -1].tolist(), shrink=0.8, label="LaSSIM map (low = structure changed)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out_path, overwrite)
