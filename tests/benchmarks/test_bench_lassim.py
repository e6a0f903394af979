"""The LaSSIM benchmark runs (quick mode) and reports scores equal to the reference pipeline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_table(tmp_path):
    out = tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_lassim", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if re.match(r"\| \d+x\d+ \|", line)]
    assert len(rows) == 2 * 2 * 3  # sizes x batches x (user layout, float32, float64) on the CPU
    for row in rows:
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        ours, ref, speedup, diff = float(cells[4]), float(cells[5]), float(cells[6].rstrip("x")), float(cells[9])
        assert ours > 0 and ref > 0 and abs(speedup - ref / ours) < 0.02 * speedup + 0.01
        assert abs(float(cells[7]) - 1e3 / ours) < 0.02 * float(cells[7]) + 1  # pairs per second
        assert all(float(mb) >= 0 for mb in cells[8].split("/"))  # peak memory of both sides
        assert diff < (1e-10 if cells[3] == "float64" else 1e-6)
