"""The model directory: save/load round trip, the card's checks, and every bad-model error."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch

from bids_mdpp import model as model_module
from bids_mdpp.errors import EXIT_DATA, ModelError
from bids_mdpp.model import ModelCard, default_model_dir, load_model, save_model
from bids_mdpp.nn import build_network

TINY = dict(n_contrasts=2, growth_rate=4, down_blocks=(1, 1), up_blocks=(1, 1), bottleneck_layers=1,
            first_conv_channels=8)


def make_card(**changes) -> ModelCard:
    values = dict(name="tiny", version="0.1", contrasts=("T1w", "FLAIR"), mode="moddrop++",
                  network={**TINY, "dynamic_head": True}, description="a test model",
                  training={"epochs": 1}, metrics={"dsc": {"T1w+FLAIR": 0.5}})
    values.update(changes)
    return ModelCard(**values)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    card = make_card()
    return save_model(tmp_path / "model", build_network(card.network), card)


def test_round_trip_keeps_weights_and_card(model_dir):
    loaded = load_model(model_dir)
    assert loaded.directory == model_dir.resolve()
    assert not loaded.network.training
    assert loaded.card.contrasts == ("T1w", "FLAIR") and loaded.card.mode == "moddrop++"
    assert loaded.card.created and loaded.card.software["torch"] == torch.__version__
    assert loaded.sha256 == hashlib.sha256((model_dir / "model.pt").read_bytes()).hexdigest()
    torch.manual_seed(0)
    original = build_network(make_card().network)
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key
    card = json.loads((model_dir / "model_card.json").read_text())
    for key in ("name", "version", "description", "contrasts", "mode", "grid_mm", "slices_per_contrast",
                "threshold", "network", "normalisation", "training", "metrics", "software", "created"):
        assert key in card
    assert card["normalisation"] == {"method": "kde-wm-peak", "background": -1.0, "wm_peak": -0.5}
    assert card["network"]["dynamic_head"] is True
    assert load_model(model_dir / "model_card.json").sha256 == loaded.sha256
    assert not list(model_dir.glob(".*"))  # no temporary left behind


def _anchored(tmp_path) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """A model directory with anchor weights for FLAIR; its two networks."""
    card = make_card()
    torch.manual_seed(1)
    network, anchor = build_network(card.network), build_network(card.network)
    return save_model(tmp_path / "anchored", network, card, anchor=("FLAIR", anchor)), network, anchor


def test_anchor_weights_round_trip_and_segment_the_inputs_with_their_contrast(tmp_path):
    directory, network, anchor = _anchored(tmp_path)
    loaded = load_model(directory)
    assert loaded.card.anchor == {"contrast": "FLAIR", "weights": "anchor.pt", "sha256":
                                  hashlib.sha256((directory / "anchor.pt").read_bytes()).hexdigest()}
    assert loaded.anchor_contrast == "FLAIR" and not loaded.anchor_network.training
    for mine, theirs in ((loaded.network, network), (loaded.anchor_network, anchor)):
        assert all(torch.equal(mine.state_dict()[k], v) for k, v in theirs.state_dict().items())
    assert loaded.network_for(("FLAIR",)) is loaded.anchor_network
    assert loaded.network_for(["T1w", "FLAIR"]) is loaded.anchor_network
    assert loaded.network_for(["T1w"]) is loaded.network
    # saving again without an anchor leaves one set of weights, whatever the card said
    save_model(directory, network, loaded.card)
    plain = load_model(directory)
    assert plain.card.anchor == {} and plain.anchor_network is None
    assert not (directory / "anchor.pt").exists()
    assert plain.network_for(["FLAIR"]) is plain.network


def test_anchor_subsets_route_exactly_those_inputs_to_the_anchor_weights(tmp_path):
    card = make_card(contrasts=("T1w", "FLAIR", "T2w"), network={**TINY, "n_contrasts": 3,
                                                                 "dynamic_head": True})
    torch.manual_seed(1)
    network, anchor = build_network(card.network), build_network(card.network)
    directory = save_model(tmp_path / "anchored", network, card, anchor=("FLAIR", anchor),
                           anchor_subsets=("T1w+T2w", "T1w"))
    loaded = load_model(directory)
    assert loaded.card.anchor["subsets"] == ["T1w", "T1w+T2w"]
    assert loaded.anchor_subsets == ("T1w", "T1w+T2w")
    assert loaded.network_for(["T1w"]) is loaded.anchor_network
    assert loaded.network_for(["T2w", "T1w"]) is loaded.anchor_network  # any order
    assert loaded.network_for(["FLAIR"]) is loaded.anchor_network
    assert loaded.network_for(["T2w"]) is loaded.network
    assert loaded.network_for(["T1w", "T2w", "FLAIR"]) is loaded.anchor_network
    # no anchor, no subsets: whatever was asked, one set of weights
    plain = load_model(save_model(tmp_path / "plain", network, loaded.card))
    assert plain.card.anchor == {} and plain.network_for(["T1w"]) is plain.network


def test_the_same_weights_give_the_same_bytes_and_a_weights_file_is_copied_as_is(tmp_path):
    torch.manual_seed(0)
    card = make_card()
    network = build_network(card.network)
    first = save_model(tmp_path / "first", network, card)
    second = save_model(tmp_path / "second", network, card)
    assert (first / "model.pt").read_bytes() == (second / "model.pt").read_bytes()
    copied = save_model(tmp_path / "copied", build_network(card.network), card,
                        anchor=("FLAIR", first / "model.pt"))
    loaded = load_model(copied)
    assert loaded.card.anchor["sha256"] == load_model(first).sha256
    assert all(torch.equal(loaded.anchor_network.state_dict()[k], v)
               for k, v in network.state_dict().items())


def test_changed_or_missing_anchor_weights_are_named(tmp_path):
    directory, _, _ = _anchored(tmp_path)
    state = torch.load(directory / "anchor.pt", weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1
    torch.save(state, directory / "anchor.pt")
    with pytest.raises(ModelError, match=r"anchor\.pt.*sha256 is not the one"):
        load_model(directory)
    (directory / "anchor.pt").unlink()
    with pytest.raises(ModelError, match=r"anchor\.pt.*does not exist"):
        load_model(directory)


@pytest.mark.parametrize("anchor, problem", [
    ("FLAIR", "anchor must be a mapping"),
    ({"contrast": "FLAIR", "weights": "anchor.pt"}, "anchor misses sha256"),
    ({"contrast": "T2w", "weights": "anchor.pt", "sha256": "0" * 64}, "anchor contrast 'T2w'"),
    ({"contrast": "FLAIR", "weights": "../x.pt", "sha256": "0" * 64}, "anchor weights must name"),
    ({"contrast": "FLAIR", "weights": "model.pt", "sha256": "0" * 64}, "anchor weights must name"),
    ({"contrast": "FLAIR", "weights": "anchor.pt", "sha256": "xyz"}, "64 lower-case hex"),
    ({"contrast": "FLAIR", "weights": "anchor.pt", "sha256": "0" * 64, "subsets": "T1w"},
     "anchor subsets must be a list"),
    ({"contrast": "FLAIR", "weights": "anchor.pt", "sha256": "0" * 64, "subsets": ["T2w+T1w"]},
     "anchor subsets entry 'T2w\\+T1w' is not a subset"),
    ({"contrast": "FLAIR", "weights": "anchor.pt", "sha256": "0" * 64, "subsets": ["T1w+FLAIR"]},
     "includes FLAIR, whose inputs use the anchor weights already"),
])
def test_a_bad_anchor_in_the_card_is_named(model_dir, anchor, problem):
    card = json.loads((model_dir / "model_card.json").read_text())
    card["anchor"] = anchor
    (model_dir / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=f"model_card.json.*{problem}"):
        load_model(model_dir)


@pytest.mark.parametrize("weights, problem", [
    ([0.0], "network_weights must map contrast subsets to weights"),
    ({"FLAIR+T1w": 0.0}, "network_weights key 'FLAIR\\+T1w' is not a subset"),
    ({"T2w": 0.0}, "network_weights key 'T2w' is not a subset"),
    ({"T1w": 1.5}, "network_weights\\['T1w'\\] must lie between 0 and 1, got 1.5"),
    ({"T1w": -0.1}, "must lie between 0 and 1"),
    ({"T1w": True}, "must lie between 0 and 1"),
    ({"T1w": "0"}, "must lie between 0 and 1"),
])
def test_bad_network_weights_in_the_card_are_named(model_dir, weights, problem):
    edit_card(model_dir, network_weights=weights)
    expect_model_error(model_dir, problem, model_dir / "model_card.json")


def test_network_weights_round_trip_and_default_to_the_mean(model_dir):
    assert load_model(model_dir).card.network_weight_for(["T1w"]) == model_module.DEFAULT_NETWORK_WEIGHT == 0.5
    edit_card(model_dir, network_weights={"T1w": 0.0, "T1w+FLAIR": 0.25})
    card = load_model(model_dir).card
    assert card.network_weight_for(["T1w"]) == 0.0
    assert card.network_weight_for(["FLAIR", "T1w"]) == 0.25  # any order
    assert card.network_weight_for(["FLAIR"]) == 0.5
    assert ModelCard.from_dict(card.to_dict()).network_weights == {"T1w": 0.0, "T1w+FLAIR": 0.25}


def test_save_refuses_a_network_that_is_not_the_cards():
    with pytest.raises(ValueError, match="not the card's"):
        save_model("/nonexistent", build_network({**TINY, "growth_rate": 2}), make_card())


def edit_card(model_dir: Path, **changes) -> None:
    path = model_dir / "model_card.json"
    card = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del card[key]
        else:
            card[key] = value
    path.write_text(json.dumps(card))


def expect_model_error(path: Path, problem: str, names: Path) -> ModelError:
    with pytest.raises(ModelError, match=problem) as info:
        load_model(path)
    assert str(names) in str(info.value)
    assert info.value.exit_code == EXIT_DATA
    return info.value


def test_missing_directory(tmp_path):
    expect_model_error(tmp_path / "nope", "does not exist", tmp_path / "nope")


def test_a_file_instead_of_a_directory(tmp_path):
    weights = tmp_path / "ms_net_G_1.pth"
    weights.write_bytes(b"x")
    expect_model_error(weights, "not a model directory.*import-weights", weights)


def test_no_model_card(model_dir):
    (model_dir / "model_card.json").unlink()
    expect_model_error(model_dir, "no model card", model_dir / "model_card.json")


def test_invalid_json(model_dir):
    (model_dir / "model_card.json").write_text('{"name": "tiny",')
    expect_model_error(model_dir, "not valid JSON", model_dir / "model_card.json")


def test_missing_keys(model_dir):
    edit_card(model_dir, contrasts=None, network=None)
    expect_model_error(model_dir, "misses required key.*contrasts, network", model_dir / "model_card.json")


def test_unknown_contrast(model_dir):
    edit_card(model_dir, contrasts=["T1w", "DWI"])
    expect_model_error(model_dir, "unknown contrast 'DWI'", model_dir / "model_card.json")


@pytest.mark.parametrize("changes,problem", [
    ({"contrasts": ["T1w", "FLAIR", "T2w"]}, "n_contrasts = 2 but the card lists 3"),
    ({"mode": "moddrop"}, "has no dynamic head"),
    ({"mode": "moddrop4"}, "unknown mode"),
    ({"threshold": 1.5}, "threshold"),
    ({"network": {**TINY, "dynamic_head": True, "layers": 3}}, "unknown network option"),
    ({"contrasts": "T1w"}, "list of contrast names"),
])
def test_inconsistent_cards(model_dir, changes, problem):
    edit_card(model_dir, **changes)
    expect_model_error(model_dir, problem, model_dir / "model_card.json")


def test_weights_file_missing(model_dir):
    (model_dir / "model.pt").unlink()
    expect_model_error(model_dir, "weights file does not exist", model_dir / "model.pt")


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"these are not weights\n", b""])
def test_weights_that_are_not_a_state_dict(model_dir, content):
    (model_dir / "model.pt").write_bytes(content)
    expect_model_error(model_dir, "not a PyTorch state dict", model_dir / "model.pt")


def test_a_pickled_object_is_refused(model_dir):
    torch.save([torch.zeros(2)], model_dir / "model.pt")
    expect_model_error(model_dir, "holds a list, not a state dict", model_dir / "model.pt")


def test_state_dict_with_a_missing_key(model_dir):
    state = torch.load(model_dir / "model.pt", weights_only=True)
    state["first_conv.weight"] = state.pop("first_conv.conv.weight")
    torch.save(state, model_dir / "model.pt")
    expect_model_error(model_dir, "key 'first_conv.conv.weight' that the card's network .2 contrasts.* needs is missing",
                       model_dir / "model.pt")


def test_state_dict_with_an_extra_key(model_dir):
    state = torch.load(model_dir / "model.pt", weights_only=True)
    state["classifier.weight"] = torch.zeros(1)
    torch.save(state, model_dir / "model.pt")
    expect_model_error(model_dir, "unexpected key 'classifier.weight'", model_dir / "model.pt")


def test_state_dict_of_another_shape(model_dir):
    state = build_network({**TINY, "n_contrasts": 3, "dynamic_head": True}).state_dict()
    torch.save(state, model_dir / "model.pt")
    expect_model_error(model_dir, r"'first_conv.conv.weight' has shape \[8, 9, 3, 3\].*needs \[8, 6, 3, 3\]",
                       model_dir / "model.pt")


def test_state_dict_with_nan(model_dir):
    state = torch.load(model_dir / "model.pt", weights_only=True)
    state["final_conv.bias"][0] = float("nan")
    torch.save(state, model_dir / "model.pt")
    expect_model_error(model_dir, "'final_conv.bias' holds NaN", model_dir / "model.pt")


def test_default_model_dir(monkeypatch, tmp_path, model_dir):
    monkeypatch.setattr(model_module, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(ModelError, match="no default model is installed.*--model") as info:
        default_model_dir()
    assert str(tmp_path / "absent") in str(info.value)
    monkeypatch.setattr(model_module, "DEFAULT_MODEL_DIR", model_dir)
    assert default_model_dir() == model_dir


def test_default_location_is_inside_the_package():
    assert model_module.DEFAULT_MODEL_DIR.parts[-4:] == ("bids_mdpp", "data", "models", "default")


def test_shipped_default_model_loads_and_says_what_it_was_trained_on():
    """The model in the package: the five contrasts of ModDrop++, the dynamic head, a few MB per
    weights file, and a card that names its (synthetic) training data, its adaptation to real
    images without labels (the inputs with FLAIR, and T1w alone, keep the base model's weights)
    and the real-scan evaluation."""
    directory = default_model_dir()
    loaded = load_model(directory)
    card = loaded.card
    assert card.contrasts == ("T1w", "FLAIR", "T2w", "PDw", "ceT1w")
    assert card.mode == "moddrop++" and card.network["dynamic_head"]
    for name in ("model.pt", "anchor.pt"):
        assert (directory / name).stat().st_size < 10 * 2**20
    assert "synthetic" in card.training["dataset"]
    assert card.training["epochs"] >= 1 and card.training["fine_tuned_from"] is None
    adaptation = card.training["adaptation"]
    assert adaptation["labels_used"] is False and adaptation["targets"] == "mask"
    assert card.anchor["contrast"] == "FLAIR" and loaded.anchor_network is not None
    assert card.anchor["sha256"] == adaptation["base_model"]["sha256"]  # the base, byte for byte
    assert set(card.metrics["real_scans"]["dsc"]) >= {"T1w+FLAIR+T2w+ceT1w", "FLAIR", "T1w+FLAIR"}
    held_out = card.metrics["views"]["mslub-cross-unseen-hemisphere"]
    assert held_out["kind"] == "real"
    without_flair = {n for n in adaptation["subsets_adapted"] + adaptation["subsets_anchored"]
                     if "FLAIR" not in n.split("+")}
    assert set(held_out["subsets"]) == without_flair
    # T1w alone was measured to lose by adaptation: it keeps the base weights too
    assert card.anchor["subsets"] == ["T1w"] and "T1w" not in adaptation["subsets_adapted"]
    assert loaded.network_for(["T1w"]) is loaded.anchor_network
    assert loaded.network_for(["T1w", "T2w"]) is loaded.network
    assert card.metrics["views"]["synthetic-lesion-free"]["kind"] == "synthetic"
    # the network has no skill on real scans from T1-weighted images alone: with the intensity
    # model, those inputs are segmented by the intensity model alone
    assert card.network_weights == {"T1w": 0.0, "ceT1w": 0.0, "T1w+ceT1w": 0.0}
    assert card.network_weight_for(["T1w", "T2w"]) == 0.5
    assert card.training["network_weights_set"]["subsets"] == list(card.network_weights)


def test_real_scan_dsc_is_looked_up_by_contrast_set():
    card = load_model(default_model_dir()).card
    table = card.metrics["real_scans"]["dsc"]
    assert card.real_scan_dsc(["FLAIR", "T1w"]) == table["T1w+FLAIR"]
    assert card.real_scan_dsc(("ceT1w", "T2w", "FLAIR", "T1w")) == table["T1w+FLAIR+T2w+ceT1w"]
    assert card.real_scan_dsc(["PDw"]) is None  # not measured
    bare = ModelCard(name="x", version="0", contrasts=card.contrasts, mode=card.mode,
                     network=card.network, metrics={"real_scans": "not a table"})
    assert bare.real_scan_dsc(["T1w"]) is None


def test_real_scan_dsc_falls_back_on_the_real_views_of_the_card():
    card = load_model(default_model_dir()).card
    views = {"sub-26": {"kind": "real", "subsets": {"T2w+ceT1w": {"dsc": 0.2},
                                                     "FLAIR": {"dsc": 0.9}}},
             "other": {"kind": "real", "subsets": {"T2w+ceT1w": {"dsc": 0.4}}},
             "synthetic": {"kind": "synthetic", "subsets": {"T1w+ceT1w": {"dsc": 0.7}}}}
    with_views = ModelCard(**{**card.to_dict(), "metrics": {**card.metrics, "views": views}})
    assert with_views.real_scan_dsc(["ceT1w", "T2w"]) == pytest.approx(0.3)  # mean of the real ones
    assert with_views.real_scan_dsc(["FLAIR"]) == card.real_scan_dsc(["FLAIR"])  # real_scans first
    assert with_views.real_scan_dsc(["T1w", "ceT1w"]) is None  # synthetic views do not count


def test_the_shipped_model_cautions_where_its_real_scan_dsc_is_low():
    from bids_mdpp.participant import LOW_REAL_SCAN_DSC, accuracy_caution

    card = load_model(default_model_dir()).card
    low = accuracy_caution(card, ("T1w",))
    assert card.real_scan_dsc(["T1w"]) < LOW_REAL_SCAN_DSC
    assert low.startswith("with only T1w, this model reached DSC 0.00 on a real patient")
    assert accuracy_caution(card, ("T1w", "FLAIR")) is None
    assert accuracy_caution(card, ("PDw",)) is None
    # with the intensity model every subset of the shipped card reached DSC 0.3 or more (ce-T1w
    # alone, the lowest, 0.32): no caution there
    assert card.real_scan_dsc(["ceT1w"], intensity_model="combine") >= LOW_REAL_SCAN_DSC
    assert accuracy_caution(card, ("ceT1w",), "combine") is None
    # where the intensity model, which segments ce-T1w alone, reached less, the caution says so
    views = copy.deepcopy(card.metrics["views"])
    for view in views.values():
        if view.get("kind") == "real" and "ceT1w" in view.get("subsets", {}):
            view["subsets"]["ceT1w"]["dsc"] = 0.2
    lower = ModelCard(**{**card.to_dict(), "metrics": {**card.metrics, "views": views}})
    alone = accuracy_caution(lower, ("ceT1w",), "combine")
    assert alone.startswith("with only ceT1w, the intensity model, which segments these "
                            "contrasts alone with this model, reached DSC 0.20")
    # T1w alone, at DSC 0.3 or more there, gets none
    assert card.real_scan_dsc(["T1w"], intensity_model="combine") >= LOW_REAL_SCAN_DSC
    assert accuracy_caution(card, ("T1w",), "combine") is None
    # without FLAIR the caution quotes the held-out view of the adaptation (the real_scans of
    # the card hold the subsets with FLAIR only, which use the base model's weights)
    held_out = card.metrics["views"]["mslub-cross-unseen-hemisphere"]["subsets"]
    assert card.real_scan_dsc(["T2w"]) == held_out["T2w"]["dsc"]
    assert (accuracy_caution(card, ("T2w",)) is None) == (held_out["T2w"]["dsc"] >= LOW_REAL_SCAN_DSC)
