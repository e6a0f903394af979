"""The one timer of the benchmarks: functions timed in turn, round after round."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = ["time_calls"]


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_calls(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    device: str | torch.device = "cpu",
    min_seconds: float = 0.0,
    warmup: int = 1,
    alternate: bool = False,
) -> dict[str, list[float]]:
    """Seconds per call of each function in every round, the functions timed in turn within a round.

    Timing in turn keeps a comparison fair when the machine's load drifts (shared CPUs): each
    function sees the same load. Callers report the best round (the least disturbed) or the median.

    Args:
        fns: the functions, by name.
        rounds: rounds to time.
        device: CUDA work is synchronised before and after each timing.
        min_seconds: a function is called again until this long has passed (at least once); its
            round then counts the mean seconds per call.
        warmup: untimed calls of each function first (allocator, lazy initialisation, kernels).
        alternate: reverse the order every other round, so that no function always runs right
            after the same other one.

    Returns:
        For each name, ``rounds`` seconds per call.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(rounds):
        order = list(fns) if not (alternate and i % 2) else list(reversed(fns))
        for name in order:
            calls = 0
            _sync(device)
            start = time.perf_counter()
            while True:
                fns[name]()
                calls += 1
                _sync(device)
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            times[name].append(elapsed / calls)
    return times
