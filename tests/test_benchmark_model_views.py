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


def test_card_views_keep_the_plain_summary_without_time(model_views):
    result = {"data": "/d", "labels": "/d/derivatives/lesions", "grid": "model grid (1 mm)",
              "command_line": "python benchmarks/model_views.py", "created": "2026-01-01",
              "summary": {"FLAIR|plain": {"sessions": 2, "dsc": 0.6, "seconds": 9.0,
                                          "false_positive_away_mm3": 120.0, "ece_brain": 0.01},
                          "FLAIR|tta": {"sessions": 2, "dsc": 0.7, "seconds": 20.0}}}
    entry = model_views.card_views(result)
    assert entry["data"] == "/d" and entry["command_line"].startswith("python benchmarks")
    assert entry["kind"] == "real"  # no dataset_description.json written by bids_mdpp synth
    assert entry["intensity_model"] == "off"  # a result that does not say: the network alone
    assert model_views.card_views({**result, "intensity_model": "combine"})[
        "intensity_model"] == "combine"
    assert entry["lesion_atlas"] == "shipped"  # the prior from the shipped masks
    assert model_views.card_views({**result, "lesion_atlas": "/tmp/atlas"})[
        "lesion_atlas"] == "/tmp/atlas"
    assert set(entry["subsets"]) == {"FLAIR"}
    flair = entry["subsets"]["FLAIR"]
    assert flair["dsc"] == 0.6 and flair["false_positive_away_mm3"] == 120.0
    assert flair["sessions"] == 2 and "seconds" not in flair and flair["best_dsc"] is None


@pytest.mark.parametrize("argv, message", [
    (["--write-card", "lesion free"], "letters, digits"),
    (["--write-card", "free", "--tta", "on"], "without --tta"),
])
def test_bad_write_card_options_are_refused(model_views, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        model_views.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_card_metrics_are_updated_in_place_and_checked(tmp_path):
    import json

    from bids_mdpp.model import ModelCard, save_model
    from bids_mdpp.nn import build_network

    real_scans = load_script("real_scans")
    card = ModelCard(name="m", version="0", contrasts=("FLAIR",), mode="independent",
                     network={"n_contrasts": 1, "growth_rate": 4, "down_blocks": [1],
                              "up_blocks": [1], "bottleneck_layers": 1,
                              "first_conv_channels": 8, "dynamic_head": False},
                     metrics={"dsc": {"FLAIR": 0.5}})
    directory = save_model(tmp_path / "m", build_network(card.network), card)
    path = real_scans.update_card_metrics(
        directory, lambda metrics: metrics.setdefault("views", {}).__setitem__("free", {"x": 1}))
    values = json.loads(path.read_text())
    assert values["metrics"] == {"dsc": {"FLAIR": 0.5}, "views": {"free": {"x": 1}}}
    assert values["name"] == "m"
    # a card that would not load is never written
    values["threshold"] = 2.0
    path.write_text(json.dumps(values))
    with pytest.raises(real_scans.BenchmarkError, match="would be invalid"):
        real_scans.update_card_metrics(directory, lambda metrics: None)
    assert json.loads(path.read_text())["threshold"] == 2.0


def test_dataset_kind_tells_synthetic_data_from_real(model_views, tmp_path):
    import json

    (tmp_path / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "GeneratedBy": [{"Name": "bids_mdpp synth", "Version": "0"}]}))
    assert model_views.dataset_kind(tmp_path) == "synthetic"
    (tmp_path / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "GeneratedBy": [{"Name": "manual"}]}))
    assert model_views.dataset_kind(tmp_path) == "real"
    assert model_views.dataset_kind(tmp_path / "absent") == "real"


def test_end_to_end_scores_every_subset_and_saves_each_plain_prediction(model_views, tmp_path,
                                                                          restore_process_state):
    """A tiny model on one labelled subject: every subset is scored with and without flips, and
    ``--save-probabilities`` keeps the plain predictions that the rows were scored on."""
    import json

    import torch
    from test_train_support import write_bids_dataset

    from bids_mdpp.model import ModelCard, save_model
    from bids_mdpp.nn import build_network

    bids, labels = write_bids_dataset(tmp_path / "bids", {"01": ("T1w", "FLAIR")},
                                      masks={"sub-01"})
    torch.manual_seed(0)
    card = ModelCard(name="tiny", version="0", contrasts=["T1w", "FLAIR", "T2w"], mode="moddrop+",
                     network={"n_contrasts": 3, "growth_rate": 4, "down_blocks": (1, 1),
                              "up_blocks": (1, 1), "bottleneck_layers": 1,
                              "first_conv_channels": 8, "dynamic_head": True},
                     thresholds={"T1w": 0.3})
    network = build_network(card.network)
    network.reset_parameters(std=0.2)
    save_model(tmp_path / "model", network, card)
    output, saved = tmp_path / "views.json", tmp_path / "saved"
    assert model_views.main(["--model", str(tmp_path / "model"), "--data", str(bids), "--labels",
                             str(labels), "--subsets", "all", "--tta", "both", "--work",
                             str(tmp_path / "work"), "--nprocs", "1", "--output", str(output),
                             "--save-probabilities", str(saved)]) == 0

    result = json.loads(output.read_text())
    assert result["intensity_model"] == "combine"  # as the participant level runs by default
    rows = result["rows"]
    assert sorted((r["subset"], r["tta"]) for r in rows) == [
        ("FLAIR", False), ("FLAIR", True), ("T1w", False), ("T1w", True),
        ("T1w+FLAIR", False), ("T1w+FLAIR", True)]
    assert {r["subset"]: r["threshold"] for r in rows} == {"FLAIR": 0.5, "T1w": 0.3,
                                                            "T1w+FLAIR": 0.5}
    assert set(result["summary"]) == {f"{s}|{t}" for s in ("FLAIR", "T1w", "T1w+FLAIR")
                                      for t in ("plain", "tta")}

    folder = saved / "sub-01"
    assert sorted(p.name for p in folder.iterdir()) == [
        "FLAIR.npy", "T1w+FLAIR.npy", "T1w.npy", "brain.npy", "label.npy", "session.json"]
    brain, label = np.load(folder / "brain.npy"), np.load(folder / "label.npy")
    assert brain.dtype == bool and label.dtype == bool and label.any()
    session = json.loads((folder / "session.json").read_text())
    assert session["model"] == str(tmp_path / "model") and len(session["voxel_sizes_mm"]) == 3
    for row in (r for r in rows if not r["tta"]):
        probability = np.load(folder / f"{row['subset']}.npy")
        assert probability.dtype == np.float16 and probability.shape == brain.shape
        rescored = model_views.views(probability.astype(np.float32), label, brain,
                                     row["threshold"], session["voxel_sizes_mm"])
        assert rescored["predicted_volume_mm3"] == pytest.approx(row["predicted_volume_mm3"],
                                                                 rel=0.02, abs=2.0)
