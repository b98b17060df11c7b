"""The training objective of every mode, and the ModDrop++ co-training loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_mdpp.nn import MODES, build_network, check_mode, torch_threads
from bids_mdpp.nn.cotraining import ModDropPlusPlusLoss, objective_for_mode
from bids_mdpp.nn.losses import FocalLoss, ssim
from bids_mdpp.nn.moddrop import apply_code, draw_drop

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors run fastest on one thread (and do not fight other processes for cores)."""
    with torch_threads(1):
        yield


TINY = dict(n_contrasts=3, growth_rate=4, down_blocks=(1, 1), up_blocks=(1, 1), bottleneck_layers=1,
            first_conv_channels=8)


def batch(seed: int = 0):
    """A full batch, its drop-out and a target: x (4, 9, 24, 24), codes (4, 3), target (4, 1, 24, 24)."""
    rng = np.random.default_rng(seed)
    x_full = torch.from_numpy(rng.standard_normal((4, 9, 24, 24)).astype(np.float32))
    code_full = torch.ones(4, 3)
    code_missing = torch.tensor([draw_drop([True] * 3, rng) for _ in range(4)], dtype=torch.float32)
    x_missing = apply_code(x_full, code_missing, slices_per_contrast=3)
    target = torch.from_numpy((rng.random((4, 1, 24, 24)) > 0.8).astype(np.float32))
    return x_full, code_full, x_missing, code_missing, target


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_runs_forward_and_backward(mode):
    torch.manual_seed(0)
    spec = check_mode(mode)
    net = build_network({**TINY, "dynamic_head": spec.dynamic_head}).train()
    terms = objective_for_mode(mode)(net, *batch())
    assert terms.logits.shape == (4, 1, 24, 24)
    assert torch.isfinite(terms.total)
    terms.total.backward()
    assert net.first_conv.conv.weight.grad.abs().sum() > 0
    assert net.final_conv.weight.grad.abs().sum() > 0
    if spec.dynamic_head:
        assert net.first_conv.controller.weight.grad.abs().sum() > 0
    assert (terms.similarity is not None) == spec.cotraining
    assert (terms.focal_missing is not None) == spec.modality_dropout


def test_the_objective_is_alpha_focal_plus_beta_focal_minus_gamma_ssim():
    torch.manual_seed(0)
    net = build_network({**TINY, "dropout": 0.0}).train()
    x_full, code_full, x_missing, code_missing, target = batch(1)
    terms = ModDropPlusPlusLoss(alpha=1.0, beta=2.0, gamma=0.5, focal=FocalLoss(gamma=1))(
        net, x_full, code_full, x_missing, code_missing, target)
    logits_full, features_full = net(x_full, code_full, return_features=True)
    logits_missing, features_missing = net(x_missing, code_missing, return_features=True)
    focal = FocalLoss(gamma=1)
    expected = (focal(logits_full, target) + 2.0 * focal(logits_missing, target)
                - 0.5 * ssim(features_full, features_missing))
    torch.testing.assert_close(terms.total, expected)
    assert 0 < terms.similarity.item() < 1


def test_gradients_flow_through_both_passes_of_the_similarity_term():
    torch.manual_seed(0)
    net = build_network(TINY).train()
    x_full, code_full, x_missing, code_missing, target = batch(2)
    x_full.requires_grad_(True)
    x_missing.requires_grad_(True)
    terms = ModDropPlusPlusLoss(alpha=0.0, beta=0.0, gamma=1.0)(
        net, x_full, code_full, x_missing, code_missing, target)
    terms.total.backward()
    assert x_full.grad.abs().sum() > 0  # no detach on the full pass (no teacher)
    assert x_missing.grad.abs().sum() > 0
    assert net.first_conv.controller.weight.grad.abs().sum() > 0


def test_default_weights_are_the_papers():
    loss = objective_for_mode("moddrop++")
    assert (loss.alpha, loss.beta, loss.gamma) == (1.0, 1.0, 0.05)
    assert loss.focal.gamma == 2.0 and loss.focal.alpha == 0.25


def test_bad_weights_and_modes_are_rejected():
    with pytest.raises(ValueError, match="gamma"):
        ModDropPlusPlusLoss(gamma=-0.1)
    with pytest.raises(ValueError, match="unknown mode 'moddrop3'.*moddrop\\+\\+"):
        objective_for_mode("moddrop3")
