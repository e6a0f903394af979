"""NIQE implemented in the package: distribution fits, pristine model, and behaviour on real images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats
from skimage import data
from skimage.color import rgb2gray

from napari_uspmie.io.packaged_data import MNI152_T1, package_file
from napari_uspmie.research.mri_dataset import get_slice
from napari_uspmie.research.niqe import NIQEModel, aggd_fit, fit_pristine_model, ggd_fit, mscn, niqe, patch_features


@pytest.fixture(scope="module")
def mni_slices() -> list[np.ndarray]:
    vol = np.asanyarray(nib.load(str(package_file(*MNI152_T1))).dataobj).astype(np.float64) / 255.0
    return [get_slice(vol, "axial", k) for k in range(40, 140, 6)]


@pytest.fixture(scope="module")
def mri_model(mni_slices) -> NIQEModel:
    # The scored slice 97 is not among the fitting slices (40, 46, ..., 136).
    return fit_pristine_model(mni_slices)


@pytest.mark.parametrize("shape", [0.6, 1.0, 2.0])
def test_ggd_fit_recovers_shape_and_variance(shape):
    x = stats.gennorm.rvs(shape, scale=0.7, size=(1, 200_000), random_state=0)
    alpha, var = ggd_fit(x)
    assert alpha[0] == pytest.approx(shape, rel=0.05)
    assert var[0] == pytest.approx(np.mean(x * x), rel=1e-9)


def test_aggd_fit_asymmetry():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(200_000)
    sym = aggd_fit(g[None])[0]
    assert sym[0] == pytest.approx(2.0, rel=0.05)  # Gaussian shape
    assert abs(sym[1]) < 0.01 and sym[2] == pytest.approx(sym[3], rel=0.02)
    skewed = aggd_fit(np.where(g > 0, 2 * g, g)[None])[0]
    assert skewed[1] > 0.5 and skewed[3] == pytest.approx(4 * skewed[2], rel=0.05)


def test_mscn_of_flat_image_is_zero_and_unit_variance_on_natural_image():
    coeffs, sigma = mscn(np.full((40, 40), 100.0))
    assert np.allclose(coeffs, 0) and np.allclose(sigma, 0, atol=1e-5)
    coeffs, _ = mscn(data.camera().astype(np.float64))
    assert 0.2 < coeffs.var() < 1.5 and abs(coeffs.mean()) < 0.1


def test_patch_features_shape():
    feats, sharp = patch_features(data.camera(), patch_size=96)
    assert feats.shape == (25, 36) and sharp.shape == (25,)
    with pytest.raises(ValueError, match="smaller than one"):
        patch_features(np.zeros((20, 20)), patch_size=32)


def test_blur_and_noise_raise_niqe_on_mri(mri_model, mni_slices):
    vol = np.asanyarray(nib.load(str(package_file(*MNI152_T1))).dataobj).astype(np.float64) / 255.0
    clean = get_slice(vol, "axial", 97)
    rng = np.random.default_rng(0)
    base = niqe(clean, mri_model)
    blur1 = niqe(ndimage.gaussian_filter(clean, 1.0), mri_model)
    blur2 = niqe(ndimage.gaussian_filter(clean, 2.0), mri_model)
    noisy = niqe(np.clip(clean + rng.normal(0, 0.03, clean.shape), 0, 1), mri_model)
    assert base < blur1 < blur2
    assert noisy > base + 3


def test_blur_raises_niqe_on_natural_images():
    pristine = [rgb2gray(im) for im in (data.astronaut(), data.coffee(), data.chelsea())]
    model = fit_pristine_model(pristine, patch_size=96)
    test = data.camera()
    assert niqe(test, model) < niqe(ndimage.gaussian_filter(test.astype(np.float64) / 255, 2.0), model)


def test_model_roundtrip_and_errors(tmp_path, mri_model, mni_slices):
    mri_model.save(tmp_path / "m.npz")
    loaded = NIQEModel.load(tmp_path / "m.npz")
    assert loaded.patch_size == mri_model.patch_size
    assert niqe(mni_slices[5], loaded) == pytest.approx(niqe(mni_slices[5], mri_model))
    with pytest.raises(ValueError, match="non-flat"):
        mri_model.score(np.zeros((64, 64)))
    with pytest.raises(ValueError, match="not enough"):
        fit_pristine_model([np.zeros((64, 64))])
