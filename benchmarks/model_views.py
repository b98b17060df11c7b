"""Every view of a model on labelled scans at once, per contrast subset, on the model grid.

One DSC on one patient hides the failures that matter on unseen patients (docs/training.md).
This script preprocesses each labelled session once (the product's own cached preprocessing),
then predicts every subset of its contrasts with the Predictor the participant level uses, with
and without left-right flip averaging (``--tta both``), and reports per subset, averaged over
the sessions:

* DSC at the card's threshold for the subset and the best DSC over the threshold grid;
* calibration (:mod:`bids_mdpp.reliability`): expected calibration error over the brain and over
  the lesion region, the median probability inside the reference lesions;
* the predicted volume (mm³) more than 3 mm from every reference lesion (false positives in
  normal-appearing tissue); on a session whose reference is empty (a lesion-free brain) this is
  the whole predicted volume;
* seconds per prediction.

``--intensity-model combine`` (the participant level's default) averages each prediction with
the per-session intensity model's lesion posterior (:mod:`bids_mdpp.intensity_model`; its atlas
priors are fitted once per session), weighted by the card's ``network_weights``, as the
participant level does; ``off`` scores the network alone.

Scores are on the model grid (1 mm), within 0.01 DSC of the native-grid scores of
``benchmarks/real_scans.py`` on sub-26, and about 20 times faster for fifteen subsets since the
preprocessing runs once.  Subsets without FLAIR are preprocessed here with FLAIR's registration
(the participant level would register them to another reference): immaterial for images that are
already co-registered, as MSLUB's cross-sectional ones are.

Usage::

    python benchmarks/model_views.py [--model MODEL_DIR] [--data ../shared/data/mslub-cross] \\
        [--labels DATA/derivatives/manual] [--subsets all|single|full] [--tta off|on|both] \\
        [--work DIR] [--output benchmarks/results/model_views.json] [--write-card NAME] \\
        [--save-probabilities DIR] [--intensity-model combine|off]

``--save-probabilities DIR`` keeps every prediction without ``--tta`` (float16,
``DIR/SESSION/SUBSET.npy``) beside each session's brain mask and reference (``brain.npy``,
``label.npy``, ``session.json``), so that ``benchmarks/ensemble_views.py`` can score the mean of
several models' probabilities without predicting again.

``--write-card NAME`` also stores the summary without ``--tta`` in the model card, under
``metrics.views.NAME`` (the data, the reference, the command and, per subset, every view but the
time, and ``kind``: ``synthetic`` for data ``bids_mdpp synth`` wrote, else ``real``), so a card
carries its false-positive volume on lesion-free brains and its calibration error beside its
DSC; the participant level's low-accuracy caution reads the DSC of ``real`` views for subsets
that ``metrics.real_scans`` lacks.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mslub-cross"
RESULTS = HERE / "results" / "model_views.json"
#: Per-prediction values averaged over the sessions of a subset.
AVERAGED = ("dsc", "best_dsc", "ece_brain", "ece_lesion_region", "median_probability_in_lesions",
            "false_positive_away_mm3", "predicted_volume_mm3", "seconds")


def _value(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def views(probability: np.ndarray, label: np.ndarray, brain: np.ndarray, threshold: float,
          voxel_sizes_mm: tuple[float, float, float]) -> dict:
    """Every view of one probability map ``(X, Y, Z)`` against its reference ``label``."""
    from bids_mdpp import reliability
    from bids_mdpp.calibration import THRESHOLD_GRID, dice_curve

    curve = dice_curve(probability, label)
    predicted = probability >= threshold
    return {
        "dsc": _value(np.interp(threshold, THRESHOLD_GRID, curve)),
        "best_dsc": _value(curve.max()),
        "best_threshold": float(THRESHOLD_GRID[int(np.argmax(curve))]),
        "ece_brain": _value(reliability.expected_calibration_error(
            reliability.reliability_curve(probability, label, brain))),
        "ece_lesion_region": _value(reliability.expected_calibration_error(
            reliability.reliability_curve(probability, label,
                                          reliability.lesion_region(probability, label)))),
        "median_probability_in_lesions": _value(
            reliability.median_probability_inside(probability, label)),
        "false_positive_away_mm3": round(reliability.false_positive_volume_mm3(
            predicted, label, voxel_sizes_mm), 1),
        "predicted_volume_mm3": round(float(predicted.sum() * np.prod(voxel_sizes_mm)), 1),
    }


def summarise(rows: list[dict]) -> dict[str, dict]:
    """``"<subset>|tta"`` → the mean of :data:`AVERAGED` over its sessions (None values skipped)."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[f"{row['subset']}|{'tta' if row['tta'] else 'plain'}"].append(row)
    summary = {}
    for key, members in grouped.items():
        entry = {"sessions": len(members)}
        for name in AVERAGED:
            values = [m[name] for m in members if m.get(name) is not None]
            entry[name] = round(sum(values) / len(values), 4) if values else None
        summary[key] = entry
    return summary


