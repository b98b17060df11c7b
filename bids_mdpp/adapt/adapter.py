"""The adaptation loop: progress bar, checkpoints, ``--resume`` and the model directory.

Adam (betas 0.5, 0.999, constant learning rate) on every parameter of the student;
``epochs`` × ``steps_per_epoch`` steps of ``batch_size`` crops.  After every epoch
``OUTPUT_DIR/adaptation/checkpoint.pt`` (student weights, optimiser, epoch, metrics, the
run's settings; atomic) and ``metrics.csv`` are written; ``--resume`` continues from the
checkpoint when the settings are the same.  The samples are reproducible for (seed, epoch,
item) and the network runs without drop-out, so a resumed run computes what an uninterrupted
one would.  At the end the agreement table (:mod:`bids_mdpp.adapt.agreement`) is measured and
the model directory written: the adapted weights, with ``--flair-subsets base`` the base
model's weights for the inputs with FLAIR (``anchor.pt``), and the base model's card with the
adaptation recorded in ``training.adaptation`` and ``metrics.adaptation``.

The teacher and the anchor are the weights the base model segments an input with FLAIR with
(its own ``anchor.pt`` when it was itself adapted); the student starts from its ``model.pt``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from pathlib import Path

import torch

from bids_mdpp.adapt import ANCHOR_CONTRAST
from bids_mdpp.errors import BidsMdppError

LOGGER = logging.getLogger("bids_mdpp.adapt")

CHECKPOINT_FORMAT = "bids_mdpp-adapt-checkpoint-1"


def contrast_subset_names(session_contrasts) -> set[str]:
    """Names of every non-empty subset of each session's contrasts (``"T1w+FLAIR"``)."""
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.training.trainer import contrast_subsets

    return {subset_name(s) for contrasts in session_contrasts
            for s in contrast_subsets(list(contrasts), "all")}


def adapted_description(base_card, n_sessions: int, dataset: str, base_weights_for_flair: bool,
                        base_subsets=()) -> str:
    """The ``description`` of an adapted model's card: what was adapted on, then the base's."""
    from bids_mdpp.contrasts import and_those_alone

    flair = (f"inputs with FLAIR{and_those_alone(base_subsets)} keep the base model's weights"
             if base_weights_for_flair else "one set of weights for every input")
    return (f"{base_card.name} {base_card.version} adapted with bids_mdpp adapt on {n_sessions} "
            f"unlabelled session(s) of {dataset} (no label read; {flair}). Base model: "
            f"{base_card.description}")


