"""A model's accuracy on real labelled scans, per subset of contrasts, as users run the product.

For every requested subset of contrasts (``--subsets``, written like
:func:`bids_mdpp.contrasts.subset_name`: ``"T1w+FLAIR"``):

1. a BIDS dataset is built under ``--work`` holding only that subset's images of every session
   that has all of them (symbolic links to the NIfTI files and their JSON sidecars, plus
   ``dataset_description.json``, ``participants.tsv`` and ``participants.json``; nothing else);
2. the console script runs on it exactly as a user would: ``bids_mdpp SUBSET_BIDS OUT
   participant --model MODEL -w WORK --notrack`` (no ``--threshold``, so the model card's
   threshold for those contrasts applies), then ``bids_mdpp SUBSET_BIDS OUT group --labels
   LABELS``;
3. the group level's per-session scores (``group_scores.tsv``: DSC, PPV, TPR, LFPR, LTPR, VD on
   the native grid of the reference contrast, 18-connected lesions) are read, together with the
   threshold each session's mask was made with (``Threshold`` of its mask sidecar);
4. the views of :mod:`bids_mdpp.reliability` are computed from each session's probability map,
   mask and reference (:data:`VIEWS`): the expected calibration error over the brain (voxels with
   a non-zero probability) and over the lesion region, the median probability inside the
   reference lesions, and the predicted volume (mm³) more than 3 mm from every reference lesion.

``--tta`` runs the participant level with ``--tta`` (left-right flip averaging).

Scores are averaged over the scored sessions (n/a values skipped, as the group summary does).
The preprocessing cache of each subset lives in ``--work``, so a second run with the same
``--work`` only redoes inference and scoring.  Writes ``benchmarks/results/real_scans.json``;
with ``--write-card`` the model card's ``metrics.real_scans`` is replaced by the results
(the structure :meth:`bids_mdpp.model.ModelCard.real_scan_dsc` reads).

Usage::

    python benchmarks/real_scans.py [--model MODEL_DIR] [--data ../shared/data/mslub-cross] \
        [--labels DATA/derivatives/manual] \
        [--subsets "T1w+FLAIR+T2w+ceT1w,T1w+FLAIR,FLAIR,T2w,T1w"] [--work DIR] [--nprocs N] \
        [--tta] [--intensity-model combine|off] [--output benchmarks/results/real_scans.json] \
        [--write-card]

``--intensity-model`` is passed to the participant level (default ``combine``, as there); the
card's ``metrics.real_scans`` records it, and the participant level's low-accuracy caution reads
only numbers measured with the intensity model it runs with.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mslub-cross"
RESULTS = HERE / "results" / "real_scans.json"
DEFAULT_SUBSETS = "T1w+FLAIR+T2w+ceT1w,T1w+FLAIR,FLAIR,T2w,T1w"
#: Per-session scores of ``group_scores.tsv`` that are reported and averaged.
SCORES = ("dsc", "ppv", "tpr", "lfpr", "ltpr", "vd")
#: Calibration and false-positive views of each session (:func:`session_views`), averaged like
#: :data:`SCORES`.
VIEWS = ("ece_brain", "ece_lesion_region", "median_probability_in_lesions",
         "false_positive_away_mm3")
#: Further ``group_scores.tsv`` columns kept in each session's record.
VOLUMES = ("predicted_volume_mm3", "reference_volume_mm3", "predicted_lesions",
           "reference_lesions")
#: Top-level files of the input dataset copied into every subset dataset (when present).
TOP_LEVEL_FILES = ("dataset_description.json", "participants.tsv", "participants.json")
PAPER_KEY = "paper_table_1_moddrop++_dsc"
#: Lines of a failed command's stderr quoted in the error.
STDERR_TAIL_LINES = 25


class BenchmarkError(Exception):
    """A problem with the benchmark's inputs or a failed ``bids_mdpp`` command."""


# --- inputs -----------------------------------------------------------------------------------

