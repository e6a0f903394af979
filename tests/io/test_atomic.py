"""The one atomic writer: a complete output or none, never a half-written file under the final name."""

from __future__ import annotations

import pytest

from napari_uspmie.errors import ImageWriteError
from napari_uspmie.io.atomic import split_ext, staged_output
from napari_uspmie.io.discovery import image_files, visible_files


def test_split_ext_keeps_nii_gz_whole():
    assert split_ext("brain.nii.gz") == ("brain", ".nii.gz")
    assert split_ext("scan.PNG") == ("scan", ".PNG")
    assert split_ext("series") == ("series", "")


def test_file_appears_only_when_complete(tmp_path):
    out = tmp_path / "result.nii.gz"
    with staged_output(out) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
        tmp.write_bytes(b"data")
        assert not out.exists()
    assert out.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.nii.gz"]


def test_failure_leaves_the_old_output_and_no_temporary(tmp_path):
    out = tmp_path / "result.png"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), staged_output(out, overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_existing_output_is_refused_before_any_work_without_overwrite(tmp_path):
    out = tmp_path / "result.png"
    out.write_bytes(b"old")
    entered = []
    with pytest.raises(ImageWriteError, match="already exists; pass --overwrite"), staged_output(out):
        entered.append(True)
    assert entered == [] and out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_an_output_created_meanwhile_is_never_replaced(tmp_path):
    out = tmp_path / "result.nii"
    with pytest.raises(ImageWriteError, match="created by someone else"), staged_output(out) as tmp:
        tmp.write_bytes(b"mine")
        out.write_bytes(b"other run")  # a concurrent run finished first
    assert out.read_bytes() == b"other run"
    assert [p.name for p in tmp_path.iterdir()] == ["result.nii"]


def _ours(path) -> bool:
    return path.read_bytes().startswith(b"ours")


def test_folder_overwrite_replaces_only_an_earlier_output_of_the_package(tmp_path):
    out = tmp_path / "series_enhanced"
    with staged_output(out, folder=True) as tmp:
        (tmp / "old.dcm").write_bytes(b"ours old")
    with staged_output(out, folder=True, overwrite=True, written_by_package=_ours) as tmp:
        (tmp / "new.dcm").write_bytes(b"ours new")
    assert sorted(p.name for p in out.iterdir()) == ["new.dcm"]
    assert [p.name for p in tmp_path.iterdir()] == ["series_enhanced"]
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(ImageWriteError, match=r"did not write \(notes\.txt\)"):
        with staged_output(out, folder=True, overwrite=True, written_by_package=_ours) as tmp:
            (tmp / "newer.dcm").write_bytes(b"ours newer")
    assert sorted(p.name for p in out.iterdir()) == ["new.dcm", "notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["series_enhanced"]
    with pytest.raises(ImageWriteError, match="did not write"), staged_output(out, folder=True, overwrite=True):
        pass  # without a way to recognise its outputs, no existing folder is replaced


def test_folder_without_overwrite_is_refused(tmp_path):
    out = tmp_path / "series_enhanced"
    out.mkdir()
    with pytest.raises(ImageWriteError, match="already exists"), staged_output(out, folder=True):
        pass


def test_discovery_skips_hidden_entries_and_non_images(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".cache").mkdir()
    for name in ("a.png", "sub/b.nii.gz", "notes.txt", ".hidden.png", ".cache/c.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in visible_files(tmp_path)] == [
        "a.png",
        "notes.txt",
        "sub/b.nii.gz",
    ]
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)] == ["a.png", "sub/b.nii.gz"]
