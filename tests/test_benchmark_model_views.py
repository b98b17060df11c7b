"""benchmarks/model_views.py without networks: the views of one map and their summary."""
from __future__ import annotations

import numpy as np
import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def model_views():
    return load_script("model_views")


def test_views_of_one_map_by_hand(model_views):
    label = np.zeros((10, 10, 10), bool)
    label[2:4, 2:4, 2:4] = True                       # 8 voxels
    probability = np.zeros(label.shape)
    probability[label] = 0.65
    probability[8, 8, 8] = 0.52                       # one false positive far away
    brain = np.ones(label.shape, bool)
    result = model_views.views(probability, label, brain, 0.5, (1.0, 1.0, 2.0))
    assert result["dsc"] == pytest.approx(16 / 17, abs=1e-4)
    assert result["best_dsc"] == 1.0 and result["best_threshold"] == 0.55
    assert result["median_probability_in_lesions"] == pytest.approx(0.65)
    assert result["false_positive_away_mm3"] == 2.0 and result["predicted_volume_mm3"] == 18.0
    # lesion region: 8 voxels at 0.65 all lesion (gap 0.35), 1 at 0.52 not lesion (gap 0.52),
    # in two bins
    assert result["ece_lesion_region"] == pytest.approx((8 * 0.35 + 0.52) / 9, abs=1e-4)
    assert result["ece_brain"] == pytest.approx((8 * 0.35 + 0.52) / 1000, abs=1e-4)


def test_summary_averages_per_subset_and_tta(model_views):
    rows = [{"subset": "FLAIR", "tta": False, "dsc": 0.5, "seconds": 10, "ece_brain": None},
            {"subset": "FLAIR", "tta": False, "dsc": 0.7, "seconds": 12, "ece_brain": 0.1},
            {"subset": "FLAIR", "tta": True, "dsc": 0.8, "seconds": 20}]
    summary = model_views.summarise(rows)
    assert set(summary) == {"FLAIR|plain", "FLAIR|tta"}
    plain = summary["FLAIR|plain"]
    assert plain["sessions"] == 2 and plain["dsc"] == pytest.approx(0.6)
    assert plain["seconds"] == 11 and plain["ece_brain"] == 0.1 and plain["best_dsc"] is None
    assert summary["FLAIR|tta"]["dsc"] == 0.8
