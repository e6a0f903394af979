"""The benchmarks' timer, FLOP count, peak-memory probe and target table (no timings asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks import run_all
from benchmarks.bench_call_size import call_sizes, picked_size
from benchmarks.flops import conv_flops
from benchmarks.machine import PeakMemory, family_page, family_slug
from benchmarks.targets import target_row, targets_table
from benchmarks.timing import time_calls
from napari_uspmie.inference.depthwise_sum import to_depthwise_sum
from napari_uspmie.inference.inferer import EnhancementInferer
from napari_uspmie.inference.phase_upsample import to_phase_upsample
from napari_uspmie.inference.winograd import to_winograd
from napari_uspmie.models.networks import ResizeConv2d, ResnetGenerator


def test_timer_runs_each_function_in_turn():
    """Warm-up calls first, then the functions in turn each round (reversed every other round with
    ``alternate``), each called until ``min_seconds`` have passed."""
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "ab"}
    times = time_calls(fns, rounds=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(times) == {"a", "b"} and all(len(t) == 3 and min(t) >= 0 for t in times.values())
    calls.clear()
    time_calls(fns, rounds=3, warmup=0, alternate=True)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    calls.clear()
    (seconds,) = time_calls({"a": fns["a"]}, rounds=1, warmup=0, min_seconds=0.02)["a"]
    assert len(calls) > 1 and seconds * len(calls) >= 0.02


def test_conv_flops_by_hand():
    conv = nn.Conv2d(3, 8, 5, stride=2, padding=2)  # 16x16 output, 3*25 taps per output sample
    assert conv_flops(conv, (2, 3, 32, 32)) == 2 * (2 * 8 * 16 * 16) * 3 * 25
    up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)  # each input scattered to 4*9
    assert conv_flops(up, (1, 8, 10, 10)) == 2 * 100 * 8 * 4 * 9


def test_paper_generator_costs_99_gflop():
    """METHOD.md's ResNet-9 generator at 256x256 RGB: about 99 GFLOP, almost all in the 18 block convolutions."""
    flops = conv_flops(ResnetGenerator(3, 3, ngf=64, n_blocks=9), (1, 3, 256, 256))
    assert flops == pytest.approx(99.1e9, rel=1e-3)
    block_convs = 18 * 2 * 64 * 64 * 256 * 256 * 9
    assert 0.85 < block_convs / flops < 0.9


def test_winograd_layers_count_what_they_run():
    """A 3x3 layer by Winograd F(4x4, 3x3) on a 9x10 output: 3x3 tiles of 4x4; input transform 36x36 per tile
    and channel, 36 channel products, output transform 16x36 per tile and output channel."""
    conv = nn.Conv2d(5, 7, 3)
    tiles = 2 * 3 * 3
    expected = 2 * tiles * (36 * 36 * 5 + 36 * 5 * 7 + 16 * 36 * 7)
    assert conv_flops(to_winograd(nn.Sequential(conv)), (2, 5, 11, 12)) == expected
    assert conv_flops(conv, (2, 5, 11, 12)) == 2 * (2 * 7 * 9 * 10) * 5 * 9
    head = nn.Conv2d(5, 1, 7)  # as depthwise + sum: the same products as the convolution
    assert conv_flops(to_depthwise_sum(nn.Sequential(head)), (2, 5, 20, 20)) == conv_flops(head, (2, 5, 20, 20))
    # a resize-convolution 4 -> 6 channels on 10x12: 3x3 on the 20x24 doubled image, or four 2x2 phases on 11x13
    up = nn.Sequential(ResizeConv2d(4, 6))
    assert conv_flops(up, (1, 4, 10, 12)) == 2 * 20 * 24 * 6 * 4 * 9
    assert conv_flops(to_phase_upsample(up), (1, 4, 10, 12)) == 2 * 11 * 13 * (4 * 6) * 4 * 4


