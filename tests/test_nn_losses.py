"""Focal loss against hand-computed values; SSIM against scikit-image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from bids_mdpp.nn.losses import FocalLoss, SSIMLoss, gaussian_window, ssim, ssim_map

# Two voxels: a lesion voxel predicted at p = 0.5 and a background voxel predicted at p = 0.75.
LOGITS = torch.tensor([0.0, math.log(3.0)])
TARGET = torch.tensor([1.0, 0.0])


def test_focal_loss_matches_hand_computed_values():
    # lesion: weight 0.75, p_t = 0.5;  background: weight 0.25, p_t = 0.25
    lesion = 0.75 * (1 - 0.5) ** 2 * -math.log(0.5)
    background = 0.25 * (1 - 0.25) ** 2 * -math.log(0.25)
    loss = FocalLoss()(LOGITS, TARGET)
    assert loss.item() == pytest.approx((lesion + background) / 2, rel=1e-6)
    per_voxel = FocalLoss(reduction="none")(LOGITS, TARGET)
    assert per_voxel.tolist() == pytest.approx([lesion, background], rel=1e-6)
    assert FocalLoss(reduction="sum")(LOGITS, TARGET).item() == pytest.approx(lesion + background, rel=1e-6)


def test_focal_loss_with_gamma_one_and_other_alpha():
    lesion = 0.4 * 0.5 * -math.log(0.5)
    background = 0.6 * 0.75 * -math.log(0.25)
    loss = FocalLoss(gamma=1, alpha=0.6)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((lesion + background) / 2, rel=1e-6)


def test_focal_loss_with_gamma_zero_is_weighted_cross_entropy():
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.7).float()
    weights = torch.where(target > 0, 0.75, 0.25)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weights)
    torch.testing.assert_close(FocalLoss(gamma=0)(logits, target), expected)


def test_focal_loss_is_stable_for_large_logits():
    loss = FocalLoss()(torch.tensor([60.0, -60.0]), torch.tensor([0.0, 1.0]))
    assert torch.isfinite(loss) and loss.item() > 10


@pytest.mark.parametrize("options,message", [
    ({"gamma": -1}, "gamma"), ({"gamma": float("nan")}, "gamma"),
    ({"alpha": 1.5}, "alpha"), ({"reduction": "avg"}, "reduction"),
])
def test_focal_loss_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        FocalLoss(**options)


def test_focal_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\).*\(2, 4, 4\)"):
        FocalLoss()(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))


def skimage_ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, full=True)
    return full


def test_ssim_matches_scikit_image_away_from_the_border():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 40, 48)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    ours = ssim_map(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    border = 5  # the 11×11 window's radius: zero padding (ours) and reflection (skimage) differ there
    inner = (slice(None), slice(None), slice(border, -border), slice(border, -border))
    reference = np.stack([
        np.stack([skimage_ssim_map(a[i, c].astype(np.float64), b[i, c].astype(np.float64))
                  for c in range(3)]) for i in range(2)
    ])
    np.testing.assert_allclose(ours[inner], reference[inner], atol=1e-4)
    assert abs(ours[inner].mean() - reference[inner].mean()) < 1e-4


def test_ssim_of_identical_maps_is_one_and_the_loss_zero():
    x = torch.rand(2, 4, 16, 16)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert SSIMLoss()(x, x).item() == pytest.approx(0.0, abs=1e-5)
    y = torch.rand(2, 4, 16, 16)
    assert SSIMLoss()(x, y).item() == pytest.approx(1 - ssim(x, y).item(), abs=1e-6)
    assert ssim(x, y).item() < 0.5


def test_gaussian_window_is_normalised_and_sized():
    window = gaussian_window()
    assert window.shape == (11, 11)
    assert window.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert window.argmax().item() == 5 * 11 + 5


def test_ssim_rejects_bad_options_and_shapes():
    with pytest.raises(ValueError, match="odd"):
        SSIMLoss(window_size=10)
    with pytest.raises(ValueError, match="sigma"):
        SSIMLoss(sigma=0)
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(1, 2, 8, 8), torch.zeros(1, 3, 8, 8))
