"""Calibration and false-positive views: hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bids_mdpp.reliability import (
    expected_calibration_error,
    false_positive_volume_mm3,
    lesion_region,
    median_probability_inside,
    reliability_curve,
)


def test_reliability_curve_and_ece_by_hand():
    # 4 voxels at 0.1 (1 lesion), 4 at 0.9 (2 lesions), 2 at 1.0 (both lesion)
    probability = np.array([0.1] * 4 + [0.9] * 4 + [1.0] * 2)
    reference = np.array([1, 0, 0, 0, 1, 1, 0, 0, 1, 1])
    curve = reliability_curve(probability, reference, bins=2)
    assert curve.counts.tolist() == [4, 6]
    assert curve.mean_probability == pytest.approx([0.1, (0.9 * 4 + 2.0) / 6])
    assert curve.observed_frequency == pytest.approx([0.25, 4 / 6])
    gap_low, gap_high = 0.15, abs((5.6 / 6) - 4 / 6)
    assert expected_calibration_error(curve) == pytest.approx((4 * gap_low + 6 * gap_high) / 10)


def test_a_calibrated_map_has_zero_ece_and_empty_bins_are_none():
    probability = np.array([0.25] * 4 + [0.75] * 4)
    reference = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    curve = reliability_curve(probability, reference, bins=4)
    assert expected_calibration_error(curve) == pytest.approx(0.0)
    as_dict = curve.to_dict()
    assert as_dict["counts"] == [0, 4, 0, 4] and as_dict["mean_probability"][0] is None
    assert math.isnan(expected_calibration_error(reliability_curve(probability, reference,
                                                                   region=np.zeros(8, bool))))


def test_region_restricts_the_curve():
    probability = np.array([0.0, 0.0, 0.6, 0.6])
    reference = np.array([0, 0, 1, 0])
    region = lesion_region(probability, reference)
    assert region.tolist() == [False, False, True, True]
    curve = reliability_curve(probability, reference, region=region, bins=10)
    assert curve.counts.sum() == 2
    assert expected_calibration_error(curve) == pytest.approx(0.1)


def test_median_probability_inside_the_reference():
    probability = np.array([0.2, 0.4, 0.5, 0.9, 0.0])
    assert median_probability_inside(probability, np.array([1, 1, 1, 0, 0])) == pytest.approx(0.4)
    assert math.isnan(median_probability_inside(probability, np.zeros(5)))


def test_false_positives_away_from_the_reference_by_hand():
    reference = np.zeros((20, 5, 5), bool)
    reference[2, 2, 2] = True
    prediction = np.zeros_like(reference)
    prediction[2:20, 2, 2] = True          # voxels 0…17 mm away along x at 1 mm
    # at 2 mm voxels along x, distances double: voxels 2 mm apart
    assert false_positive_volume_mm3(prediction, reference, (1, 1, 1), margin_mm=3) == 18 - 4
    assert false_positive_volume_mm3(prediction, reference, (2, 1, 1), margin_mm=3) == (18 - 2) * 2
    assert false_positive_volume_mm3(prediction, np.zeros_like(reference), (1, 1, 2)) == 36


@pytest.mark.parametrize("probability, message", [
    (np.full(4, 1.5), r"\[0, 1\]"), (np.array([0.1, np.nan, 0, 0]), r"\[0, 1\]"),
    (np.zeros(3), "shape"),
])
def test_bad_maps_are_rejected(probability, message):
    with pytest.raises(ValueError, match=message):
        reliability_curve(probability, np.zeros(4))