#: Views kept in the model card (``--write-card``): all of :data:`AVERAGED` but the time.
CARD_VIEWS = tuple(name for name in AVERAGED if name != "seconds")


#: Kinds of the datasets written by a known generator (``GeneratedBy`` of their
#: dataset_description.json); any other dataset is ``real``.
GENERATED_KINDS = {"bids_mdpp synth": "synthetic",
                   "benchmarks/lesion_filled.py": "lesion-filled",
                   "benchmarks/lesion_painted.py": "lesion-painted"}


def dataset_kind(data_dir: Path) -> str:
    """``synthetic`` for a dataset ``bids_mdpp synth`` wrote (its dataset_description.json's
    ``GeneratedBy``), ``lesion-filled`` or ``lesion-painted`` for one
    ``benchmarks/lesion_filled.py`` or ``benchmarks/lesion_painted.py`` wrote (real images whose
    lesions were filled, or into which other patients' lesions were painted), else ``real``;
    the card's real-scan DSC reads only ``real`` views."""
    try:
        description = json.loads((data_dir / "dataset_description.json").read_text("utf-8"))
    except (OSError, ValueError):
        return "real"
    generators = description.get("GeneratedBy") if isinstance(description, dict) else None
    names = [g.get("Name") for g in generators or [] if isinstance(g, dict)]
    return next((GENERATED_KINDS[n] for n in names if n in GENERATED_KINDS), "real")


def lesion_atlas() -> str:
    """The lesion masks the intensity model's prior was made from: ``shipped``, or the folder
    the environment variable ``BIDS_MDPP_LESION_ATLAS`` names (as the benchmark of painted
    lesions sets it)."""
    from bids_mdpp.atlas_priors import lesion_atlas_folder

    return lesion_atlas_folder() or "shipped"


def card_views(result: dict) -> dict:
    """The ``metrics.views.NAME`` entry of a model card made from a benchmark ``result``: the
    data, reference and command, and per subset the plain (no ``--tta``) summary."""
    subsets = {key.split("|")[0]: entry for key, entry in result["summary"].items()
               if key.endswith("|plain")}
    return {"data": result["data"], "kind": dataset_kind(Path(result["data"])),
            "intensity_model": result.get("intensity_model", "off"),
            "lesion_atlas": result.get("lesion_atlas", "shipped"),
            "labels": result["labels"], "grid": result["grid"],
            "procedure": "benchmarks/model_views.py: one preprocessing per session, every subset "
                         "predicted as the participant level does, mean over the sessions",
            "command_line": result["command_line"], "created": result["created"],
            "subsets": {name: {"sessions": entry["sessions"],
                               **{view: entry.get(view) for view in CARD_VIEWS}}
                        for name, entry in subsets.items()}}


def save_session(root: Path, key: str, brain: np.ndarray, label: np.ndarray,
                 voxel_sizes_mm: tuple[float, float, float], model: Path) -> Path:
    """``root/key`` holding the session's ``brain.npy``, ``label.npy`` and ``session.json``
    (voxel sizes in mm, the model); the predictions go beside them."""
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "brain.npy", np.asarray(brain, bool))
    np.save(folder / "label.npy", np.asarray(label, bool))
    (folder / "session.json").write_text(json.dumps(
        {"voxel_sizes_mm": [float(v) for v in voxel_sizes_mm], "model": str(model)}) + "\n")
    return folder


def parse_args(argv=None) -> argparse.Namespace:
    from bids_mdpp.config import INTENSITY_MODEL_MODES
    from bids_mdpp.model import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--labels", type=Path, help="default: DATA/derivatives/manual")
    parser.add_argument("--subsets", choices=("all", "single", "full"), default="all")
    parser.add_argument("--tta", choices=("off", "on", "both"), default="both")
    parser.add_argument("--intensity-model", choices=INTENSITY_MODEL_MODES,
                        default=INTENSITY_MODEL_MODES[0],
                        help="average with the intensity model's posterior (as the participant "
                             "level does by default), or score the network alone")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bids_mdpp-model-views"),
                        help="preprocessing cache (kept: a second run only predicts)")
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--save-probabilities", type=Path, metavar="DIR",
                        help="keep each plain prediction (float16) for benchmarks/ensemble_views.py")
    parser.add_argument("--write-card", metavar="NAME",
                        help="store the summary in MODEL/model_card.json as metrics.views.NAME")
    args = parser.parse_args(argv)
    if args.write_card is not None and not args.write_card.replace("-", "_").isidentifier():
        parser.error(f"--write-card {args.write_card!r}: use letters, digits, '-' and '_' only")
    if args.write_card is not None and args.tta == "on":
        parser.error("--write-card stores the predictions without --tta; use --tta off or both")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.labels = args.labels or args.data / "derivatives" / "manual"
    return args


