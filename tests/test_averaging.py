"""Weight averaging ("model soup"): the mean network, its card, and every refusal."""
from __future__ import annotations

import json

import pytest
import torch

from bids_mdpp.averaging import average_models, average_state, parse_weights, write_average
from bids_mdpp.cli import main
from bids_mdpp.errors import ModelError, UsageError
from bids_mdpp.model import load_model, save_model
from bids_mdpp.nn import build_network
from test_model import TINY, make_card


def _model(tmp_path, name, seed, **card_changes):
    torch.manual_seed(seed)
    card_changes.setdefault("thresholds", {"FLAIR": 0.4})
    card = make_card(name=name, **card_changes)
    network = build_network(card.network)
    with torch.no_grad():  # BatchNorm statistics differ too, as after training
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.num_batches_tracked.fill_(seed + 1)
    return save_model(tmp_path / name, network, card)


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_average_state_weights_floats_and_keeps_the_first_counter():
    a = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([2.0, 0.0]), "n": torch.tensor(7)}
    mean = average_state([a, b], [1.0, 3.0])
    assert torch.allclose(mean["w"], torch.tensor([1.5, 1.0]))
    assert mean["n"].item() == 3 and mean["w"].dtype == torch.float32


def test_the_average_is_the_mean_of_every_parameter_and_statistic(tmp_path):
    a, b = _model(tmp_path, "a", 0), _model(tmp_path, "b", 1)
    network, card = average_models([a, b], name="soup")
    sa, sb = (load_model(m).network.state_dict() for m in (a, b))
    for key, value in network.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, (sa[key] + sb[key]) / 2, atol=1e-6), key
        else:
            assert torch.equal(value, sa[key]), key
    assert any("running_mean" in k for k in sa)
    assert card.name == "soup" and card.contrasts == ("T1w", "FLAIR")
    assert card.thresholds == {} and card.metrics == {} and card.threshold == 0.5
    members = card.training["averaged_from"]
    assert [m["name"] for m in members] == ["a", "b"] and [m["weight"] for m in members] == [0.5, 0.5]
    assert members[0]["sha256"] == load_model(a).sha256 and members[1]["training"] == {"epochs": 1}
    assert "a (0.50), b (0.50)" in card.description


def test_the_written_average_loads_and_predicts_like_its_network(tmp_path):
    a, b = _model(tmp_path, "a", 0), _model(tmp_path, "b", 1)
    out = write_average(tmp_path / "soup", [a, b], [3, 1], name="soup", threshold=0.4)
    loaded = load_model(out)
    assert loaded.card.threshold == 0.4
    assert [m["weight"] for m in loaded.card.training["averaged_from"]] == [0.75, 0.25]
    x = torch.randn(1, 6, 16, 16)
    code = torch.tensor([[1.0, 1.0]])
    network, _ = average_models([a, b], [3, 1])
    with torch.no_grad():
        assert torch.allclose(loaded.network(x, code), network(x, code), atol=1e-6)
    with pytest.raises(UsageError, match="already holds a model; pass --force"):
        write_average(out, [a, b])
    write_average(out, [a, b], overwrite=True)


def test_models_of_different_networks_or_contrasts_are_refused_by_name(tmp_path):
    a = _model(tmp_path, "a", 0)
    wider = _model(tmp_path, "wider", 1, network={**TINY, "growth_rate": 6, "dynamic_head": True})
    with pytest.raises(ModelError, match=r"wider.*its network .* is not that of"):
        average_models([a, wider])
    other = _model(tmp_path, "other", 1, contrasts=("T1w", "T2w"), thresholds={})
    with pytest.raises(ModelError, match=r"other.*its contrasts \(\('T1w', 'T2w'\)\)"):
        average_models([a, other])


def test_a_model_with_anchor_weights_is_refused_by_name(tmp_path):
    a = _model(tmp_path, "a", 0)
    card = make_card(name="adapted")
    torch.manual_seed(2)
    adapted = save_model(tmp_path / "adapted", build_network(card.network), card,
                         anchor=("FLAIR", build_network(card.network)))
    with pytest.raises(ModelError, match=r"adapted.*separate weights for the inputs with FLAIR"):
        average_models([a, adapted])


@pytest.mark.parametrize("weights, message", [
    ([1.0], r"weights of 2 models: give 2 non-negative numbers.*got 1"),
    ([0.0, 0.0], "not all 0"),
    ([1.0, -1.0], "non-negative"),
])
def test_bad_weights_are_refused(tmp_path, weights, message):
    a, b = _model(tmp_path, "a", 0), _model(tmp_path, "b", 1)
    with pytest.raises(UsageError, match=message):
        average_models([a, b], weights)


@pytest.mark.parametrize("text, count, message", [
    ("1,x", 2, "give numbers separated by commas"),
    ("1", 2, "give 2 non-negative numbers"),
    ("1,-1", 2, "non-negative numbers, not all 0"),
    ("0,0", 2, "not all 0"),
])
def test_parse_weights_refuses_bad_text_naming_the_option(text, count, message):
    with pytest.raises(UsageError, match=message) as caught:
        parse_weights(text, count)
    assert f"--weights {text!r}" in str(caught.value)


def test_parse_weights_reads_one_number_per_member():
    assert parse_weights("3,1", 2) == [3.0, 1.0]
    assert parse_weights(" 0.5, 2e-1 ,0", 3) == [0.5, 0.2, 0.0]


def test_command_line(tmp_path, capsys):
    a, b = _model(tmp_path, "a", 0), _model(tmp_path, "b", 1)
    code, out, err = run_cli(["average-weights", tmp_path / "soup", a, b, "--weights", "1,1",
                              "--name", "soup"], capsys)
    assert code == 0, err
    assert "Wrote model soup (mean of 2 models)" in out
    card = json.loads((tmp_path / "soup" / "model_card.json").read_text())
    assert card["name"] == "soup" and len(card["training"]["averaged_from"]) == 2
    code, out, err = run_cli(["average-weights", tmp_path / "soup", a, b], capsys)
    assert code == 64 and "--force" in err
    code, out, err = run_cli(["average-weights", tmp_path / "x", a], capsys)
    assert code == 64 and "at least two models" in err
    code, out, err = run_cli(["average-weights", tmp_path / "x", a, b, "--weights", "1,x"], capsys)
    assert code == 64 and "give numbers separated by commas" in err
    code, out, err = run_cli(["average-weights", tmp_path / "x", a, b, "--weights", "1"], capsys)
    assert code == 64 and "give 2 non-negative numbers" in err
    code, out, err = run_cli(["average-weights", tmp_path / "x", a, tmp_path / "absent"], capsys)
    assert code == 65 and "absent" in err and "does not exist" in err
    assert not (tmp_path / "x").exists()

    code, out, err = run_cli(["average-weights", "--help"], capsys)
    assert code == 0 and all(o in out for o in ("OUT_DIR", "MODELS", "--weights", "--threshold"))
