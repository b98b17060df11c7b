"""The segmentation network of bids_mdpp and what trains it.

Modules
-------
:mod:`~bids_mdpp.nn.densenet`
    :class:`NetworkConfig` and :class:`FCDenseNet` — the 2.5D FC-DenseNet-57;
    ``forward(x (B, K·s, H, W), code (B, K), return_features=False)`` → logits ``(B, 1, H, W)``
    (and features ``(B, 48, H, W)`` when asked).
:mod:`~bids_mdpp.nn.fast_eval`
    Faster forms of the layers for evaluation without gradients (fused batch norm + ReLU, the
    transposed convolutions as sub-pixel convolutions); ``defining_modules()`` turns them off.
:mod:`~bids_mdpp.nn.dynamic_head`
    The ModDrop++ filter-scaling dynamic first convolution and its static counterpart.
:mod:`~bids_mdpp.nn.losses`
    ``FocalLoss``, ``ssim``, ``SSIMLoss``.
:mod:`~bids_mdpp.nn.moddrop`
    ``draw_drop(available, rng)`` → kept-code; ``apply_code(x, code, slices_per_contrast)``.
:mod:`~bids_mdpp.nn.cotraining`
    ``ModDropPlusPlusLoss`` and ``objective_for_mode(mode)``.

Training modes (:data:`MODES`)
------------------------------
``independent``  static network trained on one fixed subset of contrasts (no drop-out);
``moddrop``      static network, modality drop-out;
``moddrop+``     dynamic head, modality drop-out;
``moddrop++``    dynamic head, modality drop-out and intra-subject co-training.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bids_mdpp.nn.densenet import FCDenseNet, NetworkConfig


@dataclass(frozen=True)
class ModeSpec:
    """What a training mode uses."""

    dynamic_head: bool
    modality_dropout: bool
    cotraining: bool


#: The training modes and what each one uses.
MODES: dict[str, ModeSpec] = {
    "independent": ModeSpec(dynamic_head=False, modality_dropout=False, cotraining=False),
    "moddrop": ModeSpec(dynamic_head=False, modality_dropout=True, cotraining=False),
    "moddrop+": ModeSpec(dynamic_head=True, modality_dropout=True, cotraining=False),
    "moddrop++": ModeSpec(dynamic_head=True, modality_dropout=True, cotraining=True),
}


def check_mode(mode: str) -> ModeSpec:
    """The :class:`ModeSpec` of ``mode``; ``ValueError`` naming the known modes otherwise."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known modes are {', '.join(MODES)}")
    return MODES[mode]


def build_network(config: dict[str, Any] | NetworkConfig | None = None) -> FCDenseNet:
    """A freshly initialised :class:`FCDenseNet` from a :class:`NetworkConfig` or its dict.

    ``None`` gives the authors' FC-DenseNet-57 with the dynamic head and K = 5.
    """
    if config is None:
        config = NetworkConfig()
    return FCDenseNet(NetworkConfig.from_dict(config))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` CPU threads for torch (None: unchanged), then restore the count."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


__all__ = ["MODES", "FCDenseNet", "ModeSpec", "NetworkConfig", "build_network", "check_mode",
           "torch_threads"]
