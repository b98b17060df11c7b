"""``bids_mdpp adapt BIDS_DIR OUTPUT_DIR``: parsing and checks only.

The work is done by :func:`bids_mdpp.adapt.run_adaptation`; this module builds a frozen
:class:`~bids_mdpp.adapt.AdaptConfig`.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from bids_mdpp.cli.run import _labels
from bids_mdpp.cli.train import default_threads
from bids_mdpp.config import INTENSITY_MODEL_MODES

EPILOG = """\b
OUTPUT_DIR becomes a model directory (model.pt + model_card.json, and anchor.pt:
the base weights for inputs with FLAIR) that
`bids_mdpp BIDS_DIR OUT participant --model OUTPUT_DIR` uses; OUTPUT_DIR/adaptation/
holds checkpoint.pt, metrics.csv, the logs and (without -w) the work folder.
No label is read: only the dataset's images and the base model.
"""


@click.command(name="adapt", epilog=EPILOG,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Base model directory (default: the shipped model).")
@click.option("--participant-label", "--participant_label", "participant_label", multiple=True,
              help="Adapt on these participants only (default: all).")
@click.option("--session-label", "--session_label", "session_label", multiple=True,
              help="Adapt on these sessions only (default: all).")
@click.option("--bids-filter-file", "--bids_filter_file", "bids_filter_file",
              type=click.Path(path_type=Path),
              help="JSON file of pybids filters per contrast (fMRIPrep's format).")
@click.option("-w", "--work-dir", "work_dir", type=click.Path(path_type=Path),
              help="Preprocessing and teacher caches (default: OUTPUT_DIR/adaptation/work); "
                   "the participant level's -w layout, so its preprocessing can be reused.")
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Epochs of adaptation.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=50, show_default=True,
              help="Optimiser steps per epoch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Crops per step.")
@click.option("--crop", type=click.IntRange(min=8), default=128, show_default=True,
              help="Crop size in voxels.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4,
              show_default=True, help="Adam learning rate (betas 0.5, 0.999).")
@click.option("--confidence", type=click.FloatRange(0.5, 1, min_open=True, max_open=True),
              default=0.8, show_default=True,
              help="With --targets soft: the teacher's voxels with probability ≥ this or "
                   "≤ 1 − this teach the inputs without FLAIR.")
@click.option("--targets", type=click.Choice(["mask", "soft"]), default="mask", show_default=True,
              help="What the inputs without FLAIR learn: mask, the teacher's mask on every "
                   "voxel with the base model's own training loss (as if it were a label); "
                   "soft, the teacher's probability on its confident voxels.")
@click.option("--flair-subsets", type=click.Choice(["base", "adapted"]), default="base",
              show_default=True,
              help="Weights the adapted model segments the inputs with FLAIR with: base, the base "
                   "model's own (kept beside the adapted ones, so those subsets are exactly the "
                   "base model's); adapted, the adapted weights, as for every other input.")
@click.option("--base-subsets", "base_subsets", multiple=True, metavar="SUBSET",
              help="With --flair-subsets base: an input of exactly these contrasts (e.g. T1w or "
                   "T1w+T2w; repeat for more) keeps the base model's weights too.")
@click.option("--lesion-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="With --targets soft: weight of the teacher's confident lesion voxels in the "
                   "mean of the term without FLAIR (the background gets the rest; default: one "
                   "mean over all confident voxels, nearly all background).")
@click.option("--ssim-weight", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Weight of the feature-level SSIM co-training term.")
@click.option("--intensity-model", "intensity_model", type=click.Choice(INTENSITY_MODEL_MODES),
              default="off", show_default=True,
              help="off: the teacher's map is the base model's alone; combine: averaged with the "
                   "per-session intensity model's (as participant --intensity-model combine "
                   "segments).")
@click.option("--agreement-sessions", type=click.IntRange(min=0), default=2, show_default=True,
              help="Sessions on which the agreement with the teacher is measured per contrast "
                   "subset at the end (two whole-volume predictions per subset; 0: none).")
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT_DIR from its checkpoint.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the sampling (in fp32 the run is deterministic for a seed).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="auto: bf16 where native (CPU/GPU), fp16 AMP on other GPUs.")
@click.option("--nprocs", "--n_cpus", "--n-cpus", "nprocs", type=click.IntRange(min=1),
              help="Processes for preprocessing.")
@click.option("--omp-nthreads", "--omp_nthreads", "omp_nthreads", type=click.IntRange(min=1),
              help="Threads per process (default: the usable cores).")
@click.option("-v", "--verbose", count=True, help="More output (-vv: Nipype's too).")
def adapt(bids_dir, output_dir, model_dir, participant_label, session_label, bids_filter_file,
          work_dir, epochs, steps_per_epoch, batch_size, crop, lr, confidence, targets,
          flair_subsets, base_subsets, lesion_share, ssim_weight, intensity_model,
          agreement_sessions, resume, seed, device, precision, nprocs, omp_nthreads,
          verbose) -> int:
    """Adapt a model to the unlabelled scans of BIDS_DIR; write it to OUTPUT_DIR.

    The base model's prediction from all of a session's contrasts (FLAIR among them) teaches
    the same model fed subsets of that session without FLAIR; the subsets with FLAIR are held
    to the base model (and, by default, keep its weights).  Sessions without FLAIR are skipped and reported.
    """
    from bids_mdpp.adapt import AdaptConfig, run_adaptation
    from bids_mdpp.bids import load_bids_filters
    from bids_mdpp.errors import NoInputError, UsageError

    bids_dir = bids_dir.expanduser().absolute()
    if not bids_dir.is_dir():
        raise NoInputError(f"{bids_dir}: no such BIDS dataset folder")
    if model_dir is not None and not model_dir.exists():
        raise UsageError(f"--model {model_dir}: no such model directory")
    argv = (click.get_current_context().find_root().obj or {}).get("argv", sys.argv[1:])
    config = AdaptConfig(
        bids_dir=bids_dir, output_dir=output_dir.expanduser().absolute(),
        model_dir=model_dir.expanduser().absolute() if model_dir else None,
        work_dir=work_dir.expanduser().absolute() if work_dir else None,
        participant_labels=_labels(participant_label), session_labels=_labels(session_label),
        bids_filters=load_bids_filters(bids_filter_file), epochs=epochs,
        steps_per_epoch=steps_per_epoch, batch_size=batch_size, crop=crop, lr=lr,
        confidence=confidence, targets=targets, flair_subsets=flair_subsets,
        base_subsets=tuple(base_subsets),
        lesion_share=lesion_share,
        ssim_weight=ssim_weight, intensity_model=intensity_model,
        agreement_sessions=agreement_sessions, seed=seed, device=device,
        precision=precision, resume=resume, nprocs=nprocs or 1,
        omp_nthreads=omp_nthreads or default_threads(nprocs), verbose=verbose,
        command_line=shlex.join(["bids_mdpp", *argv]),
    )
    result = run_adaptation(config)
    click.echo(f"Adapted model written to {result}")
    return 0