def parse_subsets(text: str) -> list[tuple[str, ...]]:
    """``"T1w+FLAIR,FLAIR"`` → ``[("T1w", "FLAIR"), ("FLAIR",)]``: canonical order, no repeats."""
    from bids_mdpp.contrasts import CONTRASTS, parse_contrasts

    subsets: list[tuple[str, ...]] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            present = set(parse_contrasts(entry.split("+")))
        except ValueError as exc:
            raise BenchmarkError(f"subset {entry!r}: {exc}") from exc
        subset = tuple(c for c in CONTRASTS if c in present)
        if subset not in subsets:
            subsets.append(subset)
    if not subsets:
        raise BenchmarkError(f"no subset of contrasts in {text!r}")
    return subsets


def check_inputs(model_dir: Path, data_dir: Path, labels_dir: Path) -> None:
    """Raise :class:`BenchmarkError` naming the first of the three folders that does not exist."""
    for what, path in (("model directory", model_dir), ("BIDS dataset", data_dir),
                       ("labels directory", labels_dir)):
        if not path.is_dir():
            raise BenchmarkError(f"{path}: {what} does not exist (or is not a folder)")


def read_model_card(model_dir: Path):
    """The :class:`~bids_mdpp.model.ModelCard` of ``model_dir`` (errors name the card file)."""
    from bids_mdpp.errors import ModelError
    from bids_mdpp.model import CARD_NAME, read_card

    try:
        return read_card(model_dir / CARD_NAME)
    except ModelError as exc:
        raise BenchmarkError(str(exc)) from exc


def session_images(data_dir: Path) -> dict[str, dict[str, tuple[Path, ...]]]:
    """Every session of ``data_dir`` (``"sub-26"``, ``"sub-01_ses-1"``) → contrast → its images.

    The product's own discovery decides which file is which contrast (a T1w with a ``ce-``
    entity is ceT1w); all candidates of a contrast are listed, so the participant level makes
    its own choice among them.
    """
    from bids_mdpp.bids import discover
    from bids_mdpp.errors import BidsMdppError

    try:
        sessions = discover(data_dir)
    except BidsMdppError as exc:
        raise BenchmarkError(f"{data_dir}: {exc}") from exc
    return {session.key: {contrast: tuple(paths) for contrast, paths in session.candidates.items()}
            for session in sessions}


def sessions_with_subset(sessions: Mapping[str, Mapping[str, Sequence[Path]]],
                         subset: Sequence[str], data_dir: Path) -> list[str]:
    """The sessions holding every contrast of ``subset``.

    Raises :class:`BenchmarkError` when a contrast of the subset is in no session at all, or
    when no session holds the whole subset.
    """
    from bids_mdpp.contrasts import subset_name

    name = subset_name(subset)
    for contrast in subset:
        if not any(contrast in images for images in sessions.values()):
            raise BenchmarkError(
                f"subset {name}: no session of {data_dir} has a {contrast} image "
                f"(sessions: {', '.join(sessions) or 'none'})")
    chosen = [key for key, images in sessions.items() if all(c in images for c in subset)]
    if not chosen:
        raise BenchmarkError(
            f"subset {name}: no session of {data_dir} has all of {', '.join(subset)}")
    return chosen


# --- the subset dataset -----------------------------------------------------------------------

def sidecar_of(image: Path) -> Path:
    """The JSON sidecar beside a NIfTI file (``x_T1w.nii.gz`` → ``x_T1w.json``)."""
    name = image.name
    for extension in (".nii.gz", ".nii"):
        if name.endswith(extension):
            return image.with_name(name[: -len(extension)] + ".json")
    return image.with_suffix(".json")


def _link(source: Path, dest: Path) -> None:
    """A symbolic link ``dest`` → the absolute path of ``source`` (folders made as needed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(source.resolve())


def build_subset_dataset(data_dir: Path, sessions: Mapping[str, Mapping[str, Sequence[Path]]],
                         keys: Sequence[str], subset: Sequence[str], dest: Path) -> list[Path]:
    """Make ``dest`` a BIDS dataset of the ``subset`` images of the sessions ``keys`` only.

    Every image keeps its path relative to ``data_dir``; its JSON sidecar comes along when it
    has one, and so do the dataset's :data:`TOP_LEVEL_FILES`.  An existing ``dest`` is replaced.
    Returns the files linked, relative to ``dest``.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    linked: list[Path] = []
    for name in TOP_LEVEL_FILES:
        if (data_dir / name).is_file():
            _link(data_dir / name, dest / name)
            linked.append(Path(name))
    for key in keys:
        for contrast in subset:
            for image in sessions[key][contrast]:
                for source in (image, sidecar_of(image)):
                    if source.is_file():
                        relative = source.relative_to(data_dir)
                        _link(source, dest / relative)
                        linked.append(relative)
    return sorted(linked)


