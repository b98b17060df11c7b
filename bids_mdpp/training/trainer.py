"""The Trainer: one network, four modes, checkpoints every epoch, validation, the model card.

Modes (Liu et al. 2022):

* ``moddrop`` — static first convolution, random modality drop-out;
* ``moddrop+`` — the dynamic head, random drop-out;
* ``moddrop++`` — the dynamic head and intra-subject co-training: two passes (the subject's
  full input and a drop-out of it), focal losses of both minus the SSIM of their feature
  maps (:class:`~bids_mdpp.nn.cotraining.ModDropPlusPlusLoss`);
* ``independent`` — a fixed subset (``--contrasts``), no drop-out, a static head with only
  those contrasts (the upper bound of the paper's tables).

Optimisation as the authors: Adam (lr 2e-4, betas 0.5/0.999), a constant learning rate then
a linear decay over the last ``decay_epochs`` epochs.  Forward passes run under bf16
autocast on CPUs that support it and AMP on GPUs (``precision``).  After every epoch: the
mean validation DSC on whole held-out volumes (the :class:`~bids_mdpp.inference.Predictor`,
for every contrast subset the validation sessions have), ``training/checkpoint.pt`` (model,
optimiser, scheduler, epoch, RNG states, metrics; written atomically), ``training/best.pt``
when the mean DSC improved, and ``training/metrics.csv``.  Training stops early after
``patience`` epochs without improvement.  At the end the best (``keep="last"``, or without
validation: the last) weights become the model directory with its model card.

Each epoch's row of ``metrics.csv`` also holds the process's peak resident memory so far
(``peak_rss_gb``), so that a run's memory can be followed from its log.  The allocator's free
pages go back to the kernel every ``RELEASE_EVERY_STEPS`` steps and after every validation
(:func:`bids_mdpp.allocator.release_free_memory`); without that, a run on a few dozen sessions
grows until the memory is full.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bids_mdpp.allocator import release_free_memory
from bids_mdpp.contrasts import subset_name
from bids_mdpp.errors import BidsMdppError, UsageError
from bids_mdpp.nn import MODES
from bids_mdpp.training import TrainingConfig
from bids_mdpp.training.distributed import (
    DistContext,
    EpochSampler,
    all_gather_object,
    all_mean,
    barrier,
    broadcast_object,
    wrap_model,
)
from bids_mdpp.training.randomise import RandomisationSettings
from bids_mdpp.training.slabs import AugmentationSettings, SlabDataset, SubjectCache

LOGGER = logging.getLogger("bids_mdpp.training")

CHECKPOINT_FORMAT = "bids_mdpp-checkpoint-1"
#: Training steps between two releases of the allocator's free pages (each costs about one
#: second; without them resident memory grew by 30–60 MB per step on 25 sessions).
RELEASE_EVERY_STEPS = 20


def peak_rss_gb() -> float:
    """The process's peak resident memory so far, GB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**30 if sys.platform == "darwin" else 2**20), 3)


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """Learning-rate multiplier of ``epoch`` (0-based): 1, then linear decay towards 0."""
    return 1.0 - max(0, epoch + 1 - (epochs - decay_epochs)) / float(decay_epochs + 1)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` where the device has it natively, ``fp16`` (AMP) on other GPUs,
    else ``fp32``; an explicit choice is kept (``fp16`` needs a GPU)."""
    from bids_mdpp.inference import bf16_supported

    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if precision != "auto":
        return precision
    if bf16_supported(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


class Objective(nn.Module):
    """One step's loss for a mode; DDP wraps this so that each step is one forward call.

    ``forward(image (B, K·3, H, W), available (B, K), drop (B, K), label (B, 1, H, W))`` →
    scalar loss.  The network runs under ``autocast``; the losses (focal, SSIM) in float32.
    """

    def __init__(self, network: nn.Module, mode: str, *, focal_gamma: float, ssim_weight: float,
                 autocast: Callable[[], contextlib.AbstractContextManager]):
        super().__init__()
        from bids_mdpp.nn.cotraining import objective_for_mode

        self.network = network
        self.loss = objective_for_mode(mode, focal_gamma=focal_gamma,
                                       weights=(1.0, 1.0, ssim_weight))
        self.autocast = autocast
        self.slices = network.config.slices_per_contrast

    def run_network(self, *args, **kwargs):
        with self.autocast():
            return self.network(*args, **kwargs)

    def forward(self, image, available, drop, label) -> torch.Tensor:
        from bids_mdpp.nn.moddrop import apply_code

        missing = apply_code(image, drop, self.slices)
        return self.loss(self.run_network, image, available, missing, drop, label).total


def set_training_mode(network: nn.Module, *, freeze_batchnorm: bool = False) -> nn.Module:
    """``network.train()``; with ``freeze_batchnorm`` every BatchNorm layer then goes back to
    evaluation mode, so it normalises with, and keeps, its running statistics (its scale and
    shift still receive gradients).  Returns ``network``."""
    network.train()
    if freeze_batchnorm:
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    return network


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice similarity of two boolean masks (1 when both are empty)."""
    total = int(prediction.sum()) + int(reference.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (``fp32``: none; ``bf16``; ``fp16``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def read_checkpoint(path: Path, fmt: str, settings: dict, device: torch.device, *, kind: str,
                    instead: str) -> dict:
    """A checkpoint's state, checked: readable, of format ``fmt``, made with ``settings``.

    Raises :class:`~bids_mdpp.errors.InputDataError` for a file that is not such a checkpoint
    and :class:`UsageError` naming the settings that differ (``instead`` says what to do).
    """
    from bids_mdpp.errors import InputDataError

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise InputDataError(path, f"not a readable {kind} checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise InputDataError(path, f"not a bids_mdpp {kind} checkpoint")
    if state["settings"] != settings:
        differ = [k for k in {**state["settings"], **settings}
                  if state["settings"].get(k) != settings.get(k)]
        raise UsageError(
            f"{path}: the checkpoint was made with other settings ({', '.join(differ)}: "
            f"{', '.join(str(state['settings'].get(k)) for k in differ)}); resume with the "
            f"same options or {instead}")
    return state


def write_metrics_csv(rows: Sequence[dict], path: Path) -> Path:
    """``rows`` (one dict per epoch) as a CSV file, columns in first-seen order (atomic)."""
    from bids_mdpp.imageio import write_text

    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(text.getvalue(), path)


def contrast_subsets(present: Sequence[str], which: str = "all") -> list[tuple[str, ...]]:
    """Non-empty subsets of ``present`` (largest first); ``which="full"``: only ``present``."""
    if which == "full":
        return [tuple(present)]
    return [subset for size in range(len(present), 0, -1)
            for subset in itertools.combinations(present, size)]


class Trainer:
    """Trains one network on cached subjects (see the module docstring).

    Parameters
    ----------
    config
        The run's :class:`TrainingConfig`.
    contrasts
        The model's contrasts, in channel order.
    train, validation
        Slab caches of the training and validation sessions.
    ctx
        This process's place in a distributed run (:func:`~.distributed.init_distributed`).
    data_card
        What the card's ``training`` section says about the data (names, counts, hashes).

    ``hooks`` are called as ``hook(trainer, row)`` after each epoch's checkpoint is written.
    """

    def __init__(self, config: TrainingConfig, contrasts: Sequence[str],
                 train: Sequence[SubjectCache], validation: Sequence[SubjectCache], *,
                 ctx: DistContext, data_card: dict | None = None):
        self.config = config
        self.contrasts = tuple(contrasts)
        self.validation = list(validation)
        self.ctx = ctx
        self.device = ctx.device
        self.data_card = dict(data_card or {})
        self.precision = resolve_precision(config.precision, self.device)
        torch.manual_seed(config.seed)
        self.network, self.init_card = self._initial_network()
        self.network.to(self.device)
        torch.manual_seed(config.seed + 7919 * ctx.rank)  # drop-out masks differ between ranks
        self.objective = Objective(self.network, config.mode, focal_gamma=config.focal_gamma,
                                   ssim_weight=config.ssim_weight, autocast=self.autocast)
        self.model = wrap_model(self.objective, ctx)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.lr,
                                          betas=(0.5, 0.999))
        epochs, decay = config.epochs, config.effective_decay_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda epoch: lr_factor(epoch, epochs, decay))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.dataset = SlabDataset(train, contrasts=self.contrasts, seed=config.seed,
                                   settings=AugmentationSettings(
                                       crop=config.crop,
                                       randomisation=RandomisationSettings(p=config.randomise_p)),
                                   moddrop=MODES[config.mode].modality_dropout,
                                   single_contrast_p=config.single_contrast_p,
                                   negative_slice_p=config.negative_slice_p)
        per_rank = config.steps_per_epoch * config.batch_size if config.steps_per_epoch else None
        self.sampler = EpochSampler(len(self.dataset), seed=config.seed, rank=ctx.rank,
                                    world_size=ctx.world_size, samples_per_rank=per_rank)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=config.batch_size, sampler=self.sampler,
            num_workers=config.num_workers, pin_memory=self.device.type == "cuda")
        self.history: list[dict] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.start_epoch = 0
        self.hooks: list[Callable[[Trainer, dict], None]] = []

    # -- set-up ---------------------------------------------------------------------------
    def _initial_network(self):
        from bids_mdpp.model import load_model
        from bids_mdpp.nn import build_network

        if self.config.init_from is None:
            return build_network(self.config.network_config(self.contrasts)), None
        loaded = load_model(self.config.init_from)
        card = loaded.card
        if loaded.anchor_network is not None:
            raise UsageError(
                f"--init-from {self.config.init_from}: the model keeps separate weights for the "
                f"inputs with {loaded.anchor_contrast} (it was made by bids_mdpp adapt); "
                "fine-tune its base model, or a model adapted with --flair-subsets adapted")
        if card.contrasts != self.contrasts:
            raise UsageError(
                f"--init-from {self.config.init_from}: the model's contrasts "
                f"{', '.join(card.contrasts)} differ from this run's {', '.join(self.contrasts)}")
        if card.network_config.dynamic_head != MODES[self.config.mode].dynamic_head:
            raise UsageError(
                f"--init-from {self.config.init_from}: a {card.mode} model cannot be fine-tuned in "
                f"mode {self.config.mode} (the first layer differs); use a mode with"
                f"{'' if card.network_config.dynamic_head else 'out'} the dynamic head")
        return loaded.network.train(), card

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward passes' autocast context for this run's precision."""
        return autocast_for(self.precision, self.device)

    @property
    def checkpoint_path(self) -> Path:
        return self.config.training_dir / "checkpoint.pt"

    @property
    def best_path(self) -> Path:
        return self.config.training_dir / "best.pt"

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> Path | None:
        """Train (from the checkpoint with ``resume``); rank 0 returns the model directory."""
        if self.config.resume and self.checkpoint_path.is_file():
            self.load_checkpoint()
        elif self.config.resume and self.ctx.is_main:
            LOGGER.warning("--resume: no checkpoint in %s; starting from scratch",
                           self.config.training_dir)
        for epoch in range(self.start_epoch, self.config.epochs):
            row = self.train_epoch(epoch)
            row.update(self.validate())
            release_free_memory()
            row["peak_rss_gb"] = peak_rss_gb()
            self.history.append(row)
            improved = "val_mean_dsc" in row and row["val_mean_dsc"] > self.best_score
            if improved:
                self.best_score, self.best_epoch = row["val_mean_dsc"], epoch + 1
            self.save_checkpoint(epoch + 1, improved)
            LOGGER.info("epoch %d/%d: %s", epoch + 1, self.config.epochs,
                        ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            for hook in self.hooks:
                hook(self, row)
            if self.validation and self.config.patience and \
                    epoch + 1 - self.best_epoch >= self.config.patience:
                LOGGER.info("No better validation DSC for %d epochs: stopping early (best: "
                            "epoch %d, %.4f)", self.config.patience, self.best_epoch,
                            self.best_score)
                break
        barrier(self.ctx)
        return self.write_model() if self.ctx.is_main else None

    def train_epoch(self, epoch: int) -> dict:
        """One pass of the sampler; returns the epoch's row of ``metrics.csv``."""
        from tqdm import tqdm

        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        set_training_mode(self.model, freeze_batchnorm=self.config.freeze_batchnorm)
        lr = self.optimizer.param_groups[0]["lr"]
        total, count, start = 0.0, 0, time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="batch",
                   disable=not self.ctx.is_main, leave=False, mininterval=1.0)
        for step, batch in enumerate(bar, start=1):
            value = self.train_step(batch)
            if step % RELEASE_EVERY_STEPS == 0:
                release_free_memory()
            if not math.isfinite(value):
                raise BidsMdppError(
                    f"training diverged at epoch {epoch + 1}: the loss is {value}; try a lower "
                    "--lr or --precision fp32")
            total += value * len(batch["label"])
            count += len(batch["label"])
            rate = count * self.ctx.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{total / count:.4f}", slices_s=f"{rate:.1f}")
        bar.close()
        self.scheduler.step()
        seconds = time.perf_counter() - start
        return {"epoch": epoch + 1, "lr": lr, "train_loss": all_mean(total / max(count, 1), self.ctx),
                "slices_per_s": count * self.ctx.world_size / seconds, "seconds": seconds}

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimiser step on a batch of :class:`SlabDataset` samples; returns the loss."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(batch["image"], batch["available"], batch["drop"], batch["label"])
        value = float(loss.detach())
        if math.isfinite(value):
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return value

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Mean DSC per contrast subset on whole validation volumes (computed on rank 0)."""
        if not self.validation:
            return {}
        scores = self._validate() if self.ctx.is_main else None
        return broadcast_object(scores, self.ctx)

    def _validate(self) -> dict[str, float]:
        """``val_dsc_<subset>``: mean DSC over the validation sessions with lesions;
        ``val_mean_dsc``: their mean, the selection criterion; ``val_lesion_free_mm3``: the
        mean volume (mm³) predicted on lesion-free sessions over every subset scored there.

        A lesion-free session's DSC is 1 when nothing at all is predicted and 0 for a single
        voxel, so it would choose the epochs that predict least; it is scored by the volume
        predicted instead.  Without any session with lesions there is no ``val_mean_dsc``,
        and the last epoch is kept.
        """
        from bids_mdpp.inference import Predictor
        from bids_mdpp.model import LoadedModel

        loaded = LoadedModel(network=self.network, card=self.model_card(), sha256="",
                             directory=self.config.output_dir)
        predictor = Predictor(loaded, device=str(self.device), batch_size=self.config.batch_size,
                              precision=self.config.precision)
        which = "full" if self.config.mode == "independent" else self.config.val_subsets
        voxel_mm3 = float(self.data_card.get("grid_mm", self.config.grid_mm)) ** 3
        per_subset: dict[str, list[float]] = {}
        lesion_free_mm3: list[float] = []
        for cache in self.validation:
            volumes = cache.volumes()
            brain = np.asarray(cache.brain()) > 0
            label = np.asarray(cache.label()) > 0
            has_lesions = bool(label.any())
            present = [c for c in self.contrasts if c in volumes]
            for subset in contrast_subsets(present, which):
                predicted = predictor.predict({c: volumes[c] for c in subset}, brain) >= 0.5
                if has_lesions:
                    per_subset.setdefault(subset_name(subset), []).append(dice(predicted, label))
                else:
                    lesion_free_mm3.append(float(predicted.sum()) * voxel_mm3)
        means = {f"val_dsc_{name}": float(np.mean(v)) for name, v in per_subset.items()}
        if means:
            means["val_mean_dsc"] = float(np.mean(list(means.values())))
        if lesion_free_mm3:
            means["val_lesion_free_mm3"] = float(np.mean(lesion_free_mm3))
        return means

    # -- checkpoints ----------------------------------------------------------------------
    def _settings(self) -> dict:
        return {"mode": self.config.mode, "contrasts": list(self.contrasts),
                "network": self.network.config.to_dict(), "seed": self.config.seed,
                **({"freeze_batchnorm": True} if self.config.freeze_batchnorm else {})}

    def save_checkpoint(self, epochs_done: int, improved: bool) -> None:
        """Write ``checkpoint.pt`` (and ``best.pt`` when ``improved``) and ``metrics.csv``.

        Every rank takes part (the RNG states of all ranks are stored); rank 0 writes.
        """
        from bids_mdpp.imageio import atomic_path

        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rng_states = all_gather_object(rng, self.ctx)
        if not self.ctx.is_main:
            return
        weights = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        state = {
            "format": CHECKPOINT_FORMAT, "epoch": epochs_done, "model": weights,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_states, "history": self.history,
            "best": {"score": self.best_score, "epoch": self.best_epoch},
            "settings": self._settings(),
        }
        if improved:
            with atomic_path(self.best_path) as tmp:
                torch.save(weights, tmp)
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)
        self.write_metrics()

    def load_checkpoint(self) -> None:
        """Continue from ``checkpoint.pt``: weights, optimiser, scheduler, RNG, metrics."""
        path = self.checkpoint_path
        state = read_checkpoint(path, CHECKPOINT_FORMAT, self._settings(), self.device,
                                kind="training", instead="train into a new OUTPUT_DIR")
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.best_score = float(state["best"]["score"])
        self.best_epoch = int(state["best"]["epoch"])
        self.start_epoch = int(state["epoch"])
        rng = state["rng"][self.ctx.rank if len(state["rng"]) == self.ctx.world_size else 0]
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        if self.ctx.is_main:
            LOGGER.info("Resuming from %s after epoch %d", path, self.start_epoch)

    def write_metrics(self) -> Path:
        """``training/metrics.csv``: one row per epoch (columns in first-seen order)."""
        return write_metrics_csv(self.history, self.config.training_dir / "metrics.csv")

    # -- the model ------------------------------------------------------------------------
    def model_card(self):
        """The :class:`~bids_mdpp.model.ModelCard` of what has been trained so far."""
        from bids_mdpp import __version__
        from bids_mdpp.model import ModelCard, software_versions

        kept = self.kept_epoch
        kept_row = next((row for row in self.history if row.get("epoch") == kept), None)
        metrics = {}
        if kept_row is not None and "val_mean_dsc" in kept_row:
            metrics = {
                "dsc": {k[len("val_dsc_"):]: v for k, v in kept_row.items() if k.startswith("val_dsc_")},
                "mean_dsc": kept_row["val_mean_dsc"], "epoch": kept, "kept": self.config.keep,
                "validation_sessions": [c.key for c in self.validation],
                **({"lesion_free_mm3": kept_row["val_lesion_free_mm3"]}
                   if "val_lesion_free_mm3" in kept_row else {}),
                "procedure": "whole volumes, three orientations fused, threshold 0.5 "
                             f"({'every contrast subset' if self.config.val_subsets == 'all' else 'full input only'})",
            }
        training = {
            **self.data_card,
            "epochs": len(self.history), "epochs_planned": self.config.epochs,
            "batch_size": self.config.batch_size, "crop": self.config.crop,
            "lesion_slices": self.dataset.n_lesion_slices,
            "negative_slices": {"share": self.config.negative_slice_p,
                                "candidates": len(self.dataset.negative_pool)},
            "domain_randomisation": self.dataset.settings.randomisation.to_dict(),
            "optimiser": {"name": "Adam", "lr": self.config.lr, "betas": [0.5, 0.999],
                          "decay_epochs": self.config.effective_decay_epochs},
            "loss": {"focal_gamma": self.config.focal_gamma, "focal_alpha": 0.25,
                     **({"ssim_weight": self.config.ssim_weight}
                        if MODES[self.config.mode].cotraining else {})},
            **({"modality_dropout": {"single_contrast_p": self.config.single_contrast_p}}
               if MODES[self.config.mode].modality_dropout else {}),
            "precision": self.precision, "seed": self.config.seed,
            "processes": self.ctx.world_size, "command_line": self.config.command_line,
            "fine_tuned_from": None if self.init_card is None else {
                "name": self.init_card.name, "version": self.init_card.version,
                "directory": str(self.config.init_from),
                "batchnorm": ("running statistics kept (--freeze-batchnorm)"
                              if self.config.freeze_batchnorm else "running statistics updated")},
        }
        contrasts = ", ".join(self.contrasts)
        return ModelCard(
            name=self.config.output_dir.name, version=__version__, contrasts=self.contrasts,
            mode=self.config.mode, network=self.network.config.to_dict(),
            description=(f"{self.config.mode} model for {contrasts}, trained with bids_mdpp "
                         f"train on {self.data_card.get('dataset', 'a BIDS dataset')}"),
            grid_mm=self.data_card.get("grid_mm", self.config.grid_mm),
            slices_per_contrast=self.network.config.slices_per_contrast,
            training=training, metrics=metrics, software=software_versions(),
        )

    @property
    def kept_epoch(self) -> int:
        """The epoch whose weights :meth:`write_model` writes: the best by the validation DSC,
        or the last one trained (``keep="last"``, or no validation score)."""
        if self.config.keep == "best" and self.best_epoch:
            return self.best_epoch
        return len(self.history)

    def write_model(self) -> Path:
        """Save the kept epoch's weights (:attr:`kept_epoch`) and the model card as the model
        directory."""
        from bids_mdpp.model import save_model

        network = copy.deepcopy(self.network).cpu().eval()
        kept = self.kept_epoch
        if kept == self.best_epoch and kept != len(self.history) and self.best_path.is_file():
            network.load_state_dict(torch.load(self.best_path, map_location="cpu",
                                               weights_only=True))
        directory = save_model(self.config.output_dir, network, self.model_card())
        LOGGER.info("Model written to %s (%s)", directory,
                    f"best epoch {kept}, mean validation DSC {self.best_score:.4f}"
                    if kept == self.best_epoch else f"last epoch, {kept}")
        return directory
