"""Average the weights of several models into one ("model soup", Wortsman et al. 2022).

Networks fine-tuned from the same starting model usually stay in one basin of the loss, so the
mean of their weights is itself a good network, often better than each of them, at no cost at
inference.  :func:`average_models` checks that the models can be averaged (same contrasts,
mode, network, grid, slices and normalisation), takes the weighted mean of every
floating-point parameter and buffer (BatchNorm running statistics included; integer counters
are the first model's), and makes the card of the result:

* the first model's card for what the network computes (contrasts, mode, network, grid,
  normalisation);
* ``training.averaged_from``: per model its name, directory, weights sha256, weight and its
  card's ``training``;
* one ``threshold`` and no per-subset thresholds, network weights, recalibration or metrics:
  those were chosen or measured for the members and must be measured again on the average.

Averaging models trained from different starting points gives a poor network; nothing can
check that here, so measure the result (``benchmarks/model_views.py``) before using it.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from bids_mdpp.errors import ModelError, UsageError
from bids_mdpp.model import CARD_NAME, WEIGHTS_NAME, LoadedModel, ModelCard, load_model, save_model
from bids_mdpp.nn import FCDenseNet

#: Card fields that must agree for two models' weights to be averaged.
MUST_AGREE = ("contrasts", "mode", "network", "grid_mm", "slices_per_contrast", "normalisation")


def check_compatible(models: Sequence[LoadedModel]) -> None:
    """Raise :class:`ModelError` naming the first model whose card differs from the first's."""
    first = models[0]
    for other in models[1:]:
        for key in MUST_AGREE:
            mine, theirs = getattr(first.card, key), getattr(other.card, key)
            if mine != theirs:
                raise ModelError(other.directory / CARD_NAME,
                                 f"its {key} ({theirs!r}) is not that of {first.directory} "
                                 f"({mine!r}): only models of one network can be averaged")


def parse_weights(text: str, count: int) -> list[float]:
    """``--weights`` text (``"3,1"``) → one non-negative number per member, not all 0.

    Raises :class:`UsageError` naming the option and what is wrong.
    """
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError as exc:
        raise UsageError(f"--weights {text!r}: give numbers separated by commas") from exc
    return check_weights(weights, count, what=f"--weights {text!r}")


def check_weights(weights: Sequence[float], count: int, *, what: str = "weights") -> list[float]:
    """``weights`` as floats, checked to be ``count`` non-negative numbers, not all 0.

    Raises :class:`UsageError` starting with ``what`` (the option or argument) otherwise.
    """
    weights = [float(w) for w in weights]
    if len(weights) != count or min(weights, default=0.0) < 0 or sum(weights) <= 0:
        raise UsageError(f"{what}: give {count} non-negative numbers, not all 0 (got "
                         f"{len(weights)}: {weights})")
    return weights


def average_state(states: Sequence[dict[str, torch.Tensor]],
                  weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of floating-point tensors; other tensors are the first state's."""
    total = float(sum(weights))
    averaged = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            mean = sum(w * s[key].double() for w, s in zip(weights, states)) / total
            averaged[key] = mean.to(first.dtype)
        else:
            averaged[key] = first.clone()
    return averaged


def average_models(model_dirs: Sequence[os.PathLike | str], weights: Sequence[float] | None = None,
                   *, name: str = "averaged", threshold: float = 0.5) -> tuple[FCDenseNet, ModelCard]:
    """The network whose weights are the weighted mean of ``model_dirs``', and its card."""
    if len(model_dirs) < 2:
        raise UsageError("give at least two models to average")
    weights = check_weights([1.0] * len(model_dirs) if weights is None else weights,
                            len(model_dirs), what=f"weights of {len(model_dirs)} models")
    models = [load_model(d, device="cpu") for d in model_dirs]
    for model in models:
        if model.anchor_network is not None:
            raise ModelError(model.directory / CARD_NAME,
                             f"the model keeps separate weights for the inputs with "
                             f"{model.anchor_contrast} (it was made by bids_mdpp adapt); only "
                             "models with one set of weights can be averaged")
    check_compatible(models)
    state = average_state([m.network.state_dict() for m in models], weights)
    network = FCDenseNet(models[0].card.network_config)
    network.load_state_dict(state)
    network.eval()
    total = sum(weights)
    members = [{"name": m.card.name, "directory": str(m.directory), "sha256": m.sha256,
                "weight": round(w / total, 6), "training": m.card.training}
               for m, w in zip(models, weights)]
    listed = ", ".join(f"{m.card.name} ({w / total:.2f})" for m, w in zip(models, weights))
    card = dataclasses.replace(
        models[0].card, name=name, threshold=threshold, thresholds={}, network_weights={},
        probability_calibration={}, metrics={}, software={}, created="",
        description=f"Weight average of {len(models)} models of one network: {listed}. "
                    "See training.averaged_from.",
        training={"averaged_from": members})
    return network, card


def write_average(out_dir: os.PathLike | str, model_dirs: Sequence[os.PathLike | str],
                  weights: Sequence[float] | None = None, *, name: str = "averaged",
                  threshold: float = 0.5, overwrite: bool = False) -> Path:
    """Average ``model_dirs`` and write the model directory ``out_dir``; returns it."""
    out_dir = Path(out_dir)
    if not overwrite and ((out_dir / CARD_NAME).exists() or (out_dir / WEIGHTS_NAME).exists()):
        raise UsageError(f"{out_dir} already holds a model; pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file, not a folder for the averaged model")
    network, card = average_models(model_dirs, weights, name=name, threshold=threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_model(out_dir, network, card)
