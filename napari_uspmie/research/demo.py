"""One-command demonstration of the shipped model on a held-out MRI volume.

``python -m napari_uspmie.research.demo OUT_DIR``:

1. takes a T1 volume (``--subject``, see :data:`SUBJECTS`), resampled to 1 mm like the training
   data, degrades it with the documented acquisition model
   (:func:`napari_uspmie.research.acquisition.degrade_volume`, fixed seed) and writes
   ``OUT_DIR/input/<subject>_degraded.nii.gz`` (and the clean reference under ``reference/``);
2. enhances it through the bundle's ``configs/inference.json`` with the shipped
   ``models/model.pt`` (``OUT_DIR/enhanced/<subject>_degraded_enhanced.nii.gz``, same geometry);
3. writes ``OUT_DIR/demo_figure.png`` (degraded / enhanced / clean / LaSSIM heatmap of the middle
   axial slice) and ``OUT_DIR/report.md`` + ``report.json``: SSIM and PSNR to the clean volume
   before and after, LaSSIM(input, output), LaSSIM(output, clean) and NIQE, per-slice means.

``OUT_DIR`` must be new or empty: everything is written under a temporary name beside it and
renamed into place at the end, so an interrupted run leaves no half-written demo behind.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from napari_uspmie.errors import ImageReadError
from napari_uspmie.inference.enhancer import pick_device
from napari_uspmie.io.atomic import check_output_folder, staged_output
from napari_uspmie.io.packaged_data import MNI152_T1, bundle_path, package_file
from napari_uspmie.research.acquisition import degrade_volume
from napari_uspmie.research.evaluation import LEVEL, slice_metrics
from napari_uspmie.research.mri_dataset import HELD_OUT_VOLUMES, get_slice, load_unit_volume
from napari_uspmie.research.niqe import NIQEModel
from napari_uspmie.research.training_subjects import MIN_FOREGROUND

__all__ = ["DEMO_SEED", "SUBJECTS", "prepare_demo_volume", "run_demo", "main"]

DEMO_SEED = 2024
#: Demo volumes: name -> (package, file, description). ``aniso_vox`` and ``anatomical`` are
#: subjects the model never saw; ``mni`` is the template whose other slices it was trained on
#: (only its 3D degradation draw is new).
SUBJECTS = {
    "aniso_vox": (
        *HELD_OUT_VOLUMES["dipy_aniso_vox"],
        "held-out subject: dipy aniso_vox.nii.gz, T2-weighted head, 4 x 4 x 5 mm",
    ),
    "anatomical": (
        *HELD_OUT_VOLUMES["nibabel_anatomical"],
        "held-out subject: nibabel anatomical.nii, T1, 2 mm, cropped field of view",
    ),
    "mni": (*MNI152_T1, "MNI152 T1 template (the training anatomy, new 3D degradation)"),
}
DEFAULT_SUBJECT = "aniso_vox"


def prepare_demo_volume(
    out_dir: str | Path, subject: str = DEFAULT_SUBJECT, seed: int = DEMO_SEED
) -> tuple[Path, Path]:
    """Write the degraded volume (``input/``) and its clean reference (``reference/``).

    Returns:
        ``(degraded_path, clean_path)``.

    Raises:
        ValueError: unknown subject, or its package is not installed.
    """
    if subject not in SUBJECTS:
        raise ValueError(f"unknown demo subject {subject!r}; choose one of {sorted(SUBJECTS)}.")
    source = package_file(*SUBJECTS[subject][:2])
    if source is None:
        raise ValueError(f"demo subject {subject!r} needs the {SUBJECTS[subject][0]} package; install it.")
    out = Path(out_dir)
    clean, affine = load_unit_volume(source)
    clean = np.rint(clean * 255).astype(np.uint8)
    degraded = degrade_volume(clean, seed=seed)
    paths = (out / "input" / f"{subject}_degraded.nii.gz", out / "reference" / f"{subject}_clean.nii.gz")
    for path, vol in zip(paths, (degraded, clean), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(vol, affine)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(path))
    return paths


def _run_bundle(bundle: Path, input_dir: Path, output_dir: Path, device: torch.device) -> None:
    from monai.bundle import run

    # MONAI evaluates override strings starting with "$" as Python and resolves "%" and "@" ones:
    # absolute paths start with none of them, and the device goes in as an object, never as text.
    run(
        config_file=str((bundle / "configs" / "inference.json").absolute()),
        bundle_root=str(bundle.absolute()),
        dataset_dir=str(input_dir.absolute()),
        output_dir=str(output_dir.absolute()),
        device=device,
    )


def _relocate_case_table(table: Path, staged: Path, out: Path) -> None:
    """Make the bundle's case table name where its outputs end up: it ran in the staged folder."""
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    staged_name, final_name = str(staged.absolute()), str(out.absolute())
    for row in rows:
        if row.get("output", "").startswith(staged_name):
            row["output"] = final_name + row["output"][len(staged_name) :]
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        writer.writerows(rows)