# --- running the product ----------------------------------------------------------------------

def bids_mdpp_command() -> list[str]:
    """The console script beside this interpreter (``python -m bids_mdpp`` without one)."""
    script = Path(sys.executable).with_name("bids_mdpp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bids_mdpp"]


def run_command(command: Sequence[str], log: Path) -> float:
    """Run ``command``, keep its output in ``log``; returns wall seconds.

    Raises :class:`BenchmarkError` with the tail of its stderr when it exits non-zero.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run(list(command), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log.write_text(f"$ {shlex.join(command)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        raise BenchmarkError(
            f"`{shlex.join(command)}` exited with code {done.returncode} (full output: {log}); "
            f"end of its stderr:\n{tail or '(empty)'}")
    return seconds


def participant_command(bids_dir: Path, out_dir: Path, work_dir: Path, model_dir: Path,
                        nprocs: int | None, tta: bool = False,
                        intensity_model: str = "combine") -> list[str]:
    """``bids_mdpp BIDS OUT participant`` with the model card's thresholds (no ``--threshold``)
    and ``--intensity-model`` stated."""
    command = [*bids_mdpp_command(), str(bids_dir), str(out_dir), "participant",
               "--model", str(model_dir), "-w", str(work_dir), "--notrack",
               "--intensity-model", intensity_model]
    if nprocs:
        command += ["--nprocs", str(nprocs)]
    if tta:
        command.append("--tta")
    return command


def group_command(bids_dir: Path, out_dir: Path, labels_dir: Path) -> list[str]:
    """``bids_mdpp BIDS OUT group --labels LABELS``."""
    return [*bids_mdpp_command(), str(bids_dir), str(out_dir), "group", "--labels", str(labels_dir)]


# --- reading the group level ------------------------------------------------------------------

def _read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a BIDS TSV file."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: the group level did not write this file")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _number(text: str | None) -> float | None:
    """A TSV cell as a float; ``n/a``, empty or non-finite → None."""
    if text is None or text.strip() in ("", "n/a"):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _session_id(text: str | None) -> str | None:
    """The ``session_id`` cell, None for ``n/a`` (a dataset without sessions)."""
    return None if text in (None, "", "n/a") else text


def mask_thresholds(out_dir: Path) -> dict[tuple[str, str | None], float | None]:
    """(participant_id, session_id) → ``Threshold`` of the mask sidecar the group level used."""
    thresholds: dict[tuple[str, str | None], float | None] = {}
    for row in _read_tsv(out_dir / "group_lesions.tsv"):
        mask = out_dir / row["mask_file"]
        sidecar = mask.with_name(mask.name.removesuffix(".nii.gz") + ".json")
        value = json.loads(sidecar.read_text(encoding="utf-8")).get("Threshold")
        thresholds[(row["participant_id"], _session_id(row.get("session_id")))] = (
            float(value) if isinstance(value, (int, float)) else None)
    return thresholds


def _finite(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def session_views(out_dir: Path, labels_dir: Path) -> dict[tuple[str, str | None], dict]:
    """(participant_id, session_id) → :data:`VIEWS` and the lesion-region reliability curve,
    from the session's probability map and mask and its reference on the mask's grid."""
    from bids_mdpp import reliability
    from bids_mdpp.bids import find_reference_mask
    from bids_mdpp.group import mask_on_grid
    from bids_mdpp.imageio import load_image

    views = {}
    for row in _read_tsv(out_dir / "group_lesions.tsv"):
        participant, session = row["participant_id"], _session_id(row.get("session_id"))
        reference = find_reference_mask(labels_dir, participant.removeprefix("sub-"),
                                        session.removeprefix("ses-") if session else None)
        if reference is None:
            continue
        mask_path = out_dir / row["mask_file"]
        mask_img = load_image(mask_path, check_data=False)
        probseg = mask_path.with_name(mask_path.name.replace("_mask.nii", "_probseg.nii"))
        probability = np.asarray(load_image(probseg, check_data=False).dataobj, dtype=np.float64)
        truth, _ = mask_on_grid(reference, mask_img)
        region = reliability.lesion_region(probability, truth)
        curve = reliability.reliability_curve(probability, truth, region)
        views[(participant, session)] = {
            "ece_brain": _finite(reliability.expected_calibration_error(
                reliability.reliability_curve(probability, truth, probability > 0))),
            "ece_lesion_region": _finite(reliability.expected_calibration_error(curve)),
            "median_probability_in_lesions": _finite(
                reliability.median_probability_inside(probability, truth)),
            "false_positive_away_mm3": round(reliability.false_positive_volume_mm3(
                np.asarray(mask_img.dataobj) > 0, truth, mask_img.header.get_zooms()[:3]), 1),
            "reliability_lesion_region": curve.to_dict(),
        }
    return views


def read_group_scores(out_dir: Path, labels_dir: Path | None = None) -> list[dict]:
    """One record per scored session: ids, contrasts used, threshold, :data:`SCORES`, volumes,
    and with ``labels_dir`` the :data:`VIEWS` of :func:`session_views`."""
    thresholds = mask_thresholds(out_dir)
    views = session_views(out_dir, labels_dir) if labels_dir is not None else {}
    records = []
    for row in _read_tsv(out_dir / "group_scores.tsv"):
        participant, session = row["participant_id"], _session_id(row.get("session_id"))
        record = {"participant_id": participant, "session_id": session,
                  "contrasts_used": [c for c in row.get("contrasts_used", "").split(",") if c],
                  "threshold": thresholds.get((participant, session))}
        record.update({name: _number(row.get(name)) for name in (*SCORES, *VOLUMES)})
        record.update(views.get((participant, session), {}))
        records.append(record)
    return records


def mean_scores(sessions: Sequence[Mapping]) -> dict[str, float | None]:
    """Mean of each of :data:`SCORES` and :data:`VIEWS` over ``sessions``, skipping None; None
    when all are."""
    means: dict[str, float | None] = {}
    for name in (*SCORES, *VIEWS):
        values = [s[name] for s in sessions if s.get(name) is not None]
        means[name] = sum(values) / len(values) if values else None
    return means


def subset_threshold(sessions: Sequence[Mapping]) -> float | list[float] | None:
    """The threshold the sessions' masks were made with (a sorted list if they differ)."""
    values = sorted({s["threshold"] for s in sessions if s.get("threshold") is not None})
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# --- one subset -------------------------------------------------------------------------------

