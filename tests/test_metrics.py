"""ISBI-2015 metrics: hand-computed cases, edge cases, and agreement with independent code."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bids_mdpp.metrics import (
    SCORING_CONNECTIVITY,
    overall_score,
    score_masks,
    volume_correlation,
)

SHAPE = (12, 12, 12)


def _mask(*boxes) -> np.ndarray:
    """A bool mask of SHAPE with the given ``(slice, slice, slice)`` boxes set."""
    mask = np.zeros(SHAPE, bool)
    for box in boxes:
        mask[box] = True
    return mask


def test_known_dsc_ppv_tpr_vd():
    reference = _mask(np.s_[2:8, 2, 2])           # 6 voxels
    prediction = _mask(np.s_[5:9, 2, 2])          # 4 voxels, 3 of them in the reference
    s = score_masks(prediction, reference, 2.0)
    assert s.dsc == pytest.approx(2 * 3 / (4 + 6))
    assert s.ppv == pytest.approx(3 / 4)
    assert s.tpr == pytest.approx(3 / 6)
    assert s.vd == pytest.approx(abs(4 - 6) / 6)
    assert (s.lfpr, s.ltpr) == (0.0, 1.0)
    assert (s.predicted_volume_mm3, s.reference_volume_mm3) == (8.0, 12.0)
    assert (s.predicted_lesions, s.reference_lesions) == (1, 1)
    assert s.connectivity == SCORING_CONNECTIVITY == 18


def test_both_empty_is_perfect_agreement():
    s = score_masks(_mask(), _mask(), 1.0)
    assert (s.dsc, s.ppv, s.tpr, s.lfpr, s.ltpr, s.vd) == (1.0, 1.0, 1.0, 0.0, 1.0, 0.0)
    assert s.predicted_lesions == s.reference_lesions == 0


def test_empty_prediction():
    s = score_masks(_mask(), _mask(np.s_[1:3, 1:3, 1:3]), 1.0)
    assert (s.dsc, s.tpr, s.ltpr, s.vd) == (0.0, 0.0, 0.0, 1.0)
    assert math.isnan(s.ppv) and math.isnan(s.lfpr)
    assert math.isnan(overall_score(s.dsc, s.ppv, s.lfpr, s.ltpr, 0.5))


def test_empty_reference():
    s = score_masks(_mask(np.s_[1:3, 1:3, 1:3]), _mask(), 1.0)
    assert (s.dsc, s.ppv, s.lfpr) == (0.0, 0.0, 1.0)
    assert math.isnan(s.tpr) and math.isnan(s.ltpr) and math.isnan(s.vd)


def test_one_lesion_split_in_two_counts_once():
    reference = _mask(np.s_[2:9, 5, 5])
    prediction = _mask(np.s_[2:4, 5, 5], np.s_[6:9, 5, 5])   # a gap at x = 4, 5
    s = score_masks(prediction, reference, 1.0)
    assert (s.predicted_lesions, s.reference_lesions) == (2, 1)
    assert (s.lfpr, s.ltpr) == (0.0, 1.0)
    assert s.detected_reference_lesions == 1 and s.false_positive_lesions == 0


def test_two_lesions_merged_are_both_detected():
    reference = _mask(np.s_[2:4, 5, 5], np.s_[6:8, 5, 5])
    prediction = _mask(np.s_[2:8, 5, 5])
    s = score_masks(prediction, reference, 1.0)
    assert (s.predicted_lesions, s.reference_lesions) == (1, 2)
    assert (s.lfpr, s.ltpr) == (0.0, 1.0)
    assert s.dsc == pytest.approx(2 * 4 / (6 + 4))


def test_false_positive_and_missed_lesions():
    reference = _mask(np.s_[1:3, 1:3, 1:3], np.s_[8:10, 8:10, 8:10])
    prediction = _mask(np.s_[1:3, 1:3, 1:3], np.s_[1:3, 8:10, 1:3])   # one hit, one false alarm
    s = score_masks(prediction, reference, 1.0)
    assert (s.lfpr, s.ltpr) == (0.5, 0.5)
    assert (s.false_positive_lesions, s.detected_reference_lesions) == (1, 1)


def test_one_voxel_overlap_detects():
    reference = _mask(np.s_[5, 5, 5])
    prediction = _mask(np.s_[5:10, 5:10, 5:10])
    s = score_masks(prediction, reference, 1.0)
    assert (s.lfpr, s.ltpr) == (0.0, 1.0)


def test_connectivity_is_a_parameter():
    edge = _mask(np.s_[4, 4, 4], np.s_[5, 5, 4])      # share an edge
    corner = _mask(np.s_[4, 4, 4], np.s_[5, 5, 5])    # share a corner
    assert score_masks(edge, edge, 1.0).predicted_lesions == 1           # 18 by default
    assert score_masks(edge, edge, 1.0, connectivity=6).predicted_lesions == 2
    assert score_masks(corner, corner, 1.0).predicted_lesions == 2
    assert score_masks(corner, corner, 1.0, connectivity=26).predicted_lesions == 1
    with pytest.raises(ValueError, match="connectivity"):
        score_masks(edge, edge, 1.0, connectivity=4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="one shape"):
        score_masks(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), 1.0)
    with pytest.raises(ValueError, match="voxel volume"):
        score_masks(_mask(), _mask(), 0.0)


def _lesion_rates(prediction, reference):
    """LFPR and LTPR written independently with scikit-image (connectivity 2 = 18 in 3D)."""
    from skimage.measure import label

    pred_labels = label(prediction, connectivity=2)
    ref_labels = label(reference, connectivity=2)
    pred_ids = set(np.unique(pred_labels)) - {0}
    ref_ids = set(np.unique(ref_labels)) - {0}
    false_pos = [i for i in pred_ids if not reference[pred_labels == i].any()]
    detected = [i for i in ref_ids if prediction[ref_labels == i].any()]
    return len(false_pos) / len(pred_ids), len(detected) / len(ref_ids)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_medpy_and_scikit_image(seed):
    from medpy.metric import binary
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    reference = ndimage.binary_opening(rng.random((24, 24, 24)) > 0.6)
    prediction = reference ^ (rng.random(reference.shape) > 0.9)
    s = score_masks(prediction, reference, 0.8)
    assert s.dsc == pytest.approx(binary.dc(prediction, reference), abs=1e-6)
    assert s.ppv == pytest.approx(binary.precision(prediction, reference), abs=1e-6)
    assert s.tpr == pytest.approx(binary.recall(prediction, reference), abs=1e-6)
    assert s.vd == pytest.approx(abs(binary.ravd(prediction, reference)), abs=1e-6)
    lfpr, ltpr = _lesion_rates(prediction, reference)
    assert s.lfpr == pytest.approx(lfpr, abs=1e-6)
    assert s.ltpr == pytest.approx(ltpr, abs=1e-6)


def test_volume_correlation_matches_numpy():
    rng = np.random.default_rng(3)
    reference = rng.uniform(100, 20000, 9)
    predicted = reference * rng.uniform(0.5, 1.5, 9)
    assert volume_correlation(predicted, reference) == pytest.approx(
        np.corrcoef(predicted, reference)[0, 1], abs=1e-9)


def test_volume_correlation_undefined_cases():
    assert math.isnan(volume_correlation([], []))
    assert math.isnan(volume_correlation([5.0], [6.0]))
    assert math.isnan(volume_correlation([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]))   # zero variance
    assert math.isnan(volume_correlation([1.0, 2.0], [math.nan, 3.0]))
    with pytest.raises(ValueError, match="one length"):
        volume_correlation([1.0, 2.0], [1.0])


def test_overall_score_formula():
    assert overall_score(0.8, 0.6, 0.2, 0.7, 0.9) == pytest.approx(
        0.8 / 8 + 0.6 / 8 + 0.8 / 4 + 0.7 / 4 + 0.9 / 4)
    assert overall_score(1.0, 1.0, 0.0, 1.0, 1.0) == pytest.approx(1.0)
