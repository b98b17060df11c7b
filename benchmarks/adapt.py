"""``bids_mdpp adapt`` on the real scans, leave one patient out: accuracy, time and memory.

Two directions, each adapting on one patient's unlabelled sessions and evaluating on the other:

1. **mslub-long → mslub-cross.**  ``bids_mdpp adapt`` on mslub-long sub-01 (two raw sessions,
   FLAIR, T1w and T2w) from the base model; then sub-26 of mslub-cross is segmented from every
   non-empty subset of its contrasts with the base and with the adapted model, as users run it
   (``benchmarks/real_scans.py``: participant level on a dataset holding only that subset, then
   the group level's DSC against the consensus mask).
2. **mslub-cross → mslub-long.**  ``bids_mdpp adapt`` on sub-26 (its labels are never given to
   it); then both sessions of mslub-long sub-01 are segmented from every subset of FLAIR, T1w and
   T2w with both models.  mslub-long has no lesion masks: what can be measured is the total
   lesion volume of each session and how well the two sessions, 203 days apart, agree
   (``|V1 − V2| / mean(V1, V2)``; MS lesion load changes little in that time, so a smaller
   difference is a more consistent segmentation, not a proven more accurate one).

Each ``adapt`` runs as its own process through the console script (the tuned allocator, as users
get it); its wall time is measured here, and its peak resident memory and its agreement table
are read from the adapted model's card (``training.adaptation``, ``metrics.adaptation``).

Usage::

    python benchmarks/adapt.py [--work DIR] [--nprocs N] [--epochs 4] [--steps-per-epoch 50]
        [--output benchmarks/results/adapt.json]

``--work`` keeps the preprocessing caches and both adapted models (default: a temporary folder).
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "results" / "adapt.json"
CROSS_SUBSETS = ("T1w", "FLAIR", "T2w", "ceT1w")
LONG_SUBSETS = ("T1w", "FLAIR", "T2w")


@functools.cache
def real_scans_module():
    """``benchmarks/real_scans.py``, imported once: it scores a model per subset as users run it."""
    spec = importlib.util.spec_from_file_location("real_scans", HERE / "real_scans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_subsets(contrasts: Sequence[str]) -> str:
    """Every non-empty subset of ``contrasts``, largest first, as ``--subsets`` text."""
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.training.trainer import contrast_subsets

    return ",".join(subset_name(s) for s in contrast_subsets(list(contrasts), "all"))


def adapt(real_scans, data: Path, model: Path, out: Path, work: Path, args) -> dict:
    """Run ``bids_mdpp adapt`` (own process); wall seconds, and the card's record of the run."""
    if out.exists():
        shutil.rmtree(out)
    command = [*real_scans.bids_mdpp_command(), "adapt", str(data), str(out), "--model",
               str(model), "-w", str(work), "--epochs", str(args.epochs), "--steps-per-epoch",
               str(args.steps_per_epoch), "--seed", str(args.seed)]
    if args.nprocs:
        command += ["--nprocs", str(args.nprocs)]
    seconds = real_scans.run_command(command, out.parent / f"{out.name}.log")
    card = json.loads((out / "model_card.json").read_text())
    record = card["training"]["adaptation"]
    return {"command": shlex.join(command), "wall_seconds": round(seconds, 1),
            "adapt_seconds": record["seconds"], "peak_rss_gb": record["peak_rss_gb"],
            "sessions": [s["session"] for s in record["sessions"]], "skipped": record["skipped"],
            "steps": record["steps"], "precision": record["precision"],
            "agreement": card["metrics"]["adaptation"]}


def score_cross(real_scans, model: Path, work: Path, args) -> dict:
    """DSC of ``model`` on sub-26 for every subset (``real_scans.benchmark``)."""
    options = real_scans.parse_args([
        "--model", str(model), "--data", str(args.cross), "--subsets", all_subsets(CROSS_SUBSETS),
        "--work", str(work), *(["--nprocs", str(args.nprocs)] if args.nprocs else [])])
    result = real_scans.benchmark(options)
    return {name: {"dsc": entry["dsc"], "threshold": entry["threshold"]}
            for name, entry in result["subsets"].items()}


def session_volumes(out_dir: Path) -> dict[str, float]:
    """Session key → ``TotalLesionVolume`` (mm³) of every mask sidecar under ``out_dir``."""
    volumes = {}
    for sidecar in sorted(out_dir.rglob("*_label-lesion_mask.json")):
        if "space-" in sidecar.name:
            continue
        key = sidecar.name.split("_label-lesion_mask")[0]
        volumes[key] = float(json.loads(sidecar.read_text())["TotalLesionVolume"])
    return volumes


