"""Winograd F(4x4, 3x3) convolution for the generator's 3x3 layers (CPU inference).

A 3x3 stride-1 convolution computed on 6x6 input tiles, each giving a 4x4 output tile
(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016):

    Y = A^T [ (G g G^T) * (B^T d B) ] A

The tile transforms are products with the Kronecker matrices ``B^T (x) B^T`` (36 x 36) and
``A^T (x) A^T`` (16 x 36), and the channel mixing is 36 independent matrix products, so a
layer costs 4x fewer multiplications than direct convolution. On a CPU whose direct
convolutions already run near the matmul peak (the paper's 256-channel residual blocks),
this is the only way left to run them faster in float32. Results agree with
``F.conv2d`` to a few 1e-5 of the output's scale in float32 (the transforms' constants are
small integers and fractions; weights are transformed once, in float64).

Meant for inference on CPU: CUDA's cuDNN picks Winograd kernels of its own, and under
bfloat16 autocast the transforms would lose too much precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_uspmie.inference.layer_rewrite import replace_layers

__all__ = [
    "WINOGRAD_MIN_CHANNELS",
    "WinogradConv2d",
    "winograd_weight",
    "winograd_conv3x3",
    "to_winograd",
    "is_winograd_eligible",
]

#: Narrowest layer (input and output channels) that the compiled network computes by Winograd. The
#: transforms cost in proportion to the channels, the saved products to their square: compiled, a
#: residual block ran 0.84-0.92x at 64 channels, 1.22x at 128 and 1.78x at 256 on an AMD AVX2 CPU;
#: the whole shipped generator (64 channels wide) ran 1.25x with Winograd on an Intel CPU with AMX,
#: 0.69x on the AMD one. Winograd is kept where it pays on both.
WINOGRAD_MIN_CHANNELS = 128
TILE = 4  # output samples per tile side; input tiles are TILE + 2
_B_T = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_A_T = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))


def _kron(rows: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    m = torch.tensor(rows, dtype=torch.float64)
    return torch.kron(m, m).to(dtype=dtype, device=device)


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """Transform ``(C_out, C_in, 3, 3)`` convolution weights to ``(36, C_in, C_out)``.

    Raises:
        ValueError: the weights are not 3x3.
    """
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"expected (C_out, C_in, 3, 3) weights, got shape {tuple(weight.shape)}.")
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Valid 3x3 stride-1 convolution (cross-correlation, as ``F.conv2d``) by Winograd F(4x4, 3x3).

    Args:
        x: ``(N, C_in, H, W)`` input, already padded as the layer needs (output is ``H-2 x W-2``).
        u: ``(36, C_in, C_out)`` weights from :func:`winograd_weight`.
        bias: optional ``(C_out,)``.

    Returns:
        ``(N, C_out, H - 2, W - 2)``.

    Raises:
        ValueError: channel mismatch or an input smaller than 3x3.
    """
    n, c, h_in, w_in = x.shape
    if u.shape[1] != c:
        raise ValueError(f"input has {c} channels, the weights expect {u.shape[1]}.")
    if h_in < 3 or w_in < 3:
        raise ValueError(f"input of spatial size {(h_in, w_in)} is smaller than the 3x3 kernel.")
    h, w = h_in - 2, w_in - 2
    th, tw = -(-h // TILE), -(-w // TILE)
    # Zero samples complete the last tiles; the outputs they touch are cropped below.
    x = F.pad(x, (0, TILE * tw + 2 - w_in, 0, TILE * th + 2 - h_in))
    tiles = x.unfold(2, TILE + 2, TILE).unfold(3, TILE + 2, TILE)  # (N, C, th, tw, 6, 6), a view
    tiles = tiles.permute(4, 5, 0, 2, 3, 1).reshape(36, -1)  # (36, N*th*tw*C)
    v = torch.mm(_kron(_B_T, x.dtype, x.device), tiles).view(36, n * th * tw, c)
    m = torch.bmm(v, u)  # (36, tiles, C_out)
    c_out = u.shape[2]
    y = torch.mm(_kron(_A_T, x.dtype, x.device), m.view(36, -1)).view(TILE, TILE, n, th, tw, c_out)
    y = y.permute(2, 5, 3, 0, 4, 1).reshape(n, c_out, TILE * th, TILE * tw)[:, :, :h, :w]
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def is_winograd_eligible(module: nn.Module) -> bool:
    """A plain 3x3 stride-1 ``nn.Conv2d`` (no dilation or groups, zero padding if any)."""
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


class WinogradConv2d(nn.Module):
    """Drop-in replacement for an eligible ``nn.Conv2d`` (see :func:`is_winograd_eligible`), inference only.

    The transformed weights are a copy: later changes to the source layer do not reach it.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not is_winograd_eligible(conv):
            raise ValueError(f"{conv} is not a 3x3 stride-1 convolution that Winograd F(4x4, 3x3) can replace.")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.padding = tuple(conv.padding)
        self.register_buffer("weight_winograd", winograd_weight(conv.weight))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        return winograd_conv3x3(x, self.weight_winograd, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), padding={self.padding}, F(4x4, 3x3)"


def to_winograd(network: nn.Module, min_channels: int = 1) -> nn.Module:
    """A copy of ``network`` with every eligible 3x3 convolution computed by Winograd F(4x4, 3x3).

    Args:
        network: the network; left untouched (the copy is for inference, its weights are fixed).
        min_channels: only layers with at least this many input and output channels
            (:data:`WINOGRAD_MIN_CHANNELS`: where it pays on every CPU measured).
    """

    def wide_and_eligible(module: nn.Module) -> bool:
        return is_winograd_eligible(module) and min(module.in_channels, module.out_channels) >= min_channels

    return replace_layers(network, wide_and_eligible, WinogradConv2d)
