"""The unpaired MRI dataset builder: split rules, determinism, held-out data kept out of training."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from napari_uspmie.cli.main import main as cli_main
from napari_uspmie.research.appearance import vary_appearance
from napari_uspmie.research.mri_dataset import BLOCK, GUARD, build_mri_dataset, main, split_slices

SMALL = {"orientations": ("axial",), "volumes": ("nibabel_anatomical",), "fit_niqe": False, "subjects": ()}


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("mri")
    manifest = build_mri_dataset(out / "a", seed=5, **SMALL)
    return out / "a", manifest


def test_split_is_disjoint_guarded_and_blocked():
    idx = list(range(20, 170))
    split = split_slices(idx)
    held, a, b = (set(split[k]) for k in ("heldout", "A", "B"))
    assert not (held & a or held & b or a & b)
    assert 0.15 < len(held) / len(idx) < 0.25
    train = a | b
    assert min(abs(t - h) for t in train for h in held) > GUARD
    # A and B come from different blocks: no A slice has a B neighbour closer than ... the block edge.
    assert all(min(abs(x - y) for y in b) >= 1 for x in a)
    blocks_a = {(i - 20) // BLOCK for i in a}
    blocks_b = {(i - 20) // BLOCK for i in b}
    assert not blocks_a & blocks_b


def test_layout_counts_and_formats(built):
    root, manifest = built
    a, b = sorted((root / "A").glob("*.png")), sorted((root / "B").glob("*.png"))
    clean = sorted((root / "heldout/slices/clean").glob("*.png"))
    assert len(a) == manifest["counts"]["A"] > 20 and len(b) == manifest["counts"]["B"] > 20
    assert [p.name for p in clean] == [p.name for p in sorted((root / "heldout/slices/degraded").glob("*.png"))]
    with Image.open(a[0]) as im:
        assert im.mode == "L" and im.size == (224, 224)  # axial MNI slice on its canvas, 8-bit gray
    vol = nib.load(str(root / "heldout/volumes/nibabel_anatomical_clean.nii.gz"))
    deg = nib.load(str(root / "heldout/volumes/nibabel_anatomical_degraded.nii.gz"))
    assert vol.shape == deg.shape == (66, 82, 50) and vol.get_data_dtype() == np.uint8
    np.testing.assert_allclose(nib.affines.voxel_sizes(vol.affine), 1.0)
    assert not np.array_equal(np.asanyarray(vol.dataobj), np.asanyarray(deg.dataobj))
    saved = json.loads((root / "manifest.json").read_text())
    assert saved["seed"] == 5 and "mni152_t1" in saved["sources"]


def test_heldout_never_in_training(built):
    root, manifest = built
    split = manifest["split"]["axial"]
    names = {p.stem for p in (root / "A").glob("*.png")} | {p.stem for p in (root / "B").glob("*.png")}
    held = {p.stem for p in (root / "heldout/slices/clean").glob("*.png")}
    assert held and not held & names
    assert {f"mni_axial_{i:03d}" for i in split["heldout"]} == {h for h in held if h.startswith("mni_axial")}
    # Unpaired: no clean B slice is the clean counterpart of an A slice.
    assert not {p.stem for p in (root / "A").glob("*.png")} & {p.stem for p in (root / "B").glob("*.png")}
    # Pixel check: no held-out clean slice is byte-identical to a training slice.
    train_hashes = set(_digest(root / "A").values()) | set(_digest(root / "B").values())
    assert not set(_digest(root / "heldout/slices/clean").values()) & train_hashes


def test_deterministic_for_a_seed(built, tmp_path):
    root, _ = built
    build_mri_dataset(tmp_path / "same", seed=5, **SMALL)
    assert _digest(tmp_path / "same") == _digest(root)
    same = nib.load(str(tmp_path / "same/heldout/volumes/nibabel_anatomical_degraded.nii.gz"))
    ref = nib.load(str(root / "heldout/volumes/nibabel_anatomical_degraded.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(same.dataobj), np.asanyarray(ref.dataobj))
    plain = {}
    for s in (5, 6):
        build_mri_dataset(
            tmp_path / f"plain{s}",
            seed=s,
            orientations=("axial",),
            volumes=(),
            fit_niqe=False,
            vary=False,
            subjects=(),
        )
        plain[s] = _digest(tmp_path / f"plain{s}")
    assert all(plain[6][k] == plain[5][k] for k in plain[6] if k.startswith("B/"))  # the template does not move
    assert any(plain[6][k] != plain[5][k] for k in plain[6] if k.startswith("A/"))  # degradations do
    assert not any("_v1" in k for k in plain[5])  # one file per slice without appearance draws


def test_appearance_draws_vary_resolution_and_contrast(built):
    root, manifest = built
    looks = manifest["appearance"]
    assert manifest["draws"] == 2 and len(looks) == manifest["counts"]["A"] + manifest["counts"]["B"]
    assert {f"B/{p.name}" for p in (root / "B").glob("*_v1.png")} <= set(looks)
    low_res = [k for k, v in looks.items() if v["pixel_x"] > 1 or v["pixel_y"] > 1]
    remapped = [k for k, v in looks.items() if v["remap"]]
    assert 0.3 < len(low_res) / len(looks) < 0.7 and 0.15 < len(remapped) / len(looks) < 0.55


def test_vary_appearance_effects():
    yy, xx = np.mgrid[:128, :128]
    image = np.where((yy // 8 + xx // 8) % 2 == 0, 0.9, 0.4) * ((yy - 64) ** 2 + (xx - 64) ** 2 < 50**2)
    edges = lambda a: (np.diff(a, axis=1) ** 2).sum()  # noqa: E731  gradient energy: blur lowers it
    seen = {"low_res": False, "remap": False}
    for seed in range(40):
        out, look = vary_appearance(image, np.random.default_rng(seed))
        again, _ = vary_appearance(image, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, again)
        assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
        assert np.all(out[image == 0][:100] < 1e-6) or look["pixel_x"] > 1  # background stays dark
        if look["pixel_x"] > 2 and look["pixel_y"] > 2 and not look["remap"]:
            seen["low_res"] = True
            assert edges(out) < 0.8 * edges(look["peak"] * image ** look["gamma"])  # coarser pixels: softer edges
        if look["remap"] and look["pixel_x"] == 1:
            seen["remap"] = True
            curve = np.interp([0.4, 0.9], np.linspace(0, 1, len(look["remap"])), look["remap"])
            np.testing.assert_allclose(out[image == 0.4][0], look["peak"] * curve[0] ** look["gamma"], rtol=1e-9)
            np.testing.assert_allclose(out[image == 0.9][0], look["peak"] * curve[1] ** look["gamma"], rtol=1e-9)
    assert all(seen.values())
    peaks = [vary_appearance(image, np.random.default_rng(seed))[1]["peak"] for seed in range(40)]
    assert min(peaks) >= 0.55 and max(peaks) <= 1.0 and np.ptp(peaks) > 0.2  # several intensity scalings


def test_domain_a_holds_clean_mild_and_both_degradation_sources(built):
    root, manifest = built
    levels = {k: v for k, v in manifest["degradations"].items() if k.startswith("A/")}
    assert len(levels) == manifest["counts"]["A"]
    kinds = [v["level"] for v in levels.values()]
    assert 0.1 < kinds.count("clean") / len(kinds) < 0.3 and 0.1 < kinds.count("mild") / len(kinds) < 0.3
    families = [f for v in levels.values() for f in v.get("families", [])]
    assert "acquisition" in families and {"blur", "noise", "bias", "resolution", "haze"} <= set(families)
    clean_name = next(k for k, v in levels.items() if v["level"] == "clean")
    a = np.asarray(Image.open(root / clean_name))
    # an untouched slice in domain A (the generator sees good images there too): its background is
    # exactly black, which haze, noise and bias-free blur of a degraded draw never leave it
    assert a.max() > 100 and (a == 0).mean() > 0.2


def test_cli_and_bad_arguments(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown"):
        build_mri_dataset(tmp_path / "x", orientations=("oblique",))
    with pytest.raises(ValueError, match="unknown"):
        build_mri_dataset(tmp_path / "x", volumes=("nope",))
    with pytest.raises(ValueError, match="unknown training subject"):
        build_mri_dataset(tmp_path / "x", subjects=("nope",))
    (tmp_path / "cli").mkdir()  # an empty folder is filled
    assert main([str(tmp_path / "cli"), "--seed", "1", "--no-niqe", "--severity", "0.5", "--template-only"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["cli"]  # built under a temporary name, then renamed
    manifest = json.loads((tmp_path / "cli/manifest.json").read_text())
    assert manifest["severity"] == 0.5 and manifest["counts"]["heldout_slices"] > 40
    assert set(manifest["split"]) == {"axial", "coronal", "sagittal"}  # --template-only: no real scans


def test_cli_refuses_bad_options_before_any_work(tmp_path, capsys):
    out = tmp_path / "bmd"
    bad = [["--draws", "-1"], ["--draws", "0"], ["--seed", "-1"]]
    bad += [["--severity", value] for value in ("0", "-1", "nan", "inf", "1e9")]
    for option in bad:
        with pytest.raises(SystemExit) as stop:
            main([str(out), *option])
        assert stop.value.code == 2
        assert f"argument {option[0]}: must be" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, not even a partial dataset


def test_cli_refuses_an_output_that_is_not_a_new_or_empty_folder(tmp_path, capsys):
    existing = tmp_path / "scan.png"
    existing.write_bytes(b"keep")
    assert cli_main(["build-mri-dataset", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {existing}: exists and is not a folder; give build-mri-dataset the name of a new folder.\n"
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    assert cli_main(["build-mri-dataset", str(used)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {used}: already holds notes.txt; ") and "--overwrite" not in err
    assert cli_main(["build-mri-dataset", str(existing / "inside")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {existing / 'inside'}: cannot be made there; ")
    assert existing.read_bytes() == b"keep" and [p.name for p in used.iterdir()] == ["notes.txt"]
