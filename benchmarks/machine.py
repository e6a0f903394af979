"""Machine description and its measured matmul throughput, shared by the benchmarks."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator

import torch

from benchmarks.timing import time_calls

__all__ = [
    "machine_info",
    "matmul_gflops",
    "peak_rss_mb",
    "PeakMemory",
    "load_note",
    "cpu_family",
    "family_slug",
    "family_page",
]


def matmul_gflops(device: str = "cpu", n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Measured matmul GFLOP/s of ``device`` in ``dtype`` (best of ``repeats``): the practical compute ceiling.

    A 2048 x 2048 product is large enough for the BLAS to reach its peak on CPUs and small GPUs
    alike; the best run, not the median, is the ceiling a convolution could at most reach.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = min(time_calls({"matmul": lambda: a @ b}, repeats, device)["matmul"])
    return 2 * n**3 / best / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(key: str) -> float | None:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``) in MiB; ``None`` off Linux."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    """Hand the C heap's free memory back to the system (glibc), so the resident set is what is in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory a block adds: resident set on CPU, allocated memory on CUDA.

    On Linux the process's high-water mark is reset on entry (``/proc/self/clear_refs``), so
    each block is measured on its own; ``extra_mb`` is that peak minus the memory in use on entry.
    Elsewhere it falls back to ``ru_maxrss`` (a lifetime peak: a lower bound for later blocks).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.cuda = str(device).startswith("cuda")
        self.extra_mb = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated() / 2**20
            return self
        _trim_heap()  # memory freed earlier would otherwise be reused unseen, or counted as in use
        try:
            with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
                f.write("5")  # reset the peak resident set to the current one
        except OSError:
            pass
        self._start = _status_mb("VmRSS") or peak_rss_mb()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.extra_mb = torch.cuda.max_memory_allocated() / 2**20 - self._start
        else:
            self.extra_mb = (_status_mb("VmHWM") or peak_rss_mb()) - self._start


@contextlib.contextmanager
def spinning_processes(count: int) -> Iterator[None]:
    """Keep ``count`` other processes spinning on the CPU for the block (a machine whose cores are shared)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def load_note() -> str:
    """The machine's 1-minute load average against its cores, to state beside the figures."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "load unknown"
    return f"1-min load average {load:.2f} on {os.cpu_count()} cores at the end of the run"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


#: vector and matrix instruction sets that decide which kernels oneDNN and OpenCV run
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
                "amx_bf16", "amx_int8", "neon", "asimd", "sve")  # fmt: skip


def cpu_vector_flags() -> list[str]:
    """The :data:`VECTOR_FLAGS` this CPU reports in ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in VECTOR_FLAGS if flag in present]
    except OSError:
        pass
    return []


def cpu_family() -> str:
    """A short name of the CPU family for the benchmark pages' per-family sections: vendor and widest ISA."""
    name = _cpu_name()
    vendor = "Intel" if "Intel" in name else "AMD" if "AMD" in name else platform.machine()
    flags = cpu_vector_flags()
    ranked = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sve", "SVE"), ("asimd", "NEON"))
    widest = next((name for flag, name in ranked if flag in flags), "other")
    return f"{vendor} {widest}"


def family_slug(family: str) -> str:
    """``family`` as a file-name suffix: ``"Intel AMX"`` -> ``"intel_amx"``."""
    return "".join(c if c.isalnum() else "_" for c in family.lower()).strip("_")


def family_page(name: str) -> str:
    """The file name of benchmark page ``name`` for this machine's CPU family: ``benchmarks_<name>_<family>.md``."""
    return f"benchmarks_{name}_{family_slug(cpu_family())}.md"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    info = {
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import cv2

        info["OpenCV threads"] = str(cv2.getNumThreads())
    except ImportError:
        pass
    from napari_uspmie.inference.precision import cpu_bf16_flags

    info["CPU bfloat16 hardware"] = ", ".join(cpu_bf16_flags()) or "none"
    info["CPU vector/matrix extensions"] = ", ".join(cpu_vector_flags()) or "unknown"
    info["CPU family"] = cpu_family()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
