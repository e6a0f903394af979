"""The seeded low-quality MRI acquisition model, on the real MNI152 template."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_uspmie.io.packaged_data import MNI152_T1, package_file
from napari_uspmie.research.acquisition import (
    PARAM_RANGES,
    AcquisitionParams,
    apply_acquisition,
    bias_field,
    degrade_slice,
    degrade_volume,
    rician_noise,
    sample_params,
)


@pytest.fixture(scope="module")
def mni() -> np.ndarray:
    return np.asanyarray(nib.load(str(package_file(*MNI152_T1))).dataobj)


@pytest.fixture(scope="module")
def axial(mni) -> np.ndarray:
    return np.rot90(mni[:, :, 90]).astype(np.float64) / 255.0


def test_degrade_volume_keeps_shape_dtype_and_is_seeded(mni):
    sub = mni[40:120, 60:140, 60:110]  # uint8 crop keeps the test fast
    a = degrade_volume(sub, seed=3)
    assert a.shape == sub.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, degrade_volume(sub, seed=3))
    assert not np.array_equal(a, degrade_volume(sub, seed=4))
    assert not np.array_equal(a, sub)
    assert a.max() <= 255


def test_degrade_volume_int16_with_negative_values_keeps_range():
    rng = np.random.default_rng(0)
    vol = (rng.normal(0, 1, (8, 20, 20)) * 300).astype(np.int16)
    out = degrade_volume(vol, seed=1)
    assert out.dtype == np.int16 and out.shape == vol.shape
    assert out.min() >= vol.min() and out.max() <= vol.max()


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    """scikit-image's SSIM on images in [0, 1] (sample covariance, 7x7 window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(x, np.float64), np.asarray(y, np.float64), data_range=1.0))


def test_degrade_slice_lowers_ssim_and_grows_with_severity(axial):
    scores = {}
    for severity in (0.0, 0.5, 1.0):
        scores[severity] = np.mean([_ssim(degrade_slice(axial, seed, severity), axial) for seed in range(3)])
    assert scores[0.0] == pytest.approx(1.0)
    assert scores[0.5] < 0.8
    assert scores[1.0] < scores[0.5]


def test_degrade_slice_reproducible_and_keeps_dtype(axial):
    u8 = np.rint(axial * 255).astype(np.uint8)
    out = degrade_slice(u8, np.random.default_rng(7))
    assert out.dtype == np.uint8 and out.shape == u8.shape
    np.testing.assert_array_equal(out, degrade_slice(u8, 7))
    f32 = axial.astype(np.float32)
    out32 = degrade_slice(f32, 7)
    assert out32.dtype == np.float32 and 0 <= out32.min() and out32.max() <= 1


def test_each_step_does_what_it_documents(axial):
    rng = np.random.default_rng(0)
    # Blur alone lowers gradient energy.
    blurred = apply_acquisition(axial, AcquisitionParams(blur_sigma=1.5), rng)
    assert np.mean(np.diff(blurred, axis=0) ** 2) < 0.75 * np.mean(np.diff(axial, axis=0) ** 2)
    # Haze and contrast loss: background lifted to (1 - c) * h, white compressed.
    hazy = apply_acquisition(axial, AcquisitionParams(contrast=0.6, haze=0.5), rng)
    assert hazy[0, 0] == pytest.approx(0.2)
    assert hazy.max() == pytest.approx(0.6 * axial.max() + 0.2)


def test_bias_field_is_smooth_and_only_attenuates():
    f = bias_field((64, 80), np.random.default_rng(1), amplitude=0.4)
    assert f.max() == pytest.approx(1.0) and f.min() == pytest.approx(np.exp(-0.4))
    # Smooth: neighbouring pixels differ far less than the field's range.
    assert np.abs(np.diff(f, axis=1)).max() < 0.05 * (f.max() - f.min()) * 10
    np.testing.assert_array_equal(bias_field((5, 5), np.random.default_rng(1), 0.0), np.ones((5, 5)))


@pytest.mark.parametrize("shape", [(64, 80), (23, 31, 17)])
def test_bias_field_is_the_cubic_spline_through_its_control_grid(shape):
    """The separable evaluation equals scipy's n-D spline at the image grid's coordinates."""
    from scipy import ndimage

    ctrl = np.random.default_rng(3).standard_normal((4,) * len(shape))
    coords = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    f = ndimage.map_coordinates(ctrl, coords, order=3, mode="nearest")
    expected = np.exp(-0.3 * (f - f.min()) / (f.max() - f.min()))
    np.testing.assert_allclose(bias_field(shape, np.random.default_rng(3), 0.3), expected, rtol=0, atol=1e-12)


def test_rician_noise_on_zero_signal_is_rayleigh():
    noise = rician_noise(np.zeros((200, 200)), 0.05, np.random.default_rng(0))
    # The magnitude of pure complex Gaussian noise has mean sigma * sqrt(pi / 2).
    assert noise.mean() == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.02)
    assert noise.min() >= 0


def test_sample_params_within_documented_ranges():
    for seed in range(20):
        p = sample_params(np.random.default_rng(seed), severity=1.0)
        assert PARAM_RANGES["blur_sigma"][0] <= p.blur_sigma <= PARAM_RANGES["blur_sigma"][1]
        assert 1 - PARAM_RANGES["contrast_loss"][1] <= p.contrast <= 1 - PARAM_RANGES["contrast_loss"][0]
    assert sample_params(np.random.default_rng(0), 0.0) == AcquisitionParams(
        haze=sample_params(np.random.default_rng(0), 0.0).haze
    )


def test_bad_inputs_raise(axial):
    with pytest.raises(ValueError, match="2D"):
        degrade_slice(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="3D"):
        degrade_volume(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="severity"):
        degrade_slice(axial, 0, severity=-1)
    bad = axial.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        degrade_slice(bad * 2)
