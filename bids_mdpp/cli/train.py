"""``bids_mdpp train BIDS_DIR OUTPUT_DIR --labels DERIVATIVES_DIR``: parsing and checks only.

The work is done by :func:`bids_mdpp.training.run_training`; this module builds a frozen
:class:`~bids_mdpp.training.TrainingConfig`.  Under ``torchrun`` every process runs this
command with the same arguments.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from bids_mdpp.cli.run import _labels

MODES = ("moddrop++", "moddrop+", "moddrop", "independent")

EPILOG = """\b
OUTPUT_DIR becomes a model directory (model.pt + model_card.json) that
`bids_mdpp BIDS_DIR OUT participant --model OUTPUT_DIR` uses; OUTPUT_DIR/training/
holds checkpoint.pt, best.pt, metrics.csv and the logs.

\b
Several GPUs or nodes (one process per GPU; CPU runs use gloo):
  torchrun --nproc-per-node 4 -m bids_mdpp train BIDS_DIR OUTPUT_DIR --labels LABELS
"""


def network_options(size: str, growth_rate: int | None, layers_per_block: str | None,
                    bottleneck_layers: int | None, first_conv_channels: int | None) -> dict:
    """NetworkConfig fields from ``--network-size`` and the explicit options that override it."""
    from bids_mdpp.errors import UsageError
    from bids_mdpp.training import NETWORK_SIZES

    options = dict(NETWORK_SIZES[size])
    if layers_per_block is not None:
        try:
            blocks = tuple(int(n) for n in layers_per_block.split(",") if n.strip())
        except ValueError as exc:
            raise UsageError(f"--layers-per-block {layers_per_block!r}: give integers such as "
                             "4,4,4,4,4 (one per resolution level)") from exc
        if not blocks or min(blocks) < 1:
            raise UsageError(f"--layers-per-block {layers_per_block!r}: every level needs ≥ 1 layer")
        options["down_blocks"] = options["up_blocks"] = blocks
    for name, value in (("growth_rate", growth_rate), ("bottleneck_layers", bottleneck_layers),
                        ("first_conv_channels", first_conv_channels)):
        if value is not None:
            options[name] = value
    return options


def default_threads(nprocs: int | None) -> int:
    """Threads per process: the usable cores shared between torchrun's processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, (nprocs or cores or 1) // max(world, 1))


def labelled_data_command(name: str, epilog: str):
    """``click.command`` with the arguments every labelled-data command takes:
    ``BIDS_DIR OUTPUT_DIR --labels DERIVATIVES_DIR`` (``train``, ``calibrate``)."""
    def decorate(function):
        function = click.option(
            "--labels", "labels", type=click.Path(path_type=Path), required=True,
            help="Derivatives folder of reference lesion masks (sub-X[_ses-Y]_label-lesion_mask…).",
        )(function)
        function = click.argument("output_dir", type=click.Path(path_type=Path))(function)
        function = click.argument("bids_dir", type=click.Path(path_type=Path))(function)
        return click.command(
            name=name, epilog=epilog,
            context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        )(function)
    return decorate


@labelled_data_command("train", EPILOG)
@click.option("--contrasts", help="Model contrasts, e.g. T1w,FLAIR,T2w,PDw,ceT1w "
              "(default: every contrast the labelled sessions have).")
@click.option("--mode", type=click.Choice(MODES), default="moddrop++", show_default=True,
              help="moddrop++: dynamic head + co-training; moddrop+: dynamic head; moddrop: "
              "static head; independent: a fixed --contrasts subset, no drop-out.")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True,
              help="Epochs to train (an epoch: every lesion slice once, or --steps-per-epoch).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Slices per step (per process).")
@click.option("--steps-per-epoch", type=click.IntRange(min=1),
              help="Steps per epoch (default: one pass over the lesion slices).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4,
              show_default=True, help="Adam learning rate (betas 0.5, 0.999).")
@click.option("--decay-epochs", type=click.IntRange(min=0),
              help="Final epochs of linear learning-rate decay (default: half of --epochs).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2,
              show_default=True, help="Share of subjects held out for validation.")
@click.option("--val-subsets", type=click.Choice(["all", "full"]), default="all",
              show_default=True, help="Validate every contrast subset, or only the full input.")
@click.option("--patience", type=click.IntRange(min=0), default=20, show_default=True,
              help="Stop after this many epochs without a better validation DSC (0: never).")
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which epoch's weights become the model: the best by the validation DSC, or "
                   "the last (when the validation sessions are too few to choose by). With "
                   "--resume after the last epoch, only the model is written again.")
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT_DIR from its checkpoint.")
@click.option("--init-from", "init_from", type=click.Path(path_type=Path),
              help="Fine-tune this model directory instead of starting from random weights.")
