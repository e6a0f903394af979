"""The paper-style comparison of methods: table, the paper's claims, figure and command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_uspmie.research.evaluation import INPUT
from napari_uspmie.research.evaluation_cases import CASES
from napari_uspmie.research.method_comparison import BRISQUE_NOTE, main, ordering_checks, paper_table
from tests.unpaired_data import save_tiny_generator

CASE = CASES["a"]


def _summary(niqe: dict[str, float], structure: dict[str, float]) -> list[dict]:
    rows = [{"case": CASE, "method": INPUT, "n": 3, "niqe": 9.0, "ssim": 0.3, "psnr": 15.0, "lassim_out_clean": 0.7}]
    for method in niqe:
        rows.append({"case": CASE, "method": method, "n": 3, "niqe": niqe[method], "ssim": 0.6, "psnr": 20.0,
                     "lassim_out_clean": 0.8})  # fmt: skip
    for r in rows:
        s = structure.get(r["method"], 1.0)
        r.update(lassim_in_out_1=s, lassim_in_out_2=s, lassim_in_out_3=s)
    return rows


def test_paper_claims_are_checked_from_the_numbers():
    paper_like = _summary(
        {"CycleGAN": 3.0, "StillGAN": 4.0, "MIINet": 3.8, "LaMEGAN": 3.2},
        {"CycleGAN": 0.6, "StillGAN": 0.7, "MIINet": 0.7, "LaMEGAN": 0.8},
    )
    checks = ordering_checks(paper_like, CASE)
    assert len(checks) == 4 and all(c["holds"] for c in checks)
    reversed_ = _summary({"CycleGAN": 3.5, "LaMEGAN": 3.2}, {"CycleGAN": 0.8, "LaMEGAN": 0.6})
    checks = {c["claim"].split(" (")[0]: c["holds"] for c in ordering_checks(reversed_, CASE)}
    assert checks == {"quality: CycleGAN >= LaMEGAN": False, "structure: LaMEGAN > CycleGAN": False}
    assert ordering_checks(_summary({"StillGAN": 4.0}, {}), CASE) == []  # nothing to compare it with
    table = paper_table(paper_like, CASE)
    assert len(table) == 2 + 5 and table[3].startswith("| CycleGAN | 3 | 3.00 | 0.600 / 0.600 / 0.600 |")


def test_cli_writes_table_claims_figure_and_skipped_methods(heldout_only, tmp_path):
    cyclegan = save_tiny_generator(tmp_path / "cyclegan", seed=1)
    lamegan = save_tiny_generator(tmp_path / "lamegan", seed=2)
    out = tmp_path / "comparison.md"
    code = main([
        str(heldout_only), "--model", f"CycleGAN={cyclegan}", "--model", f"LaMEGAN={lamegan}",
        "--skipped", "MIINet=needs VGG19 weights", "--out", str(out), "--every", "6",
    ])  # fmt: skip
    assert code == 0
    text = out.read_text()
    assert "| CycleGAN |" in text and "| LaMEGAN |" in text and BRISQUE_NOTE in text
    assert "Not trained: MIINet: needs VGG19 weights" in text
    assert "structure: LaMEGAN > CycleGAN" in text and "## Every case and the structure guard" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert {c["claim"] for c in report["claims"][CASE]} >= {"quality: CycleGAN >= LaMEGAN (NIQE, lower is better)"}
    assert report["skipped"] == {"MIINet": "needs VGG19 weights"}
    figure = np.asarray(Image.open(tmp_path / "comparison_slice.png"))
    assert figure.shape[0] > 400 and figure.shape[1] > 800  # two method rows, four columns
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_cli_refuses_a_folder_without_heldout_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as missing:
        main([str(tmp_path)])
    assert missing.value.code == 2 and "no held-out data" in capsys.readouterr().err