def main(argv=None) -> int:
    import nibabel as nib

    from bids_mdpp import __version__
    from bids_mdpp.calibration import subsets_of
    from bids_mdpp.atlas_priors import session_priors
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.intensity_model import combine, lesion_posterior
    from bids_mdpp.inference import Predictor
    from bids_mdpp.model import WEIGHTS_NAME, load_model, sha256_of
    from bids_mdpp.training.data import find_labelled_sessions, prepare_session
    from bids_mdpp.workflows.preproc import nipype_plugin

    args = parse_args(argv)
    loaded = load_model(args.model, device="cpu")
    card = loaded.card
    tta_choices = {"off": (False,), "on": (True,), "both": (False, True)}[args.tta]
    predictors = {tta: Predictor(loaded, num_threads=args.nprocs, flip_tta=tta) for tta in tta_choices}
    plugin, plugin_args = nipype_plugin(args.nprocs)
    rows = []
    for session in find_labelled_sessions(args.data, args.labels, model_contrasts=card.contrasts):
        prepared = prepare_session(session, args.work, grid_mm=card.grid_mm, plugin=plugin,
                                   plugin_args=plugin_args, omp_nthreads=args.nprocs,
                                   bids_dir=args.data)
        brain_img = nib.load(str(prepared.brain_mask))
        volumes = {c: np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
                   for c, p in prepared.images.items()}
        brain = np.asarray(brain_img.dataobj) > 0
        label = prepared.label_on_grid() > 0
        present = [c for c in card.contrasts if c in volumes]
        priors = None
        if args.intensity_model == "combine":
            priors = session_priors(prepared.images, prepared.brain_mask,
                                    cache_dir=args.work / "templates")
        saved = None
        if args.save_probabilities is not None:
            saved = save_session(args.save_probabilities, prepared.key, brain, label,
                                 brain_img.header.get_zooms()[:3], args.model)
        for subset in subsets_of(present, args.subsets):
            posterior, posterior_seconds = None, 0.0
            if priors is not None:
                started = time.perf_counter()
                posterior = lesion_posterior({c: volumes[c] for c in subset}, brain, priors)
                posterior_seconds = time.perf_counter() - started
            for tta, predictor in predictors.items():
                started = time.perf_counter()
                probability = predictor.predict({c: volumes[c] for c in subset}, brain)
                if posterior is not None:
                    probability = combine(probability, posterior,
                                          network_weight=card.network_weight_for(subset))
                seconds = time.perf_counter() - started + posterior_seconds
                row = {"session": prepared.key, "subset": subset_name(subset), "tta": tta,
                       "threshold": card.threshold_for(subset), "seconds": round(seconds, 1),
                       **views(probability, label, brain, card.threshold_for(subset),
                               brain_img.header.get_zooms()[:3])}
                rows.append(row)
                if saved is not None and not tta:
                    np.save(saved / f"{row['subset']}.npy", probability.astype(np.float16))
                print(f"{row['session']} {row['subset']}{' (tta)' if tta else ''}: DSC {row['dsc']}, "
                      f"best {row['best_dsc']} at {row['best_threshold']}, ECE lesion region "
                      f"{row['ece_lesion_region']}, median p in lesions "
                      f"{row['median_probability_in_lesions']}, FP away {row['false_positive_away_mm3']} "
                      f"mm³, {seconds:.1f} s", flush=True)
    result = {
        "model": str(args.model), "model_sha256": sha256_of(args.model / WEIGHTS_NAME),
        "data": str(args.data), "labels": str(args.labels), "grid": "model grid (1 mm)",
        "intensity_model": args.intensity_model, "lesion_atlas": lesion_atlas(),
        "summary": summarise(rows), "rows": rows, "bids_mdpp": __version__,
        "command_line": shlex.join(["python", "benchmarks/model_views.py", *args.argv]),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    if args.write_card:
        sys.path.insert(0, str(HERE))
        import real_scans  # the card writer both benchmarks share

        entry = card_views(result)
        path = real_scans.update_card_metrics(
            args.model, lambda metrics: metrics.setdefault("views", {}).__setitem__(
                args.write_card, entry))
        print(f"updated {path} (metrics.views.{args.write_card})")
    return 0


if __name__ == "__main__":
    from bids_mdpp.allocator import reexec_with_tuned_allocator

    reexec_with_tuned_allocator(sys.argv[1:], program=[sys.argv[0]])
    sys.exit(main())
