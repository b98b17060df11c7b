"""A tiny FC-DenseNet for the network tests, and a fixture that runs them on one thread."""
from __future__ import annotations

import pytest
import torch

from bids_mdpp.nn import build_network, torch_threads
from bids_mdpp.nn.densenet import FCDenseNet

TINY = dict(growth_rate=4, down_blocks=(1, 2), up_blocks=(2, 1), bottleneck_layers=1,
            first_conv_channels=8, dropout=0.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors run fastest on one thread (and do not fight other processes for cores)."""
    with torch_threads(1):
        yield


def tiny_network(n_contrasts: int = 3, dynamic: bool = True, seed: int = 0) -> FCDenseNet:
    """The tiny network in eval mode, weights N(0, 0.2) so that outputs vary."""
    torch.manual_seed(seed)
    net = build_network({**TINY, "n_contrasts": n_contrasts, "dynamic_head": dynamic})
    net.reset_parameters(std=0.2)
    return net.eval()
