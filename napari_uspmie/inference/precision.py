"""Reduced-precision inference: which autocast a device gets, and whether the CPU has bf16 hardware.

Defaults keep the paper's float32 everywhere except CUDA, where ``amp`` (float16 autocast) is on.
``bf16=True`` is an explicit opt-in for speed: bfloat16 keeps float32's range but only 8 bits of
mantissa, so enhanced images differ from float32 ones by a few thousandths of the [-1, 1] range on
average (see ``docs/benchmarks.md``). On CPUs with AMX tiles (Intel Xeon 4th generation and later)
or AVX-512 BF16, oneDNN runs bfloat16 convolutions several times faster than float32; elsewhere it
emulates them and can be slower than float32.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the flag probe stays importable without torch (the napari widget asks it early)
    import torch

__all__ = ["autocast_for", "cpu_flags", "cpu_bf16_flags", "cpu_has_fast_bf16"]

_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=4)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's instruction-set flags as Linux reports them.

    Args:
        cpuinfo: Linux's CPU description file.

    Returns:
        The flags of the first CPU listed; empty where the file is missing (macOS, Windows).
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The CPU's bfloat16 instruction-set flags (``amx_bf16``, ``avx512_bf16``).

    Args:
        cpuinfo: Linux's CPU description file.

    Returns:
        The flags present, in that order; empty where the file is missing (macOS, Windows).
    """
    flags = cpu_flags(cpuinfo)
    return tuple(f for f in _BF16_FLAGS if f in flags)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bfloat16 hardware (AMX or AVX-512 BF16) for ``bf16=True`` to pay off."""
    return bool(cpu_bf16_flags())


def autocast_for(device: torch.device, amp: bool = True, bf16: bool = False) -> contextlib.AbstractContextManager:
    """The autocast context an inference call on ``device`` runs under.

    Args:
        device: where the network runs.
        amp: float16 autocast on CUDA (ignored elsewhere).
        bf16: bfloat16 autocast on CPU and CUDA; takes precedence over ``amp``. Other devices
            (e.g. Apple MPS) stay in float32.

    Returns:
        A ``torch.autocast`` context, or a no-op context for float32.
    """
    import torch

    if bf16 and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
