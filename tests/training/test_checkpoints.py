"""Resume falls back to the newest checkpoint that loads; the newest N checkpoints are kept across runs."""

from __future__ import annotations

import logging

import pytest
import torch

from napari_uspmie.errors import CheckpointError
from napari_uspmie.training.handlers import ResumeFromCheckpoint, TrainingCheckpointSaver, checkpoints, first_readable


def _write(folder, epochs, broken=()):
    folder.mkdir(parents=True, exist_ok=True)
    for n in epochs:
        path = folder / f"checkpoint_epoch={n}.pt"
        torch.save({"trainer": {"epoch": n}}, path)
        if n in broken:  # a run killed while writing: the file is cut short
            path.write_bytes(path.read_bytes()[:40])
    return folder


def test_resume_skips_an_unreadable_newest_checkpoint(tmp_path, caplog):
    folder = _write(tmp_path / "ckpt", [1, 2, 10], broken=(10,))
    assert [p.name for p in checkpoints(folder)] == [f"checkpoint_epoch={n}.pt" for n in (10, 2, 1)]
    resume = ResumeFromCheckpoint(str(folder), {}, resume=True)
    with caplog.at_level(logging.WARNING):
        path, keys = first_readable(resume.candidates())
    assert path.name == "checkpoint_epoch=2.pt" and keys == {"trainer"}
    assert "checkpoint_epoch=10.pt: unreadable checkpoint" in caplog.text


def test_resume_without_a_readable_checkpoint_is_one_explained_error(tmp_path):
    folder = _write(tmp_path / "ckpt", [1, 2], broken=(1, 2))
    with pytest.raises(CheckpointError, match="no readable checkpoint to resume from"):
        first_readable(ResumeFromCheckpoint(str(folder), {}, resume=True).candidates())
    with pytest.raises(CheckpointError, match="holds no checkpoint_epoch=N.pt"):
        ResumeFromCheckpoint(str(tmp_path / "empty"), {}, resume=True).candidates()
    with pytest.raises(CheckpointError, match="does not exist"):
        ResumeFromCheckpoint(str(folder), {}, resume=str(tmp_path / "gone.pt")).candidates()
    assert ResumeFromCheckpoint(str(folder), {}, resume=False).candidates() == []


def test_the_newest_checkpoints_are_kept_across_resumed_runs(tmp_path):
    folder = _write(tmp_path / "ckpt", [1, 2, 3, 4])  # two earlier runs' files
    (folder / "notes.txt").write_text("not a checkpoint")
    TrainingCheckpointSaver(str(folder), {}, n_saved=2).prune()
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt", "notes.txt"]
