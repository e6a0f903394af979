"""Colour <-> network channel adaptation: run grey or RGB generators on grey or RGB images.

A grey model on an RGB image enhances the luminance ``Y = 0.2125 R + 0.7154 G + 0.0721 B``
(scikit-image's weights, the ones LaSSIM uses) and adds the change ``Y' - Y`` to each channel,
which keeps the chroma (``R - Y``, ``B - Y``) exactly; an RGB model on a grey image gets the grey
channel three times and its output is reduced with the same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from napari_uspmie.metric.luma import GRAY_WEIGHTS

__all__ = ["ChannelAdapter", "network_channels"]


def network_channels(network: nn.Module) -> tuple[int, int]:
    """``(in_channels, out_channels)`` of a generator: its attributes, else its first and last conv weights."""
    cin, cout = getattr(network, "in_channels", None), getattr(network, "out_channels", None)
    if isinstance(cin, int) and isinstance(cout, int):
        return cin, cout
    convs = [p for name, p in network.named_parameters() if name.endswith("weight") and p.ndim == 4]
    if not convs:
        raise ValueError("cannot tell the network's channels: no 2D convolution weights found.")
    return int(convs[0].shape[1]), int(convs[-1].shape[0])


class ChannelAdapter(nn.Module):
    """Run a 1- or 3-channel network on 1- or 3-channel images (see the module docstring).

    Args:
        network: the generator.
        image_channels: channels of the images it will be called with (1 or 3).
    """

    def __init__(self, network: nn.Module, image_channels: int) -> None:
        super().__init__()
        self.network = network
        self.net_in, self.net_out = network_channels(network)
        if image_channels not in (1, 3) or self.net_in not in (1, 3) or self.net_out not in (1, 3):
            raise ValueError(
                f"cannot run a {self.net_in}->{self.net_out} channel network on {image_channels}-channel images; "
                "images must be grey (1) or RGB (3)."
            )
        self.image_channels = image_channels

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self.network)

    def run(self, x: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """:meth:`forward` with ``network`` called in place of the wrapped one (e.g. a layer stream)."""
        c = self.image_channels
        luma = (x * self._weights(x)).sum(1, keepdim=True) if c == 3 else x
        inp = x if self.net_in == c else (luma if self.net_in == 1 else x.expand(-1, 3, -1, -1))
        out = network(inp)
        if out.shape[1] == c:
            return out
        if c == 3:  # grey output on a colour image: shift every channel by the luminance change
            return (x + (out - luma)).clamp(-1.0, 1.0)
        return (out * self._weights(out)).sum(1, keepdim=True)
