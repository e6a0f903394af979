"""Build the unpaired MRI training set, and its held-out evaluation data, from files shipped in PyPI packages.

Sources (all offline, read from installed packages):

* **MNI152 2009a T1 template** (nilearn, 197 x 233 x 189, 1 mm): the main training subject. Its axial,
  coronal and sagittal slices that contain brain are cut into blocks of :data:`BLOCK` neighbouring
  slices. Every fifth block is **held out** (never trained on), and :data:`GUARD` slices on each side
  of a held-out block are dropped so that near-identical neighbours cannot leak into training. The
  remaining blocks alternate between **domain B** (clean slices, ``B/``) and **domain A**
  (*different* slices degraded by :mod:`napari_uspmie.research.acquisition`, ``A/``): the two domains
  never share an anatomical position, so they are unpaired by construction. Slices are centred on a
  :data:`CANVAS`-pixel square (1 mm pixels) so that training needs no resizing.
  Because one template is a single anatomy at one resolution and one contrast, every training
  slice (A before degradation, and B) gets a seeded **appearance draw**
  (:func:`napari_uspmie.research.appearance.vary_appearance`: coarser resolution, contrast curve,
  gamma, peak intensity), so the generator learns to remove degradations, not to turn every image
  into the template. Held-out slices stay untouched.
  Domain A is then degraded by :func:`_degrade_training`: :mod:`napari_uspmie.research.degradation_families`
  leaves a fraction clean and another mildly degraded, so that the generator learns to leave good
  images alone; :data:`ACQUISITION_SHARE` of the full draws use the acquisition model instead.
* **Real training scans** (:mod:`napari_uspmie.research.training_subjects`): dipy's b0 scan and
  nibabel's EPI scan. Their acquired slices alternate, in
  blocks, between ``A`` and ``B`` like the template's (never held out: the held-out subjects are
  other scans), get the same appearance draws (more of them, so that real noise floors and T2
  contrasts make up about a third of training) and the same domain-A degradations.
* **Held-out subjects**, whole volumes never used for training, resampled to 1 mm: nibabel's
  ``tests/data/anatomical.nii`` (a 2 mm T1), and when dipy is installed its ``aniso_vox.nii.gz``
  (a 4 x 4 x 5 mm T1) and ``t1_coronal_slice.npy`` (a 256 x 256 T1 slice).

Layout written under ``out_dir``::

    A/*.png  B/*.png                         8-bit grayscale training slices (degraded / clean)
    heldout/slices/clean/*.png               clean held-out slices ...
    heldout/slices/degraded/*.png            ... and their degraded copies (same names)
    heldout/volumes/<name>_clean.nii.gz      held-out subjects, uint8, RAS, 1 mm ...
    heldout/volumes/<name>_degraded.nii.gz   ... and one 3D draw of the acquisition model each
    niqe_pristine.npz                        NIQE pristine model fitted on B
    manifest.json                            sources, seed, split, degradation parameters

Intensities are scaled per volume to ``[0, 1]`` (0 to the 99.5th percentile of brain voxels) and
stored as 8-bit, so that every file (PNG or NIfTI) maps to the networks' ``[-1, 1]`` the same way
(8-bit data is scaled by its full range ``0..255``).
Everything derives from ``seed``: the same seed rebuilds byte-identical PNGs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from napari_uspmie.io.packaged_data import MNI152_T1, package_file
from napari_uspmie.research.acquisition import apply_acquisition, degrade_volume, sample_params
from napari_uspmie.research.appearance import DRAWS, vary_appearance
from napari_uspmie.research.degradation_families import random_degradation
from napari_uspmie.research.training_subjects import (
    MIN_FOREGROUND,
    SUBJECT_DRAWS_FACTOR,
    TRAINING_SUBJECTS,
    installed_subjects,
    load_axial_slices,
    split_subject_slices,
    unit_scale,
)

__all__ = [
    "BLOCK",
    "GUARD",
    "CANVAS",
    "fit_canvas",
    "load_unit_volume",
    "split_slices",
    "build_mri_dataset",
    "main",
]

BLOCK = 6
GUARD = 3
HELD_OUT_EVERY = 5
#: MNI slices are centred on a square canvas (zero padding, or cropping background) of this side, so
#: that training needs no resizing (which would change the anatomy's scale between orientations).
CANVAS = 224
HELD_OUT_VOLUMES = {
    "nibabel_anatomical": ("nibabel", "tests/data/anatomical.nii"),
    "dipy_aniso_vox": ("dipy", "data/files/aniso_vox.nii.gz"),
}
HELD_OUT_2D = {"dipy_t1_coronal": ("dipy", "data/files/t1_coronal_slice.npy")}
ORIENTATIONS = ("axial", "coronal", "sagittal")
#: Share of the fully degraded domain-A draws that use the acquisition model of the held-out
#: evaluation (case a); the others come from the randomised families of
#: :mod:`napari_uspmie.research.degradation_families`.
ACQUISITION_SHARE = 0.4


def load_unit_volume(path: Path, spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI, reorient to RAS, resample to ``spacing`` mm isotropic (linear), scale to ``[0, 1]``.

    Returns:
        ``(volume, affine)``: float32 array indexed ``[x, y, z]`` (RAS) and its affine.
    """
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj).astype(np.float64)
    data = data.reshape(data.shape[:3])
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    factors = zooms / spacing
    if not np.allclose(factors, 1.0):
        data = ndimage.zoom(data, factors, order=1, mode="nearest", grid_mode=True)
    affine = img.affine.copy()
    affine[:3, :3] = affine[:3, :3] / factors
    return unit_scale(data).astype(np.float32), affine


