"""Convert the ModDrop++ authors' released weights into a bids_mdpp model directory.

The authors (github.com/han-liu/ModDropPlusPlus, on MedICL-VU/LesionSeg) save plain state dicts
(``*_net_G_*.pth``) of FC-DenseNet-57 with keys ``firstconv.*``, ``denseBlocksDown.{0-4}.layers.
{0-3}.{norm,conv}.*``, ``transDownBlocks.*``, ``bottleneck.bottleneck.layers.*``,
``transUpBlocks.*.convTrans.*``, ``denseBlocksUp.*``, ``finalConv.*`` and, for the dynamic
models, ``controller.*``.  What their code fixes, and this converter relies on:

* Their ModDrop/ModDrop++ networks always have five contrast slots in the order t1, flair, t2,
  pd, ce (= T1w, FLAIR, T2w, PDw, ceT1w): 15 input channels and a controller of shape
  ``[768, 5, 1, 1]`` (768 = 15·48 + 48), for UMCL and ISBI alike.  The slot a dataset lacks
  (PDw for UMCL, ceT1w for ISBI) was always zero with a 0 code bit, so its input channels
  and its controller column never contributed.  The converter drops them: the result is a
  K = 4 model (12 input channels, controller ``[624, 4, 1, 1]``) that computes exactly what
  the original computes on every input the original was trained for, and whose card lists
  only the contrasts it has really seen.
* Their static "independent" models have ``3 × n`` input channels for the n contrasts they
  were trained on (give them with ``contrasts``).
* They end with tanh and read the probability as ``(y + 1)/2``.  Since
  ``(tanh(a) + 1)/2 = sigmoid(2a)``, doubling the final 1×1 convolution's weights and bias
  gives logits for our sigmoid with identical probabilities.

API: :func:`import_authors_weights` (the ``bids_mdpp import-weights`` command) and
:func:`convert_state_dict` (keys, shapes and contrasts only).
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from bids_mdpp.contrasts import CONTRASTS
from bids_mdpp.errors import ModelError, UsageError
from bids_mdpp.model import (
    CARD_NAME,
    KDE_WM_PEAK,
    WEIGHTS_NAME,
    ModelCard,
    check_state_dict,
    read_state_dict,
    save_model,
    sha256_of,
)
from bids_mdpp.nn import FCDenseNet, NetworkConfig, check_mode

#: The contrasts of each dataset the authors trained on.
DATASETS: dict[str, tuple[str, ...]] = {
    "umcl": ("T1w", "FLAIR", "T2w", "ceT1w"),
    "isbi": ("T1w", "FLAIR", "T2w", "PDw"),
}
DATASET_LABELS = {
    "umcl": "UMCL (University Medical Center Ljubljana; Lesjak et al. 2018)",
    "isbi": "ISBI 2015 longitudinal MS lesion segmentation challenge (Carass et al. 2017)",
}
#: The authors' contrast slots (t1, flair, t2, pd, ce) are our canonical order.
AUTHORS_SLOTS: tuple[str, ...] = CONTRASTS
#: The authors' key prefixes → ours (everything after the prefix is named alike).
KEY_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(a), b) for a, b in (
    (r"^firstconv\.", "first_conv.conv."),
    (r"^controller\.", "first_conv.controller."),
    (r"^denseBlocksDown\.(\d+)\.layers\.", r"down_blocks.\1.layers."),
    (r"^transDownBlocks\.(\d+)\.", r"down_transitions.\1."),
    (r"^bottleneck\.bottleneck\.layers\.", "bottleneck.layers."),
    (r"^transUpBlocks\.(\d+)\.convTrans\.", r"up_transitions.\1.conv."),
    (r"^denseBlocksUp\.(\d+)\.layers\.", r"up_blocks.\1.layers."),
    (r"^finalConv\.", "final_conv."),
))


def rename_key(key: str) -> str | None:
    """The name of an authors' key in our network, or None for a key they do not use."""
    for pattern, replacement in KEY_RULES:
        renamed, count = pattern.subn(replacement, key)
        if count:
            return renamed
    return None


def source_slots(state: dict[str, torch.Tensor], contrasts: Sequence[str] | None,
                 path: Path) -> tuple[str, ...]:
    """The contrasts of the file's input slots, from its first convolution's shape."""
    if "firstconv.weight" not in state:
        raise ModelError(path, "no 'firstconv.weight': not a ModDrop++ / FC-DenseNet-57 state dict")
    in_channels = state["firstconv.weight"].shape[1]
    if in_channels == 3 * len(AUTHORS_SLOTS):
        return AUTHORS_SLOTS
    if "controller.weight" not in state and contrasts and in_channels == 3 * len(contrasts):
        return tuple(c for c in CONTRASTS if c in contrasts)  # the authors' order
    expected = "15 (five contrast slots)"
    if "controller.weight" not in state:
        expected += " or 3 × the number of contrasts given with --contrasts"
    raise ModelError(path, f"'firstconv.weight' has {in_channels} input channels; expected {expected}")


