"""Per-subset thresholds: the DSC curve, the choice, the card, and ``bids_mdpp calibrate``."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from test_train_support import write_bids_dataset

from bids_mdpp.calibration import THRESHOLD_GRID, best_threshold, dice_curve, subsets_of
from bids_mdpp.cli import main
from bids_mdpp.training.trainer import dice

pytestmark = pytest.mark.usefixtures("restore_process_state")

TINY = {"n_contrasts": 3, "growth_rate": 4, "down_blocks": (1, 1), "up_blocks": (1, 1),
        "bottleneck_layers": 1, "first_conv_channels": 8, "dynamic_head": True}


def test_dice_curve_is_the_dice_at_every_threshold():
    rng = np.random.default_rng(0)
    probability = rng.random((12, 10, 8)).astype(np.float32)
    label = rng.random((12, 10, 8)) < 0.2
    probability[label] = np.clip(probability[label] + 0.3, 0, 1)
    curve = dice_curve(probability, label)
    assert curve.shape == THRESHOLD_GRID.shape
    expected = [dice(probability >= t, label) for t in THRESHOLD_GRID]
    assert np.allclose(curve, expected)


def test_dice_curve_edge_cases():
    zeros = np.zeros((4, 4, 4), np.float32)
    assert np.all(dice_curve(zeros, zeros > 0) == 1.0)  # nothing to find, nothing found
    assert np.all(dice_curve(zeros, np.ones((4, 4, 4), bool)) == 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        dice_curve(zeros, np.zeros((4, 4, 3), bool))


def test_best_threshold_takes_the_maximum_and_breaks_ties_towards_the_default():
    curve = np.zeros(len(THRESHOLD_GRID))
    curve[4] = 0.7  # 0.25
    assert best_threshold(curve) == (0.25, 0.7)
    flat = np.full(len(THRESHOLD_GRID), 0.4)
    assert best_threshold(flat, default=0.5) == (0.5, 0.4)
    assert best_threshold(flat, default=0.3)[0] == 0.3
    plateau = np.zeros(len(THRESHOLD_GRID))
    plateau[[1, 2, 14]] = 0.6  # 0.10, 0.15, 0.75
    assert best_threshold(plateau, default=0.5)[0] == 0.75


def test_subsets_of():
    assert subsets_of(["T1w", "FLAIR"], "all") == [("T1w", "FLAIR"), ("T1w",), ("FLAIR",)]
    assert subsets_of(["T1w", "FLAIR"], "single") == [("T1w",), ("FLAIR",)]
    assert subsets_of(["T1w", "FLAIR"], "full") == [("T1w", "FLAIR")]


def card_values(**extra):
    return {"name": "tiny", "version": "0", "contrasts": ["T1w", "FLAIR", "T2w"],
            "mode": "moddrop+", "network": dict(TINY), **extra}


def test_card_thresholds_per_subset_and_the_fallback():
    from bids_mdpp.model import ModelCard

    card = ModelCard(**card_values(threshold=0.5, thresholds={"T1w": 0.3, "T1w+FLAIR": 0.45}))
    assert card.threshold_for(["T1w"]) == 0.3
    assert card.threshold_for(("FLAIR", "T1w")) == 0.45  # any order
    assert card.threshold_for(["FLAIR"]) == 0.5
    assert ModelCard.from_dict(card.to_dict()) == card
    assert ModelCard(**card_values()).thresholds == {}  # older cards have none


@pytest.mark.parametrize("thresholds, message", [
    ({"PDw": 0.3}, "'PDw' is not a subset"),
    ({"FLAIR+T1w": 0.3}, "canonical order"),
    ({"T1w": 1.0}, "strictly between 0 and 1"),
    ({"T1w": "0.3"}, "strictly between 0 and 1"),
    ([0.3], "must map contrast subsets"),
])
def test_bad_card_thresholds_are_refused_naming_the_file(tmp_path, thresholds, message):
    from bids_mdpp.errors import ModelError
    from bids_mdpp.model import read_card

    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card_values(threshold=0.5, slices_per_contrast=3, grid_mm=1.0,
                                           normalisation={"method": "kde-wm-peak"},
                                           thresholds=thresholds)))
    with pytest.raises(ModelError, match=message) as info:
        read_card(path)
    assert str(path) in str(info.value)




def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Two labelled subjects with T1w and FLAIR, one with FLAIR alone and no mask."""
    root = tmp_path_factory.mktemp("calibration_bids")
    return write_bids_dataset(root, {"01": ("T1w", "FLAIR"), "02": ("T1w", "FLAIR"),
                                     "03": ("FLAIR",)}, masks={"sub-01", "sub-02"})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from bids_mdpp.model import ModelCard, save_model
    from bids_mdpp.nn import build_network

    torch.manual_seed(0)
    card = ModelCard(**card_values(
        thresholds={"T2w": 0.4},
        metrics={"real_scans": {"dsc": {"T1w+FLAIR": 0.5}},
                 "views": {"synthetic": {"subsets": {"FLAIR": {"dsc": 0.4}}}}}))
    network = build_network(card.network)
    network.reset_parameters(std=0.2)
    directory = tmp_path_factory.mktemp("model") / "tiny"
    save_model(directory, network, card)
    return directory


