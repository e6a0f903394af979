"""Evaluate enhancers on the held-out MRI data written by :mod:`napari_uspmie.research.mri_dataset`.

For every held-out slice (and every axial slice with brain of each held-out volume) and every
method (the degraded input itself, then each generator), the table reports:

* **SSIM to clean** and **PSNR to clean** (dB): full-reference, intensities in ``[0, 1]``
  (data range 1; SSIM with scikit-image's default 7 x 7 uniform window and sample covariance);
* **SSIM up**: fraction of slices where the method's SSIM to clean beats the degraded input's;
* **LaSSIM(in, out)**: LaSSIM between the degraded input and the output, the paper's
  no-reference structure-preservation measure;
* **LaSSIM(out, clean)**: LaSSIM against the clean slice, which synthetic pairs allow: structure
  restored rather than invented;
* **NIQE** (lower is better) against the pristine model fitted on the clean training slices.

LaSSIM is computed at Laplacian level :data:`LEVEL` (2) of a 5-level pyramid: the slices are about
200 pixels wide (1 mm brain MRI), so level 2 (a band at 1/4 resolution, structures of 4-8 px) is
the band the paper's level 3 covers on its 480-pixel-wide images, and level 3 would leave a 25 x 30
band too small for the held-out volumes of 66 x 82 pixels. Volume metrics are per-slice means.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from napari_uspmie.inference.checkpoint import load_generator
from napari_uspmie.metric.lassim import lassim, ssim_map
from napari_uspmie.research.mri_dataset import MIN_FOREGROUND, get_slice
from napari_uspmie.research.niqe import NIQEModel, load_gray

__all__ = ["LEVEL", "enhance_slice", "slice_metrics", "evaluate", "format_markdown", "main"]

LEVEL = 2
METRICS = ("ssim", "psnr", "lassim_in_out", "lassim_out_clean", "niqe")


@torch.no_grad()
def enhance_slice(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Run a generator on a ``[0, 1]`` slice: scale to ``[-1, 1]``, reflect-pad to a multiple of 4, crop back."""
    h, w = image.shape
    ph, pw = (-h) % 4, (-w) % 4
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) * 2 - 1)[None, None]
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
    y = net(x)[0, 0, :h, :w].numpy()
    return np.clip((y.astype(np.float64) + 1) / 2, 0, 1)


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    t = torch.from_numpy(np.stack([x, y]).astype(np.float64))[:, None]
    return float(ssim_map(t[:1], t[1:], torch.ones(1, dtype=torch.float64)).mean())


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def slice_metrics(output: np.ndarray, degraded: np.ndarray, clean: np.ndarray, niqe_model: NIQEModel | None) -> dict:
    """All per-slice metrics of one method's ``output`` (see the module docstring)."""
    m = {
        "ssim": _ssim(output, clean),
        "psnr": _psnr(output, clean),
        "lassim_in_out": lassim(output, degraded, level=LEVEL),
        "lassim_out_clean": lassim(output, clean, level=LEVEL),
        "niqe": float("nan"),
    }
    if niqe_model is not None:
        try:
            m["niqe"] = niqe_model.score(output)
        except ValueError:
            pass  # too small or flat for NIQE patches: left out of the mean
    return m


def _unit_array(array: np.ndarray) -> np.ndarray:
    """8-bit data to ``[0, 1]`` by 255 (as in training); float data is taken as already in ``[0, 1]``."""
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float64) / np.iinfo(array.dtype).max
    return np.clip(array.astype(np.float64), 0, 1)


def _heldout_items(dataset_dir: Path):
    """Yield ``(group, name, degraded, clean)`` for held-out slices and axial slices of held-out volumes."""
    clean_dir = dataset_dir / "heldout" / "slices" / "clean"
    for path in sorted(clean_dir.glob("*.png")):
        group = "MNI152 held-out slices" if path.name.startswith("mni_") else "other-subject slices"
        yield group, path.stem, load_gray(dataset_dir / "heldout/slices/degraded" / path.name), load_gray(path)
    for path in sorted((dataset_dir / "heldout" / "volumes").glob("*_clean.nii.gz")):
        name = path.name[: -len("_clean.nii.gz")]
        clean = _unit_array(np.asanyarray(nib.load(str(path)).dataobj))
        degraded = _unit_array(np.asanyarray(nib.load(str(path.with_name(f"{name}_degraded.nii.gz"))).dataobj))
        for k in range(clean.shape[2]):
            c = get_slice(clean, "axial", k)
            if (c > 0.1).mean() >= MIN_FOREGROUND:
                yield f"held-out volume {name}", f"{name}_z{k:03d}", get_slice(degraded, "axial", k), c


