"""``bids_mdpp adapt`` on the real scans, leave one patient out: accuracy, time and memory.

Two directions, each adapting on one patient's unlabelled sessions and evaluating on the other:

1. **mslub-long → mslub-cross** (``--direction long-to-cross``).  ``bids_mdpp adapt`` on
   mslub-long sub-01 (two raw sessions, FLAIR, T1w and T2w) from the base model; then sub-26 of
   mslub-cross is segmented from every non-empty subset of its contrasts with the base and with
   the adapted model, and scored against the consensus mask: ``bids_mdpp calibrate --subsets
   all`` for each model (the session preprocessed once with all its contrasts, each subset
   segmented on the model grid, DSC at the card's threshold, 0.5 for the shipped model).
2. **mslub-cross → mslub-long** (``--direction cross-to-long``).  ``bids_mdpp adapt`` on sub-26
   (its labels are never given to it); then both sessions of mslub-long sub-01 are segmented
   from every subset of FLAIR, T1w and T2w with both models (preprocessed once with all their
   contrasts, as adapt caches them).  mslub-long has no lesion masks: what is measured is each
   session's total lesion volume on the model grid and how far the two sessions, 203 days
   apart, disagree (``|V1 − V2| / mean(V1, V2)``; lesion load changes little in that time, so a
   smaller difference is a more consistent segmentation, not a proven more accurate one).

Each ``adapt`` and ``calibrate`` runs as its own process through the console script; the
script itself re-executes with the tuned allocator, as the console script does.  ``adapt``'s
wall time is measured here; its peak resident memory and agreement table come from the adapted
model's card (``training.adaptation``, ``metrics.adaptation``).  Scoring every subset as users
run it (``benchmarks/real_scans.py``: one preprocessing per subset) would cost fifteen
preprocessings per model; the model-grid scores need one.

Usage::

    python benchmarks/adapt.py [--work DIR] [--direction both] [--nprocs N] [--epochs 4]
        [--steps-per-epoch 50] [--agreement-sessions 1] [--targets mask|soft] [--confidence C]
        [--teacher-intensity-model combine|off]
        [--lesion-share S] [--cross-subsets all] [--resume]
        [--output benchmarks/results/adapt.json]

``--work`` keeps the caches and both adapted models (default: a temporary folder); results of a
direction not run are kept from an existing ``--output``.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import importlib.util
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "results" / "adapt.json"
CROSS_SUBSETS = ("T1w", "FLAIR", "T2w", "ceT1w")
LONG_SUBSETS = ("T1w", "FLAIR", "T2w")
DIRECTIONS = ("both", "long-to-cross", "cross-to-long")


@functools.cache
def real_scans_module():
    """``benchmarks/real_scans.py``, imported once: it scores a model per subset as users run it."""
    spec = importlib.util.spec_from_file_location("real_scans", HERE / "real_scans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adapt_options(args) -> list[str]:
    """The ``bids_mdpp adapt`` options this benchmark passes on."""
    options = ["--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch),
               "--seed", str(args.seed), "--agreement-sessions", str(args.agreement_sessions),
               "--targets", args.targets, "--intensity-model", args.teacher_intensity_model]
    for name in ("confidence", "lesion_share", "nprocs"):
        if getattr(args, name):
            options += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return options + (["--resume"] if args.resume else [])


def adapt(real_scans, data: Path, model: Path, out: Path, work: Path, args) -> dict:
    """Run ``bids_mdpp adapt`` (own process); wall seconds, and the card's record of the run."""
    if out.exists() and not args.resume:
        shutil.rmtree(out)
    command = [*real_scans.bids_mdpp_command(), "adapt", str(data), str(out), "--model",
               str(model), "-w", str(work), *adapt_options(args)]
    seconds = real_scans.run_command(command, out.parent / f"{out.name}.log")
    card = json.loads((out / "model_card.json").read_text())
    record = card["training"]["adaptation"]
    return {"command": shlex.join(command), "wall_seconds": round(seconds, 1),
            "adapt_seconds": record["seconds"], "peak_rss_gb": record["peak_rss_gb"],
            "sessions": [s["session"] for s in record["sessions"]], "skipped": record["skipped"],
            "steps": record["steps"], "precision": record["precision"],
            "agreement": card["metrics"]["adaptation"]}


