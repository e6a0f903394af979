"""CycleGAN's learning-rate policy ``linear``: constant, then a linear ramp to zero, stepped per epoch."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.optimizer import Optimizer

__all__ = ["LinearDecayLambda", "LinearDecayLR", "linear_decay_scheduler"]


class LinearDecayLambda:
    """Learning-rate factor of CycleGAN's ``linear`` policy, for ``torch.optim.lr_scheduler.LambdaLR``.

    ``factor(e) = 1 - max(0, e + 1 - n_epochs) / (n_epochs_decay + 1)`` for ``e`` completed
    epochs: constant for ``n_epochs`` epochs, then a linear ramp towards 0 over
    ``n_epochs_decay`` epochs. A callable object (not a lambda) so that the scheduler's
    state dict stays plain data and checkpoints load with ``weights_only=True``.
    """

    def __init__(self, n_epochs: int = 200, n_epochs_decay: int = 100) -> None:
        if n_epochs < 0 or n_epochs_decay < 0:
            raise ValueError(f"n_epochs and n_epochs_decay must be >= 0, got {n_epochs}, {n_epochs_decay}.")
        self.n_epochs = int(n_epochs)
        self.n_epochs_decay = int(n_epochs_decay)

    def __call__(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - self.n_epochs) / float(self.n_epochs_decay + 1)


class LinearDecayLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` with :class:`LinearDecayLambda`; step it once per epoch.

    Loading a state dict restores the position (``last_epoch``) but keeps this run's
    schedule (base learning rate, ``n_epochs``, ``n_epochs_decay``), so a resumed run may
    extend or shorten training; the optimizer's learning rate is set to match at once.
    """

    def __init__(self, optimizer: Optimizer, n_epochs: int = 200, n_epochs_decay: int = 100) -> None:
        super().__init__(optimizer, LinearDecayLambda(n_epochs, n_epochs_decay))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = {k: v for k, v in state_dict.items() if k not in ("lr_lambdas", "base_lrs")}
        state["lr_lambdas"] = [None] * len(self.lr_lambdas)  # None: LambdaLR leaves our lambdas alone
        super().load_state_dict(state)
        lrs = [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas, strict=True)]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs


def linear_decay_scheduler(optimizer: Optimizer, n_epochs: int = 200, n_epochs_decay: int = 100) -> LinearDecayLR:
    """Constant learning rate for ``n_epochs``, then linear decay over ``n_epochs_decay`` (per-epoch steps)."""
    return LinearDecayLR(optimizer, n_epochs, n_epochs_decay)
