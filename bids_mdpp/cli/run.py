"""``bids_mdpp BIDS_DIR OUTPUT_DIR {participant,group} [OPTIONS]``: parsing and checks only.

The work is done by :func:`bids_mdpp.participant.run_participant_level` and
:func:`bids_mdpp.group.run_group`; this module builds a frozen :class:`~bids_mdpp.config.RunConfig`.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from bids_mdpp.config import (DEFAULT_MIN_LESION_MM3, INTENSITY_MODEL_MODES, default_omp_nthreads,
                              parse_memory_gb)

EPILOG = """\b
Other commands (bids_mdpp COMMAND --help):
  train            train a model on your own labelled BIDS data
  adapt            adapt a model to your own unlabelled scans (no labels needed)
  synth            write a synthetic multi-contrast MS dataset for training
  calibrate        choose a model's threshold per contrast subset on labelled data
  import-weights   turn the ModDrop++ authors' released weights into a model directory
  average-weights  average the weights of models fine-tuned from one model

\b
Exit codes: 0 all done; 1 a participant failed; 16 the input failed BIDS validation;
64 usage error; 65 bad input data; 66 no input matched; 73/74 output cannot be written.
"""


def _labels(values: tuple[str, ...]) -> tuple[str, ...]:
    """Accept ``--participant-label 01 02`` style lists split by spaces or commas too."""
    out: list[str] = []
    for value in values:
        out.extend(v for v in value.replace(",", " ").split() if v)
    return tuple(out)


@click.command(
    name="run",
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    options_metavar="[OPTIONS]",
)
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.argument("analysis_level", type=click.Choice(["participant", "group"]))
@click.option("--participant-label", "--participant_label", "participant_label", multiple=True,
              help="Participant label(s), with or without 'sub-' (default: all).")
@click.option("--session-label", "--session_label", "session_label", multiple=True,
              help="Session label(s), with or without 'ses-' (default: all).")
@click.option("--bids-filter-file", "--bids_filter_file", "bids_filter_file",
              type=click.Path(path_type=Path),
              help="JSON file of pybids filters per contrast (fMRIPrep's format).")
@click.option("--skip-bids-validation", "--skip_bids_validation", "skip_bids_validation",
              is_flag=True, help="Do not validate the input dataset.")
@click.option("-w", "--work-dir", "work_dir", type=click.Path(path_type=Path),
              help="Work directory for intermediate results; a re-run resumes from it.")
@click.option("--nprocs", "--n_cpus", "--n-cpus", "nprocs", type=click.IntRange(min=1),
              help="Processes for Nipype's MultiProc plugin (default: all cores).")
@click.option("--omp-nthreads", "--omp_nthreads", "omp_nthreads", type=click.IntRange(min=1),
              help="Threads per process for SimpleITK and PyTorch (default: one less than "
                   "--nprocs, at most 8, so that preprocessing steps run side by side; "
                   "inference then uses all --nprocs).")
@click.option("--mem", "--mem_mb", "mem", help="Memory limit with units, e.g. 16G or 1500M.")
@click.option("--model", "model", type=click.Path(path_type=Path),
              help="Model directory (model_card.json + weights); default: the shipped model.")
@click.option("--device", default="auto", show_default=True,
              help="Where the network runs: auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="Arithmetic for inference (auto: fastest within 1e-2 of fp32).")
@click.option("--tta", "flip_tta", is_flag=True,
              help="Test-time augmentation: also segment the left-right mirrored images and average "
                   "(twice the inference time; docs/benchmarks.md has what it gains).")
@click.option("--intensity-model", "intensity_model", type=click.Choice(INTENSITY_MODEL_MODES),
              default=INTENSITY_MODEL_MODES[0], show_default=True,
              help="combine: average the network's lesion probability with that of a Gaussian "
                   "mixture of tissue and lesion intensities fitted to each session (atlas priors; "
                   "docs/usage.md); off: the network alone.")
@click.option("--use-plugin", "--use_plugin", "use_plugin", type=click.Path(path_type=Path),
              help="Nipype plugin configuration file (YAML), e.g. for SLURM.")
@click.option("--output-spaces", "--output_spaces", "output_spaces", multiple=True,
              help="Also write the lesion maps in these template spaces (affine fit), e.g. "
              "MNI152NLin2009cAsym from TEMPLATEFLOW_HOME, or MNI152NLin2009aSym (bundled).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None,
              help="Probability threshold of the mask (default: the model's, for the contrasts present).")
@click.option("--min-lesion-size", "min_lesion_size", type=click.FloatRange(min=0),
              default=DEFAULT_MIN_LESION_MM3, show_default=True,
              help="Drop lesions smaller than this (mm³) from mask and table (0: keep all).")
@click.option("--labels", type=click.Path(path_type=Path),
              help="group: derivatives folder of reference lesion masks to score against.")
@click.option("--overwrite", is_flag=True, help="Redo participants whose outputs already exist.")
@click.option("--notrack", is_flag=True, help="Accepted for compatibility; bids_mdpp never tracks.")
@click.option("-v", "--verbose", count=True, help="More output (-vv: Nipype's too).")
def run(bids_dir, output_dir, analysis_level, participant_label, session_label, bids_filter_file,
        skip_bids_validation, work_dir, nprocs, omp_nthreads, mem, model, device, precision,
        flip_tta, intensity_model, use_plugin, output_spaces, threshold, min_lesion_size, labels,
        overwrite, notrack, verbose) -> int:
    """Segment MS lesions in BIDS_DIR and write BIDS derivatives to OUTPUT_DIR.

    ANALYSIS_LEVEL 'participant' segments each participant (and session);
    'group' gathers their results into cohort tables and a report.
    """
    import os

    from bids_mdpp.bids import load_bids_filters
    from bids_mdpp.config import RunConfig
    from bids_mdpp.errors import UsageError

    bids_dir = bids_dir.expanduser().absolute()
    output_dir = output_dir.expanduser().absolute()
    if output_dir == bids_dir:
        raise UsageError("OUTPUT_DIR must differ from BIDS_DIR (outputs never go into the input)")
    if bids_dir in output_dir.parents and output_dir.parent.name != "derivatives":
        raise UsageError(
            f"OUTPUT_DIR {output_dir} lies inside BIDS_DIR; use BIDS_DIR/derivatives/<name> or a "
            "folder outside the dataset"
        )
    for flag, path in (("--model", model), ("--use-plugin", use_plugin), ("--labels", labels)):
        if path is not None and not path.exists():
            raise UsageError(f"{flag} {path}: no such file or directory")
    if labels is not None and analysis_level != "group":
        raise UsageError("--labels is only used at the group level")
    output_spaces = _labels(output_spaces)
    if output_spaces and analysis_level != "participant":
        raise UsageError("--output-spaces is only used at the participant level")
    if output_spaces:
        from bids_mdpp.spaces import check_spaces

        output_spaces = check_spaces(output_spaces)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    nprocs = nprocs or cores or 1
    config = RunConfig(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=analysis_level,
        participant_labels=_labels(participant_label),
        session_labels=_labels(session_label),
        bids_filters=load_bids_filters(bids_filter_file),
        bids_filter_file=bids_filter_file,
        skip_validation=skip_bids_validation,
        work_dir=work_dir.expanduser().absolute() if work_dir else None,
        nprocs=nprocs,
        omp_nthreads=omp_nthreads or default_omp_nthreads(nprocs),
        inference_nthreads=omp_nthreads or nprocs,
        mem_gb=parse_memory_gb(mem),
        model_dir=model.expanduser().absolute() if model else None,
        device=device,
        precision=precision,
        flip_tta=flip_tta,
        intensity_model=intensity_model,
        plugin_file=use_plugin,
        verbose=verbose,
        overwrite=overwrite,
        output_spaces=tuple(output_spaces),
        labels_dir=labels.expanduser().absolute() if labels else None,
        threshold=threshold if threshold is not None else 0.5,
        threshold_from_model=threshold is None,
        min_lesion_mm3=min_lesion_size,
        command_line=shlex.join(["bids_mdpp", *(click.get_current_context().find_root().obj or {}).get("argv", sys.argv[1:])]),
    )
    if analysis_level == "participant":
        from bids_mdpp.participant import run_participant_level

        return run_participant_level(config)
    from bids_mdpp.participant import run_group_level

    return run_group_level(config)