def volume_agreement(volumes: Mapping[str, float]) -> float | None:
    """``|V1 − V2| / mean(V1, V2)`` of two sessions' lesion volumes (0 when both are empty);
    None unless there are exactly two."""
    if len(volumes) != 2:
        return None
    first, second = volumes.values()
    mean = (first + second) / 2
    return 0.0 if mean == 0 else round(abs(first - second) / mean, 4)


def score_long(real_scans, model: Path, work: Path, args) -> dict:
    """Per subset: both sessions' lesion volumes (mm³) and their relative difference."""
    from bids_mdpp.contrasts import subset_name

    sessions = real_scans.session_images(args.long)
    results = {}
    for subset in real_scans.parse_subsets(all_subsets(LONG_SUBSETS)):
        name = subset_name(subset)
        keys = real_scans.sessions_with_subset(sessions, subset, args.long)
        folder = work / name.replace("+", "-")
        bids_dir, out_dir = folder / "bids", folder / f"out-{model.name}"
        real_scans.build_subset_dataset(args.long, sessions, keys, subset, bids_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        real_scans.run_command(real_scans.participant_command(
            bids_dir, out_dir, folder / "work", model, args.nprocs),
            folder / f"participant-{model.name}.log")
        volumes = session_volumes(out_dir)
        results[name] = {"volumes_mm3": volumes, "relative_difference": volume_agreement(volumes)}
        print(f"mslub-long {name} ({model.name}): {volumes}", flush=True)
    return results


def markdown(result: Mapping) -> str:
    """The tables of docs/benchmarks.md from a result document."""
    lines = ["| sub-26 subset | DSC base | DSC adapted on mslub-long | change |", "|---|---|---|---|"]
    cross = result["mslub_long_to_cross"]
    for name, base in cross["base"].items():
        after = cross["adapted"][name]["dsc"]
        change = None if base["dsc"] is None or after is None else after - base["dsc"]
        lines.append(f"| {name} | {_fmt(base['dsc'])} | {_fmt(after)} | "
                     f"{'n/a' if change is None else f'{change:+.3f}'} |")
    lines += ["", "| mslub-long subset | volumes base (mm³) | rel. diff. base | volumes adapted on "
              "sub-26 (mm³) | rel. diff. adapted |", "|---|---|---|---|---|"]
    long = result["mslub_cross_to_long"]
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
    from bids_mdpp.model import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="base model")
    parser.add_argument("--cross", type=Path, default=SHARED / "mslub-cross")
    parser.add_argument("--long", type=Path, default=SHARED / "mslub-long")
    parser.add_argument("--work", type=Path, help="caches and adapted models (default: temporary)")
    parser.add_argument("--nprocs", type=int, help="processes for preprocessing")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("model", "cross", "long"):
        setattr(args, name, getattr(args, name).expanduser().absolute())
    return args


def run(args: argparse.Namespace) -> dict:
    """Both directions in ``args.work``; returns the result document."""
    from bids_mdpp import __version__

    real_scans = real_scans_module()
    work = args.work
    on_long = adapt(real_scans, args.long, args.model, work / "adapted-on-long",
                    work / "long-preproc", args)
    print(f"adapt on mslub-long: {on_long['wall_seconds']} s, {on_long['peak_rss_gb']} GB",
          flush=True)
    cross = {"adapt": on_long,
             "base": score_cross(real_scans, args.model, work / "cross-subsets", args),
             "adapted": score_cross(real_scans, work / "adapted-on-long", work / "cross-subsets",
                                    args)}
    on_cross = adapt(real_scans, args.cross, args.model, work / "adapted-on-cross",
                     work / "cross-preproc", args)
    print(f"adapt on mslub-cross: {on_cross['wall_seconds']} s, {on_cross['peak_rss_gb']} GB",
          flush=True)
    long = {"adapt": on_cross,
            "base": score_long(real_scans, args.model, work / "long-subsets", args),
            "adapted": score_long(real_scans, work / "adapted-on-cross", work / "long-subsets",
                                  args)}
    return {"base_model": str(args.model), "mslub_long_to_cross": cross,
            "mslub_cross_to_long": long, "bids_mdpp": __version__,
            "command_line": shlex.join(["python", "benchmarks/adapt.py", *args.argv]),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> int:
    args = parse_args(argv)
    real_scans = real_scans_module()
    try:
        if args.work is None:
            with tempfile.TemporaryDirectory(prefix="bids_mdpp-adapt-") as scratch:
                args.work = Path(scratch)
                result = run(args)
        else:
            args.work = args.work.expanduser().absolute()
            args.work.mkdir(parents=True, exist_ok=True)
            result = run(args)
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
