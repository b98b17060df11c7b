"""Training a ModDrop++ model on a labelled BIDS dataset (``bids_mdpp train``).

Modules
-------
:mod:`~bids_mdpp.training.data`
    BIDS dataset + reference masks → preprocessed sessions (cached) → subject-wise split.
:mod:`~bids_mdpp.training.slabs`
    The memory-mapped slab cache and the Dataset of augmented 2.5D crops.
:mod:`~bids_mdpp.training.trainer`
    The :class:`~bids_mdpp.training.trainer.Trainer`: modes, checkpoints, validation, model card.
:mod:`~bids_mdpp.training.distributed`
    ``torchrun``/DDP set-up, sharding, rank-0-only writing.

API::

    config = TrainingConfig(bids_dir, output_dir, labels_dir, mode="moddrop++", epochs=100)
    model_dir = run_training(config)       # OUTPUT_DIR, a model directory (None on ranks > 0)

``OUTPUT_DIR`` receives ``model.pt`` and ``model_card.json`` at the end and, during training,
``training/`` with ``checkpoint.pt``, ``best.pt``, ``metrics.csv``, the logs and (unless
``--work-dir`` says otherwise) ``work/``: the preprocessing and slab caches, which may be
deleted once the model is written.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bids_mdpp.errors import BidsMdppError, UsageError

LOGGER = logging.getLogger("bids_mdpp.training")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Network sizes by name (NetworkConfig fields; "default" is the authors' FC-DenseNet-57).
NETWORK_SIZES: dict[str, dict] = {
    "default": {},
    "small": {"growth_rate": 8, "down_blocks": (3, 3, 3, 3), "up_blocks": (3, 3, 3, 3),
              "bottleneck_layers": 3, "first_conv_channels": 32},
    "tiny": {"growth_rate": 4, "down_blocks": (1, 1), "up_blocks": (1, 1),
             "bottleneck_layers": 1, "first_conv_channels": 8},
}


@dataclass(frozen=True)
class TrainingConfig:
    """Everything one ``bids_mdpp train`` run needs (paths absolute)."""

    bids_dir: Path
    output_dir: Path
    labels_dir: Path
    contrasts: tuple[str, ...] | None = None
    mode: str = "moddrop++"
    epochs: int = 100
    batch_size: int = 16
    lr: float = 2e-4
    decay_epochs: int | None = None
    steps_per_epoch: int | None = None
    val_fraction: float = 0.2
    val_subsets: str = "all"
    patience: int = 20
    keep: str = "best"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    network: dict = field(default_factory=dict)
    focal_gamma: float = 2.0
    ssim_weight: float = 0.05
    single_contrast_p: float = 0.0
    #: Share of training samples that are brain slices without lesions (all sessions).
    negative_slice_p: float = 0.0
    #: Chance that a present contrast of a sample is re-imaged at random (SynthSeg style).
    randomise_p: float = 0.0
    crop: int = 128
    num_workers: int = 0
    init_from: Path | None = None
    #: Keep every BatchNorm layer's running statistics those of ``init_from`` (evaluation mode).
    freeze_batchnorm: bool = False
    resume: bool = False
    work_dir: Path | None = None
    participant_labels: tuple[str, ...] = ()
    nprocs: int = 1
    omp_nthreads: int = 1
    grid_mm: float = 1.0
    verbose: int = 0
    command_line: str = ""

    def __post_init__(self) -> None:
        from bids_mdpp.nn import MODES

        if self.mode not in MODES:
            raise UsageError(f"unknown --mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "independent" and not self.contrasts:
            raise UsageError("--mode independent trains on a fixed subset: give it with --contrasts")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown --precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if self.val_subsets not in ("all", "full"):
            raise UsageError(f"--val-subsets must be 'all' or 'full', got {self.val_subsets!r}")
        for name in ("epochs", "batch_size", "crop", "nprocs", "omp_nthreads"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise UsageError("--steps-per-epoch must be at least 1")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if self.decay_epochs is not None and not 0 <= self.decay_epochs <= self.epochs:
            raise UsageError(f"--decay-epochs must lie in [0, --epochs={self.epochs}]")
        if not 0.0 <= self.single_contrast_p <= 1.0:
            raise UsageError(
                f"--single-contrast-p must lie in [0, 1], got {self.single_contrast_p}")
        if self.single_contrast_p > 0 and not MODES[self.mode].modality_dropout:
            raise UsageError(f"--single-contrast-p needs modality drop-out; mode {self.mode} "
                             "has none")
        if not 0.0 <= self.negative_slice_p < 1.0:
            raise UsageError(
                f"--negative-slice-p must lie in [0, 1), got {self.negative_slice_p}")
        if not 0.0 <= self.randomise_p <= 1.0:
            raise UsageError(f"--randomise-p must lie in [0, 1], got {self.randomise_p}")
        if self.freeze_batchnorm and self.init_from is None:
            raise UsageError("--freeze-batchnorm keeps the running statistics of the model given "
                             "with --init-from; a network trained from scratch has none to keep")
        if self.keep not in ("best", "last"):
            raise UsageError(f"--keep must be 'best' or 'last', got {self.keep!r}")
        if self.num_workers < 0 or self.patience < 0:
            raise UsageError("--num-workers and --patience cannot be negative")
        self.network_config(self.contrasts or ("FLAIR",))  # bad network options fail now

    @property
    def effective_decay_epochs(self) -> int:
        """Epochs of linear decay at the end (default: the second half)."""
        return self.epochs // 2 if self.decay_epochs is None else self.decay_epochs

    @property
    def effective_work_dir(self) -> Path:
        """Preprocessing and slab caches (default ``OUTPUT_DIR/training/work``)."""
        return self.work_dir or self.output_dir / "training" / "work"

    @property
    def training_dir(self) -> Path:
        """Checkpoints, metrics and logs: ``OUTPUT_DIR/training``."""
        return self.output_dir / "training"

    def network_config(self, contrasts: Sequence[str]):
        """The :class:`~bids_mdpp.nn.densenet.NetworkConfig` of this run for ``contrasts``."""
        from bids_mdpp.nn import MODES, NetworkConfig

        try:
            return NetworkConfig.from_dict({**self.network, "n_contrasts": len(contrasts),
                                            "dynamic_head": MODES[self.mode].dynamic_head})
        except ValueError as exc:
            raise UsageError(f"invalid network size options: {exc}") from exc


def check_output_dir(config: TrainingConfig) -> None:
    """OUTPUT_DIR is new (or ``--resume``), outside the input dataset, and writable."""
    from bids_mdpp.errors import OutputError
    from bids_mdpp.imageio import write_text

    output, bids = config.output_dir, config.bids_dir
    if output == bids or bids in output.parents:
        raise UsageError(f"OUTPUT_DIR {output} lies inside BIDS_DIR; choose a folder outside it")
    previous = [p for p in (output / "model_card.json", config.training_dir / "checkpoint.pt")
                if p.exists()]
    if previous and not config.resume:
        raise UsageError(
            f"{output} already holds a model or a training run ({previous[0].name}); use "
            "--resume to continue it, or choose another OUTPUT_DIR")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{output}: cannot create the output folder ({exc.strerror})") from exc
    write_text("", config.training_dir / ".write-test").unlink()


def quiet_nipype(verbose: int) -> None:
    """Nipype's log levels (it re-reads them from its config at every node): INFO with -vv."""
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    level = "INFO" if verbose >= 2 else "WARNING"
    for key in ("workflow_level", "interface_level", "utils_level"):
        nipype_config.set("logging", key, level)
    nipype_logging.update_logging(nipype_config)


