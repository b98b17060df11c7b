"""Logistic recalibration of probabilities: the map, its fit, and the card entry."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bids_mdpp.recalibration import (apply_logistic, check_probability_calibration, fit_logistic,
                                     logit)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_the_map_keeps_order_and_ends_and_is_the_identity_at_scale_1_bias_0():
    p = np.array([0.0, 1e-4, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0], dtype=np.float32)
    assert np.allclose(apply_logistic(p, 1.0, 0.0), p, atol=1e-6)
    mapped = apply_logistic(p, 2.5, -1.0)
    assert mapped.dtype == np.float32 and mapped.shape == p.shape
    assert mapped[0] == 0.0 and mapped[-1] == 1.0
    assert np.all(np.diff(mapped) > 0)  # strictly monotone: the voxels keep their order
    assert mapped[4] == pytest.approx(sigmoid(-1.0), abs=1e-6)  # logit(0.5) = 0
    assert np.allclose(apply_logistic(p.reshape(2, 4), 2.5, -1.0), mapped.reshape(2, 4))


def test_the_fit_recovers_the_map_that_made_the_labels():
    rng = np.random.default_rng(0)
    # a model whose logits are squeezed: the truth is sigmoid(2.0 · logit(p) − 1.0)
    p = sigmoid(rng.normal(-2.0, 1.5, 200_000))
    label = rng.random(p.size) < sigmoid(2.0 * logit(p) - 1.0)
    fit = fit_logistic(p, label)
    assert fit.scale == pytest.approx(2.0, abs=0.05)
    assert fit.bias == pytest.approx(-1.0, abs=0.05)
    assert fit.nll_after < fit.nll_before
    assert fit.voxels == p.size and fit.lesion_voxels == int(label.sum())


def test_a_calibrated_model_is_left_alone():
    rng = np.random.default_rng(1)
    p = sigmoid(rng.normal(-1.0, 2.0, 100_000))
    label = rng.random(p.size) < p
    fit = fit_logistic(p, label)
    assert fit.scale == pytest.approx(1.0, abs=0.05) and fit.bias == pytest.approx(0.0, abs=0.05)
    assert fit.nll_after == pytest.approx(fit.nll_before, abs=1e-3)


@pytest.mark.parametrize("label, message", [
    (np.zeros(10, bool), "only one class"),
    (np.ones(10, bool), "only one class"),
    (np.zeros(9, bool), "differ in size"),
])
def test_nothing_to_fit_is_refused(label, message):
    with pytest.raises(ValueError, match=message):
        fit_logistic(np.linspace(0.05, 0.95, 10), label)


@pytest.mark.parametrize("values, message", [
    ([1.0, 0.0], "must be a mapping"),
    ({"method": "isotonic", "scale": 1.0, "bias": 0.0}, "method must be 'logistic'"),
    ({"method": "logistic", "bias": 0.0}, "scale must be a finite number"),
    ({"method": "logistic", "scale": float("nan"), "bias": 0.0}, "scale must be a finite number"),
    ({"method": "logistic", "scale": 1.0, "bias": "0"}, "bias must be a finite number"),
    ({"method": "logistic", "scale": 0.0, "bias": 0.0}, "scale must be > 0"),
    ({"method": "logistic", "scale": -1.0, "bias": 0.0}, "scale must be > 0"),
])
def test_a_bad_card_entry_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        check_probability_calibration(values)


def test_a_card_with_a_bad_entry_is_refused_naming_the_file(tmp_path):
    from bids_mdpp.errors import ModelError
    from bids_mdpp.model import read_card

    path = tmp_path / "model_card.json"
    path.write_text(json.dumps({
        "name": "tiny", "version": "0", "contrasts": ["T1w", "FLAIR"], "mode": "moddrop+",
        "network": {"n_contrasts": 2, "growth_rate": 4, "down_blocks": [1, 1],
                    "up_blocks": [1, 1], "bottleneck_layers": 1, "first_conv_channels": 8,
                    "dynamic_head": True},
        "threshold": 0.5, "slices_per_contrast": 3, "grid_mm": 1.0,
        "normalisation": {"method": "kde-wm-peak"},
        "probability_calibration": {"method": "logistic", "scale": -2.0, "bias": 0.0}}))
    with pytest.raises(ModelError, match="scale must be > 0") as info:
        read_card(path)
    assert str(path) in str(info.value)


def test_the_card_applies_its_calibration_and_older_cards_have_none():
    from bids_mdpp.model import ModelCard

    network = {"n_contrasts": 1, "growth_rate": 4, "down_blocks": [1], "up_blocks": [1],
               "bottleneck_layers": 1, "first_conv_channels": 8, "dynamic_head": False}
    plain = ModelCard(name="m", version="0", contrasts=("FLAIR",), mode="independent",
                      network=network)
    p = np.array([0.0, 0.2, 0.6, 1.0], dtype=np.float32)
    assert plain.probability_calibration == {} and plain.recalibrated(p) is p
    card = ModelCard(name="m", version="0", contrasts=("FLAIR",), mode="independent",
                     network=network,
                     probability_calibration={"method": "logistic", "scale": 1.5, "bias": 0.3})
    assert np.allclose(card.recalibrated(p), apply_logistic(p, 1.5, 0.3))
    assert ModelCard.from_dict(card.to_dict()) == card
