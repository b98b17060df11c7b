"""``bids_mdpp calibrate BIDS_DIR OUTPUT_DIR --labels DERIVATIVES_DIR``: parsing and checks only.

The work is done by :func:`bids_mdpp.calibration.calibrate`.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from bids_mdpp.cli.run import _labels
from bids_mdpp.cli.train import default_threads, labelled_data_command

EPILOG = """\b
OUTPUT_DIR becomes a model directory (the input model's weights and a model card with
per-subset thresholds) that `bids_mdpp BIDS_DIR OUT participant --model OUTPUT_DIR` uses;
OUTPUT_DIR/calibration/dsc_curves.tsv holds every session's DSC at every threshold.
"""


@labelled_data_command("calibrate", EPILOG)
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Model directory to calibrate (default: the shipped model).")
@click.option("--subsets", type=click.Choice(["all", "single", "full"]), default="all",
              show_default=True,
              help="Contrast subsets to calibrate: every non-empty subset of each session's "
                   "contrasts, each contrast alone, or the full set only.")
@click.option("--participant-label", "--participant_label", "participant_label", multiple=True,
              help="Use these participants only (default: all).")
@click.option("-w", "--work-dir", "work_dir", type=click.Path(path_type=Path),
              help="Preprocessing cache (default: OUTPUT_DIR/calibration/work).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="Inference precision (as the participant level).")
@click.option("--nprocs", type=click.IntRange(min=1), help="Processes for preprocessing.")
@click.option("--omp-nthreads", type=click.IntRange(min=1),
              help="Threads per process (default: the usable cores).")
@click.option("--probabilities", is_flag=True,
              help="First fit a logistic recalibration of the probabilities (a scale and a bias "
                   "on their logits, by maximum likelihood over the brain), then choose the "
                   "thresholds on the recalibrated probabilities.")
@click.option("--thresholds/--no-thresholds", default=True, show_default=True,
              help="Choose a threshold per subset; --no-thresholds (with --probabilities) only "
                   "fits the probabilities and keeps the card's one threshold for every subset.")
@click.option("--overwrite", is_flag=True, help="Replace a model already in OUTPUT_DIR.")
def calibrate(bids_dir, output_dir, labels, model_dir, subsets, participant_label, work_dir,
              device, precision, nprocs, omp_nthreads, probabilities, thresholds,
              overwrite) -> int:
    """Choose a model's threshold per contrast subset on labelled sessions.

    Every session with a reference mask in --labels is preprocessed as at the participant
    level (cached) and segmented with each subset of its contrasts; per subset, the threshold
    (0.05 to 0.95) with the best mean DSC is written to OUTPUT_DIR's model card.  Use
    sessions the model was not trained on, from scanners like the ones it will see.
    """
    from bids_mdpp.calibration import CalibrationConfig
    from bids_mdpp.calibration import calibrate as run_calibration
    from bids_mdpp.errors import NoInputError, UsageError

    bids_dir = bids_dir.expanduser().absolute()
    if not bids_dir.is_dir():
        raise NoInputError(f"{bids_dir}: no such BIDS dataset folder")
    if not labels.is_dir():
        raise NoInputError(f"--labels {labels}: no such derivatives folder")
    if model_dir is not None and not model_dir.exists():
        raise UsageError(f"--model {model_dir}: no such model directory")
    argv = (click.get_current_context().find_root().obj or {}).get("argv", sys.argv[1:])
    config = CalibrationConfig(
        bids_dir=bids_dir, output_dir=output_dir.expanduser().absolute(),
        labels_dir=labels.expanduser().absolute(),
        model_dir=model_dir.expanduser().absolute() if model_dir else None, subsets=subsets,
        participant_labels=_labels(participant_label),
        work_dir=work_dir.expanduser().absolute() if work_dir else None, device=device,
        precision=precision, nprocs=nprocs or 1, omp_nthreads=omp_nthreads or default_threads(nprocs),
        overwrite=overwrite, probabilities=probabilities, thresholds=thresholds,
        command_line=shlex.join(["bids_mdpp", *argv]),
    )
    result = run_calibration(config)
    if result.probability_fit is not None:
        fit = result.probability_fit
        click.echo(f"probabilities: logit × {fit['scale']:.3f} {fit['bias']:+.3f} (expected "
                   f"calibration error {fit['ece_before']:.4f} → {fit['ece_after']:.4f})")
    for name, chosen in sorted(result.chosen.items()):
        click.echo(f"{name}: threshold {chosen['threshold']:.2f} (mean DSC {chosen['dsc']:.3f}; "
                   f"{chosen['dsc_at_previous']:.3f} at {chosen['previous_threshold']:.2f}; "
                   f"{chosen['sessions']} session(s))")
    click.echo(f"Calibrated model written to {result.output_dir}")
    return 0
