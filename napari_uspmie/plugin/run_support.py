"""Pieces of the enhance widget's background run: cancel flag, progress bar and relay, option tips."""

from __future__ import annotations

import shutil
import threading
from typing import Any

__all__ = ["CancelFlag", "progress_bar", "progress_relay", "bf16_tooltip", "can_compile", "COMPILE_TIP"]


class CancelFlag:
    """Cancellation flag for the enhancer (``is_set()``): the cancel buttons set it, and a
    worker that napari asks to quit (viewer closing) counts as cancelled too."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.worker: Any = None

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set() or bool(self.worker is not None and self.worker.abort_requested)


def progress_bar(desc: str, on_cancel):
    """A napari progress bar (activity dock) whose cancel button calls ``on_cancel``."""
    from napari.utils import cancelable_progress

    class _Bar(cancelable_progress):
        def cancel(self) -> None:
            super().cancel()
            on_cancel()

    return _Bar(total=0, desc=desc)


def progress_relay():
    """A QObject whose signal carries ``(done, total)`` from the worker thread to the GUI thread."""
    from qtpy.QtCore import QObject, Signal

    class _Relay(QObject):
        progressed = Signal(int, int)

    return _Relay()


def bf16_tooltip() -> str:
    from napari_uspmie.inference.precision import cpu_bf16_flags

    flags = cpu_bf16_flags()
    hardware = (
        f"This CPU has bfloat16 hardware ({', '.join(flags)}): expect about 2-3x faster on CPU."
        if flags
        else "This CPU has no bfloat16 hardware (AMX / AVX-512 BF16): on CPU it may be slower; leave it off."
    )
    return (
        "Run the network in bfloat16 instead of float32. Results differ slightly (about 0.1 grey level on "
        f"average in 8-bit images). {hardware}"
    )


def can_compile() -> bool:
    """``torch.compile`` builds C++ kernels with g++ on CPU (Triton kernels on CUDA)."""
    import torch

    return shutil.which("g++") is not None or torch.cuda.is_available()


COMPILE_TIP = (
    "Run the network through torch.compile (on CPU with faster forms of its convolutions). The first run per "
    "slice size compiles for a few seconds; later slices of that size run about 2x faster, with "
    "the same results to 1e-4. Worth it for volumes and repeated runs."
)
