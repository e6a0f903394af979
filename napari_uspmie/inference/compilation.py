"""Preparing a generator for inference: the CPU layer rewrites, and ``torch.compile`` per process.

:func:`eager_layers` is what the CPU runs without a compiler: layers rewritten into forms that
are faster on a CPU even eagerly. :func:`compile_layers` prepares the module every compiled form
runs (``Enhancer(compile=True)`` and the cached libraries of
:mod:`napari_uspmie.inference.compiled_cache`); :func:`compile_network` compiles it in the
current process, per input shape.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_uspmie.inference.depthwise_sum import to_depthwise_sum
from napari_uspmie.inference.inferer import mark_compiled
from napari_uspmie.inference.phase_upsample import to_phase_upsample
from napari_uspmie.inference.winograd import WINOGRAD_MIN_CHANNELS, to_winograd

__all__ = ["eager_layers", "compile_layers", "compile_network"]


def _on_cpu(network: nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in network.parameters()) and all(
        b.device.type == "cpu" for b in network.buffers()
    )


def eager_layers(network: nn.Module, bf16: bool = False) -> nn.Module:
    """What the CPU runs eagerly in float32: a copy of ``network`` with its resize-convolutions as
    phase filters (:mod:`napari_uspmie.inference.phase_upsample`) and its convolutions to one output
    channel as depthwise + sum (:mod:`napari_uspmie.inference.depthwise_sum`).

    Both are the layers' own arithmetic in another order (results agree to float32 rounding) and
    run faster on a CPU without a compiler. ``network`` itself comes back off the CPU (cuDNN picks
    its own algorithms), under bfloat16 autocast, and for TorchScript modules.
    """
    if isinstance(network, torch.jit.ScriptModule) or bf16 or not _on_cpu(network):
        return network
    return to_depthwise_sum(to_phase_upsample(network))


def compile_layers(network: nn.Module, fast_layers: bool | None = None, bf16: bool = False) -> nn.Module:
    """The eager module :func:`compile_network` compiles: ``network``, or a copy with faster CPU layers.

    Args:
        network: a module in evaluation mode (a TorchScript module is returned as it is).
        fast_layers: rewrite layers for float32 CPU inference: 3x3 stride-1 convolutions of at
            least ``WINOGRAD_MIN_CHANNELS`` channels by Winograd F(4x4, 3x3)
            (:mod:`napari_uspmie.inference.winograd`; 4x fewer multiplications) and convolutions to
            one output channel as depthwise + sum (:mod:`napari_uspmie.inference.depthwise_sum`);
            results within a few 1e-5. ``None``: on when the network's weights are on the CPU
            (cuDNN picks its own algorithms) and it will not run under bfloat16 autocast
            (Winograd's transforms need float32 precision).
        bf16: the network will run under bfloat16 autocast.

    Returns:
        A rewritten copy, or ``network`` itself when no layer is rewritten.
    """
    if isinstance(network, torch.jit.ScriptModule):
        return network
    if fast_layers is None:
        fast_layers = not bf16 and _on_cpu(network)
    # Phase filters are left to eager runs: compiled, they ran 1.07x faster on batches of eight
    # 288-pixel slices and 0.86x slower on one 544-pixel slice (Intel AMX), not a gain everywhere.
    return to_depthwise_sum(to_winograd(network, WINOGRAD_MIN_CHANNELS)) if fast_layers else network


def compile_network(network: nn.Module, fast_layers: bool | None = None, bf16: bool = False) -> nn.Module:
    """``torch.compile`` for inference: static shapes, weights frozen into the graph as constants.

    Freezing lets Inductor pre-pack the convolution weights (oneDNN on CPU) and fuse the
    instance norms, ReLUs and paddings around them; it assumes the weights no longer change.
    Each new input shape compiles anew; past ``torch._dynamo.config.recompile_limit`` shapes
    (8 by default, counted per process) further shapes run eager, with the same results.

    Args:
        network: a module in evaluation mode; a TorchScript module is returned as it is (it has
            its own optimising compiler).
        fast_layers, bf16: as for :func:`compile_layers`, which prepares the module compiled.

    Returns:
        The compiled module (attributes such as ``in_channels`` still read through); the
        network passed in is left as it is.
    """
    if isinstance(network, torch.jit.ScriptModule):
        return network
    layers = compile_layers(network, fast_layers, bf16)
    return mark_compiled(torch.compile(layers, dynamic=False, options={"freezing": True}))