def _orientation_axis(orientation: str) -> int:
    return {"axial": 2, "coronal": 1, "sagittal": 0}[orientation]


def get_slice(volume: np.ndarray, orientation: str, index: int) -> np.ndarray:
    """Slice ``index`` of a RAS ``[x, y, z]`` volume, rotated so that it reads like a radiology view."""
    return np.ascontiguousarray(np.rot90(np.take(volume, index, axis=_orientation_axis(orientation))))


def fit_canvas(image: np.ndarray, size: int = CANVAS) -> np.ndarray:
    """Centre ``image`` on a ``size x size`` canvas: zero-pad short axes, centre-crop long ones."""
    out = np.zeros((size, size), dtype=image.dtype)
    src, dst = [], []
    for n in image.shape:
        if n >= size:
            start = (n - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
        else:
            start = (size - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = image[tuple(src)]
    return out


def split_slices(indices: Sequence[int]) -> dict[str, list[int]]:
    """Split slice indices into ``heldout``, ``A`` and ``B`` by blocks, with guard gaps.

    Args:
        indices: sorted indices of the slices that contain enough brain.

    Returns:
        ``{"heldout": [...], "A": [...], "B": [...]}``, disjoint; no training slice lies within
        :data:`GUARD` slices of a held-out one.
    """
    indices = sorted(indices)
    blocks = [indices[i : i + BLOCK] for i in range(0, len(indices), BLOCK)]
    held = [b for k, b in enumerate(blocks) if k % HELD_OUT_EVERY == HELD_OUT_EVERY // 2]
    held_set = {i for b in held for i in b}
    near = {i + d for i in held_set for d in range(-GUARD, GUARD + 1)}
    split: dict[str, list[int]] = {"heldout": sorted(held_set), "A": [], "B": []}
    train_blocks = [b for b in blocks if b[0] not in held_set]
    for k, block in enumerate(train_blocks):
        split["A" if k % 2 else "B"].extend(i for i in block if i not in near)
    return split


def _save_png(path: Path, unit_image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(np.clip(unit_image, 0, 1) * 255).astype(np.uint8)).save(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _degrade(image: np.ndarray, seed_seq: list[int], severity: float) -> tuple[np.ndarray, dict[str, float]]:
    rng = np.random.default_rng(seed_seq)
    params = sample_params(rng, severity)
    return apply_acquisition(image, params, rng), params.as_dict()


def _degrade_training(image: np.ndarray, seed_seq: list[int], severity: float) -> tuple[np.ndarray, dict]:
    """One domain-A draw: clean, mild, or full (randomised families or the acquisition model)."""
    rng = np.random.default_rng([*seed_seq, 11])
    degraded, record = random_degradation(image, rng)
    if record["level"] == "full" and rng.uniform() < ACQUISITION_SHARE:
        degraded, params = _degrade(image, seed_seq, severity)
        record = {"level": "full", "families": ["acquisition"], **params}
    return degraded, record


def _write_slice(
    out: Path,
    part: str,
    name: str,
    template: np.ndarray,
    key: list[int],
    draw: int,
    severity: float,
    vary: bool,
    manifest: dict,
) -> None:
    """Write one slice (template or real scan) to ``part`` (``A``, ``B``, ``heldout``); record its draws."""
    clean = template
    if part != "heldout" and vary:
        # Draw 0 keeps the seed stream of a single-draw dataset; further draws get their own.
        clean, look = vary_appearance(clean, np.random.default_rng([*key, 7] + ([draw] if draw else [])))
        manifest["appearance"][f"{part}/{name}.png"] = look
    if part in ("B", "heldout"):
        _save_png(out / ("B" if part == "B" else "heldout/slices/clean") / f"{name}.png", clean)
    if part != "B":
        seed_seq = key + ([draw] if draw else [])
        degrade = _degrade_training if part == "A" else _degrade
        degraded, params = degrade(clean, seed_seq, severity)
        dest = "A" if part == "A" else "heldout/slices/degraded"
        _save_png(out / dest / f"{name}.png", degraded)
        manifest["degradations"][f"{dest}/{name}.png"] = params


def build_mri_dataset(
    out_dir: str | Path,
    seed: int = 0,
    severity: float = 1.0,
    fit_niqe: bool = True,
    orientations: Sequence[str] = ORIENTATIONS,
    volumes: Sequence[str] | None = None,
    vary: bool = True,
    draws: int = DRAWS,
    subjects: Sequence[str] | None = None,
) -> dict:
    """Write the unpaired training set and the held-out evaluation data (see the module docstring).

    Args:
        out_dir: destination folder (created; existing files with the same names are replaced).
        seed: seed of every degradation draw.
        severity: strength of the acquisition model (:func:`napari_uspmie.research.acquisition.sample_params`).
        fit_niqe: also fit the NIQE pristine model on ``B`` and save ``niqe_pristine.npz``.
        orientations: which MNI slice orientations to use (all three by default).
        volumes: names of the held-out subjects to write (keys of :data:`HELD_OUT_VOLUMES` and
            :data:`HELD_OUT_2D`); ``None`` writes all that are installed.
        vary: give each training slice an appearance draw (:func:`vary_appearance`); ``False``
            trains on the template as it is.
        draws: appearance draws written per training slice (each a separate file); the real scans'
            slices get :data:`~napari_uspmie.research.training_subjects.SUBJECT_DRAWS_FACTOR` times as many.
        subjects: names of the real training scans to use (keys of
            :data:`~napari_uspmie.research.training_subjects.TRAINING_SUBJECTS`); ``None`` uses all
            that are installed, ``()`` trains on the template alone.

    Returns:
        The manifest (also written to ``manifest.json``).

    Raises:
        FileNotFoundError: nilearn's MNI template is missing.
        ValueError: unknown orientation or held-out subject name.
    """
    unknown = set(orientations) - set(ORIENTATIONS)
    wanted = set(HELD_OUT_VOLUMES) | set(HELD_OUT_2D) if volumes is None else set(volumes)
    unknown |= wanted - set(HELD_OUT_VOLUMES) - set(HELD_OUT_2D)
    if unknown:
        raise ValueError(f"unknown orientation or held-out subject: {sorted(unknown)}.")
    if subjects is not None and set(subjects) - set(TRAINING_SUBJECTS):
        raise ValueError(f"unknown training subject: {sorted(set(subjects) - set(TRAINING_SUBJECTS))}.")
    out = Path(out_dir)
    mni_path = package_file(*MNI152_T1)
    if mni_path is None:
        raise FileNotFoundError("nilearn's MNI152 T1 template was not found; install nilearn>=0.10.")
    mni, _ = load_unit_volume(mni_path)
    manifest: dict = {
        "seed": seed,
        "severity": severity,
        "sources": {"mni152_t1": {"package": MNI152_T1[0], "file": MNI152_T1[1], "sha256": _sha256(mni_path)}},
        "split": {},
        "degradations": {},
        "heldout_volumes": {},
        "appearance": {},
        "draws": draws if vary else 1,
    }
    for o_id, orientation in enumerate(ORIENTATIONS):
        if orientation not in orientations:
            continue
        axis = _orientation_axis(orientation)
        fg = (np.moveaxis(mni, axis, 0) > 0.1).reshape(mni.shape[axis], -1).mean(axis=1)
        split = split_slices([int(i) for i in np.flatnonzero(fg >= MIN_FOREGROUND)])
        manifest["split"][orientation] = split
        for part in ("A", "B", "heldout"):
            for index in split[part]:
                template = fit_canvas(get_slice(mni, orientation, index))
                for draw in range(draws if part != "heldout" and vary else 1):
                    name = f"mni_{orientation}_{index:03d}" + (f"_v{draw}" if draw else "")
                    _write_slice(out, part, name, template, [seed, o_id, index], draw, severity, vary, manifest)
    for subject, path in installed_subjects(None if subjects is None else set(subjects)).items():
        # the subject's place in the table, not among the installed ones: a missing package moves no seed
        s_id = list(TRAINING_SUBJECTS).index(subject)
        planes = load_axial_slices(path)
        split = split_subject_slices(len(planes))
        manifest["split"][subject] = split
        package, relative = TRAINING_SUBJECTS[subject]
        manifest["sources"][subject] = {"package": package, "file": relative, "sha256": _sha256(path)}
        subject_draws = draws * SUBJECT_DRAWS_FACTOR if vary else 1
        for part in ("A", "B"):
            for index in split[part]:
                plane = fit_canvas(planes[index])
                for draw in range(subject_draws):
                    name = f"{subject}_{index:03d}" + (f"_v{draw}" if draw else "")
                    _write_slice(out, part, name, plane, [seed, 10 + s_id, index], draw, severity, vary, manifest)
    for k, (name, (package, rel)) in enumerate(HELD_OUT_2D.items()):
        path = package_file(package, rel)
        if path is None or name not in wanted:
            continue
        clean = unit_scale(np.load(path))
        degraded, params = _degrade(clean, [seed, 100 + k], severity)
        _save_png(out / "heldout/slices/clean" / f"{name}.png", clean)
        _save_png(out / "heldout/slices/degraded" / f"{name}.png", degraded)
        manifest["degradations"][f"heldout/slices/degraded/{name}.png"] = params
        manifest["sources"][name] = {"package": package, "file": rel, "sha256": _sha256(path)}
    vol_dir = out / "heldout" / "volumes"
    vol_dir.mkdir(parents=True, exist_ok=True)
    for k, (name, (package, rel)) in enumerate(HELD_OUT_VOLUMES.items()):
        path = package_file(package, rel)
        if path is None or name not in wanted:
            continue
        clean, affine = load_unit_volume(path)
        clean = np.rint(clean * 255).astype(np.uint8)
        degraded = degrade_volume(clean, seed=seed * 1000 + 200 + k, severity=severity)
        for tag, vol in (("clean", clean), ("degraded", degraded)):
            nii = nib.Nifti1Image(vol, affine)
            nii.header.set_xyzt_units("mm")
            nib.save(nii, str(vol_dir / f"{name}_{tag}.nii.gz"))
        manifest["sources"][name] = {"package": package, "file": rel, "sha256": _sha256(path)}
        manifest["heldout_volumes"][name] = {"shape": list(clean.shape), "seed": seed * 1000 + 200 + k}
    if fit_niqe:
        from napari_uspmie.research.niqe import fit_pristine_model, load_gray

        model = fit_pristine_model([load_gray(p) for p in sorted((out / "B").glob("*.png"))])
        model.save(out / "niqe_pristine.npz")
    manifest["counts"] = {
        "A": len(list((out / "A").glob("*.png"))),
        "B": len(list((out / "B").glob("*.png"))),
        "heldout_slices": len(list((out / "heldout/slices/clean").glob("*.png"))),
        "heldout_volumes": len(manifest["heldout_volumes"]),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of the ``build-mri-dataset`` command (shared with the package CLI)."""
    from napari_uspmie.option_types import float_range, int_range

    parser.add_argument("out_dir", help="destination folder, new or empty")
    parser.add_argument("--seed", type=int_range(0), default=0, help="seed of the degradations (default 0)")
    # from barely degraded to far past the training data's strength (1); 0 would leave domain A clean
    parser.add_argument("--severity", type=float_range(0.01, 5.0), default=1.0, help="degradation strength (1.0)")
    parser.add_argument("--no-niqe", action="store_true", help="skip fitting the NIQE pristine model")
    parser.add_argument("--draws", type=int_range(1), default=DRAWS, help=f"appearance draws per slice ({DRAWS})")
    parser.add_argument(
        "--template-only", action="store_true", help="train on the MNI template alone (no real training scans)"
    )
    parser.add_argument(
        "--no-appearance", action="store_true", help="train on the template as it is (no resolution/contrast draws)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the dataset under a temporary name, rename it to ``out_dir``, print a one-line summary.

    Raises:
        ImageWriteError: ``out_dir`` is a file or holds files (before any work).
    """
    from napari_uspmie.io.atomic import check_output_folder, staged_output

    replace_empty = check_output_folder(args.out_dir, "build-mri-dataset")
    with staged_output(args.out_dir, folder=True, overwrite=replace_empty) as staged:
        manifest = build_mri_dataset(
            staged,
            seed=args.seed,
            severity=args.severity,
            fit_niqe=not args.no_niqe,
            vary=not args.no_appearance,
            draws=args.draws,
            subjects=() if args.template_only else None,
        )
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    print(f"wrote {args.out_dir}: {counts}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_uspmie.research.mri_dataset OUT_DIR [--seed N] [--severity S]``."""
    parser = add_arguments(argparse.ArgumentParser(prog="build-mri-dataset", description=__doc__.splitlines()[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