def run_subset(subset: tuple[str, ...], sessions: Mapping[str, Mapping[str, Sequence[Path]]],
               args: argparse.Namespace) -> dict:
    """Build the subset's dataset, run the participant and group levels, and read the scores."""
    from bids_mdpp.contrasts import subset_name

    name = subset_name(subset)
    keys = sessions_with_subset(sessions, subset, args.data)
    folder = args.work / name.replace("+", "-")
    bids_dir, out_dir = folder / "bids", folder / "out"
    build_subset_dataset(args.data, sessions, keys, subset, bids_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    seconds = run_command(participant_command(bids_dir, out_dir, folder / "work", args.model,
                                              args.nprocs, args.tta, args.intensity_model),
                          folder / "participant.log")
    seconds += run_command(group_command(bids_dir, out_dir, args.labels), folder / "group.log")
    scored = read_group_scores(out_dir, args.labels)
    for record in scored:
        if set(record["contrasts_used"]) != set(subset):
            print(f"warning: {name}: {record['participant_id']} {record['session_id'] or ''} used "
                  f"{', '.join(record['contrasts_used'])}", file=sys.stderr)
    if len(scored) < len(keys):
        print(f"warning: {name}: {len(scored)} of {len(keys)} session(s) scored "
              f"(see {out_dir / 'logs'})", file=sys.stderr)
    return {**mean_scores(scored), "threshold": subset_threshold(scored),
            "seconds": round(seconds, 1), "n_sessions": len(scored),
            "sessions_without_subset": sorted(set(sessions) - set(keys)), "sessions": scored}


# --- paper values and the model card ----------------------------------------------------------

def paper_moddrop_pp_dsc(names: Sequence[str],
                         card_section: Mapping | None) -> dict[str, float | None]:
    """The paper's MD++ DSC (Table 1, UMCL) of each subset name; None where it has none.

    Taken from the card's ``metrics.real_scans`` when it has them, else from the Table 1 that
    ``benchmarks/missing_modality.py`` holds.
    """
    known = dict((card_section or {}).get(PAPER_KEY) or {})
    missing = [n for n in names if n not in known]
    if missing:
        spec = importlib.util.spec_from_file_location("missing_modality",
                                                      HERE / "missing_modality.py")
        table = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(table)
        known.update({n: table.PAPER_TABLE_1[n][0][2] for n in missing if n in table.PAPER_TABLE_1})
    return {n: known.get(n) for n in names}


def _rounded(value):
    """``value`` rounded to 4 decimals (None stays None)."""
    return None if value is None else round(float(value), 4)


def _dataset_name(folder: Path) -> str | None:
    """The ``Name`` of a dataset's ``dataset_description.json``, if any."""
    try:
        return json.loads((folder / "dataset_description.json").read_text(encoding="utf-8"))["Name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_data(data_dir: Path, session_keys: Sequence[str], previous: str | None) -> str:
    """``"mslub-cross sub-26 (…)"``: the previous text of the card when it names the same
    dataset and sessions (it may say more than the files do), else one made from the files."""
    prefix = f"{data_dir.name} {', '.join(session_keys)}"
    if isinstance(previous, str) and (previous == prefix or previous.startswith(prefix + " (")):
        return previous
    name = _dataset_name(data_dir)
    return f"{prefix} ({name})" if name else prefix


def describe_reference(labels_dir: Path, data_dir: Path) -> str:
    """``"MSLUB consensus lesion masks (derivatives/manual)"``."""
    where = (labels_dir.resolve().relative_to(data_dir.resolve()).as_posix()
             if labels_dir.resolve().is_relative_to(data_dir.resolve()) else str(labels_dir))
    return f"{_dataset_name(labels_dir) or 'reference lesion masks'} ({where})"


def card_section(result: Mapping, previous: Mapping | None, data_dir: Path,
                 labels_dir: Path) -> dict:
    """The ``metrics.real_scans`` section of a model card made from a benchmark ``result``."""
    subsets = result["subsets"]
    session_keys = sorted({
        record["participant_id"] + (f"_{record['session_id']}" if record["session_id"] else "")
        for entry in subsets.values() for record in entry["sessions"]})
    n = len(session_keys)
    return {
        "intensity_model": result.get("intensity_model", "off"),
        "data": describe_data(data_dir, session_keys, (previous or {}).get("data")),
        "reference": describe_reference(labels_dir, data_dir),
        "procedure": (
            "bids_mdpp participant with only the listed contrasts present and the card's "
            "threshold for those contrasts (thresholds[subset], else threshold), then "
            "bids_mdpp group --labels; scores on the native grid of the reference contrast"
            + (f", mean over {n} sessions" if n > 1 else "") + " (benchmarks/real_scans.py)"),
        "dsc": {name: _rounded(entry["dsc"]) for name, entry in subsets.items()},
        "thresholds": {name: entry["threshold"] for name, entry in subsets.items()},
        "scores": {name: {score: _rounded(entry.get(score)) for score in (*SCORES, *VIEWS)
                          if score in SCORES or entry.get(score) is not None}
                   for name, entry in subsets.items()},
        PAPER_KEY: dict(result[PAPER_KEY]),
    }


def write_card_section(model_dir: Path, result: Mapping, data_dir: Path, labels_dir: Path) -> Path:
    """Replace ``metrics.real_scans`` of ``model_dir/model_card.json`` (atomically); returns it.

    Every other key of the card is kept as it is; the new card is checked before it is written.
    """
    return update_card_metrics(model_dir, lambda metrics: metrics.__setitem__(
        "real_scans", card_section(result, metrics.get("real_scans"), data_dir, labels_dir)))


def update_card_metrics(model_dir: Path, update: Callable[[dict], None]) -> Path:
    """Let ``update`` change the ``metrics`` of ``model_dir/model_card.json`` in place, check the
    card, and write it (atomically); every other key is kept.  Returns the card's path."""
    from bids_mdpp.imageio import write_json
    from bids_mdpp.model import CARD_NAME, ModelCard

    card_path = model_dir / CARD_NAME
    values = json.loads(card_path.read_text(encoding="utf-8"))
    metrics = values.get("metrics")
    if not isinstance(metrics, dict):
        metrics = values["metrics"] = {}
    update(metrics)
    try:
        ModelCard.from_dict(values)
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchmarkError(f"{card_path}: the updated card would be invalid ({exc})") from exc
    return write_json(values, card_path)


# --- entry point ------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; ``--labels`` defaults to ``DATA/derivatives/manual``."""
    from bids_mdpp.config import INTENSITY_MODEL_MODES
    from bids_mdpp.model import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR,
                        help="model directory (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled BIDS dataset")
    parser.add_argument("--labels", type=Path,
                        help="reference lesion masks (default: DATA/derivatives/manual)")
    parser.add_argument("--subsets", default=DEFAULT_SUBSETS,
                        help="comma-separated subsets of contrasts, e.g. 'T1w+FLAIR,FLAIR'")
    parser.add_argument("--work", type=Path,
                        help="subset datasets, outputs and preprocessing caches; keep it to "
                             "reuse the caches (default: a temporary folder, removed)")
    parser.add_argument("--nprocs", type=int, help="passed to the participant level")
    parser.add_argument("--tta", action="store_true",
                        help="run the participant level with --tta (left-right flip averaging)")
    parser.add_argument("--intensity-model", choices=INTENSITY_MODEL_MODES,
                        default=INTENSITY_MODEL_MODES[0],
                        help="passed to the participant level (its default: combine)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--write-card", action="store_true",
                        help="replace metrics.real_scans in MODEL/model_card.json")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.model = args.model.expanduser().absolute()
    args.data = args.data.expanduser().absolute()
    args.labels = (args.labels or args.data / "derivatives" / "manual").expanduser().absolute()
    return args


def benchmark(args: argparse.Namespace) -> dict:
    """Run every subset of ``args.subsets`` in ``args.work``; returns the result document."""
    from bids_mdpp import __version__
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.model import WEIGHTS_NAME, sha256_of

    check_inputs(args.model, args.data, args.labels)
    card = read_model_card(args.model)
    subsets = parse_subsets(args.subsets)
    sessions = session_images(args.data)
    for subset in subsets:
        sessions_with_subset(sessions, subset, args.data)
    weights = args.model / WEIGHTS_NAME
    results: dict[str, dict] = {}
    for subset in subsets:
        name = subset_name(subset)
        results[name] = run_subset(subset, sessions, args)
        entry = results[name]
        dsc = "n/a" if entry["dsc"] is None else f"{entry['dsc']:.4f}"
        print(f"{name}: DSC {dsc} over {entry['n_sessions']} session(s), threshold "
              f"{entry['threshold']}, {entry['seconds']:.0f} s", flush=True)
    previous = card.metrics.get("real_scans") if isinstance(card.metrics, dict) else None
    return {
        "model": str(args.model),
        "model_sha256": sha256_of(weights) if weights.is_file() else None,
        "data": str(args.data),
        "labels": str(args.labels),
        "tta": bool(args.tta), "intensity_model": args.intensity_model,
        "subsets": results,
        PAPER_KEY: paper_moddrop_pp_dsc(list(results), previous),
        "bids_mdpp": __version__,
        "command_line": shlex.join(["python", "benchmarks/real_scans.py", *args.argv]),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def in_work_dir(run: Callable[[argparse.Namespace], dict], args: argparse.Namespace,
                prefix: str) -> dict:
    """``run(args)`` with ``args.work`` made absolute, or a temporary folder (removed after)
    when it is None."""
    if args.work is not None:
        args.work = args.work.expanduser().absolute()
        return run(args)
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        args.work = Path(scratch)
        return run(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = in_work_dir(benchmark, args, "bids_mdpp-real-scans-")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")
        if args.write_card:
            print(f"updated {write_card_section(args.model, result, args.data, args.labels)}")
    except BenchmarkError as exc:
        print(f"real_scans.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