def evaluate(
    dataset_dir: str | Path,
    generators: dict[str, torch.nn.Module | Callable[[np.ndarray], np.ndarray]],
    niqe_model: NIQEModel | None = None,
    every: int = 1,
) -> dict:
    """Per-slice metrics of the degraded input and of each generator on all held-out data.

    Args:
        dataset_dir: folder written by :func:`napari_uspmie.research.mri_dataset.build_mri_dataset`.
        generators: method name -> A->B generator (or any ``[0, 1]`` slice -> slice callable).
        niqe_model: pristine model; default ``dataset_dir/niqe_pristine.npz`` when it exists.
        every: use every ``every``-th held-out item only (quick checks); 1 uses all.

    Returns:
        ``{"rows": [{"group", "name", "method", **metrics}, ...], "level": LEVEL}``.
    """
    dataset_dir = Path(dataset_dir)
    if niqe_model is None and (dataset_dir / "niqe_pristine.npz").exists():
        niqe_model = NIQEModel.load(dataset_dir / "niqe_pristine.npz")
    rows = []
    for k, (group, name, degraded, clean) in enumerate(_heldout_items(dataset_dir)):
        if k % every:
            continue
        rows.append({"group": group, "name": name, "method": "degraded input"})
        rows[-1].update(slice_metrics(degraded, degraded, clean, niqe_model))
        for method, gen in generators.items():
            out = enhance_slice(gen, degraded) if isinstance(gen, torch.nn.Module) else gen(degraded)
            rows.append({"group": group, "name": name, "method": method})
            rows[-1].update(slice_metrics(out, degraded, clean, niqe_model))
    return {"rows": rows, "level": LEVEL}


def summarize(result: dict) -> list[dict]:
    """Mean of each metric per (group, method), plus the fraction of slices whose SSIM rose."""
    rows = result["rows"]
    base = {(r["group"], r["name"]): r["ssim"] for r in rows if r["method"] == "degraded input"}
    groups = list(dict.fromkeys(["all held-out slices"] + [r["group"] for r in rows]))
    out = []
    for group in groups:
        pooled = group == "all held-out slices"
        sel = [r for r in rows if r["group"] == group or (pooled and "volume" not in r["group"])]
        for method in dict.fromkeys(r["method"] for r in sel):
            ms = [r for r in sel if r["method"] == method]
            s = {"group": group, "method": method, "n": len(ms)}
            for key in METRICS:
                vals = np.array([r[key] for r in ms], dtype=np.float64)
                s[key] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
            s["ssim_up"] = float(np.mean([r["ssim"] > base[(r["group"], r["name"])] for r in ms]))
            out.append(s)
    return out


def format_markdown(summary: list[dict], level: int = LEVEL) -> str:
    """Markdown table of :func:`summarize` output."""
    lines = [
        f"LaSSIM at Laplacian level {level} of a 5-level pyramid. Means over slices; "
        "SSIM up = share of slices whose SSIM to clean beats the degraded input's. NIQE: lower is better.",
        "",
        "| data | method | n | SSIM to clean | PSNR to clean (dB) | SSIM up | LaSSIM(in, out) "
        "| LaSSIM(out, clean) | NIQE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        up = "-" if s["method"] == "degraded input" else f"{100 * s['ssim_up']:.0f}%"
        lines.append(
            f"| {s['group']} | {s['method']} | {s['n']} | {s['ssim']:.3f} | {s['psnr']:.2f} | {up} | "
            f"{s['lassim_in_out']:.3f} | {s['lassim_out_clean']:.3f} | {s['niqe']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_uspmie.research.evaluation DATASET_DIR --model NAME=PATH ... [--out table.md]``."""
    parser = argparse.ArgumentParser(prog="evaluate-mri", description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="generator to evaluate")
    parser.add_argument("--out", help="write the Markdown table here (and per-slice JSON beside it)")
    parser.add_argument("--every", type=int, default=1, help="evaluate every N-th held-out slice only")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    gens = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"--model expects NAME=PATH, got {spec!r}")
        gens[name] = load_generator(path)[0]
    result = evaluate(args.dataset_dir, gens, every=args.every)
    table = format_markdown(summarize(result), result["level"])
    print(table)
    if args.out:
        Path(args.out).write_text(table)
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
