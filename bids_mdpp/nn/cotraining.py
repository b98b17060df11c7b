"""Training objectives of the four modes, including the ModDrop++ intra-subject co-training.

ModDrop++ (Liu et al. 2022, eq. 3) passes the same augmented slice twice through one network:
once with every contrast the subject has ("full") and once after a modality drop-out
("missing"), with separate BatchNorm batch statistics and gradients through both passes (no
teacher, no detach).  The objective is::

    alpha·Focal(y, F(x_full)) + beta·Focal(y, F(x_missing)) − gamma·SSIM(f_full, f_missing)

where f are the 48-channel feature maps right after the dynamic head's ReLU.  Defaults are the
paper's 1, 1, 0.05 (the authors' code used 1 : 1 : 0.02).

Every objective is called the same way, so a trainer needs no per-mode code::

    objective = objective_for_mode("moddrop++")
    terms = objective(network, x_full, code_full, x_missing, code_missing, target)
    terms.total.backward()

``x_*`` are ``(B, K·s, H, W)``, ``code_*`` ``(B, K)``, ``target`` ``(B, 1, H, W)`` in {0, 1}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bids_mdpp.nn.losses import FocalLoss, ssim


@dataclass
class LossTerms:
    """The value to minimise and its parts (detach them before logging).

    ``logits`` are those of the pass the mode trains on (the missing-contrast pass for the
    drop-out modes, the full pass for ``independent``); ``(B, 1, H, W)``.
    """

    total: torch.Tensor
    logits: torch.Tensor
    focal_full: torch.Tensor | None = None
    focal_missing: torch.Tensor | None = None
    similarity: torch.Tensor | None = None


def _check_weight(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"loss weight {name} must be a finite number ≥ 0, got {value!r}")
    return float(value)


class ModDropPlusPlusLoss(nn.Module):
    """``alpha·Focal(full) + beta·Focal(missing) − gamma·SSIM(features_full, features_missing)``."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.05,
                 focal: FocalLoss | None = None):
        super().__init__()
        self.alpha = _check_weight("alpha", alpha)
        self.beta = _check_weight("beta", beta)
        self.gamma = _check_weight("gamma", gamma)
        self.focal = focal or FocalLoss()

    def forward(self, network: nn.Module, x_full: torch.Tensor, code_full: torch.Tensor,
                x_missing: torch.Tensor, code_missing: torch.Tensor,
                target: torch.Tensor) -> LossTerms:
        logits_full, features_full = network(x_full, code_full, return_features=True)
        logits_missing, features_missing = network(x_missing, code_missing, return_features=True)
        focal_full = self.focal(logits_full, target)
        focal_missing = self.focal(logits_missing, target)
        similarity = ssim(features_full, features_missing)
        total = self.alpha * focal_full + self.beta * focal_missing - self.gamma * similarity
        return LossTerms(total=total, logits=logits_missing, focal_full=focal_full,
                         focal_missing=focal_missing, similarity=similarity)


class SinglePassLoss(nn.Module):
    """Focal loss of one pass: on the dropped-out input (``moddrop``, ``moddrop+``) or the full one."""

    def __init__(self, *, on_missing: bool, focal: FocalLoss | None = None):
        super().__init__()
        self.on_missing = on_missing
        self.focal = focal or FocalLoss()

    def forward(self, network: nn.Module, x_full: torch.Tensor, code_full: torch.Tensor,
                x_missing: torch.Tensor, code_missing: torch.Tensor,
                target: torch.Tensor) -> LossTerms:
        x, code = (x_missing, code_missing) if self.on_missing else (x_full, code_full)
        logits = network(x, code)
        focal = self.focal(logits, target)
        if self.on_missing:
            return LossTerms(total=focal, logits=logits, focal_missing=focal)
        return LossTerms(total=focal, logits=logits, focal_full=focal)


def objective_for_mode(mode: str, *, focal_gamma: float = 2.0, focal_alpha: float = 0.25,
                       weights: tuple[float, float, float] = (1.0, 1.0, 0.05)) -> nn.Module:
    """The training objective of a mode (see :data:`bids_mdpp.nn.MODES`).

    ``weights`` are (alpha, beta, gamma) of the co-training objective (``moddrop++`` only).
    """
    from bids_mdpp.nn import check_mode

    spec = check_mode(mode)
    focal = FocalLoss(gamma=focal_gamma, alpha=focal_alpha)
    if spec.cotraining:
        return ModDropPlusPlusLoss(*weights, focal=focal)
    return SinglePassLoss(on_missing=spec.modality_dropout, focal=focal)
