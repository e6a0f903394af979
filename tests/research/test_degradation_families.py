"""Training's randomised degradations and the evaluation's unseen family: what each promises."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from napari_uspmie.research import degradation_families, unseen_degradation
from napari_uspmie.research.degradation_families import CLEAN_FRACTION, random_degradation
from napari_uspmie.research.unseen_degradation import unseen_degradation as unseen
from tests.io_factories import mni_slices


@pytest.fixture(scope="module")
def brain() -> np.ndarray:
    return mni_slices()[5].astype(np.float64) / 255.0


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, data_range=1.0))


def test_domain_a_holds_clean_mild_and_full_draws_of_every_family(brain):
    levels, kinds, scores = Counter(), Counter(), {"mild": [], "full": []}
    for seed in range(200):
        out, record = random_degradation(brain, np.random.default_rng(seed))
        assert out.shape == brain.shape and 0.0 <= out.min() and out.max() <= 1.0
        levels[record["level"]] += 1
        if record["level"] == "clean":
            np.testing.assert_array_equal(out, brain)  # left alone: the generator must learn identity
            continue
        scores[record["level"]].append(_ssim(out, brain))
        kinds.update(record[k] for k in ("bias", "blur", "noise") if k in record)
    assert abs(levels["clean"] / 200 - CLEAN_FRACTION) < 0.08
    assert levels["mild"] > 20 and levels["full"] > 100
    assert np.mean(scores["mild"]) > np.mean(scores["full"])  # mild draws are milder
    expected = {"spline", "polynomial", "sinusoidal", "gaussian", "box", "motion", "anisotropic", "rician", "poisson"}
    assert expected <= set(kinds)


def test_draws_are_reproducible_from_their_seed(brain):
    a, ra = random_degradation(brain, np.random.default_rng(11))
    b, rb = random_degradation(brain, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    assert ra == rb


def test_resolution_loss_keeps_the_coarse_pixel_grid(brain):
    for seed in range(200):
        rng = np.random.default_rng(seed)
        out, record = random_degradation(brain, rng)
        if record.get("families") == ["resolution"]:
            k = record["coarse_pixels"]
            assert np.all(out[:k, :k] == out[0, 0])  # one coarse pixel: a constant k x k block
            return
    pytest.fail("no draw with resolution loss alone in 200 seeds")


def test_unseen_family_degrades_and_shares_nothing_with_training(brain):
    out, params = unseen(brain, np.random.default_rng(0))
    assert out.shape == brain.shape and _ssim(out, brain) < 0.9
    assert set(params) >= {"kspace_fraction", "ghost", "shading", "noise"}
    source = Path(unseen_degradation.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any("acquisition" in m or "degradation_families" in m for m in imported)
    assert "unseen_degradation" not in Path(degradation_families.__file__).read_text().split('"""', 2)[2]
