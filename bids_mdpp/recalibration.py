"""Logistic recalibration of a model's lesion probabilities (a scale and a bias on their logits).

A network trained with a focal loss ranks voxels well but squeezes its probabilities towards the
middle: normal tissue sits above its true lesion frequency and lesions below theirs.  A
monotone map fitted on labelled sessions the model was not trained on puts them back:

    logit(p') = scale · logit(p) + bias,     scale > 0,

so ``p'`` is what the probability should have said on those sessions (Platt scaling of the fused
probability).  It keeps the order of the voxels, maps 0 to 0 and 1 to 1, and is the identity for
``scale = 1, bias = 0``.  ``bids_mdpp calibrate --probabilities`` fits it by maximum likelihood
over the brain voxels of every scored session and contrast subset and writes it to the model
card's ``probability_calibration``; the :class:`~bids_mdpp.inference.Predictor` applies it to
every prediction, before the threshold.

API::

    p2 = apply_logistic(p, scale, bias)                # any shape, float32, 0 → 0, 1 → 1
    fit = fit_logistic(p, label)                       # LogisticFit(scale, bias, ...)
    check_probability_calibration(values)              # the card entry, or ValueError
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The only method :func:`check_probability_calibration` knows.
METHOD = "logistic"
#: Probabilities are clipped to [EPS, 1 − EPS] before their logit is taken.
EPS = 1e-6


def logit(probability: np.ndarray) -> np.ndarray:
    """``log(p / (1 − p))`` in float64, ``p`` clipped to [:data:`EPS`, 1 − :data:`EPS`]."""
    p = np.clip(np.asarray(probability, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_logistic(probability: np.ndarray, scale: float, bias: float) -> np.ndarray:
    """``sigmoid(scale · logit(p) + bias)`` for every voxel, float32 of the same shape.

    Exactly 0 and exactly 1 (outside the brain, say) stay where they are, the limits of the map
    for ``scale > 0``.
    """
    p = np.asarray(probability)
    out = 1.0 / (1.0 + np.exp(-(scale * logit(p) + bias)))
    out[p <= 0] = 0.0
    out[p >= 1] = 1.0
    return out.astype(np.float32)


@dataclass(frozen=True)
class LogisticFit:
    """A fitted recalibration and how well the probabilities fitted before and after it.

    ``nll_before``/``nll_after``: mean negative log-likelihood (nats per voxel) of the labels
    under the probabilities; ``voxels``/``lesion_voxels``: how many were fitted on.
    """

    scale: float
    bias: float
    nll_before: float
    nll_after: float
    voxels: int
    lesion_voxels: int


def _nll(params: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of ``y`` under ``sigmoid(a z + b)`` and its gradient."""
    a, b = params
    s = a * z + b
    # log(1 + e^s) − y s, computed without overflow
    value = np.mean(np.logaddexp(0.0, s) - y * s)
    residual = 1.0 / (1.0 + np.exp(-s)) - y
    return float(value), np.array([np.mean(residual * z), np.mean(residual)])


def fit_logistic(probability: np.ndarray, label: np.ndarray) -> LogisticFit:
    """The ``scale`` and ``bias`` that make ``probability`` most likely to have produced ``label``.

    ``probability`` and ``label`` are matching arrays of any shape (the voxels to fit on, e.g.
    the brain's); ``label`` is boolean.  Raises ``ValueError`` when the shapes differ or the
    labels hold only one class (nothing to fit).
    """
    from scipy.optimize import minimize

    p = np.asarray(probability).ravel()
    y = (np.asarray(label) > 0).ravel().astype(np.float64)
    if p.shape != y.shape:
        raise ValueError(f"probability ({p.size} voxels) and label ({y.size} voxels) differ in size")
    n_lesion = int(y.sum())
    if n_lesion == 0 or n_lesion == y.size:
        raise ValueError("the voxels to fit on hold only one class (no lesion, or only lesion); "
                         "a recalibration needs both")
    z = logit(p)
    result = minimize(_nll, np.array([1.0, 0.0]), args=(z, y), jac=True, method="L-BFGS-B",
                      bounds=[(1e-3, 1e3), (-50.0, 50.0)])
    scale, bias = (float(v) for v in result.x)
    return LogisticFit(scale=scale, bias=bias, nll_before=_nll(np.array([1.0, 0.0]), z, y)[0],
                       nll_after=float(result.fun), voxels=int(y.size), lesion_voxels=n_lesion)


def check_probability_calibration(values: Any) -> None:
    """Refuse a card's ``probability_calibration`` that is not empty or a valid logistic map.

    Valid: ``{}`` or a mapping with ``method: "logistic"``, ``scale`` a finite number > 0 and
    ``bias`` a finite number (any other keys record where it was fitted).
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"probability_calibration must be a mapping, got {values!r}")
    if not values:
        return
    if values.get("method") != METHOD:
        raise ValueError(f"probability_calibration method must be {METHOD!r}, "
                         f"got {values.get('method')!r}")
    for key in ("scale", "bias"):
        value = values.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"probability_calibration {key} must be a finite number, got {value!r}")
    if values["scale"] <= 0:
        raise ValueError(f"probability_calibration scale must be > 0 (a map that keeps the "
                         f"voxels' order), got {values['scale']!r}")
