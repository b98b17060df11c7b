"""FreeSurfer's SAMSEG with its lesion model on real labelled scans, per subset of contrasts.

A comparison row for ``benchmarks/real_scans.py``: the same labelled sessions, the same subsets
of contrasts and the same scores, from a well-known contrast-adaptive (generative, not trained
on lesion masks) whole-brain and lesion segmenter, SAMSEG (Cerri et al., NeuroImage 225,
117471, 2021; PyPI ``samseg``, MIT licence).

For every requested subset of contrasts (``--subsets``, written like
:func:`bids_mdpp.contrasts.subset_name`, ``"T1w+FLAIR"``; default: all 15 non-empty subsets of
T1w, FLAIR, T2w and ceT1w, largest first) and every session of ``--data`` that holds the whole
subset and has a reference mask in ``--labels``:

1. ``run_samseg --input IMAGES --output DIR --threads N --lesion --lesion-mask-pattern P...
   [--pallidum-separate]`` runs on the session's images of the subset (the files the product's
   own discovery chooses, in the canonical order T1w, FLAIR, T2w, ceT1w: the first one is the
   grid SAMSEG writes on);
2. its lesions (label 99 of ``seg.mgz``, i.e. lesion posterior > 0.3, SAMSEG's default
   ``--threshold``) are brought onto the grid of the reference mask (nearest neighbour, only
   when the grids differ);
3. they are scored against the reference with the group level's functions
   (:func:`bids_mdpp.group.mask_on_grid`, :func:`bids_mdpp.metrics.score_masks`: DSC, PPV, TPR,
   LFPR, LTPR, VD, 18-connected lesions) on that native grid, and the predicted volume more
   than 3 mm from every reference lesion is measured
   (:func:`bids_mdpp.reliability.false_positive_volume_mm3`).

Lesion mask pattern (``--lesion-mask-pattern``, one value per input).  SAMSEG allows a voxel to
be lesion only where its intensity is below (-1) or above (+1) the mean of the
``--lesion-mask-structure`` (cerebral cortex by default) in that contrast; 0 puts no
constraint (``run_samseg --help``; ``SamsegLesion.py``).  FreeSurfer's example for MS
(surfer.nmr.mgh.harvard.edu/fswiki/Samseg) is T1w + FLAIR with ``--lesion-mask-pattern 0 1``
and ``--pallidum-separate`` ("use this flag when T2/flair is used").  So: +1 for FLAIR and T2w
(MS lesions are brighter than cortex on both), 0 for T1w and ceT1w (FreeSurfer puts no
constraint on T1w rather than -1; on ceT1w enhancing lesions are bright and older ones dark,
so no direction holds); ``--pallidum-separate`` whenever FLAIR or T2w is an input.  A subset
of T1w and/or ceT1w alone therefore has no intensity constraint at all.

Without ``--lesion-mask-pattern`` SAMSEG would assume 0 for every input.  SAMSEG is meant for
whole-head scans without preprocessing; it masks out zero-intensity voxels, so skull-stripped
inputs (as MSLUB's are) run, outside the conditions it was validated for.

SAMSEG is no dependency of bids_mdpp: it lives in its own virtual environment
(``--samseg-venv``, default ``$SAMSEG_VENV`` or ``/opt/samseg-venv``), made with::

    python3 -m venv /opt/samseg-venv
    /opt/samseg-venv/bin/pip install samseg tensorflow-cpu "numpy<2"

(samseg 0.4a0 with tensorflow-cpu 2.21 and numpy 1.26.4 on Python 3.11: about 75 s and 1.9 GB,
1.3 GB of which is TensorFlow.  samseg does not require TensorFlow, but ``--lesion`` imports it
for the lesion shape model; samseg 0.4a0 itself requires numpy < 2.)  This script only calls
``DIR/bin/run_samseg`` as a subprocess.

Each run's output stays in ``--work`` (``WORK/<subset>/<session>/``, with ``samseg.log`` and
``run.json``); a session whose ``run.json`` says it finished, with the same inputs and options,
is only rescored, so a killed benchmark resumes where it stopped.  Results are written to
``--output`` before every run (``"running"``: the subset and session under way, and since when)
and after every finished one (``"complete": false`` until all are done), so an interrupted
benchmark leaves what it finished and where it stopped.

Recorded per run: wall seconds; peak memory, as ``ru_maxrss`` of that SAMSEG process (and its
children) from ``os.wait4`` — the per-process value of ``resource.getrusage(RUSAGE_CHILDREN)``,
which is a running maximum over every child this script has waited for, also kept, as
``rusage_children_maxrss_mib``; the exact command line; the thread settings (``--threads`` is
passed to SAMSEG and to its OpenMP, BLAS and TensorFlow pools through the environment).  The
document also holds SAMSEG's, TensorFlow's and numpy's versions in the environment and the
machine's load average at start and at the last write.

Usage::

    python benchmarks/samseg.py [--samseg-venv DIR] [--data ../shared/data/mslub-cross] \\
        [--labels DATA/derivatives/manual] [--subsets "FLAIR,T1w,T1w+FLAIR"] [--threads N] \\
        [--work DIR] [--output benchmarks/results/samseg.json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_scans  # noqa: E402  (subset parsing, errors, the work folder)

from real_scans import BenchmarkError  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mslub-cross"
DEFAULT_VENV = Path("/opt/samseg-venv")
VENV_VARIABLE = "SAMSEG_VENV"
RESULTS = HERE / "results" / "samseg.json"
#: The contrasts of the default subsets (every non-empty subset of them).
DEFAULT_CONTRASTS = ("T1w", "FLAIR", "T2w", "ceT1w")
#: ``--lesion-mask-pattern`` value per contrast (see the module docstring).
LESION_MASK_PATTERN = {"T1w": 0, "ceT1w": 0, "FLAIR": 1, "T2w": 1, "PDw": 0}
#: Contrasts with which FreeSurfer asks for ``--pallidum-separate``.
PALLIDUM_SEPARATE_WITH = frozenset({"FLAIR", "T2w"})
#: SAMSEG's label of lesions in ``seg.mgz``.
LESION_LABEL = 99
#: Scores of each session, averaged over the sessions of a subset.
SCORES = ("dsc", "ppv", "tpr", "lfpr", "ltpr", "vd", "false_positive_away_mm3")
#: Environment variables set to ``--threads`` for SAMSEG.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
#: Marker of a finished run in its output folder.
RUN_RECORD = "run.json"
#: Lines of a failed run's log quoted in the error.
LOG_TAIL_LINES = 25


# --- inputs -----------------------------------------------------------------------------------

def default_subsets() -> str:
    """Every non-empty subset of :data:`DEFAULT_CONTRASTS`, largest first, comma-separated."""
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.training.trainer import contrast_subsets

    return ",".join(subset_name(s) for s in contrast_subsets(DEFAULT_CONTRASTS, "all"))


def parse_subsets(text: str) -> list[tuple[str, ...]]:
    """``"T1w+FLAIR,FLAIR"`` → ``[("T1w", "FLAIR"), ("FLAIR",)]`` (canonical order, no
    repeats); :class:`BenchmarkError` naming an unknown contrast."""
    return real_scans.parse_subsets(text)


def run_samseg_path(venv: Path) -> Path:
    """``VENV/bin/run_samseg``, checked: :class:`BenchmarkError` naming what is missing."""
    hint = (f"create it with: python3 -m venv {venv} && {venv}/bin/pip install samseg "
            f"tensorflow-cpu \"numpy<2\"")
    if not venv.is_dir():
        raise BenchmarkError(f"{venv}: SAMSEG virtual environment does not exist (or is not a "
                             f"folder); {hint}, or name another with --samseg-venv or "
                             f"${VENV_VARIABLE}")
    script = venv / "bin" / "run_samseg"
    if not script.is_file():
        raise BenchmarkError(f"{script}: no run_samseg in the SAMSEG virtual environment; {hint}")
    if not os.access(script, os.X_OK):
        raise BenchmarkError(f"{script}: run_samseg is not executable")
    return script


def installed_versions(venv: Path, names: Sequence[str] = ("samseg", "tensorflow-cpu",
                                                           "tensorflow", "numpy")) -> dict:
    """Version of each distribution installed in ``venv`` (None when absent), read from its
    ``*.dist-info`` folder without starting the environment's interpreter."""
    found: dict[str, str | None] = {}
    for name in names:
        wanted = name.replace("-", "_").lower()
        version = None
        for info in sorted(venv.glob("lib/python*/site-packages/*.dist-info")):
            dist, _, rest = info.name.removesuffix(".dist-info").partition("-")
            if dist.replace("-", "_").lower() == wanted and rest:
                version = rest
                break
        found[name] = version
    return found


