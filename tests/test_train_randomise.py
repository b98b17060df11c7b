"""On-the-fly domain randomisation of training crops (contrast, resolution, bias)."""
from __future__ import annotations

import numpy as np
import pytest

from bids_mdpp.training.randomise import (
    CONTRAST_KNOTS,
    RandomisationSettings,
    bias_field,
    randomise_contrast,
    remap_contrast,
    thick_slices,
)

WM = 0.5


def test_contrast_remapping_keeps_white_matter_and_order():
    level = np.linspace(0.0, 4.0, 401)
    ones = np.ones(len(CONTRAST_KNOTS) - 1)
    np.testing.assert_allclose(remap_contrast(level, ones, WM), level, atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        slopes = np.exp(rng.uniform(-0.4, 0.4, len(ones)))
        out = remap_contrast(level, slopes, WM)
        assert out[np.argmin(abs(level - WM))] == pytest.approx(WM)
        assert np.all(np.diff(out) >= 0)  # monotone: a lesion stays brighter than WM
        assert np.all(out >= 0)
    steep = remap_contrast(np.array([0.75, 3.0]), np.full(len(ones), 1.5), WM)
    np.testing.assert_allclose(steep, [WM + 1.5 * 0.25, WM + 1.5 * 2.5])  # beyond the last knot too


def test_thick_slices_blur_one_axis_only_and_keep_the_shape():
    image = np.zeros((3, 32, 32))
    image[:, 16, :] = 1.0  # a thin line across W
    np.testing.assert_array_equal(thick_slices(image, 0, 1.0), image)
    thick = thick_slices(image, 0, 4.0)
    assert thick.shape == image.shape
    assert thick[:, 16].max() < 1.0 and thick[:, 14].max() > 0.0  # spread along H
    np.testing.assert_allclose(thick[:, :, 0], thick[:, :, 31])  # nothing along W
    flat = np.full((1, 20, 24), 0.7)
    np.testing.assert_allclose(thick_slices(flat, 1, 3.3), flat)


def test_bias_field_is_smooth_positive_and_seeded():
    field = bias_field(np.random.default_rng(1), (64, 48), 4, 0.2)
    assert field.shape == (64, 48) and field.min() > 0
    assert np.abs(np.diff(np.log(field), axis=0)).max() < 0.05  # smooth at the voxel scale
    again = bias_field(np.random.default_rng(1), (64, 48), 4, 0.2)
    np.testing.assert_array_equal(field, again)
    np.testing.assert_allclose(bias_field(np.random.default_rng(1), (8, 8), 4, 0.0), 1.0)


def blocks():
    """(3, 48, 48) level: background 0, white matter 0.5, a 12-voxel 'lesion' block at 0.7."""
    level = np.zeros((3, 48, 48))
    level[:, 4:44, 4:44] = WM
    level[:, 18:30, 18:30] = 0.7
    return level, level > 0


def test_randomised_contrast_is_seeded_keeps_background_and_the_lesion_brighter():
    level, foreground = blocks()
    settings = RandomisationSettings(p=1.0)
    a = randomise_contrast(level, foreground, 7, settings, WM)
    np.testing.assert_array_equal(a, randomise_contrast(level, foreground, 7, settings, WM))
    assert not np.allclose(a, randomise_contrast(level, foreground, 8, settings, WM))
    assert a.shape == level.shape and np.all(a[~foreground] == 0)
    for seed in range(30):
        out = randomise_contrast(level, foreground, seed, settings, WM)
        assert out[:, 22:26, 22:26].mean() > out[:, 6:12, 6:12].mean()
    off = RandomisationSettings(contrast_log_range=0, slice_max=1, blur_max=0, bias_log_max=0)
    np.testing.assert_allclose(randomise_contrast(level, foreground, 3, off, WM), level)


@pytest.mark.parametrize("change, message", [
    ({"p": 1.5}, r"share must lie in \[0, 1\]"),
    ({"slice_max": 0.5}, "at least 1 voxel"),
    ({"blur_max": -1}, "cannot be negative"),
    ({"bias_grid": 1}, "at least 2"),
])
def test_bad_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        RandomisationSettings(**change)