def score_cross(real_scans, model: Path, out: Path, work: Path, args) -> dict:
    """DSC of ``model`` on sub-26 per subset: ``bids_mdpp calibrate --subsets CROSS_SUBSETS``."""
    if out.exists():
        shutil.rmtree(out)
    command = [*real_scans.bids_mdpp_command(), "calibrate", str(args.cross), str(out),
               "--labels", str(args.cross / "derivatives" / "manual"), "--model", str(model),
               "--subsets", args.cross_subsets, "-w", str(work)]
    seconds = real_scans.run_command(command, out.parent / f"{out.name}.log")
    card = json.loads((model / "model_card.json").read_text())
    scores = {}
    with open(out / "calibration" / "dsc_curves.tsv", newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream, delimiter="\t"):
            names = row["subset"].split("+")
            threshold = card.get("thresholds", {}).get(row["subset"], card["threshold"])
            scores[row["subset"]] = {"dsc": round(float(row[f"dsc_{threshold:.2f}"]), 4),
                                     "threshold": threshold, "with_flair": "FLAIR" in names}
    print(f"sub-26 scored with {model.name} in {seconds:.0f} s", flush=True)
    return dict(sorted(scores.items(), key=lambda item: (-len(item[0].split("+")), item[0])))


def dsc_summary(base: Mapping[str, Mapping], adapted: Mapping[str, Mapping]) -> dict:
    """Mean DSC over the subsets without FLAIR and over those with it, base and adapted, and the
    change (what the acceptance criterion reads: +0.10 without FLAIR, at most −0.02 with it)."""
    summary = {}
    for group, with_flair in (("without_flair", False), ("with_flair", True)):
        names = [n for n, entry in base.items() if entry["with_flair"] == with_flair
                 and entry["dsc"] is not None and adapted.get(n, {}).get("dsc") is not None]
        if not names:
            continue
        before = sum(base[n]["dsc"] for n in names) / len(names)
        after = sum(adapted[n]["dsc"] for n in names) / len(names)
        summary[group] = {"subsets": names, "base": round(before, 4),
                          "adapted": round(after, 4), "change": round(after - before, 4)}
    return summary


def session_volumes(model: Path, sessions, work: Path, contrasts: Sequence[str]) -> dict:
    """Per subset of ``contrasts``: each session's lesion volume (mm³, model grid)."""
    import nibabel as nib
    import numpy as np

    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.inference import Predictor
    from bids_mdpp.model import load_model
    from bids_mdpp.training.trainer import contrast_subsets
    from bids_mdpp.workflows.preproc import run_preprocessing

    loaded = load_model(model)
    predictor = Predictor(loaded, device="auto")
    volumes: dict[str, dict[str, float]] = {}
    for inputs in sessions:
        preproc = run_preprocessing(inputs, work / inputs.key, grid_mm=loaded.card.grid_mm)
        images = {c: np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
                  for c, p in preproc.images.items()}
        brain = np.asarray(nib.load(str(preproc.brain_mask)).dataobj) > 0
        voxel_mm3 = float(loaded.card.grid_mm) ** 3
        for subset in contrast_subsets([c for c in contrasts if c in images], "all"):
            probability = predictor.predict({c: images[c] for c in subset}, brain)
            lesion = probability >= loaded.card.threshold_for(subset)
            volumes.setdefault(subset_name(subset), {})[inputs.key] = round(
                float(lesion.sum()) * voxel_mm3, 1)
    return volumes


def volume_agreement(volumes: Mapping[str, float]) -> float | None:
    """``|V1 − V2| / mean(V1, V2)`` of two sessions' lesion volumes (0 when both are empty);
    None unless there are exactly two."""
    if len(volumes) != 2:
        return None
    first, second = volumes.values()
    mean = (first + second) / 2
    return 0.0 if mean == 0 else round(abs(first - second) / mean, 4)


def score_long(model: Path, work: Path, args) -> dict:
    """Per subset: both mslub-long sessions' lesion volumes (mm³) and their relative difference."""
    from bids_mdpp.bids import discover

    sessions = discover(args.long)
    started = time.perf_counter()
    volumes = session_volumes(model, sessions, work, LONG_SUBSETS)
    print(f"mslub-long segmented with {model.name} in {time.perf_counter() - started:.0f} s",
          flush=True)
    return {name: {"volumes_mm3": v, "relative_difference": volume_agreement(v)}
            for name, v in volumes.items()}


