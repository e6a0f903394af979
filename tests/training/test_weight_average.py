"""The generator's weight average: off by default, its decay schedule, checkpoints and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from napari_uspmie.errors import SettingError
from napari_uspmie.models.networks import ResnetGenerator
from napari_uspmie.training.handlers import ResumeFromCheckpoint, TrainingCheckpointSaver
from napari_uspmie.training.weight_average import GeneratorAverage
from tests.unpaired_data import TINY_GENERATOR


def _setting_engine(net: torch.nn.Module, value: float, epoch_length: int = 3) -> Engine:
    """An engine whose every iteration sets all of ``net``'s weights to ``value`` (a stand-in optimiser step)."""

    def step(engine, batch):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(value)

    engine = Engine(step)
    engine.state.epoch_length = epoch_length
    return engine


def _data(n: int = 3) -> list[int]:
    return list(range(n))


def test_average_is_off_by_default_and_exports_the_trained_network():
    net = ResnetGenerator(**TINY_GENERATOR)
    average = GeneratorAverage(net)
    assert average.exported is net and average.state_dict() == {"updates": 0}
    engine = _setting_engine(net, 0.5)
    average.attach(engine)
    assert not engine.has_event_handler(average.update, Events.ITERATION_COMPLETED)
    with pytest.raises(SettingError, match="generator_average must be in"):
        GeneratorAverage(net, 1.0)


def test_average_moves_towards_the_weights_by_its_warmed_up_decay():
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(2.0)
    decay = 0.2  # below the warm-up's (1 + n) / (10 + n) from the second update: both limits are exercised
    average = GeneratorAverage(net, decay)
    engine = _setting_engine(net, -1.0)
    average.attach(engine)
    engine.run(_data(3), max_epochs=2)  # 6 iterations, every one setting the weights to -1
    # starting at 2 and pulled towards -1, the average keeps the product of its decays of the 2 - (-1) gap
    kept = np.prod([min(decay, (1 + n) / (10 + n)) for n in range(1, 7)])
    assert average.updates == 6 and average.exported is average.average
    for p in average.average.parameters():
        assert torch.allclose(p, torch.full_like(p, -1.0 + 3.0 * kept), atol=1e-6)
        assert not p.requires_grad
    assert all(torch.equal(p, torch.full_like(p, -1.0)) for p in net.parameters())


def _resumed_average(folder) -> GeneratorAverage:
    """A new generator and average resumed from the newest checkpoint in ``folder`` (the STARTED handlers only)."""
    net = ResnetGenerator(**TINY_GENERATOR)
    average = GeneratorAverage(net, 0.5)
    engine = _setting_engine(net, 0.0)
    load = {"generator_ab": net, "generator_average": average}
    for handler in (ResumeFromCheckpoint(str(folder), load, resume=True), average):
        handler.attach(engine)
    engine.fire_event(Events.STARTED)
    return average


def test_checkpoint_resume_restores_the_average_or_starts_it_from_the_resumed_generator(tmp_path):
    net = ResnetGenerator(**TINY_GENERATOR)
    average = GeneratorAverage(net, 0.5)
    engine = _setting_engine(net, 0.25)
    saved = {"generator_ab": net, "generator_average": average}
    for handler in (average, TrainingCheckpointSaver(str(tmp_path / "with"), saved)):
        handler.attach(engine)
    engine.run(_data(3), max_epochs=1)
    resumed = _resumed_average(tmp_path / "with")
    assert resumed.updates == 3
    assert all(torch.equal(v, average.average.state_dict()[k]) for k, v in resumed.average.state_dict().items())

    # a checkpoint written before averaging was on: the average starts from the resumed generator
    old_net = ResnetGenerator(**TINY_GENERATOR)
    engine = _setting_engine(old_net, 0.75)
    TrainingCheckpointSaver(str(tmp_path / "without"), {"generator_ab": old_net}).attach(engine)
    engine.run(_data(3), max_epochs=1)
    fresh = _resumed_average(tmp_path / "without")
    assert fresh.updates == 0
    assert all(torch.equal(p, torch.full_like(p, 0.75)) for p in fresh.average.parameters())
