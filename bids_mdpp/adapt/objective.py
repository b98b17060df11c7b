"""The adaptation samples and loss (see :mod:`bids_mdpp.adapt` for the method).

:class:`AgreementDataset` is the training :class:`~bids_mdpp.training.slabs.SlabDataset` (the
same slices, crops, flips, intensity changes and drop-out codes, reproducible for (seed, epoch,
item)) with the teacher's probability in place of a reference mask: the slices are those where
the teacher finds lesion, and the target is the teacher's map over the crop.

:class:`AgreementLoss` turns one batch into the loss.  ``image (B, K·s, H, W)`` is the session's
full input, ``available (B, K)`` its contrasts, ``drop (B, K)`` the drop-out code, ``target
(B, 1, H, W)`` the teacher's probability::

    adapted  = samples whose code lacks FLAIR:  weighted cross-entropy against ``target`` on
               the voxels where target ≥ c or ≤ 1 − c (c = ``confidence``): one mean over
               them, or, with ``lesion_share`` s, s × the mean over the lesion side (≥ c)
               + (1 − s) × the mean over the background side (≤ 1 − c)
    anchored = samples whose code has FLAIR:    weighted cross-entropy, on every voxel, against
               the frozen base model's probability for that same input
    total    = adapted + anchored − ssim_weight · SSIM(student features of the dropped input,
                                                       base features of the full input)

With ``targets="mask"`` the adapted term is instead the base model's own training loss (its
focal γ and α) against the teacher's mask (its probability ≥ the card's threshold, the cache's
label), over every voxel of the crop: the inputs without FLAIR are then fine-tuned exactly as the
base model was trained with labels, the teacher's mask standing in for the reference, so their
probabilities keep the meaning the card's thresholds assume.  ``confidence`` and
``lesion_share`` play no part there.

The cross-entropy is the focal loss with γ = 0 (lesion 0.75, background 0.25, as training):
for any fixed target t its minimum is at p = t, so the student is pulled to the teacher's
probability, not beyond it.  Lesion voxels are a few per thousand of a crop, so in one mean over
the confident voxels the background outweighs them by far; ``lesion_share`` gives the teacher's
confident lesion voxels a fixed share of the term instead (a batch without any takes the
background mean alone).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bids_mdpp.training.slabs import SlabDataset, make_sample


class AgreementDataset(SlabDataset):
    """Drop-out crops of the teacher's lesion slices with the teacher's probability as target.

    ``teachers`` are the teacher's maps of ``subjects``, in the same order.  Item ``i`` is a dict
    of tensors: ``image (K·s, C, C)``, ``available (K,)``, ``drop (K,)`` (never all zero),
    ``target (1, C, C)`` float32 in [0, 1] (with ``mask_targets``, the teacher's mask, 0 or 1).
    """

    def __init__(self, subjects, teachers, *, mask_targets: bool = False, **options):
        super().__init__(subjects, moddrop=True, **options)
        self.teacher_paths = list(teachers)
        self.mask_targets = bool(mask_targets)
        self._teachers: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_teachers"] = {}
        return state

    def teacher(self, subject: int) -> np.ndarray:
        """The teacher's map of subject ``subject``, (X, Y, Z) float16 memory map."""
        if subject not in self._teachers:
            self._teachers[subject] = np.load(self.teacher_paths[subject], mmap_mode="r")
        return self._teachers[subject]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        params = self.params(item)
        images, labels = self.arrays(params.subject)
        available = self.available[params.subject]
        source = labels if self.mask_targets else self.teacher(params.subject)
        image, target = make_sample(images, source, params, available,
                                    self.settings.crop, self.channels[params.subject])
        return {
            "image": torch.from_numpy(image),
            "available": torch.tensor(available, dtype=torch.float32),
            "drop": torch.tensor(params.drop, dtype=torch.float32),
            "target": torch.from_numpy(np.clip(target, 0.0, 1.0)),
        }


@dataclass
class AgreementTerms:
    """One batch's loss and its parts (floats for the log, ``total`` a tensor)."""

    total: torch.Tensor
    adapted: float
    anchored: float
    similarity: float
    n_adapted: int
    n_anchored: int


class AgreementLoss(nn.Module):
    """The adaptation loss of a student against the frozen base model (module docstring).

    Parameters
    ----------
    student, teacher
        The network being adapted and the frozen base model (same configuration).
    anchor_index
        Position of FLAIR in the model's contrasts.
    confidence
        The teacher's voxels with probability ≥ this or ≤ 1 − this teach the inputs without FLAIR.
    ssim_weight
        Weight of the feature co-training term.
    lesion_share
        ``None``: one mean over all confident voxels; a value s in (0, 1): the confident lesion
        voxels' mean weighs s and the confident background's 1 − s.
    mask_loss
        ``None``: soft targets on the confident voxels; a :class:`~bids_mdpp.nn.losses.FocalLoss`
        (the base model's training loss): that loss against the teacher's mask on every voxel.
    autocast
        Context manager factory for the forward passes (precision).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, anchor_index: int,
                 confidence: float, ssim_weight: float, lesion_share: float | None = None,
                 mask_loss: nn.Module | None = None,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        super().__init__()
        from bids_mdpp.nn.losses import FocalLoss

        self.student = student
        self.teacher = teacher
        self.anchor_index = int(anchor_index)
        self.confidence = float(confidence)
        self.ssim_weight = float(ssim_weight)
        if lesion_share is not None and not 0.0 < lesion_share < 1.0:
            raise ValueError(f"lesion_share must lie strictly between 0 and 1, got {lesion_share}")
        self.lesion_share = None if lesion_share is None else float(lesion_share)
        self.mask_loss = mask_loss
        self.autocast = autocast
        self.cross_entropy = FocalLoss(gamma=0.0, alpha=0.25, reduction="none")
        self.slices = student.config.slices_per_contrast

    def confident_mean(self, losses: torch.Tensor, teacher_p: torch.Tensor) -> torch.Tensor:
        """The mean of per-voxel ``losses`` over the teacher's confident voxels (same shapes)."""
        lesion = (teacher_p >= self.confidence).float()
        background = (teacher_p <= 1 - self.confidence).float()
        if self.lesion_share is None:
            weight = lesion + background
            return (losses * weight).sum() / weight.sum().clamp(min=1.0)
        background_mean = (losses * background).sum() / background.sum().clamp(min=1.0)
        if not bool(lesion.any()):
            return background_mean
        lesion_mean = (losses * lesion).sum() / lesion.sum()
        if not bool(background.any()):
            return lesion_mean
        return self.lesion_share * lesion_mean + (1.0 - self.lesion_share) * background_mean

    def forward(self, image: torch.Tensor, available: torch.Tensor, drop: torch.Tensor,
                target: torch.Tensor) -> AgreementTerms:
        from bids_mdpp.nn.losses import ssim
        from bids_mdpp.nn.moddrop import apply_code

        missing = apply_code(image, drop, self.slices)
        anchored = drop[:, self.anchor_index] > 0
        with torch.no_grad(), self.autocast():
            base_features = self.teacher.first_conv(image, available)
            base_logits = self.teacher(missing[anchored], drop[anchored]) if anchored.any() else None
        with self.autocast():
            logits, features = self.student(missing, drop, return_features=True)
        total = logits.new_zeros((), dtype=torch.float32)
        adapted_value = anchored_value = 0.0
        adapted = ~anchored
        if adapted.any():
            if self.mask_loss is not None:
                term = self.mask_loss(logits[adapted], target[adapted])
            else:
                teacher_p = target[adapted]
                losses = self.cross_entropy(logits[adapted], teacher_p)
                term = self.confident_mean(losses, teacher_p)
            total = total + term
            adapted_value = float(term.detach())
        if base_logits is not None:
            term = self.cross_entropy(logits[anchored], torch.sigmoid(base_logits.float())).mean()
            total = total + term
            anchored_value = float(term.detach())
        similarity = ssim(features, base_features)
        total = total - self.ssim_weight * similarity
        return AgreementTerms(total=total, adapted=adapted_value, anchored=anchored_value,
                              similarity=float(similarity.detach()),
                              n_adapted=int(adapted.sum()), n_anchored=int(anchored.sum()))