def convert_state_dict(state: dict[str, torch.Tensor], keep: Sequence[str], slots: Sequence[str],
                       path: Path) -> dict[str, torch.Tensor]:
    """Rename the authors' keys, keep the contrasts ``keep`` of the input ``slots``, rescale logits."""
    for contrast in keep:
        if contrast not in slots:
            raise UsageError(f"contrast {contrast} is not among the file's inputs ({', '.join(slots)})")
    kept_slots = [slots.index(c) for c in keep]
    channels = torch.tensor([3 * slot + j for slot in kept_slots for j in range(3)])
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        ours = rename_key(key)
        if ours is None:
            raise ModelError(path, f"unexpected key {key!r}: not a ModDrop++ / FC-DenseNet-57 state dict")
        converted[ours] = tensor.detach().clone()
    converted["first_conv.conv.weight"] = converted["first_conv.conv.weight"][:, channels]
    if "first_conv.controller.weight" in converted:
        converted.update(_reduce_controller(converted, channels, torch.tensor(kept_slots), path))
    converted["final_conv.weight"] = 2 * converted["final_conv.weight"]
    converted["final_conv.bias"] = 2 * converted["final_conv.bias"]
    return converted


def _reduce_controller(state: dict[str, torch.Tensor], channels: torch.Tensor,
                       kept_slots: torch.Tensor, path: Path) -> dict[str, torch.Tensor]:
    """Keep the controller's rows for the kept input channels and its columns for the kept bits."""
    weight, bias = state["first_conv.controller.weight"], state["first_conv.controller.bias"]
    out_channels, in_channels = state["first_conv.conv.weight"].shape[0], 3 * len(AUTHORS_SLOTS)
    rows = out_channels * in_channels + out_channels
    if tuple(weight.shape) != (rows, len(AUTHORS_SLOTS), 1, 1) or tuple(bias.shape) != (rows,):
        raise ModelError(
            path, f"'controller.weight' has shape {list(weight.shape)}; expected "
            f"[{rows}, {len(AUTHORS_SLOTS)}, 1, 1] for {in_channels} inputs and {out_channels} outputs",
        )
    n_weights = out_channels * in_channels
    kernel_rows = torch.arange(n_weights).reshape(out_channels, in_channels)[:, channels].flatten()
    keep_rows = torch.cat([kernel_rows, torch.arange(n_weights, rows)])
    return {
        "first_conv.controller.weight": weight[keep_rows][:, kept_slots],
        "first_conv.controller.bias": bias[keep_rows],
    }


def import_authors_weights(source: os.PathLike | str, out_dir: os.PathLike | str, dataset: str, *,
                           contrasts: Sequence[str] | None = None, mode: str | None = None,
                           name: str | None = None, overwrite: bool = False) -> Path:
    """Write a model directory for the authors' weights file ``source``; returns ``out_dir``.

    ``dataset`` (``umcl`` or ``isbi``) says which contrasts the model was trained on, unless
    ``contrasts`` names them (needed for an independent model of a subset).  ``mode``
    defaults to ``moddrop++`` for a dynamic model, ``moddrop`` for a static one with five
    slots and ``independent`` otherwise.
    """
    source, out_dir = Path(source), Path(out_dir)
    dataset = dataset.lower()
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    if not overwrite and ((out_dir / CARD_NAME).exists() or (out_dir / WEIGHTS_NAME).exists()):
        raise UsageError(f"{out_dir} already holds a model; pass --force to replace it")
    state = {k.removeprefix("module."): v for k, v in read_state_dict(source).items()}
    slots = source_slots(state, contrasts, source)
    keep = tuple(c for c in CONTRASTS if c in (contrasts or DATASETS[dataset]))
    dynamic = "controller.weight" in state
    mode = mode or ("moddrop++" if dynamic else "moddrop" if slots == AUTHORS_SLOTS else "independent")
    if check_mode(mode).dynamic_head != dynamic:
        raise UsageError(
            f"mode {mode} {'needs' if not dynamic else 'has no'} dynamic head, but {source.name} is a "
            f"{'dynamic' if dynamic else 'static'} network"
        )
    converted = convert_state_dict(state, keep, slots, source)
    network = FCDenseNet(NetworkConfig(n_contrasts=len(keep), dynamic_head=dynamic))
    check_state_dict(converted, network, source)
    network.load_state_dict(converted)
    digest = sha256_of(source)
    dropped = [c for c in slots if c not in keep]
    card = ModelCard(
        name=name or f"authors-{mode}-{dataset}",
        version=f"authors-{digest[:12]}",
        description=(
            f"{mode} FC-DenseNet-57 released by Liu et al. (MICCAI 2022), trained on "
            f"{DATASET_LABELS[dataset]}; converted from {source.name} by bids_mdpp import-weights."
        ),
        contrasts=keep, mode=mode, network=network.config.to_dict(),
        normalisation=dict(KDE_WM_PEAK),
        training={
            "source": "weights released by the ModDrop++ authors (github.com/han-liu/ModDropPlusPlus)",
            "dataset": DATASET_LABELS[dataset],
            "weights_file": source.name,
            "weights_sha256": digest,
            "dropped_input_slots": dropped,
            "fine_tuning": "none: the authors' weights unchanged, final layer doubled "
                           "(logit = 2 × pre-tanh output, the same probabilities)",
        },
    )
    return save_model(out_dir, network, card)