def markdown(result: Mapping) -> str:
    """The tables of docs/benchmarks.md from a result document."""
    lines = ["| sub-26 subset | DSC base | DSC adapted on mslub-long | change |", "|---|---|---|---|"]
    cross = result.get("mslub_long_to_cross") or {"base": {}}
    for name, base in cross["base"].items():
        after = cross["adapted"][name]["dsc"]
        change = None if base["dsc"] is None or after is None else after - base["dsc"]
        lines.append(f"| {name} | {_fmt(base['dsc'])} | {_fmt(after)} | "
                     f"{'n/a' if change is None else f'{change:+.3f}'} |")
    for group, entry in (cross.get("summary") or {}).items():
        lines.append(f"| mean, {group.replace('_', ' ')} ({len(entry['subsets'])}) | "
                     f"{entry['base']:.3f} | {entry['adapted']:.3f} | {entry['change']:+.3f} |")
    lines += ["", "| mslub-long subset | volumes base (mm³) | rel. diff. base | volumes adapted on "
              "sub-26 (mm³) | rel. diff. adapted |", "|---|---|---|---|---|"]
    long = result.get("mslub_cross_to_long") or {"base": {}}
    for name, base in long["base"].items():
        after = long["adapted"][name]
        lines.append(f"| {name} | {_volumes(base)} | {_fmt(base['relative_difference'])} | "
                     f"{_volumes(after)} | {_fmt(after['relative_difference'])} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _volumes(entry: Mapping) -> str:
    return " / ".join(f"{v:.0f}" for v in entry["volumes_mm3"].values()) or "none"


def parse_args(argv=None) -> argparse.Namespace:
    from bids_mdpp.config import INTENSITY_MODEL_MODES
    from bids_mdpp.model import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="base model")
    parser.add_argument("--cross", type=Path, default=SHARED / "mslub-cross")
    parser.add_argument("--long", type=Path, default=SHARED / "mslub-long")
    parser.add_argument("--work", type=Path, help="caches and adapted models (default: temporary)")
    parser.add_argument("--direction", choices=DIRECTIONS, default="both")
    parser.add_argument("--nprocs", type=int, help="processes for preprocessing")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--agreement-sessions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", choices=("mask", "soft"), default="mask",
                        help="bids_mdpp adapt --targets")
    parser.add_argument("--teacher-intensity-model", choices=INTENSITY_MODEL_MODES,
                        default="off",
                        help="bids_mdpp adapt --intensity-model: the base model's map alone "
                             "(adapt's default) or averaged with the intensity model")
    parser.add_argument("--confidence", type=float, help="bids_mdpp adapt --confidence")
    parser.add_argument("--lesion-share", type=float, help="bids_mdpp adapt --lesion-share")
    parser.add_argument("--cross-subsets", choices=("all", "single", "full"), default="all",
                        help="sub-26 subsets scored: every one, each contrast alone, or all four")
    parser.add_argument("--resume", action="store_true",
                        help="continue adapted models already in --work (bids_mdpp adapt --resume)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("model", "cross", "long"):
        setattr(args, name, getattr(args, name).expanduser().absolute())
    return args


def run(args: argparse.Namespace, previous: Mapping | None = None) -> dict:
    """The chosen directions in ``args.work``; returns the result document (the other
    direction's results are kept from ``previous``)."""
    from bids_mdpp import __version__

    real_scans = real_scans_module()
    work = args.work
    result = {key: (previous or {}).get(key) for key in ("mslub_long_to_cross",
                                                         "mslub_cross_to_long")}
    if args.direction in ("both", "long-to-cross"):
        on_long = adapt(real_scans, args.long, args.model, work / "adapted-on-long",
                        work / "long-preproc", args)
        print(f"adapt on mslub-long: {on_long['wall_seconds']} s, {on_long['peak_rss_gb']} GB",
              flush=True)
        base = score_cross(real_scans, args.model, work / "scored-base", work / "cross-work", args)
        adapted = score_cross(real_scans, work / "adapted-on-long", work / "scored-adapted",
                              work / "cross-work", args)
        result["mslub_long_to_cross"] = {"adapt": on_long, "base": base, "adapted": adapted,
                                         "summary": dsc_summary(base, adapted)}
    if args.direction in ("both", "cross-to-long"):
        on_cross = adapt(real_scans, args.cross, args.model, work / "adapted-on-cross",
                         work / "cross-preproc", args)
        print(f"adapt on mslub-cross: {on_cross['wall_seconds']} s, {on_cross['peak_rss_gb']} GB",
              flush=True)
        result["mslub_cross_to_long"] = {
            "adapt": on_cross, "base": score_long(args.model, work / "long-preproc", args),
            "adapted": score_long(work / "adapted-on-cross", work / "long-preproc", args)}
    return {"base_model": str(args.model), **result, "bids_mdpp": __version__,
            "command_line": shlex.join(["python", "benchmarks/adapt.py", *args.argv]),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> int:
    from bids_mdpp.allocator import reexec_with_tuned_allocator

    reexec_with_tuned_allocator(list(sys.argv[1:] if argv is None else argv), [__file__])
    args = parse_args(argv)
    real_scans = real_scans_module()
    previous = json.loads(args.output.read_text()) if args.output.is_file() else None
    try:
        if args.work is None:
            with tempfile.TemporaryDirectory(prefix="bids_mdpp-adapt-") as scratch:
                args.work = Path(scratch)
                result = run(args, previous)
        else:
            args.work = args.work.expanduser().absolute()
            args.work.mkdir(parents=True, exist_ok=True)
            result = run(args, previous)
    except real_scans.BenchmarkError as exc:
        print(f"adapt.py: error: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
