"""The thread policy for shared cores: real spinning processes take threads away, and give them back."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from napari_uspmie import lassim
from napari_uspmie.metric.cpu_share import busy_cores_elsewhere, shared_core_threads, threads_for_shared_cores

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the busy-core measure reads /proc")


def _measure_over(seconds: float) -> float:
    busy_cores_elsewhere()  # start a window
    time.sleep(seconds)
    busy = busy_cores_elsewhere()
    assert busy is not None
    return busy


@pytest.fixture
def all_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


def test_spinning_processes_on_every_core_leave_one_thread_and_threads_come_back(all_threads):
    cores = all_threads
    if cores < 2:
        pytest.skip("one core: there is no thread to take away")
    if _measure_over(0.4) > 0.5:
        pytest.skip("other processes already keep a core busy: no idle state to compare with")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.3)
        loaded = _measure_over(0.6)
        assert loaded >= cores - 0.6
        assert threads_for_shared_cores() == 1
        a = np.random.default_rng(0).random((64, 64))
        with shared_core_threads("cpu") as threads:
            assert threads == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == cores  # restored
        assert 0.0 < lassim(a, a + 0.01 * a[::-1], level=2) <= 1.0  # and a real call runs under the policy
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    time.sleep(0.3)
    idle = _measure_over(0.6)
    assert idle <= loaded - 1  # the spinners' cores are counted free again
    with shared_core_threads("meta") as threads:  # other devices: torch's setting, untouched
        assert threads == cores and torch.get_num_threads() == cores
