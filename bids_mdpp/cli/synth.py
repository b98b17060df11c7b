"""``bids_mdpp synth``: write a synthetic multi-contrast MS dataset for training.

Only argument checks live here; :func:`bids_mdpp.synth.dataset.write_dataset` does the work.
"""
from __future__ import annotations

from pathlib import Path

import click

from bids_mdpp.contrasts import CONTRASTS, parse_contrasts
from bids_mdpp.errors import UsageError

_FRACTION = click.FloatRange(0.0, 1.0)
_CITATION = (
    "Please cite, for the lesion masks: Lesjak et al., Neuroinformatics 16:51-63 (2018), "
    "doi:10.1007/s12021-017-9348-7; for the anatomy: Fonov et al., NeuroImage 54:313-327 (2011)."
)


@click.command(name="synth", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n_subjects", type=click.IntRange(min=1), default=40, show_default=True,
              help="Number of subjects.")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True,
              help="Random seed: the same seed writes the same dataset.")
@click.option("--contrasts", default=",".join(CONTRASTS), show_default=True,
              help="Contrasts subjects may have (comma-separated); each subject gets a random subset.")
@click.option("--complete", is_flag=True,
              help="Every session has every contrast of --contrasts (no random subsets).")
@click.option("--sessions-fraction", type=_FRACTION, default=0.25, show_default=True,
              help="Share of subjects with a second session (0: no session folders).")
@click.option("--clean-fraction", type=_FRACTION, default=0.3, show_default=True,
              help="Share of subjects already preprocessed (1 mm, stripped, co-registered).")
@click.option("--skull-fraction", type=_FRACTION, default=0.7, show_default=True,
              help="Share of the other subjects whose images show skull and scalp.")
@click.option("--load-mix", default="free=0.1,low=0.2,typical=0.5,high=0.2", show_default=True,
              help="Share of each lesion-load class: free (no lesion), low (<= 1 ml), typical, "
                   "high (>= 50 ml, confluent); shares add up to 1.")
@click.option("--hard-negatives/--no-hard-negatives", default=True, show_default=True,
              help="Draw bright normal anatomy that is not lesion (periventricular caps and "
                   "bands, septum, cingulate and insula, choroid plexus, CSF inflow, "
                   "perivascular spaces).")
@click.option("--lesion-floor", default="", metavar="CONTRAST=LEVEL,...",
              help="Lowest mean lesion intensity per contrast, relative to white matter "
                   "(T2w, FLAIR, PDw; e.g. FLAIR=1.5): fainter draws are raised to it.")
@click.option("--normal-ceiling", default="", metavar="CONTRAST=LEVEL,...",
              help="Brightest normal tissue per contrast, relative to white matter (T2w, "
                   "FLAIR, PDw; e.g. FLAIR=1.2): grey matter and the hard negatives are held "
                   "at or below it.  Both bounds leave every other draw unchanged.")
@click.option("--scale", type=click.FloatRange(0.2, 1.0), default=1.0, show_default=True,
              help="Divide every voxel size by this (0.5: coarser, faster data for quick tests).")
@click.option("--nprocs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes.")
@click.option("--overwrite", is_flag=True,
              help="Replace a dataset previously written by this command in OUT_DIR.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
def synth(out_dir: Path, n_subjects: int, seed: int, contrasts: str, complete: bool,
          sessions_fraction: float, clean_fraction: float, skull_fraction: float,
          load_mix: str, hard_negatives: bool, lesion_floor: str, normal_ceiling: str,
          scale: float, nprocs: int, overwrite: bool,
          progress: bool) -> None:
    """Write a synthetic BIDS dataset of MS patients to OUT_DIR, with reference lesion masks.

    Real anatomy (the MNI152 2009 template, deformed per subject) and real lesion shapes
    (27 MSLUB consensus masks, recombined) are imaged as T1w, T2w, FLAIR, PDw and ce-T1w
    with random tissue intensities that respect each contrast's physics, on clinical 2D
    grids with bias fields and noise, among normal anatomy that is bright without being
    lesion, and lesion loads from none to confluent.  Masks go to
    OUT_DIR/derivatives/lesions (each sidecar gives the subject's load class and lesion
    volume, as does participants.tsv); every drawn parameter goes to OUT_DIR/manifest.json.
    """
    from tqdm import tqdm

    from bids_mdpp.synth.dataset import write_dataset
    from bids_mdpp.synth.bounds import check_bounds, parse_bounds
    from bids_mdpp.synth.load import parse_load_mix
    from bids_mdpp.synth.subject import SynthOptions

    try:
        chosen = parse_contrasts(contrasts)
    except ValueError as exc:
        raise UsageError(f"--contrasts: {exc}") from exc
    try:
        mix = parse_load_mix(load_mix)
    except ValueError as exc:
        raise UsageError(f"--load-mix: {exc}") from exc
    try:
        floor = parse_bounds(lesion_floor, "the lesion floor")
        ceiling = parse_bounds(normal_ceiling, "the normal-tissue ceiling")
        check_bounds(floor, ceiling)
    except ValueError as exc:
        raise UsageError(f"--lesion-floor / --normal-ceiling: {exc}") from exc
    pool = tuple(c for c in CONTRASTS if c in chosen)
    options = SynthOptions(contrasts=pool, sessions_fraction=sessions_fraction,
                           clean_fraction=clean_fraction, skull_fraction=skull_fraction,
                           scale=scale, complete=complete, load_mix=mix,
                           hard_negatives=hard_negatives, lesion_floor=floor,
                           normal_ceiling=ceiling)
    with tqdm(total=n_subjects, unit="subject", desc="synth", disable=not progress) as bar:
        manifest = write_dataset(out_dir, n_subjects, seed, options, nprocs=nprocs,
                                 overwrite=overwrite, on_subject_done=lambda label: bar.update())
    n_sessions = sum(len(s["sessions"]) for s in manifest["subjects"].values())
    written = f"{_count(n_subjects, 'subject')} ({_count(n_sessions, 'session')})"
    click.echo(f"Wrote {written} to {out_dir}; "
               f"lesion masks in {Path(out_dir) / 'derivatives' / 'lesions'}.")
    click.echo(_CITATION)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