def check_folders(data_dir: Path, labels_dir: Path) -> None:
    """:class:`BenchmarkError` naming the first of the two folders that does not exist."""
    for what, path in (("BIDS dataset", data_dir), ("labels directory", labels_dir)):
        if not path.is_dir():
            raise BenchmarkError(f"{path}: {what} does not exist (or is not a folder)")


def labelled_sessions(data_dir: Path, labels_dir: Path) -> dict[str, dict]:
    """Session key → ``{"participant_id", "session_id", "files": contrast → image,
    "reference": mask}`` for every session of ``data_dir`` with a reference mask in
    ``labels_dir``; :class:`BenchmarkError` when there is none."""
    from bids_mdpp.bids import discover, find_reference_mask
    from bids_mdpp.errors import BidsMdppError

    try:
        sessions = discover(data_dir)
    except BidsMdppError as exc:
        raise BenchmarkError(f"{data_dir}: {exc}") from exc
    found = {}
    for session in sessions:
        reference = find_reference_mask(labels_dir, session.subject, session.session)
        if reference is None:
            continue
        found[session.key] = {
            "participant_id": f"sub-{session.subject}",
            "session_id": f"ses-{session.session}" if session.session else None,
            "files": dict(session.files), "reference": reference}
    if not found:
        raise BenchmarkError(f"{labels_dir}: no reference lesion mask for any session of "
                             f"{data_dir} (sessions: "
                             f"{', '.join(s.key for s in sessions) or 'none'})")
    return found