def test_peak_memory_sees_a_large_allocation():
    import numpy as np

    with PeakMemory() as mem:
        a = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del a
    assert mem.extra_mb > 48


def test_targets_table_marks_met_and_missed(tmp_path: Path):
    lassim = {
        "threads": "2",
        "rows": [
            {"device": "cpu", "dtype": "float32", "batch": 1, "size": "272x480", "speedup": 1.2},
            {"device": "cpu", "dtype": "float32", "batch": 16, "size": "272x480", "speedup": 2.0},
            {"device": "cpu", "dtype": "float64", "batch": 16, "size": "272x480", "speedup": 9.0},
        ],
    }
    enhance = {
        "matmul_gflops": 100.0,
        "matmul_gflops_bf16": 400.0,
        "rows": [
            {"model": "m", "case": "c", "eager_s": 3.0, "compiled_s": 1.0, "gflop": 40.0}
            | {"bf16_s": 0.5, "bf16_diff_mean": 2e-3}
        ],
    }
    (tmp_path / "benchmarks_lassim.json").write_text(json.dumps(lassim))
    (tmp_path / "benchmarks_enhance.json").write_text(json.dumps(enhance))
    rows = [line for line in targets_table(tmp_path) if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 6  # the float64 row is not a target
    assert rows[0].endswith("| yes |") and rows[1].endswith("| **no** |")  # LaSSIM: 1.2 >= 1, 2.0 < 3
    assert "3.00x" in rows[2] and rows[2].endswith("| yes |")  # 3x over eager
    assert "40.00%" in rows[3] and rows[3].endswith("| **no** |")  # 40 GFLOP in 1 s of 100 GFLOP/s
    assert "bfloat16" in rows[4] and "6.00x" in rows[4] and "mean diff 2e-03" in rows[4]
    assert "20.00%" in rows[5] and rows[5].endswith("| **no** |")  # 40 GFLOP in 0.5 s of 400 bf16 GFLOP/s
    # shared cores: the same 2.0x meets the busy target (>= 1x); napari's click-to-result under 2 s
    (tmp_path / "benchmarks_lassim_busy.json").write_text(json.dumps({**lassim, "busy": 1}))
    (tmp_path / "benchmarks_napari.json").write_text(json.dumps({"later_click_median_s": 2.5}))
    lines = targets_table(tmp_path)
    busy = [line for line in lines if "spinning" in line]
    assert len(busy) == 2 and busy[1].endswith("| yes |") and "2.00x | >= 1x" in busy[1]
    napari = [line for line in lines if "napari" in line]
    assert len(napari) == 1 and napari[0].endswith("| **no** |")
    # a page with the per-slice baseline and no bfloat16 hardware: the default path's target, no bf16 rows
    amd = {"matmul_gflops": 100.0, "cpu_family": "AMD AVX2", "rows": [{**enhance["rows"][0], "eager_slices_s": 1.2}]}
    del amd["rows"][0]["bf16_s"]
    amd["rows"][0]["enhance_s"] = 1.0
    (tmp_path / "benchmarks_enhance_amd_avx2.json").write_text(json.dumps(amd))
    default = [line for line in targets_table(tmp_path) if "per-slice" in line]
    assert len(default) == 1 and "1.20x | >= 1.5x | **no** |" in default[0] and "AMD AVX2" in default[0]
    assert sum("bfloat16" in line for line in targets_table(tmp_path)) == 2  # the first page's only
    # a second family's bfloat16 rows are told apart from the first's by the family
    (tmp_path / "benchmarks_enhance_amd_avx_512.json").write_text(json.dumps({**enhance, "cpu_family": "AMD AVX-512"}))
    bf16 = [line for line in targets_table(tmp_path) if "bfloat16" in line]
    assert len(bf16) == 4 and len({tuple(line.split(" | ")[:2]) for line in bf16}) == 4  # no label twice
    assert sum("AMD AVX-512" in line for line in bf16) == 2
    # a second CPU family's page adds its own rows, named by the family
    (tmp_path / "benchmarks_lassim_amd_avx2.json").write_text(json.dumps({**lassim, "cpu_family": "AMD AVX2"}))
    family = [line for line in targets_table(tmp_path) if "AMD AVX2" in line and "LaSSIM" in line]
    assert len(family) == 2 and family[1].endswith("| **no** |") and "2.00x | >= 3x" in family[1]
    assert targets_table(tmp_path / "missing") == []
    assert "1.496x" in target_row("w", "c", 1.4958, "x", 1.5) and "1.50x" in target_row("w", "c", 1.5, "x", 1.5)


def test_call_size_benchmark_picks_what_the_inferer_runs():
    """The call size the benchmark reports as picked is the one EnhancementInferer actually runs."""
    assert call_sizes(8) == [1, 2, 4, 8] and call_sizes(5) == [1, 2, 4, 5] and call_sizes(1) == [1]
    net = ResnetGenerator(1, 1, ngf=64, n_blocks=1).eval()
    calls = []
    net.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    x = torch.rand(6, 1, 96, 96) * 2 - 1
    EnhancementInferer(batch_size=6)(x, net)
    picked = picked_size(net, 96, 6, torch.device("cpu"))
    assert picked == 3 and calls == [picked, picked]


def test_gpu_check_runs_its_code_path_on_cpu(tmp_path):
    """``make gpu-check`` measures on CUDA; on a CPU the quick run proves its code works."""
    from benchmarks.gpu_check import main

    page = tmp_path / "gpu.md"
    assert main(["--device", "cpu", "--quick", "--out", str(page)]) == 0
    text = page.read_text()
    assert "| tiny | 4 x 64 x 64 |" in text and "pairs/s" in text and "iterations/s" in text
    data = json.loads(page.with_suffix(".json").read_text())
    assert data["enhancement"][0]["slices_per_s"] > 0 and data["training"]["iterations_per_s"] > 0
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as refused:
            main(["--out", str(tmp_path / "cuda.md")])
        assert refused.value.code == 2 and not (tmp_path / "cuda.md").exists()


def test_pages_are_kept_per_cpu_family_and_listed_on_the_summary(tmp_path: Path):
    # pages of two families, as two machines' `make bench` leave them; the summary lists both and their targets
    assert family_slug("Intel AMX") == "intel_amx" and family_slug("AMD AVX-512") == "amd_avx_512"
    assert family_page("lassim").startswith("benchmarks_lassim_") and family_page("lassim").endswith(".md")
    row = {"device": "cpu", "dtype": "uint8 user layout", "batch": 16, "size": "272x480", "speedup": 3.5}
    for family, speedup in (("Intel AMX", 3.5), ("AMD AVX2", 2.5)):
        name = f"benchmarks_lassim_{family_slug(family)}"
        data = {"threads": "t", "cpu_family": family, "machine": {"cpu": f"{family} CPU", "cores": "2"}}
        (tmp_path / f"{name}.json").write_text(json.dumps({**data, "rows": [{**row, "speedup": speedup}]}))
        (tmp_path / f"{name}.md").write_text("# page\n")
    assert run_all.main(["--collect", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "benchmarks.md").read_text()
    assert "**AMD AVX2** (AMD AVX2 CPU, 2 cores)" in page and "**Intel AMX** (Intel AMX CPU, 2 cores)" in page
    assert "[benchmarks_lassim_amd_avx2.md](benchmarks_lassim_amd_avx2.md)" in page
    targets = [line for line in page.splitlines() if line.startswith("| LaSSIM")]
    assert len(targets) == 2
    assert any("AMD AVX2" in t and t.endswith("| **no** |") for t in targets)  # 2.5x < 3x
    assert any("Intel AMX" in t and t.endswith("| yes |") for t in targets)