def on_main(task: Callable[[], object], ctx) -> object:
    """``task()`` run by rank 0 alone; its result — or its failure — reaches every rank."""
    from bids_mdpp.training.distributed import broadcast_object

    result, failure = None, None
    if ctx.is_main:
        try:
            result = task()
        except Exception as exc:  # re-raised here; the other ranks must not wait forever
            failure = exc
    outcome = broadcast_object(
        (result, None if failure is None else
         (str(failure), getattr(failure, "exit_code", 1))), ctx)
    if failure is not None:
        raise failure
    if outcome[1] is not None:
        error = BidsMdppError(f"rank 0 failed: {outcome[1][0]}")
        error.exit_code = outcome[1][1]
        raise error
    return outcome[0]


def run_training(config: TrainingConfig) -> Path | None:
    """Train a model as ``config`` says; rank 0 returns the model directory (OUTPUT_DIR).

    Under torchrun every process calls this; rank 0 alone preprocesses, logs and writes.
    """
    import torch

    from bids_mdpp.inference import resolve_device
    from bids_mdpp.logs import setup_logging
    from bids_mdpp.training.data import prepare_data
    from bids_mdpp.training.distributed import init_distributed, shutdown
    from bids_mdpp.training.trainer import Trainer, resolve_precision

    device = resolve_device(config.device)
    resolve_precision(config.precision, device)  # refuse a bad choice before preprocessing
    ctx = init_distributed(device)
    try:
        torch.set_num_threads(config.omp_nthreads)

        def prepare():
            check_output_dir(config)
            quiet_nipype(config.verbose)
            setup_logging(config.training_dir / "logs", config.verbose, tag="train")
            LOGGER.info("bids_mdpp train: %s", config.command_line)
            return prepare_data(config)

        contrasts, train, validation, data_card = on_main(prepare, ctx)
        trainer = Trainer(config, contrasts, train, validation, ctx=ctx, data_card=data_card)
        return trainer.fit()
    finally:
        shutdown(ctx)