def sessions_with_subset(sessions: Mapping[str, Mapping], subset: Sequence[str],
                         data_dir: Path) -> list[str]:
    """The labelled sessions holding every contrast of ``subset``; :class:`BenchmarkError`
    naming ``data_dir`` and the missing contrast when there is none."""
    from bids_mdpp.contrasts import subset_name

    name = subset_name(subset)
    for contrast in subset:
        if not any(contrast in s["files"] for s in sessions.values()):
            raise BenchmarkError(
                f"subset {name}: no labelled session of {data_dir} has a {contrast} image "
                f"(sessions: {', '.join(sessions)})")
    chosen = [key for key, s in sessions.items() if all(c in s["files"] for c in subset)]
    if not chosen:
        raise BenchmarkError(
            f"subset {name}: no labelled session of {data_dir} has all of {', '.join(subset)}")
    return chosen


# --- running SAMSEG ---------------------------------------------------------------------------

def samseg_command(run_samseg: Path, images: Mapping[str, Path], out_dir: Path,
                   threads: int) -> list[str]:
    """The ``run_samseg`` command for ``images`` (contrast → file, in canonical order)."""
    contrasts = list(images)
    command = [str(run_samseg), "--input", *(str(images[c]) for c in contrasts),
               "--output", str(out_dir), "--threads", str(threads), "--lesion",
               "--lesion-mask-pattern", *(str(LESION_MASK_PATTERN[c]) for c in contrasts)]
    if PALLIDUM_SEPARATE_WITH.intersection(contrasts):
        command.append("--pallidum-separate")
    return command


def _without_threads(command: Sequence[str]) -> list[str]:
    """``command`` less its ``--threads N`` (the result does not depend on it)."""
    out, skip = [], False
    for part in command:
        if skip:
            skip = False
        elif part == "--threads":
            skip = True
        else:
            out.append(part)
    return out