@click.option("--freeze-batchnorm", is_flag=True,
              help="With --init-from: keep its BatchNorm running statistics (the layers run in "
                   "evaluation mode; their scale and shift still learn). Use it when fine-tuning "
                   "on a few sessions, whose statistics would replace the model's.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the split, the sampling and the initialisation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="auto: bf16 where native (CPU/GPU), fp16 AMP on other GPUs.")
@click.option("--network-size", type=click.Choice(["default", "small", "tiny"]),
              default="default", show_default=True,
              help="default: FC-DenseNet-57 as the authors; small/tiny for quick runs.")
@click.option("--growth-rate", type=click.IntRange(min=1), help="Override: dense growth rate.")
@click.option("--layers-per-block", help="Override: layers per dense block, e.g. 4,4,4,4,4.")
@click.option("--bottleneck-layers", type=click.IntRange(min=1), help="Override: bottleneck layers.")
@click.option("--first-conv-channels", type=click.IntRange(min=1),
              help="Override: channels of the first convolution.")
@click.option("--focal-gamma", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Focal loss gamma (the paper's 2; the authors' code used 1).")
@click.option("--ssim-weight", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="moddrop++: weight of the SSIM co-training term (paper 0.05, code 0.02).")
@click.option("--single-contrast-p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of drop-out codes that keep one contrast alone (0: the authors' "
                   "uniform draw); raise it when single-contrast inputs are not learned.")
@click.option("--negative-slice-p", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True,
              help="Share of training samples that are brain slices without lesions, lesion-free "
                   "sessions included (0: lesion slices only, the authors' sampling).")
@click.option("--randomise-p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Chance that each present contrast of a training sample is re-imaged at "
                   "random on the fly (tissue contrast, slice thickness, blur, bias field), so "
                   "the network learns shape and context (0: off).")
@click.option("--crop", type=click.IntRange(min=8), default=128, show_default=True,
              help="Training crop size in voxels.")
@click.option("--participant-label", "--participant_label", "participant_label", multiple=True,
              help="Train on these participants only (default: all).")
@click.option("-w", "--work-dir", "work_dir", type=click.Path(path_type=Path),
              help="Preprocessing and slab caches (default: OUTPUT_DIR/training/work).")
@click.option("--nprocs", type=click.IntRange(min=1), help="Processes for preprocessing.")
@click.option("--omp-nthreads", type=click.IntRange(min=1),
              help="Threads per process (default: the cores shared between processes).")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader worker processes preparing batches.")
@click.option("-v", "--verbose", count=True, help="More output.")
def train(bids_dir, output_dir, labels, contrasts, mode, epochs, batch_size, steps_per_epoch, lr,
          decay_epochs, val_fraction, val_subsets, patience, keep, resume, init_from, freeze_batchnorm,
          seed, device,
          precision, network_size, growth_rate, layers_per_block, bottleneck_layers,
          first_conv_channels, focal_gamma, ssim_weight, single_contrast_p, negative_slice_p, randomise_p,
          crop, participant_label, work_dir, nprocs, omp_nthreads, num_workers, verbose) -> int:
    """Train a ModDrop++ model on BIDS_DIR with the reference masks in --labels.

    Every session is preprocessed as at inference (cached), subjects are split into training
    and validation, and OUTPUT_DIR receives the model.
    """
    from bids_mdpp.contrasts import parse_contrasts
    from bids_mdpp.errors import NoInputError, UsageError
    from bids_mdpp.training import TrainingConfig, run_training

    bids_dir = bids_dir.expanduser().absolute()
    output_dir = output_dir.expanduser().absolute()
    if not bids_dir.is_dir():
        raise NoInputError(f"{bids_dir}: no such BIDS dataset folder")
    if not labels.is_dir():
        raise NoInputError(f"--labels {labels}: no such derivatives folder")
    if init_from is not None and not init_from.exists():
        raise UsageError(f"--init-from {init_from}: no such model directory")
    try:
        model_contrasts = parse_contrasts(contrasts) if contrasts else None
    except ValueError as exc:
        raise UsageError(f"--contrasts {contrasts!r}: {exc}") from exc
    argv = (click.get_current_context().find_root().obj or {}).get("argv", sys.argv[1:])
    config = TrainingConfig(
        bids_dir=bids_dir, output_dir=output_dir, labels_dir=labels.expanduser().absolute(),
        contrasts=model_contrasts, mode=mode, epochs=epochs, batch_size=batch_size, lr=lr,
        decay_epochs=decay_epochs, steps_per_epoch=steps_per_epoch, val_fraction=val_fraction,
        val_subsets=val_subsets, patience=patience, keep=keep, seed=seed, device=device,
        precision=precision,
        network=network_options(network_size, growth_rate, layers_per_block, bottleneck_layers,
                                first_conv_channels),
        focal_gamma=focal_gamma, ssim_weight=ssim_weight,
        single_contrast_p=single_contrast_p, negative_slice_p=negative_slice_p,
        randomise_p=randomise_p, crop=crop, num_workers=num_workers,
        init_from=init_from.expanduser().absolute() if init_from else None,
        freeze_batchnorm=freeze_batchnorm, resume=resume,
        work_dir=work_dir.expanduser().absolute() if work_dir else None,
        participant_labels=_labels(participant_label), nprocs=nprocs or 1,
        omp_nthreads=omp_nthreads or default_threads(nprocs), verbose=verbose,
        command_line=shlex.join(["bids_mdpp", *argv]),
    )
    run_training(config)
    return 0
