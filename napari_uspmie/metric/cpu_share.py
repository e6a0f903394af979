"""How many CPU threads a computation should use when other processes share the cores.

torch's CPU kernels run on an OpenMP pool with one thread per core, and OpenMP threads spin
while they wait for each other. When another process keeps one of those cores busy, the thread
that lands there is descheduled for whole time slices while its siblings spin, and a call that
takes milliseconds on an idle machine takes ten times longer (a 2-thread LaSSIM batch on 2 cores
with both cores busy elsewhere ran 6-9 times slower than with 1 thread). So computations that
follow this policy run on the cores nobody else is using:

* the cores this process may run on (its affinity mask), less
* the cores other processes kept busy since the previous look, measured on those cores from
  ``/proc/stat`` with this process's own CPU time taken out, or, on the first look, the other
  runnable tasks ``/proc/loadavg`` counts right now,
* at least one, and never more than torch's thread setting.

Where ``/proc`` is not available (macOS, Windows) torch's setting is used unchanged.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["busy_cores_elsewhere", "threads_for_shared_cores", "shared_core_threads"]

#: shortest window over which /proc/stat's 10 ms ticks give a usable busy share
MIN_WINDOW_S = 0.2
#: a core counts as busy elsewhere when others used at least this share of it
BUSY_SHARE = 0.5


@dataclass(frozen=True)
class _Sample:
    wall: float
    busy_ticks: int
    own_ticks: int


_lock = threading.Lock()
_last: _Sample | None = None
_last_busy: float = 0.0


def _cores() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _sample(cores: set[int]) -> _Sample | None:
    """Busy ticks of ``cores`` and this process's CPU ticks, or None without ``/proc``."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            ticks = [int(v) for v in rest.split()]
            busy += sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # less idle and iowait
    return _Sample(time.monotonic(), busy, int(own[11]) + int(own[12]))  # utime + stime


def _runnable_elsewhere() -> float | None:
    """Runnable tasks right now (``/proc/loadavg``) that are not this process's running threads."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        own = 0
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                own += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return float(max(0, running - own))


def busy_cores_elsewhere() -> float | None:
    """Cores of this process's affinity mask that other processes kept busy, or None if unknown.

    Measured over the time since the previous call (at least ``MIN_WINDOW_S``; a shorter window
    repeats the previous answer); the first call counts runnable tasks instead.
    """
    global _last, _last_busy
    with _lock:
        if _last is not None and time.monotonic() - _last.wall < MIN_WINDOW_S:
            return _last_busy
        cores = _cores()
        now = _sample(cores)
        if now is None:
            return None
        if _last is None:
            _last = now
            elsewhere = _runnable_elsewhere()
            _last_busy = 0.0 if elsewhere is None else min(float(len(cores)), elsewhere)
            return _last_busy
        window = now.wall - _last.wall
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        others = (now.busy_ticks - _last.busy_ticks) - (now.own_ticks - _last.own_ticks)
        _last_busy = min(float(len(cores)), max(0.0, others / ticks_per_s / window))
        _last = now
        return _last_busy


def threads_for_shared_cores() -> int:
    """Threads for the next CPU computation: torch's setting, less the cores busy elsewhere."""
    wanted = torch.get_num_threads()
    busy = busy_cores_elsewhere()
    if busy is None:
        return wanted
    free = len(_cores()) - int(busy + (1 - BUSY_SHARE))
    return max(1, min(wanted, free))


@contextlib.contextmanager
def shared_core_threads(device: torch.device | str = "cpu") -> Iterator[int]:
    """Run the block with :func:`threads_for_shared_cores` torch threads (CPU only); yields the count.

    torch's setting is restored afterwards. On other devices nothing changes.
    """
    wanted = torch.get_num_threads()
    if torch.device(device).type != "cpu":
        yield wanted
        return
    threads = threads_for_shared_cores()
    if threads == wanted:
        yield wanted
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(wanted)
