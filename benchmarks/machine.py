"""Machine description and its measured matmul throughput, shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import time

import torch

__all__ = ["machine_info", "matmul_gflops", "timeit", "peak_rss_mb"]


def timeit(fn, repeats: int = 5, warmup: int = 1, sync_cuda: bool = False) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_gflops(device: str = "cpu", n: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 matmul GFLOP/s of ``device``: the machine's practical compute ceiling."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    seconds = timeit(lambda: a @ b, repeats=repeats, warmup=2, sync_cuda=device == "cuda")
    return 2 * n**3 / seconds / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    info = {
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