def test_calibrate_writes_a_model_with_thresholds_chosen_on_the_sessions(labelled, tiny_model,
                                                                      tmp_path, capsys):
    from bids_mdpp.model import load_model, sha256_of

    bids, labels = labelled
    out = tmp_path / "calibrated"
    status, stdout, err = run_cli(
        ["calibrate", bids, out, "--labels", labels, "--model", tiny_model, "-w",
         tmp_path / "work", "--omp-nthreads", "1", "--precision", "fp32"], capsys)
    assert status == 0, err
    assert "sub-03: skipped, no reference lesion mask" in err
    assert f"Calibrated model written to {out}" in stdout

    with open(out / "calibration" / "dsc_curves.tsv", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    assert sorted((r["session"], r["subset"]) for r in rows) == [
        ("sub-01", "FLAIR"), ("sub-01", "T1w"), ("sub-01", "T1w+FLAIR"),
        ("sub-02", "FLAIR"), ("sub-02", "T1w"), ("sub-02", "T1w+FLAIR")]
    columns = [f"dsc_{t:.2f}" for t in THRESHOLD_GRID]

    loaded = load_model(out)
    card = loaded.card
    assert loaded.sha256 == sha256_of(tiny_model / "model.pt")  # the weights are unchanged
    assert set(card.thresholds) == {"T1w+FLAIR", "T1w", "FLAIR", "T2w"}
    assert card.thresholds["T2w"] == 0.4  # not calibrated here: kept
    for name in ("T1w+FLAIR", "T1w", "FLAIR"):
        mean = np.mean([[float(r[c]) for c in columns] for r in rows if r["subset"] == name], 0)
        chosen = card.metrics["calibration"][name]
        assert chosen["threshold"] == card.thresholds[name] == best_threshold(mean)[0]
        assert chosen["dsc"] == pytest.approx(mean.max(), abs=1e-4)
        assert chosen["dsc"] >= chosen["dsc_at_previous"] and chosen["sessions"] == 2
        assert f"{name}: threshold {chosen['threshold']:.2f}" in stdout
    # real-scan scores measured at the old thresholds do not survive a changed threshold
    changed = card.thresholds["T1w+FLAIR"] != 0.5
    assert ("real_scans" in card.metrics) != changed
    any_changed = any(c["threshold"] != c["previous_threshold"]
                      for c in card.metrics["calibration"].values())
    assert ("views" in card.metrics) != any_changed
    record = card.training["calibration"]
    assert [s["session"] for s in record["sessions"]] == ["sub-01", "sub-02"]
    assert record["command_line"].startswith("bids_mdpp calibrate")
    assert card.created and card.software["bids_mdpp"]

    # a second run into the same folder needs --overwrite; the input model is never replaced
    status, _, err = run_cli(["calibrate", bids, out, "--labels", labels, "--model", tiny_model],
                             capsys)
    assert status == 64 and "--overwrite" in err
    status, _, err = run_cli(["calibrate", bids, tiny_model, "--labels", labels, "--model",
                              tiny_model], capsys)
    assert status == 64 and "is the model being calibrated" in err


@pytest.mark.parametrize("args, code, message", [
    (["--labels", "{tmp}/nowhere"], 66, "nowhere: no such derivatives folder"),
    (["--labels", "{labels}", "--model", "{tmp}/none"], 64, "--model"),
    (["--labels", "{labels}", "--subsets", "pairs"], 64, "pairs"),
    (["--labels", "{labels}", "--participant-label", "99"], 66, "sub-99"),
    (["--labels", "{labels}", "--no-thresholds"], 64, "--no-thresholds leaves nothing"),
])
def test_bad_usage_exits_with_a_clear_message(labelled, tiny_model, tmp_path, capsys, args, code,
                                              message):
    bids, labels = labelled
    args = [a.format(tmp=tmp_path, labels=labels) for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_model)]
    status, _, err = run_cli(["calibrate", bids, tmp_path / "out", *args], capsys)
    assert status == code, err
    assert message in err


def test_calibrate_without_the_bids_folder_exits_66(tmp_path, capsys):
    status, _, err = run_cli(["calibrate", tmp_path / "absent", tmp_path / "out", "--labels",
                              tmp_path], capsys)
    assert status == 66 and "absent: no such BIDS dataset folder" in err


