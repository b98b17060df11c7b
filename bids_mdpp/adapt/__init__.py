"""Adapting a model to a site's own unlabelled scans (``bids_mdpp adapt``).

A study rarely has lesion masks, but it usually has sessions with FLAIR, where the model is
strongest.  Adaptation uses them as their own teacher: for every session with FLAIR and at
least one other contrast,

* the **teacher** is the base model, frozen, on all the session's contrasts (the richest subset,
  which includes FLAIR): its fused three-orientation probability map, computed once (with
  ``intensity_model="combine"``, averaged with the per-session intensity model's lesion
  posterior on the same contrasts, as the participant level segments by default);
* the **student** is a copy of the base model fed drop-out subsets of the same session's slices
  (:func:`bids_mdpp.nn.moddrop.draw_drop`: never the all-missing code);
* a student input **without FLAIR** is trained on the teacher's mask (its probability ≥ the
  card's threshold) as on a label, with the base model's own training loss on every voxel
  (``targets="mask"``, the default); with ``targets="soft"`` it learns instead to agree with
  the teacher's probability on the teacher's confident voxels only (probability ≥
  ``confidence`` or ≤ 1 − ``confidence``), with the class-weighted cross-entropy of the
  training loss (lesion 0.75, background 0.25);
* a student input **with FLAIR** is the guard: it learns to agree, on every voxel, with the
  frozen base model given that same input, so those subsets stay where they were;
* every input also gets the feature-level co-training term of ModDrop++: −``ssim_weight`` ×
  SSIM between the student's first-layer features and the teacher's on the full input.

The model directory written holds the student's weights for every input and, with
``flair_subsets="base"`` (the default), the base model's own weights for the inputs with FLAIR
(``anchor.pt``, :mod:`bids_mdpp.model`): the guard then holds exactly, not only within the
drift the anchoring term allows.  ``base_subsets`` (subset names without FLAIR, such as
``("T1w",)``) are further inputs that keep those weights, for subsets that adaptation is known
to make worse.  With ``flair_subsets="adapted"`` the student's weights segment every input.

The network runs in evaluation mode throughout (batch-norm statistics and drop-out as in the
base model), so that what is trained is what inference computes.  No label is read: the only
inputs are the dataset's images and the base model.

Modules
-------
:mod:`~bids_mdpp.adapt.sessions`
    The cohort: which sessions can teach (and why the others cannot), their preprocessing
    (the participant level's, cached) and the teacher's maps.
:mod:`~bids_mdpp.adapt.objective`
    The dataset of drop-out samples with the teacher's targets, and the loss.
:mod:`~bids_mdpp.adapt.adapter`
    The loop: progress bar, checkpoints every epoch, ``--resume``, the model directory.
:mod:`~bids_mdpp.adapt.agreement`
    Agreement with the teacher per contrast subset, before and after, and the drift of the
    FLAIR subsets from the base model.

API::

    config = AdaptConfig(bids_dir, output_dir, model_dir=None, epochs=4)
    model_dir = run_adaptation(config)     # OUTPUT_DIR, a model directory
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bids_mdpp.config import INTENSITY_MODEL_MODES
from bids_mdpp.errors import UsageError

LOGGER = logging.getLogger("bids_mdpp.adapt")

#: The contrast the teacher needs and the guard keeps in place.
ANCHOR_CONTRAST = "FLAIR"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: What the inputs without FLAIR learn: the teacher's probability on its confident voxels, or its
#: mask with the base model's training loss.
TARGETS = ("mask", "soft")
#: Which weights the written model segments the inputs with FLAIR with.
FLAIR_SUBSETS = ("base", "adapted")


@dataclass(frozen=True)
class AdaptConfig:
    """Everything one ``bids_mdpp adapt`` run needs (paths absolute).

    ``epochs`` × ``steps_per_epoch`` optimiser steps of ``batch_size`` crops of ``crop`` ×
    ``crop`` voxels; ``targets`` "mask" trains the subsets without FLAIR on the teacher's mask
    with the base model's own loss, "soft" on the teacher's probability, where ``confidence`` in
    (0.5, 1) chooses the teacher's voxels used; ``lesion_share`` (``None`` or in (0, 1)) is
    the weight of the teacher's confident lesion voxels in that term's mean; ``ssim_weight``
    weighs the feature co-training term; ``intensity_model`` "combine" averages the teacher's
    map with the intensity model's (:mod:`bids_mdpp.intensity_model`), "off" lets the network
    teach alone; ``agreement_sessions`` bounds the sessions the
    agreement table is measured on (0: none); ``flair_subsets`` "base" keeps the base model's
    weights for the inputs with FLAIR in the written model, "adapted" uses the student's for all;
    ``base_subsets`` names inputs without FLAIR that keep those weights too (with "base" only;
    checked against the base model's contrasts by :func:`check_base_subsets`).
    """

    bids_dir: Path
    output_dir: Path
    model_dir: Path | None = None
    work_dir: Path | None = None
    participant_labels: tuple[str, ...] = ()
    session_labels: tuple[str, ...] = ()
    bids_filters: dict = field(default_factory=dict)
    epochs: int = 4
    steps_per_epoch: int = 50
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-4
    confidence: float = 0.8
    targets: str = "mask"
    flair_subsets: str = "base"
    base_subsets: tuple[str, ...] = ()
    lesion_share: float | None = None
    ssim_weight: float = 0.05
    intensity_model: str = "off"
    agreement_sessions: int = 2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    resume: bool = False
    nprocs: int = 1
    omp_nthreads: int = 1
    verbose: int = 0
    command_line: str = ""

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "nprocs", "omp_nthreads"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.crop < 8:
            raise UsageError(f"--crop must be at least 8 voxels, got {self.crop}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if not 0.5 < self.confidence < 1.0:
            raise UsageError(f"--confidence must lie strictly between 0.5 and 1, got "
                             f"{self.confidence}")
        if self.targets not in TARGETS:
            raise UsageError(f"unknown --targets {self.targets!r}; use {', '.join(TARGETS)}")
        if self.flair_subsets not in FLAIR_SUBSETS:
            raise UsageError(f"unknown --flair-subsets {self.flair_subsets!r}; use "
                             f"{', '.join(FLAIR_SUBSETS)}")
        if self.base_subsets and self.flair_subsets != "base":
            raise UsageError("--base-subsets keeps the base model's weights for more inputs; it "
                             "needs --flair-subsets base")
        if self.targets == "mask" and self.lesion_share is not None:
            raise UsageError("--lesion-share weighs the soft targets' confident voxels; it has no "
                             "meaning with --targets mask")
        if self.lesion_share is not None and not 0.0 < self.lesion_share < 1.0:
            raise UsageError(f"--lesion-share must lie strictly between 0 and 1, got "
                             f"{self.lesion_share}")
        if self.intensity_model not in INTENSITY_MODEL_MODES:
            raise UsageError(f"unknown --intensity-model {self.intensity_model!r}; use "
                             f"{', '.join(INTENSITY_MODEL_MODES)}")
        if self.agreement_sessions < 0:
            raise UsageError("--agreement-sessions cannot be negative")
        if not self.ssim_weight >= 0:
            raise UsageError(f"--ssim-weight cannot be negative, got {self.ssim_weight}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown --precision {self.precision!r}; use {', '.join(PRECISIONS)}")

    @property
    def training_dir(self) -> Path:
        """Checkpoint, metrics and logs: ``OUTPUT_DIR/adaptation``."""
        return self.output_dir / "adaptation"

    @property
    def effective_work_dir(self) -> Path:
        """Preprocessing and teacher caches (default ``OUTPUT_DIR/adaptation/work``)."""
        return self.work_dir or self.training_dir / "work"


def run_adaptation(config: AdaptConfig) -> Path:
    """Adapt the base model as ``config`` says; returns the model directory (OUTPUT_DIR)."""
    import torch

    from bids_mdpp.adapt.adapter import Adapter
    from bids_mdpp.adapt.sessions import prepare_cohort
    from bids_mdpp.inference import resolve_device
    from bids_mdpp.logs import setup_logging
    from bids_mdpp.model import default_model_dir, load_model
    from bids_mdpp.training import check_output_dir, quiet_nipype
    from bids_mdpp.training.trainer import resolve_precision

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model_dir = config.model_dir or default_model_dir()
    base = load_model(model_dir, device="cpu")
    check_base_model(base, model_dir)
    check_base_subsets(config.base_subsets, base.card.contrasts)
    if config.output_dir.resolve() == base.directory:
        raise UsageError(f"OUTPUT_DIR {config.output_dir} is the base model; choose a new folder")
    check_output_dir(config)
    quiet_nipype(config.verbose)
    setup_logging(config.training_dir / "logs", config.verbose, tag="adapt")
    LOGGER.info("bids_mdpp adapt: %s", config.command_line)
    LOGGER.info("Base model %s %s (%s; contrasts %s; sha256 %s)", base.card.name,
                base.card.version, base.card.mode, ", ".join(base.card.contrasts), base.sha256)
    torch.set_num_threads(config.omp_nthreads)
    cohort = prepare_cohort(config, base, device)
    adapter = Adapter(config, base, cohort, device=device, precision=precision)
    return adapter.fit()


def check_base_model(base, model_dir: Path) -> None:
    """A base model must know FLAIR and another contrast, and take drop-out codes."""
    card = base.card
    if ANCHOR_CONTRAST not in card.contrasts or len(card.contrasts) < 2:
        raise UsageError(
            f"--model {model_dir}: the model knows {', '.join(card.contrasts)}; adaptation needs "
            f"one that knows {ANCHOR_CONTRAST} and at least one other contrast")
    if card.mode == "independent":
        raise UsageError(
            f"--model {model_dir}: an 'independent' model takes one fixed set of contrasts; only "
            "a model trained with modality drop-out (moddrop, moddrop+, moddrop++) can be adapted")


def check_base_subsets(names, contrasts) -> None:
    """Each ``--base-subsets`` name must be a subset of the model's ``contrasts`` without FLAIR,
    written in the canonical order (``T1w+T2w``)."""
    from bids_mdpp.contrasts import is_subset_name

    for name in names:
        if not is_subset_name(name, contrasts):
            raise UsageError(
                f"--base-subsets {name!r} is not a subset of the model's contrasts "
                f"({', '.join(contrasts)}) written as in 'T1w+T2w' (canonical order, joined by "
                "'+')")
        if ANCHOR_CONTRAST in name.split("+"):
            raise UsageError(f"--base-subsets {name!r} includes {ANCHOR_CONTRAST}, whose inputs "
                             "keep the base model's weights already")


__all__ = ["ANCHOR_CONTRAST", "FLAIR_SUBSETS", "TARGETS", "AdaptConfig", "check_base_model",
           "check_base_subsets", "run_adaptation"]
