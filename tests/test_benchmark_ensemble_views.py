"""benchmarks/ensemble_views.py: the mean of saved predictions, scored like one model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def scripts():
    return load_script("model_views"), load_script("ensemble_views")


def _label() -> np.ndarray:
    label = np.zeros((10, 10, 10), bool)
    label[2:4, 2:4, 2:4] = True  # 8 voxels
    return label


def _saved(model_views, root: Path, subsets: dict[str, np.ndarray]) -> Path:
    folder = model_views.save_session(root, "sub-01", np.ones((10, 10, 10), bool), _label(),
                                      (1.0, 1.0, 1.0), root / "model")
    for name, probability in subsets.items():
        np.save(folder / f"{name}.npy", probability.astype(np.float16))
    return root


def test_save_session_writes_the_mask_reference_and_voxel_sizes(scripts, tmp_path):
    model_views, _ = scripts
    folder = model_views.save_session(tmp_path, "sub-01_ses-1", np.ones((2, 2, 2)),
                                      np.zeros((2, 2, 2)), (1.0, 1.0, 2.0), Path("/m"))
    assert np.load(folder / "brain.npy").dtype == bool and np.load(folder / "label.npy").shape == (2, 2, 2)
    assert json.loads((folder / "session.json").read_text()) == {"voxel_sizes_mm": [1.0, 1.0, 2.0],
                                                                 "model": "/m"}


def test_the_mean_of_two_models_is_scored_on_the_subsets_both_hold(scripts, tmp_path):
    model_views, ensemble_views = scripts
    label = _label()
    # model A finds the lesion at 0.6 and adds a false positive at 0.9; model B finds the
    # lesion at 0.5 and sees nothing at the false positive: the mean keeps only the lesion.
    a, b = np.zeros(label.shape), np.zeros(label.shape)
    a[label], a[8, 8, 8] = 0.6, 0.9
    b[label] = 0.5
    first = _saved(model_views, tmp_path / "a", {"FLAIR": a, "T1w": a})
    second = _saved(model_views, tmp_path / "b", {"FLAIR": b})
    output = tmp_path / "ensemble.json"
    assert ensemble_views.main([str(first), str(second), "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert [row["subset"] for row in result["rows"]] == ["FLAIR"]
    row = result["rows"][0]
    assert row["dsc"] == 1.0 and row["false_positive_away_mm3"] == 0.0
    assert row["median_probability_in_lesions"] == pytest.approx(0.55, abs=1e-3)
    assert result["summary"]["FLAIR|plain"]["dsc"] == 1.0
    weighted = tmp_path / "weighted.json"
    ensemble_views.main([str(first), str(second), "--weights", "3,1", "--output", str(weighted)])
    row = json.loads(weighted.read_text())["rows"][0]
    assert row["false_positive_away_mm3"] == 1.0  # 0.9 · 3/4 = 0.675 ≥ 0.5
    assert row["median_probability_in_lesions"] == pytest.approx(0.575, abs=1e-3)


@pytest.mark.parametrize("extra, message", [
    (["--weights", "1"], "give 2 non-negative numbers"),
    (["--weights", "a,b"], "give numbers separated by commas"),
    (["--threshold", "1"], "strictly between 0 and 1"),
])
def test_bad_arguments_are_refused(scripts, tmp_path, capsys, extra, message):
    _, ensemble_views = scripts
    folders = [str(tmp_path), str(tmp_path)]
    with pytest.raises(SystemExit):
        ensemble_views.parse_args([*folders, *extra])
    assert message in capsys.readouterr().err


def test_a_missing_folder_is_named(scripts, tmp_path, capsys):
    _, ensemble_views = scripts
    with pytest.raises(SystemExit):
        ensemble_views.parse_args([str(tmp_path), str(tmp_path / "absent")])
    assert "absent: not a folder of saved probabilities" in capsys.readouterr().err