def test_calibrate_probabilities_fits_a_recalibration_then_thresholds_on_it(labelled, tiny_model,
                                                                         tmp_path, capsys):
    import nibabel as nib

    from bids_mdpp.inference import Predictor
    from bids_mdpp.model import load_model
    from bids_mdpp.recalibration import apply_logistic
    from bids_mdpp.training.data import find_labelled_sessions, prepare_session

    bids, labels = labelled
    out, work = tmp_path / "recalibrated", tmp_path / "work"
    status, stdout, err = run_cli(
        ["calibrate", bids, out, "--labels", labels, "--model", tiny_model, "-w", work,
         "--omp-nthreads", "1", "--precision", "fp32", "--probabilities"], capsys)
    assert status == 0, err
    card = load_model(out).card
    fit = card.metrics["probability_calibration"]
    assert card.probability_calibration["method"] == "logistic"
    assert card.probability_calibration["scale"] == fit["scale"] > 0
    assert card.probability_calibration["bias"] == fit["bias"]
    assert card.probability_calibration["sessions"] == 2
    assert fit["nll_after"] <= fit["nll_before"] and fit["predictions"] == 6
    assert f"probabilities: logit × {fit['scale']:.3f}" in stdout
    # thresholds chosen on other probabilities, and real-scan scores, do not survive
    assert set(card.thresholds) == {"T1w+FLAIR", "T1w", "FLAIR"}
    assert "real_scans" not in card.metrics and "views" not in card.metrics

    # the curves written are those of the recalibrated model, as participant will run it
    session = next(s for s in find_labelled_sessions(bids, labels, model_contrasts=card.contrasts)
                   if s.key == "sub-01")
    prepared = prepare_session(session, work, grid_mm=card.grid_mm, omp_nthreads=1,
                               bids_dir=bids)
    volumes = {c: np.asarray(nib.load(str(p)).dataobj, np.float32)
               for c, p in prepared.images.items()}
    brain = np.asarray(nib.load(str(prepared.brain_mask)).dataobj) > 0
    label = prepared.label_on_grid() > 0
    raw = Predictor(load_model(tiny_model), precision="fp32").predict(volumes, brain)
    recalibrated = Predictor(load_model(out), precision="fp32").predict(volumes, brain)
    assert np.allclose(recalibrated, apply_logistic(raw, fit["scale"], fit["bias"]), atol=1e-6)
    with open(out / "calibration" / "dsc_curves.tsv", newline="") as stream:
        row = next(r for r in csv.DictReader(stream, delimiter="\t")
                   if (r["session"], r["subset"]) == ("sub-01", "T1w+FLAIR"))
    expected = dice_curve(recalibrated, label)
    assert np.allclose([float(row[f"dsc_{t:.2f}"]) for t in THRESHOLD_GRID], expected, atol=1e-3)


def test_calibrate_probabilities_without_thresholds_keeps_one_threshold(labelled, tiny_model,
                                                                       tmp_path, capsys):
    from bids_mdpp.model import load_model

    bids, labels = labelled
    out = tmp_path / "probabilities-only"
    status, stdout, err = run_cli(
        ["calibrate", bids, out, "--labels", labels, "--model", tiny_model, "-w",
         tmp_path / "work", "--omp-nthreads", "1", "--precision", "fp32", "--subsets", "full",
         "--probabilities", "--no-thresholds"], capsys)
    assert status == 0, err
    card = load_model(out).card
    assert card.probability_calibration["method"] == "logistic"
    assert card.thresholds == {} and card.threshold == 0.5  # T2w's old 0.4 is dropped
    assert "calibration" not in card.metrics and "threshold " not in stdout
    assert card.metrics["probability_calibration"]["predictions"] == 2


def test_the_calibrated_copy_of_a_model_keeps_its_anchor_weights(tmp_path):
    """A model made by adapt has two weight files; the calibrated directory holds both."""
    from bids_mdpp.calibration import write_model_dir
    from bids_mdpp.model import load_model, save_model
    from bids_mdpp.nn import build_network
    from test_model import make_card

    card = make_card()
    torch.manual_seed(0)
    source = save_model(tmp_path / "adapted", build_network(card.network), card,
                        anchor=("FLAIR", build_network(card.network)))
    loaded = load_model(source)
    out = tmp_path / "calibrated"
    out.mkdir()
    write_model_dir(source, out, dataclasses.replace(loaded.card, thresholds={"FLAIR": 0.4}))
    copied = load_model(out)
    assert copied.card.thresholds == {"FLAIR": 0.4} and copied.card.anchor == loaded.card.anchor
    assert (out / "anchor.pt").read_bytes() == (source / "anchor.pt").read_bytes()
    assert copied.network_for(["FLAIR"]) is copied.anchor_network
