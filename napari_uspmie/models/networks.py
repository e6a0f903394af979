"""Networks of LaMEGAN: CycleGAN's ResNet generator and 70x70 PatchGAN, VGG19 slice.

The defaults are the paper's (CycleGAN's): ``ngf = ndf = 64``, 9 residual blocks,
instance norm without affine parameters or running statistics, convolutions with
bias, no dropout, weights drawn from N(0, 0.02).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "UPSAMPLE_MODES",
    "ResnetGenerator",
    "ResizeConv2d",
    "PatchDiscriminator",
    "VGG19Features",
    "init_weights",
    "make_norm",
]

#: how the generator doubles the resolution: the paper's transposed convolutions, or resize then convolve
UPSAMPLE_MODES = ("transpose", "resize")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``"instance"`` (paper), ``"batch"`` or ``"none"``."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'instance', 'batch' or 'none', got {norm!r}.")


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's ``normal`` init: conv weights N(0, gain), batch-norm weights N(1, gain), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


class ResnetBlock(nn.Module):
    """``x + [pad, conv3x3, norm, ReLU, pad, conv3x3, norm](x)`` with reflection padding."""

    def __init__(self, channels: int, norm: str = "instance", bias: bool = True) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResizeConv2d(nn.Module):
    """Nearest-neighbour 2x upsampling, reflection pad 1, then a 3x3 convolution.

    The standard cure for the checkerboard artefact of stride-2 transposed convolutions (Odena,
    Dumoulin, Olah, "Deconvolution and checkerboard artifacts", Distill 2016): every output pixel
    sees the same number of input pixels, so no period-2 pattern is built into the layer. Same
    parameter count as the 3x3 transposed convolution it replaces.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")  # a float: TorchScript exports it
        return self.conv(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator: 7x7 stem, two stride-2 downsamplings, residual blocks,
    two transposed-conv upsamplings, 7x7 head and tanh.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
        ngf: filters of the first layer (paper: 64).
        n_blocks: residual blocks (paper: 9).
        norm: ``"instance"`` (paper), ``"batch"`` or ``"none"``.
        init_gain: standard deviation of the N(0, gain) weight init.
        upsample: ``"transpose"`` (the paper's stride-2 transposed convolutions) or ``"resize"``
            (:class:`ResizeConv2d`, free of the transposed convolutions' 4-pixel checkerboard;
            a documented deviation used by the shipped model). Both keep three layers per
            upsampling stage, so the other layers' weight names do not depend on the choice.
        residual: predict a correction to the input instead of the image: the output is
            ``clamp(x + 2 * tanh(head), -1, 1)``, where the paper's output is ``tanh(head)``: the skip
            carries the input's detail to the output, so the layers only learn what to change (a
            documented deviation used by the shipped model, against the blurred clean inputs of
            the paper's form). All layers keep the paper's init: a head initialised to zero would
            start at the exact identity, where the L1 cycle and identity terms hold the generator
            and it learns no enhancement. Needs as many output channels as input channels. The
            weights carry a ``residual_scale`` buffer, so a residual generator is recognised from
            its state dict alone.

    Input spatial sizes should be multiples of 4 to come back at the same size.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        init_gain: float = 0.02,
        upsample: str = "transpose",
        residual: bool = False,
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}.")
        if residual and in_channels != out_channels:
            raise ValueError(
                f"a residual generator needs in_channels == out_channels ({in_channels} != {out_channels})."
            )
        bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            make_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), make_norm(norm, 2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm, bias) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            up = (
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias)
                if upsample == "transpose"
                else ResizeConv2d(c, c // 2, bias=bias)
            )
            layers += [up, make_norm(norm, c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.upsample = upsample
        self.residual = bool(residual)
        # the largest correction: 2 reaches every value of [-1, 1] from every other; a None buffer
        # stays out of the state dict and keeps the module scriptable
        self.register_buffer("residual_scale", torch.tensor(2.0) if self.residual else None)
        init_weights(self, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(x, self.model(x))

    def finish(self, x: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """The output from the input ``x`` and the layer sequence's output ``head`` (in [-1, 1]).

        The layer sequence's output itself for the paper's generator; for a residual one, the
        input plus the scaled correction, clamped to [-1, 1].
        """
        scale = self.residual_scale
        if scale is None:
            return head
        return (x + scale.to(head.dtype) * head).clamp(-1.0, 1.0)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: 4x4 convs, ``n_layers`` stride-2 layers plus one stride-1 layer,
    LeakyReLU 0.2, norm after all but the first conv, 1-channel 4x4 output conv.

    Args:
        in_channels: channels of the judged image.
        ndf: filters of the first layer (paper: 64).
        n_layers: stride-2 layers (paper: 3, giving a 70x70 receptive field).
        norm: ``"instance"`` (paper), ``"batch"`` or ``"none"``.
        init_gain: standard deviation of the N(0, gain) weight init.
    """

    def __init__(
        self,
        in_channels: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        init_gain: float = 0.02,
    ) -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                make_norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class VGG19Features(nn.Module):
    """VGG19 ``features[:10]`` (conv1_1 .. pool2), frozen, with torchvision's key names.

    A state dict of torchvision's ``vgg19`` (``features.N.weight``/``bias``) loads
    into it through :meth:`load_torchvision_state_dict`; nothing here needs torchvision.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(True),
            nn.MaxPool2d(2, 2),
        )
        self.requires_grad_(False)
        self.eval()

    def load_torchvision_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load the first ten ``features`` layers from a full torchvision VGG19 state dict.

        Raises:
            ValueError: the dict lacks those layers or their shapes differ.
        """
        own = self.state_dict()
        picked = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(picked))
        if missing:
            raise ValueError(f"VGG19 weights lack {missing}; expected torchvision's vgg19 state dict.")
        try:
            self.load_state_dict(picked, strict=True)
        except RuntimeError as err:
            raise ValueError(f"VGG19 weights do not fit conv1_1..pool2: {err}") from None

    def train(self, mode: bool = True) -> VGG19Features:
        # Frozen feature extractor: always evaluation mode.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
