"""An exponential moving average of the A->B generator's weights, the generator a run exports.

A GAN's generator keeps moving with its discriminator: the weights of the last iteration are one
sample of an oscillation, and which sample a run ends on differs from seed to seed. The average
of the weights over the last iterations sits in the middle of that oscillation (the averaged
generator of progressive GANs and StyleGAN). Training itself is unchanged: the average only
follows the trained generator and is what :class:`~napari_uspmie.training.handlers.GeneratorExporter`
writes when ``generator_average`` is set.

Conventions: ``decay`` is the weight of the old average at each update; the average of update
``n`` uses ``min(decay, (1 + n) / (10 + n))``, so its first updates are not dominated by the
initial weights. ``decay`` 0 turns averaging off (the paper's training). Buffers (none in the
generators' instance norms) are copied, not averaged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from napari_uspmie.errors import SettingError
from napari_uspmie.training.trainer import unwrap

__all__ = ["GeneratorAverage"]

logger = logging.getLogger(__name__)


class GeneratorAverage:
    """Exponential moving average of ``network``'s weights, updated after every training iteration.

    Saved in checkpoints through ``state_dict``/``load_state_dict``; a resumed run whose checkpoint
    holds no average starts it from the resumed weights.

    Args:
        network: the A->B generator being trained (DDP-wrapped or not).
        decay: weight of the old average per iteration, in ``[0, 1)``; 0 turns averaging off.

    Raises:
        SettingError: ``decay`` outside ``[0, 1)``.
    """

    #: checkpoints written before averaging was added still resume (see ResumeFromCheckpoint)
    optional_in_checkpoint = True

    def __init__(self, network: nn.Module, decay: float = 0.0) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise SettingError(f"generator_average must be in [0, 1) (0: off), got {decay}.")
        self.network = network
        self.decay = float(decay)
        self.updates = 0
        self.average: nn.Module | None = None
        if self.decay > 0:
            self.average = copy.deepcopy(unwrap(network)).requires_grad_(False).eval()

    @property
    def exported(self) -> nn.Module:
        """The generator to export: the average when averaging, else the trained network."""
        return self.network if self.average is None else self.average

    def attach(self, engine: Engine) -> None:
        """Update the average after every iteration of ``engine`` (nothing when averaging is off)."""
        if self.average is None:
            return
        # after a resume handler attached earlier has loaded the checkpoint
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def start(self, engine: Engine | None = None) -> None:
        """Start the average from the network's weights unless a checkpoint gave one."""
        if self.average is None or self.updates:
            return
        if engine is not None and engine.state.iteration > 0:
            logger.warning("the resumed checkpoint holds no weight average; it starts from the resumed generator.")
        self.average.load_state_dict(unwrap(self.network).state_dict())

    @torch.no_grad()
    def update(self, engine: Engine | None = None) -> None:
        """Move the average towards the network's current weights."""
        if self.average is None:
            return
        self.updates += 1
        weight = 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        trained = unwrap(self.network)
        for mean, value in zip(self.average.parameters(), trained.parameters(), strict=True):
            mean.lerp_(value.detach().to(mean.dtype), weight)
        for mean, value in zip(self.average.buffers(), trained.buffers(), strict=True):
            mean.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """``updates`` and, when averaging, the average's weights (``average``)."""
        if self.average is None:
            return {"updates": 0}
        return {"updates": self.updates, "average": self.average.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a saved average; a state without one (averaging was off) leaves it to :meth:`start`."""
        if self.average is None:
            return
        if "average" not in state:
            self.updates = 0
            return
        self.average.load_state_dict(state["average"])
        self.updates = int(state["updates"])
