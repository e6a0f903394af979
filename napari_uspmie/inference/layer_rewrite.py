"""Copies of a network with some of its layers swapped for equivalent inference-only ones."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

__all__ = ["replace_layers"]


def replace_layers(
    network: nn.Module, eligible: Callable[[nn.Module], bool], replacement: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """A copy of ``network`` in which every submodule that is ``eligible`` becomes ``replacement(submodule)``.

    The original is left untouched; the copy is meant for inference (its weights are fixed).
    """
    net = copy.deepcopy(network)
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if eligible(child):
                setattr(parent, name, replacement(child))
    return net