def _device_option(text: str) -> torch.device:
    """``--device``: a device this machine has (``auto`` picks one), refused at parse time otherwise."""
    try:
        return pick_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _check_bundle(bundle: Path) -> None:
    """Refuse, before any work, a ``--bundle`` folder without an inference config."""
    if not (bundle / "configs" / "inference.json").is_file():
        raise ImageReadError(
            f"{bundle}: not a MONAI bundle (no configs/inference.json); give --bundle a bundle folder, "
            "or leave it out to use the shipped model."
        )


def _figure(path: Path, degraded: np.ndarray, enhanced: np.ndarray, clean: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_uspmie.io.heatmap import heatmap_cmap
    from napari_uspmie.metric.lassim import lassim_map

    heat, score = lassim_map(enhanced, degraded, level=LEVEL, return_score=True)
    panels = [
        ("degraded input", degraded, "gray"),
        ("enhanced (LaMEGAN)", enhanced, "gray"),
        ("clean reference", clean, "gray"),
        (f"LaSSIM(input, output) = {score:.3f}", heat, heatmap_cmap()),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 4))
    for ax, (title, img, cmap) in zip(axes, panels, strict=True):
        shown = ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.colorbar(shown, ax=axes[-1], shrink=0.8, label="LaSSIM map (red = changed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(
    out_dir: str | Path,
    bundle_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    subject: str = DEFAULT_SUBJECT,
) -> dict:
    """Degrade, enhance through the bundle, and report (see the module docstring).

    Args:
        out_dir: output folder, new or empty (written under a temporary name, then renamed).
        bundle_dir: MONAI bundle to use; default the shipped one.
        device: torch device for the bundle run (``"auto"``: CUDA, MPS or CPU).
        subject: demo volume, a key of :data:`SUBJECTS`.

    Returns:
        The report dictionary (also written to ``report.json``).

    Raises:
        ValueError: a device this machine lacks, no bundle at ``bundle_dir``, ``out_dir`` not a
            new or empty folder (all checked before any work), or an unknown subject.
    """
    out = Path(out_dir)
    bundle = Path(bundle_dir) if bundle_dir else bundle_path()
    chosen = pick_device(device)
    _check_bundle(bundle)
    replace_empty = check_output_folder(out, "demo")
    with staged_output(out, folder=True, overwrite=replace_empty) as tmp:
        return _write_demo(tmp, out, bundle, chosen, subject)


def _mean_where_defined(values: list[float]) -> float | None:
    """Mean over the slices where a metric is defined (NaN elsewhere); ``None`` (JSON null) if on none.

    NIQE without a model, or the dark-area change where no slice has dark area, is defined nowhere:
    ``np.nanmean`` warned and wrote ``NaN``, which strict JSON readers refuse.
    """
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else None