def finished_run(out_dir: Path, command: Sequence[str]) -> dict | None:
    """The ``run.json`` record of a finished run of ``command`` in ``out_dir`` with its
    ``seg.mgz``, else None (no run, an unfinished one, or one with other inputs or options)."""
    record_path, seg = out_dir / RUN_RECORD, out_dir / "seg.mgz"
    if not (record_path.is_file() and seg.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or _without_threads(record.get("command", [])) != \
            _without_threads(command):
        return None
    return record


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _mib(kib: int) -> float:
    """``ru_maxrss`` (KiB on Linux) in MiB."""
    return round(kib / 1024, 1)


def run_samseg(command: Sequence[str], out_dir: Path, threads: int) -> dict:
    """Run SAMSEG into a fresh ``out_dir`` (its output in ``out_dir/samseg.log``), write and
    return the run record; :class:`BenchmarkError` with the log's tail when it fails."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    log = out_dir / "samseg.log"
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    with log.open("w") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        try:
            process = subprocess.Popen(list(command), stdout=handle, stderr=subprocess.STDOUT,
                                       env=env)
        except OSError as exc:
            raise BenchmarkError(f"{command[0]}: cannot be started ({exc})") from exc
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise BenchmarkError(
            f"`{shlex.join(command)}` exited with code {process.returncode} (full output: "
            f"{log}); end of its output:\n{_tail(log) or '(empty)'}")
    if not (out_dir / "seg.mgz").is_file():
        raise BenchmarkError(f"{out_dir / 'seg.mgz'}: SAMSEG finished without writing it "
                             f"(see {log})")
    record = {
        "command": list(command),
        "environment": {name: str(threads) for name in THREAD_VARIABLES},
        "niceness": os.nice(0),
        "started": started_at,
        "seconds": round(seconds, 1),
        "peak_rss_mib": _mib(usage.ru_maxrss),
        "rusage_children_maxrss_mib": _mib(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        "user_seconds": round(usage.ru_utime, 1),
        "system_seconds": round(usage.ru_stime, 1),
    }
    (out_dir / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


# --- scoring ----------------------------------------------------------------------------------

def lesions_on_grid(seg_path: Path, target) -> tuple[np.ndarray, bool]:
    """SAMSEG's lesions (label :data:`LESION_LABEL` of ``seg_path``) as a bool mask on the grid
    of the image ``target``; True when it had to be resampled (nearest neighbour)."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    try:
        seg = nib.load(str(seg_path))
        labels = np.asarray(seg.dataobj)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported by name
        raise BenchmarkError(f"{seg_path}: not a readable segmentation ({exc})") from exc
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
    lesions = labels == LESION_LABEL
    if lesions.shape == tuple(target.shape[:3]) and np.allclose(seg.affine, target.affine,
                                                                atol=1e-3):
        return lesions, False
    moving = nib.Nifti1Image(lesions.astype(np.uint8), seg.affine)
    return np.asarray(resample_from_to(moving, target, order=0).dataobj) > 0, True


def _value(x) -> float | int | None:
    """A JSON number: NaN and infinities → None, floats rounded to 10 digits."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return round(x, 10) if math.isfinite(x) else None


def score_session(seg_path: Path, reference: Path) -> dict:
    """SAMSEG's lesions scored against ``reference`` on its grid, as the group level does."""
    import nibabel as nib

    from bids_mdpp.errors import InputDataError
    from bids_mdpp.group import mask_on_grid
    from bids_mdpp.imageio import load_image
    from bids_mdpp.lesions import voxel_volume_mm3
    from bids_mdpp.metrics import score_masks
    from bids_mdpp.reliability import false_positive_volume_mm3

    try:
        grid = load_image(reference, check_data=False)
    except InputDataError as exc:
        raise BenchmarkError(str(exc)) from exc
    predicted, resampled = lesions_on_grid(seg_path, grid)
    prediction = nib.Nifti1Image(predicted.astype(np.uint8), grid.affine)
    truth, _ = mask_on_grid(reference, prediction)
    scores = score_masks(predicted, truth, voxel_volume_mm3(grid.affine)).as_dict()
    record = {name: _value(value) for name, value in scores.items()}
    record["false_positive_away_mm3"] = round(false_positive_volume_mm3(
        predicted, truth, tuple(float(z) for z in grid.header.get_zooms()[:3])), 1)
    record["samseg_resampled"] = resampled
    return record


# --- one subset -------------------------------------------------------------------------------

def subset_folder(work: Path, subset: Sequence[str]) -> Path:
    """``WORK/T1w-FLAIR``."""
    from bids_mdpp.contrasts import subset_name

    return work / subset_name(subset).replace("+", "-")


def run_session(subset: Sequence[str], key: str, session: Mapping, run_samseg_script: Path,
                args: argparse.Namespace) -> dict:
    """SAMSEG on one session's ``subset`` (or its finished run reused), scored."""
    from bids_mdpp.contrasts import CONTRASTS

    images = {c: Path(session["files"][c]).absolute() for c in CONTRASTS if c in subset}
    out_dir = subset_folder(args.work, subset) / key
    command = samseg_command(run_samseg_script, images, out_dir, args.threads)
    run = finished_run(out_dir, command)
    reused = run is not None
    if run is None:
        run = run_samseg(command, out_dir, args.threads)
    scores = score_session(out_dir / "seg.mgz", session["reference"])
    return {"participant_id": session["participant_id"], "session_id": session["session_id"],
            "inputs": {c: str(p) for c, p in images.items()},
            "reference_mask": str(session["reference"]), **scores,
            "seconds": run.get("seconds"), "peak_rss_mib": run.get("peak_rss_mib"),
            "rusage_children_maxrss_mib": run.get("rusage_children_maxrss_mib"),
            "command": shlex.join(run["command"]), "run_started": run.get("started"),
            "niceness": run.get("niceness"), "rescored_only": reused,
            "output": str(out_dir)}


def summarise(records: Sequence[Mapping]) -> dict:
    """Mean of :data:`SCORES` over the sessions (None values skipped), total seconds, largest
    peak memory."""
    summary: dict = {}
    for name in SCORES:
        values = [r[name] for r in records if r.get(name) is not None]
        summary[name] = round(sum(values) / len(values), 4) if values else None
    seconds = [r["seconds"] for r in records if r.get("seconds") is not None]
    peaks = [r["peak_rss_mib"] for r in records if r.get("peak_rss_mib") is not None]
    summary["seconds"] = round(sum(seconds), 1) if seconds else None
    summary["peak_rss_mib"] = max(peaks) if peaks else None
    summary["n_sessions"] = len(records)
    return summary


# --- entry point ------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; ``--labels`` defaults to ``DATA/derivatives/manual``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samseg-venv", type=Path,
                        default=Path(os.environ.get(VENV_VARIABLE) or DEFAULT_VENV),
                        help=f"virtual environment with samseg installed (default: "
                             f"${VENV_VARIABLE}, else {DEFAULT_VENV})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled BIDS dataset")
    parser.add_argument("--labels", type=Path,
                        help="reference lesion masks (default: DATA/derivatives/manual)")
    parser.add_argument("--subsets", default=None,
                        help="comma-separated subsets of contrasts, e.g. 'T1w+FLAIR,FLAIR' "
                             "(default: all 15 non-empty subsets of T1w, FLAIR, T2w, ceT1w)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of each SAMSEG run (default: 1)")
    parser.add_argument("--work", type=Path,
                        help="SAMSEG outputs; keep it to resume (default: a temporary folder, "
                             "removed)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.subsets = args.subsets if args.subsets is not None else default_subsets()
    args.samseg_venv = args.samseg_venv.expanduser().absolute()
    args.data = args.data.expanduser().absolute()
    args.labels = (args.labels or args.data / "derivatives" / "manual").expanduser().absolute()
    args.output = args.output.expanduser().absolute()
    return args


def write_result(result: Mapping, output: Path) -> None:
    """``result`` as JSON in ``output`` (through a temporary file, so it is never half
    written)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(output)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def benchmark(args: argparse.Namespace) -> dict:
    """Run every subset of ``args.subsets``; the result document (also written to
    ``args.output`` after every session)."""
    from bids_mdpp import __version__
    from bids_mdpp.contrasts import subset_name

    subsets = parse_subsets(args.subsets)
    script = run_samseg_path(args.samseg_venv)
    check_folders(args.data, args.labels)
    sessions = labelled_sessions(args.data, args.labels)
    chosen = {subset: sessions_with_subset(sessions, subset, args.data) for subset in subsets}
    versions = installed_versions(args.samseg_venv)
    result: dict = {
        "method": "SAMSEG with its lesion model (run_samseg --lesion)",
        "samseg_version": versions.get("samseg"),
        "environment_versions": versions,
        "samseg_venv": str(args.samseg_venv),
        "data": str(args.data),
        "labels": str(args.labels),
        "threads": args.threads,
        "lesion_mask_pattern": {c: LESION_MASK_PATTERN[c] for c in DEFAULT_CONTRASTS},
        "lesion_label": LESION_LABEL,
        "subsets": {},
        "complete": False,
        "bids_mdpp": __version__,
        "command_line": shlex.join(["python", "benchmarks/samseg.py", *args.argv]),
        "cpu_count": os.cpu_count(),
        "niceness": os.nice(0),
        "load_average_start": _load(),
        "load_average_end": None,
        "rusage_children_maxrss_mib": None,
        "created": _now(),
    }
    for subset in subsets:
        name = subset_name(subset)
        records = []
        for key in chosen[subset]:
            result["running"] = {"subset": name, "session": key, "since": _now()}
            result["load_average_end"] = _load()
            write_result(result, args.output)
            records.append(run_session(subset, key, sessions[key], script, args))
            result["subsets"][name] = {**summarise(records), "sessions": list(records)}
            result["load_average_end"] = _load()
            result["rusage_children_maxrss_mib"] = _mib(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            write_result(result, args.output)
        entry = result["subsets"][name]
        dsc = "n/a" if entry["dsc"] is None else f"{entry['dsc']:.4f}"
        print(f"{name}: DSC {dsc}, PPV {entry['ppv']}, TPR {entry['tpr']}, false positives "
              f"> 3 mm {entry['false_positive_away_mm3']} mm³, {entry['seconds']} s, peak "
              f"{entry['peak_rss_mib']} MiB", flush=True)
    result.pop("running", None)
    result["complete"] = True
    result["load_average_end"] = _load()
    write_result(result, args.output)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        real_scans.in_work_dir(benchmark, args, "bids_mdpp-samseg-")
        print(f"wrote {args.output}")
    except BenchmarkError as exc:
        print(f"samseg.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
