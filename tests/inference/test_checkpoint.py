"""The one generator loader: every checkpoint layout, the architecture that fits, refusals with the fix."""

from __future__ import annotations

import json

import pytest
import torch

from napari_uspmie.errors import CheckpointError
from napari_uspmie.inference.checkpoint import (
    generator_from_config,
    infer_architecture,
    load_generator,
    read_architecture,
    shipped_architecture,
)
from napari_uspmie.models.networks import ResnetGenerator
from tests.unpaired_data import TINY_GENERATOR as TINY


def test_load_generator_from_state_dict_and_checkpoint(tmp_path):
    net = ResnetGenerator(**TINY)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    (tmp_path / "model_config.json").write_text(json.dumps(TINY))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        ref = net.eval()(x)
        torch.testing.assert_close(load_generator(tmp_path / "model.pt")[0](x), ref)
    ckpt = tmp_path / "ckpt" / "checkpoint_epoch=1.pt"
    ckpt.parent.mkdir()
    torch.save({"generator_ab": net.state_dict(), "network_def_kwargs": TINY, "epoch": 1}, ckpt)
    with torch.no_grad():
        torch.testing.assert_close(load_generator(ckpt)[0](x), ref)
    torch.save({"epoch": 3}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no generator weights"):
        load_generator(tmp_path / "junk.pt")


def test_resize_generators_are_recognised_from_their_weights(tmp_path):
    net = ResnetGenerator(**TINY, upsample="resize")
    torch.save(net.state_dict(), tmp_path / "resize.pt")
    assert infer_architecture(net.state_dict()) == {**TINY, "upsample": "resize"}
    loaded, architecture = load_generator(tmp_path / "resize.pt")
    assert architecture["upsample"] == "resize" and loaded.upsample == "resize"


def test_nan_weights_are_refused_before_anything_runs(tmp_path):
    state = ResnetGenerator(**TINY).state_dict()
    state["model.1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN/Inf values"):
        load_generator(tmp_path / "nan.pt")


def test_pickled_objects_are_refused_without_torchs_unsafe_advice(tmp_path):
    torch.save({"model": {"weight": torch.zeros(2)}, "extra": object()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError) as caught:
        load_generator(tmp_path / "pickled.pt")
    assert "weights_only" not in str(caught.value) and "pickled.pt" in str(caught.value)


def test_a_file_is_read_once_while_it_is_unchanged(tmp_path, monkeypatch):
    torch.save(ResnetGenerator(**TINY).state_dict(), tmp_path / "model.pt")
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    first, _ = load_generator(tmp_path / "model.pt")
    second, _ = load_generator(tmp_path / "model.pt")
    assert len(reads) == 1 and first is not second  # one read, two independent networks
    torch.save(ResnetGenerator(**TINY).state_dict(), tmp_path / "model.pt")
    load_generator(tmp_path / "model.pt")
    assert len(reads) == 2  # a changed file is read again


def test_shipped_architecture_comes_from_the_bundle_config(tmp_path):
    from napari_uspmie.io.packaged_data import bundle_path

    config = bundle_path() / "models" / "model_config.json"
    assert shipped_architecture() == json.loads(config.read_text())
    net = generator_from_config(config)
    shipped, _ = load_generator(bundle_path() / "models" / "model.pt")
    assert [p.shape for p in net.parameters()] == [p.shape for p in shipped.parameters()]
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="must be a JSON object"):
        read_architecture(tmp_path / "list.json")
