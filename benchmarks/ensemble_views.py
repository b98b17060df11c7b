"""Every view of the mean of several models' probabilities, from predictions already saved.

``benchmarks/model_views.py --save-probabilities DIR`` keeps each model's plain prediction per
session and contrast subset.  This script averages the probabilities of two or more such
folders voxel by voxel (optionally weighted) and scores the mean exactly as ``model_views.py``
scores one model (DSC at ``--threshold`` and at the best threshold, calibration error, median
probability inside the lesions, false-positive volume away from the lesions), per subset and
averaged over the sessions.  Only the sessions and subsets that every folder holds are scored.

Usage::

    python benchmarks/ensemble_views.py DIR_A DIR_B [DIR_C ...] [--weights 1,1,...] \\
        [--threshold 0.5] [--output benchmarks/results/ensemble_views.json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ensemble_views.json"
sys.path.insert(0, str(HERE))

import model_views  # noqa: E402  (the views and their summary)

from bids_mdpp.imageio import write_json  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+",
                        help="folders written by model_views.py --save-probabilities")
    parser.add_argument("--weights", help="comma-separated, one per folder (default: equal)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if len(args.folders) < 2:
        parser.error("give at least two folders of saved probabilities")
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"{folder}: not a folder of saved probabilities")
    if args.weights is None:
        args.weights = [1.0] * len(args.folders)
    else:
        from bids_mdpp.averaging import parse_weights
        from bids_mdpp.errors import UsageError

        try:
            args.weights = parse_weights(args.weights, len(args.folders))
        except UsageError as exc:
            parser.error(str(exc))
    if not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold {args.threshold:g}: must lie strictly between 0 and 1")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def shared_predictions(folders: list[Path]) -> dict[str, list[str]]:
    """``session → subsets`` that every folder holds (sorted), sessions with none left out."""
    shared: dict[str, list[str]] = {}
    first = folders[0]
    for session in sorted(p for p in first.iterdir() if (p / "session.json").is_file()):
        subsets = {p.stem for p in session.glob("*.npy")} - {"brain", "label"}
        for other in folders[1:]:
            subsets &= {p.stem for p in (other / session.name).glob("*.npy")}
        if subsets:
            shared[session.name] = sorted(subsets)
    return shared


def mean_probability(folders: list[Path], session: str, subset: str,
                     weights: list[float]) -> np.ndarray:
    """The weighted mean of the folders' predictions ``(X, Y, Z)`` (float32)."""
    total = None
    for folder, weight in zip(folders, weights):
        probability = np.load(folder / session / f"{subset}.npy").astype(np.float32)
        if total is not None and probability.shape != total.shape:
            raise ValueError(f"{folder / session / subset}.npy: shape {probability.shape} is not "
                             f"{total.shape} as in {folders[0] / session}")
        total = weight * probability if total is None else total + weight * probability
    return total / np.float32(sum(weights))


def main(argv=None) -> int:
    args = parse_args(argv)
    shared = shared_predictions(args.folders)
    if not shared:
        raise SystemExit("the folders share no session and subset: nothing to score")
    rows = []
    for session, subsets in shared.items():
        base = args.folders[0] / session
        brain = np.load(base / "brain.npy")
        label = np.load(base / "label.npy")
        zooms = tuple(json.loads((base / "session.json").read_text())["voxel_sizes_mm"])
        for subset in subsets:
            probability = mean_probability(args.folders, session, subset, args.weights)
            row = {"session": session, "subset": subset, "tta": False,
                   "threshold": args.threshold, "seconds": None,
                   **model_views.views(probability, label, brain, args.threshold, zooms)}
            rows.append(row)
            print(f"{session} {subset}: DSC {row['dsc']}, best {row['best_dsc']} at "
                  f"{row['best_threshold']}, ECE brain {row['ece_brain']}, FP away "
                  f"{row['false_positive_away_mm3']} mm³", flush=True)
    result = {
        "members": [{"folder": str(f), "weight": w} for f, w in zip(args.folders, args.weights)],
        "threshold": args.threshold, "summary": model_views.summarise(rows), "rows": rows,
        "command_line": shlex.join(["python", "benchmarks/ensemble_views.py", *args.argv]),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_json(result, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