def _write_demo(staged: Path, out: Path, bundle: Path, device: torch.device, subject: str) -> dict:
    """The demo's files, written into ``staged``; the report names their final place in ``out``."""
    degraded_path, clean_path = prepare_demo_volume(staged, subject)
    _run_bundle(bundle, degraded_path.parent, staged / "enhanced", device)
    _relocate_case_table(staged / "enhanced" / "enhancement_cases.csv", staged, out)
    enhanced_path = staged / "enhanced" / f"{subject}_degraded_enhanced.nii.gz"
    vols = [np.asanyarray(nib.load(str(p)).dataobj).astype(np.float64) / 255.0 for p in (degraded_path, enhanced_path)]
    clean = np.asanyarray(nib.load(str(clean_path)).dataobj).astype(np.float64) / 255.0
    niqe_path = bundle / "models" / "niqe_pristine.npz"
    niqe_model = NIQEModel.load(niqe_path) if niqe_path.exists() else None
    rows: dict[str, list[dict]] = {"degraded input": [], "enhanced": []}
    slices = [k for k in range(clean.shape[2]) if (get_slice(clean, "axial", k) > 0.1).mean() >= MIN_FOREGROUND]
    for k in slices:
        d, e, c = (get_slice(v, "axial", k) for v in (*vols, clean))
        rows["degraded input"].append(slice_metrics(d, d, c, niqe_model))
        rows["enhanced"].append(slice_metrics(e, d, c, niqe_model))
    report = {
        "subject": subject,
        "description": SUBJECTS[subject][2],
        "input": str(out / degraded_path.relative_to(staged)),
        "output": str(out / enhanced_path.relative_to(staged)),
        "level": LEVEL,
        "slices": len(slices),
        "metrics": {
            name: {key: _mean_where_defined([r[key] for r in rs]) for key in rs[0]} for name, rs in rows.items()
        },
        "ssim_improved_fraction": float(
            np.mean([e["ssim"] > d["ssim"] for d, e in zip(rows["degraded input"], rows["enhanced"], strict=True)])
        ),
    }
    mid = slices[len(slices) // 2]
    _figure(staged / "demo_figure.png", *(get_slice(v, "axial", mid) for v in (*vols, clean)))
    (staged / "report.json").write_text(json.dumps(report, indent=1))
    m = report["metrics"]
    lines = [
        f"# Enhancement demo: {SUBJECTS[subject][2]}",
        "",
        f"Input `{degraded_path.name}` (degraded, seed {DEMO_SEED}), output `{enhanced_path.name}`; "
        f"{len(slices)} axial slices with brain; LaSSIM at level {LEVEL}; NIQE lower is better.",
        "",
        "| | SSIM to clean | PSNR (dB) | LaSSIM(in, out) | LaSSIM(out, clean) | checkerboard index | NIQE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in m.items():
        niqe = "n/a" if v["niqe"] is None else f"{v['niqe']:.2f}"  # a bundle without a NIQE model
        lines.append(
            f"| {name} | {v['ssim']:.3f} | {v['psnr']:.2f} | {v[f'lassim_in_out_{LEVEL}']:.3f} | "
            f"{v['lassim_out_clean']:.3f} | {v['checker_out']:.2e} | {niqe} |"
        )
    lines += ["", f"SSIM to clean improved on {100 * report['ssim_improved_fraction']:.0f}% of slices.", ""]
    (staged / "report.md").write_text("\n".join(lines))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_uspmie.research.demo OUT_DIR [--device cpu]``."""
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="uspmie_demo", help="new or empty output folder")
    parser.add_argument(
        "--device", type=_device_option, default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)"
    )
    parser.add_argument("--subject", default=DEFAULT_SUBJECT, choices=sorted(SUBJECTS), help="demo volume")
    parser.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    args = parser.parse_args(argv)
    report = run_demo(args.out_dir, args.bundle, args.device, args.subject)
    print((Path(args.out_dir) / "report.md").read_text())
    print(f"figure: {Path(args.out_dir) / 'demo_figure.png'}; output: {report['output']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