class Adapter:
    """Adapts a copy of the base model on the cohort (see the module docstring).

    Parameters
    ----------
    config
        The run's :class:`~bids_mdpp.adapt.AdaptConfig`.
    base
        The base :class:`~bids_mdpp.model.LoadedModel`.
    cohort
        ``(sessions, skipped)`` from :func:`~bids_mdpp.adapt.sessions.prepare_cohort`.
    device, precision
        Where and in which arithmetic the networks run (``fp32``, ``bf16`` or ``fp16``).
    """

    def __init__(self, config, base, cohort, *, device: torch.device, precision: str):
        from bids_mdpp.adapt.objective import AgreementDataset, AgreementLoss
        from bids_mdpp.training.distributed import EpochSampler
        from bids_mdpp.training.slabs import AugmentationSettings

        self.config = config
        self.base = base
        self.sessions, self.skipped = cohort
        self.device = device
        self.precision = precision
        torch.manual_seed(config.seed)
        everything = base.card.contrasts
        self.teacher = copy.deepcopy(base.network_for(everything)).to(device).eval() \
            .requires_grad_(False)
        self.student = copy.deepcopy(base.network).to(device).eval().requires_grad_(True)
        self.loss = AgreementLoss(
            self.student, self.teacher, anchor_index=base.card.contrasts.index(ANCHOR_CONTRAST),
            confidence=config.confidence, ssim_weight=config.ssim_weight,
            lesion_share=config.lesion_share, mask_loss=self.mask_loss(),
            autocast=self.autocast)
        self.dataset = AgreementDataset(
            [s.cache for s in self.sessions], [s.teacher_path for s in self.sessions],
            mask_targets=config.targets == "mask",
            contrasts=base.card.contrasts, seed=config.seed,
            settings=AugmentationSettings(crop=config.crop))
        self.sampler = EpochSampler(len(self.dataset), seed=config.seed,
                                    samples_per_rank=config.steps_per_epoch * config.batch_size)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=config.batch_size, sampler=self.sampler,
            pin_memory=device.type == "cuda")
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=config.lr,
                                          betas=(0.5, 0.999))
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.history: list[dict] = []
        self.start_epoch = 0
        self.started = time.perf_counter()
        self.seconds_before = 0.0

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward passes' autocast context for this run's precision."""
        from bids_mdpp.training.trainer import autocast_for

        return autocast_for(self.precision, self.device)

    @property
    def checkpoint_path(self) -> Path:
        return self.config.training_dir / "checkpoint.pt"

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> Path:
        """Adapt (from the checkpoint with ``resume``), measure, write; returns OUTPUT_DIR."""
        from bids_mdpp.allocator import release_free_memory
        from bids_mdpp.training.trainer import peak_rss_gb

        if self.config.resume and self.checkpoint_path.is_file():
            self.load_checkpoint()
        elif self.config.resume:
            LOGGER.warning("--resume: no checkpoint in %s; starting from the base model",
                           self.config.training_dir)
        for epoch in range(self.start_epoch, self.config.epochs):
            row = self.train_epoch(epoch)
            release_free_memory()
            row["peak_rss_gb"] = peak_rss_gb()
            self.history.append(row)
            self.save_checkpoint(epoch + 1)
            LOGGER.info("epoch %d/%d: %s", epoch + 1, self.config.epochs,
                        ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
        return self.write_model()

    def train_epoch(self, epoch: int) -> dict:
        """One epoch of ``steps_per_epoch`` steps; returns its row of ``metrics.csv``."""
        from tqdm import tqdm

        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        sums = {"loss": 0.0, "adapted": 0.0, "anchored": 0.0, "similarity": 0.0}
        steps, start = 0, time.perf_counter()
        bar = tqdm(self.loader, desc=f"adapt {epoch + 1}/{self.config.epochs}", unit="step",
                   leave=False, mininterval=1.0)
        for batch in bar:
            terms = self.train_step(batch)
            steps += 1
            for name, value in (("loss", float(terms.total.detach())), ("adapted", terms.adapted),
                                ("anchored", terms.anchored), ("similarity", terms.similarity)):
                sums[name] += value
            bar.set_postfix(loss=f"{sums['loss'] / steps:.4f}")
        bar.close()
        row = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()},
               "steps": steps, "seconds": time.perf_counter() - start}
        return row

    def train_step(self, batch: dict[str, torch.Tensor]):
        """One optimiser step on a batch of :class:`AgreementDataset` samples."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.loss(batch["image"], batch["available"], batch["drop"], batch["target"])
        if not math.isfinite(float(terms.total.detach())):
            raise BidsMdppError("adaptation diverged: the loss is not finite; try a lower --lr "
                                "or --precision fp32")
        self.scaler.scale(terms.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return terms

    def mask_loss_settings(self) -> dict | None:
        """The base model's training loss (focal γ and α from its card; 2 and 0.25 when the
        card does not say), used against the teacher's mask with ``--targets mask``."""
        if self.config.targets != "mask":
            return None
        loss = (self.base.card.training or {}).get("loss") or {}
        return {"focal_gamma": float(loss.get("focal_gamma", 2.0)),
                "focal_alpha": float(loss.get("focal_alpha", 0.25))}

    def mask_loss(self):
        """The loss of the inputs without FLAIR against the teacher's mask, or None."""
        from bids_mdpp.nn.losses import FocalLoss

        settings = self.mask_loss_settings()
        return None if settings is None else FocalLoss(gamma=settings["focal_gamma"],
                                                       alpha=settings["focal_alpha"])

    # -- checkpoints ----------------------------------------------------------------------
    def settings(self) -> dict:
        """What a checkpoint must share with the run that resumes it."""
        config = self.config
        return {"base_sha256": self.base.sha256, "sessions": [s.key for s in self.sessions],
                "seed": config.seed, "batch_size": config.batch_size, "crop": config.crop,
                "steps_per_epoch": config.steps_per_epoch, "lr": config.lr,
                "confidence": config.confidence, "ssim_weight": config.ssim_weight,
                "precision": self.precision,
                # only when set, so that checkpoints written before the option still resume
                **({"lesion_share": config.lesion_share} if config.lesion_share else {}),
                **({"targets": config.targets} if config.targets != "soft" else {}),
                **({"intensity_model": config.intensity_model}
                   if config.intensity_model != "off" else {})}

    def save_checkpoint(self, epochs_done: int) -> None:
        """Write ``checkpoint.pt`` and ``metrics.csv`` (atomically)."""
        from bids_mdpp.imageio import atomic_path
        from bids_mdpp.training.trainer import write_metrics_csv

        state = {"format": CHECKPOINT_FORMAT, "epoch": epochs_done,
                 "model": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "history": self.history, "settings": self.settings(),
                 "seconds": self.seconds_before + time.perf_counter() - self.started}
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)
        write_metrics_csv(self.history, self.config.training_dir / "metrics.csv")

    def load_checkpoint(self) -> None:
        """Continue from ``checkpoint.pt``: weights, optimiser, epoch, metrics."""
        from bids_mdpp.training.trainer import read_checkpoint

        path = self.checkpoint_path
        state = read_checkpoint(path, CHECKPOINT_FORMAT, self.settings(), self.device,
                                kind="adaptation", instead="adapt into a new OUTPUT_DIR")
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"])
        self.seconds_before = float(state.get("seconds", 0.0))
        LOGGER.info("Resuming from %s after epoch %d", path, self.start_epoch)

    # -- the model ------------------------------------------------------------------------
    def write_model(self) -> Path:
        """Measure the agreement table, then write the model directory; returns it."""
        from bids_mdpp.adapt.agreement import agreement, summary
        from bids_mdpp.model import LoadedModel, save_model
        from bids_mdpp.training.trainer import peak_rss_gb

        network = copy.deepcopy(self.student).cpu().eval().requires_grad_(False)
        anchor_network = None
        if self.config.flair_subsets == "base":
            anchor_network = copy.deepcopy(self.teacher).cpu().eval()
        adapted = LoadedModel(network=network, card=self.base.card, sha256="",
                              directory=self.config.output_dir, anchor_network=anchor_network,
                              anchor_contrast=None if anchor_network is None else ANCHOR_CONTRAST,
                              anchor_subsets=self.config.base_subsets)
        measured = self.sessions[:self.config.agreement_sessions]
        LOGGER.info("Measuring the agreement with the teacher per contrast subset on %s",
                    ", ".join(s.key for s in measured) or "no session (--agreement-sessions 0)")
        table = agreement(self.base, adapted, measured, device=str(self.device),
                          precision=self.config.precision, num_threads=self.config.omp_nthreads)
        totals = summary(table)
        seconds = self.seconds_before + time.perf_counter() - self.started
        card = self.model_card(table, totals, seconds, peak_rss_gb())
        directory = save_model(self.config.output_dir, network, card,
                               anchor=None if anchor_network is None
                               else (ANCHOR_CONTRAST, self.teacher_weights_file()),
                               anchor_subsets=self.config.base_subsets)
        LOGGER.info("Adapted model written to %s (subsets without FLAIR: agreement %s → %s; "
                    "subsets with FLAIR: smallest drift DSC %s)", directory,
                    totals["without_flair_before"], totals["without_flair_after"],
                    totals["with_flair_min_drift_dsc"])
        return directory

    def teacher_weights_file(self) -> Path:
        """The base model's file of the weights it segments inputs with FLAIR with (its
        ``anchor.pt`` when it has one, else ``model.pt``): the adapted model's ``anchor.pt`` is
        a byte copy of it, so its sha256 is the one the base model published."""
        from bids_mdpp.model import WEIGHTS_NAME

        card = self.base.card
        return self.base.directory / (card.anchor["weights"] if card.anchor else WEIGHTS_NAME)

    def model_card(self, table: dict, totals: dict, seconds: float, peak_gb: float):
        """The base model's card with the adaptation recorded (see docs/training.md)."""
        from bids_mdpp import __version__
        from bids_mdpp.model import ANCHOR_WEIGHTS_NAME
        from bids_mdpp.training.data import dataset_name

        base, config = self.base, self.config
        subsets = sorted(contrast_subset_names(s.contrasts for s in self.sessions))
        anchored = [n for n in subsets if ANCHOR_CONTRAST in n.split("+")
                    or n in config.base_subsets]
        adaptation = {
            "base_model": {"name": base.card.name, "version": base.card.version,
                           "directory": str(base.directory), "sha256": base.sha256},
            "dataset": dataset_name(config.bids_dir),
            "sessions": [s.provenance for s in self.sessions],
            "skipped": [{"session": s.key, "reason": s.reason} for s in self.skipped],
            "subsets_adapted": [n for n in subsets if n not in anchored],
            "subsets_anchored": anchored,
            "teacher": "the base model on all of a session's contrasts (three orientations fused)"
                       + (", averaged with the per-session intensity model on those contrasts"
                          if config.intensity_model != "off" else ""),
            "teacher_intensity_model": {
                "mode": config.intensity_model,
                "skipped": {s.key: s.teacher_intensity_model["Skipped"] for s in self.sessions
                            if "Skipped" in s.teacher_intensity_model}},
            "labels_used": False,
            "epochs": len(self.history), "steps": sum(r["steps"] for r in self.history),
            "batch_size": config.batch_size, "crop": config.crop,
            "optimiser": {"name": "Adam", "lr": config.lr, "betas": [0.5, 0.999]},
            "targets": config.targets, "mask_loss": self.mask_loss_settings(),
            "flair_subsets": (f"the base model's weights ({ANCHOR_WEIGHTS_NAME})"
                              if config.flair_subsets == "base" else "the adapted weights"),
            "confidence": config.confidence, "lesion_share": config.lesion_share,
            "ssim_weight": config.ssim_weight,
            "seconds": round(seconds, 1), "peak_rss_gb": peak_gb,
            "device": str(self.device), "precision": self.precision, "seed": config.seed,
            "command_line": config.command_line,
        }
        metrics = {"adaptation": {
            "agreement": table, **totals,
            "sessions": [s.key for s in self.sessions[:config.agreement_sessions]],
            "procedure": "DSC against the teacher's mask on the first --agreement-sessions "
                         "sessions adapted on, whole volumes, the card's threshold per subset "
                         "(bids_mdpp.adapt.agreement)"},
            "base_model": base.card.metrics}
        description = adapted_description(base.card, len(self.sessions), adaptation["dataset"],
                                          config.flair_subsets == "base", config.base_subsets)
        return dataclasses.replace(
            base.card, name=config.output_dir.name, version=__version__,
            description=description, training={**base.card.training, "adaptation": adaptation},
            metrics=metrics, software={}, created="")
