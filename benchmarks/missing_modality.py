"""The paper's Table 1 at CPU scale: MD, MD+, MD++ and independent models, all 15 subsets.

Every model is trained with the product's own training code (:func:`bids_mdpp.training.
run_training`) on the same synthetic subjects, then scored on held-out synthetic subjects
and on the real patient of ``mslub-cross`` (the UMCL database of the paper's Table 1):

* data — ``bids_mdpp synth`` with T1w, FLAIR, T2w and ce-T1w in every session
  (``--complete``), already preprocessed subjects (``--clean-fraction 1``, as UMCL's images
  are), one session each; ``--n-train`` subjects for training, ``--n-test`` held out;
* models — ``moddrop``, ``moddrop+``, ``moddrop++`` on the four contrasts, and
  ``independent`` models for the full set and for each single contrast (``--im-subsets``);
  the same network size, crop, batch, steps and seed for all;
* scores — on the model grid (1 mm), probability ≥ 0.5: DSC, PPV, TPR, LTPR, LFPR per
  subject (:func:`bids_mdpp.metrics.score_masks`, 18-connectivity) and the ISBI-2015 overall
  score SC with Corr over the held-out synthetic subjects; the real patient alone has no
  Corr, so its SC is not given.

Writes JSON (``--out``) and a Markdown table next to it (``.md``) with the paper's numbers.

Usage::

    python benchmarks/missing_modality.py --data /tmp/mm-synth --work /tmp/mm-work \
        [--n-train 16 --n-test 4 --steps 300 --network-size small --crop 96] \
        [--real ../shared/data/mslub-cross --real-labels ../shared/data/mslub-cross/derivatives/manual]

Caches (synthetic data, preprocessing, trained models and each model's scores) live under
``--data`` and ``--work``; a second run reuses them, so the benchmark can run across sessions.
The process re-executes itself once with the product's tuned memory allocator
(:mod:`bids_mdpp.allocator`), as the console script does.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONTRASTS = ("T1w", "FLAIR", "T2w", "ceT1w")
UNIFIED = ("moddrop", "moddrop+", "moddrop++")
LABELS = {"moddrop": "MD", "moddrop+": "MD+", "moddrop++": "MD++", "independent": "IM"}

#: The paper's Table 1 (UMCL): subset → (DSC of MD, MD+, MD++, IM; SC of MD, MD+, MD++, IM).
PAPER_TABLE_1 = {
    "T1w+FLAIR+T2w+ceT1w": ((0.633, 0.663, 0.704, 0.690), (0.610, 0.633, 0.676, 0.652)),
    "FLAIR+T2w+ceT1w": ((0.611, 0.652, 0.706, 0.698), (0.596, 0.624, 0.673, 0.674)),
    "T1w+T2w+ceT1w": ((0.400, 0.453, 0.474, 0.512), (0.401, 0.443, 0.442, 0.472)),
    "T1w+FLAIR+ceT1w": ((0.641, 0.659, 0.693, 0.649), (0.623, 0.629, 0.665, 0.663)),
    "T1w+FLAIR+T2w": ((0.610, 0.639, 0.705, 0.697), (0.599, 0.625, 0.674, 0.661)),
    "T2w+ceT1w": ((0.377, 0.439, 0.458, 0.482), (0.379, 0.430, 0.431, 0.462)),
    "FLAIR+ceT1w": ((0.629, 0.653, 0.696, 0.692), (0.600, 0.621, 0.671, 0.676)),
    "FLAIR+T2w": ((0.613, 0.651, 0.704, 0.711), (0.589, 0.618, 0.676, 0.655)),
    "T1w+ceT1w": ((0.325, 0.329, 0.331, 0.382), (0.303, 0.338, 0.343, 0.400)),
    "T1w+T2w": ((0.382, 0.427, 0.451, 0.471), (0.399, 0.424, 0.427, 0.459)),
    "T1w+FLAIR": ((0.631, 0.650, 0.696, 0.683), (0.600, 0.622, 0.670, 0.658)),
    "T1w": ((0.275, 0.304, 0.324, 0.400), (0.288, 0.326, 0.318, 0.398)),
    "FLAIR": ((0.612, 0.642, 0.693, 0.702), (0.576, 0.607, 0.665, 0.670)),
    "T2w": ((0.338, 0.412, 0.420, 0.459), (0.341, 0.411, 0.403, 0.456)),
    "ceT1w": ((0.270, 0.304, 0.304, 0.362), (0.292, 0.333, 0.330, 0.367)),
}


def subsets() -> list[tuple[str, ...]]:
    """The 15 non-empty subsets of :data:`CONTRASTS`, in the order of the paper's table."""
    from bids_mdpp.contrasts import subset_name

    found = [s for size in range(len(CONTRASTS), 0, -1)
             for s in itertools.combinations(CONTRASTS, size)]
    order = list(PAPER_TABLE_1)
    return sorted(found, key=lambda s: order.index(subset_name(s)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic BIDS dataset (made if absent)")
    parser.add_argument("--work", type=Path, required=True, help="preprocessing caches and models")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "missing_modality.json")
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per model")
    parser.add_argument("--epochs", type=int, default=3, help="the steps are split into epochs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--network-size", default="small", choices=("default", "small", "tiny"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--im-subsets", default="T1w+FLAIR+T2w+ceT1w,T1w,FLAIR,T2w,ceT1w",
                        help="subsets that get an independent model (comma-separated)")
    parser.add_argument("--modes", default="moddrop,moddrop+,moddrop++,independent")
    parser.add_argument("--real", type=Path, default=HERE.parent.parent / "shared" / "data" / "mslub-cross")
    parser.add_argument("--real-labels", type=Path)
    parser.add_argument("--prepare-only", action="store_true",
                        help="make the data and preprocess every session, then stop")
    return parser.parse_args(argv)


def make_data(args) -> None:
    """``bids_mdpp synth`` with every contrast in every session, unless already there."""
    if (args.data / "manifest.json").is_file():
        return
    subprocess.run(
        [sys.executable, "-m", "bids_mdpp", "synth", str(args.data), "--n",
         str(args.n_train + args.n_test), "--seed", str(args.seed), "--contrasts",
         ",".join(CONTRASTS), "--complete", "--sessions-fraction", "0", "--clean-fraction", "1",
         "--nprocs", str(args.threads), "--no-progress"], check=True)


def split(args) -> tuple[list[str], list[str]]:
    """The first ``n_train`` subjects train, the next ``n_test`` are held out."""
    labels = sorted(json.loads((args.data / "manifest.json").read_text())["subjects"])
    return labels[: args.n_train], labels[args.n_train: args.n_train + args.n_test]


def train_model(args, mode: str, contrasts: tuple[str, ...], train_labels: list[str]) -> dict:
    """Train one model (or reuse it) and return where it is and how long it took."""
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.training import NETWORK_SIZES, TrainingConfig, run_training

    name = f"{LABELS[mode]}" + (f"-{subset_name(contrasts)}" if mode == "independent" else "")
    out = args.work / "models" / name
    record_path = out / "benchmark.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    steps_per_epoch = max(1, args.steps // args.epochs)
    config = TrainingConfig(
        bids_dir=args.data.absolute(), output_dir=out.absolute(),
        labels_dir=(args.data / "derivatives" / "lesions").absolute(), contrasts=contrasts,
        mode=mode, epochs=args.epochs, batch_size=args.batch_size,
        steps_per_epoch=steps_per_epoch, decay_epochs=max(1, args.epochs // 2),
        val_fraction=0.0, patience=0, seed=args.seed, device="cpu",
        network=dict(NETWORK_SIZES[args.network_size]), crop=args.crop,
        work_dir=(args.work / "cache").absolute(), participant_labels=tuple(train_labels),
        nprocs=args.threads, omp_nthreads=args.threads,
        command_line=f"benchmarks/missing_modality.py ({name})",
    )
    start = time.perf_counter()
    run_training(config)
    record = {"name": name, "mode": mode, "contrasts": list(contrasts), "directory": str(out),
              "train_seconds": round(time.perf_counter() - start, 1),
              "steps": steps_per_epoch * args.epochs}
    record_path.write_text(json.dumps(record, indent=2))
    return record


def nipype_plugin(threads: int) -> tuple[str, dict]:
    """Nipype's plugin and its arguments for ``threads`` cores (MultiProc, or Linear for one)."""
    if threads > 1:
        return "MultiProc", {"n_procs": threads, "raise_insufficient": False}
    return "Linear", {}


def prepare_cached(args, session) -> None:
    """Preprocess one training session into the cache that :func:`train_model` reads."""
    from bids_mdpp.training.data import prepare_session

    name, plugin_args = nipype_plugin(args.threads)
    prepare_session(session, (args.work / "cache").absolute(), plugin=name,
                    plugin_args=plugin_args, omp_nthreads=args.threads, bids_dir=args.data.absolute())


def prepare_eval(bids_dir: Path, labels_dir: Path, participants: list[str] | None,
                 work: Path, threads: int) -> list:
    """Preprocessed, cached evaluation sessions (:class:`~bids_mdpp.training.slabs.SubjectCache`)."""
    from bids_mdpp.training.data import cache_session, find_labelled_sessions, prepare_session

    sessions = find_labelled_sessions(bids_dir, labels_dir, model_contrasts=CONTRASTS,
                                      participant_labels=participants, require_all=True)
    name, plugin_args = nipype_plugin(threads)
    caches = []
    for session in sessions:
        prepared = prepare_session(session, work, plugin=name, plugin_args=plugin_args,
                                   omp_nthreads=threads, bids_dir=bids_dir)
        caches.append(cache_session(prepared, work / "slabs", CONTRASTS))
    return caches


def score_model(model_dir: Path, evaluated: list[tuple[str, ...]], caches: list, threads: int,
                source: str):
    """Per subset: the scores of every cached session (list of dicts).

    The scores are kept in ``model_dir/scores-<source>.json`` and reused by a later run.
    """
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.inference import Predictor
    from bids_mdpp.metrics import score_masks
    from bids_mdpp.model import load_model

    record = model_dir / f"scores-{source}.json"
    results: dict[str, list[dict]] = json.loads(record.read_text()) if record.is_file() else {}
    wanted = [s for s in evaluated
              if len(results.get(subset_name(s), [])) != len(caches)]
    if not wanted:
        return results
    predictor = Predictor(load_model(model_dir), device="cpu", num_threads=threads)
    sessions = [(cache.key, cache.volumes(), np.asarray(cache.brain()) > 0,
                 np.asarray(cache.label()) > 0) for cache in caches]
    for number, subset in enumerate(wanted, 1):
        start = time.perf_counter()
        per_session = []
        for key, volumes, brain, label in sessions:
            prob = predictor.predict({c: volumes[c] for c in subset}, brain)
            scores = score_masks(prob >= 0.5, label, 1.0).as_dict()
            per_session.append({"session": key, **scores})
        results[subset_name(subset)] = per_session
        record.write_text(json.dumps(without_nan(results), indent=2))
        print(f"{model_dir.name} {source} {number}/{len(wanted)} {subset_name(subset)}: "
              f"DSC {np.mean([s['dsc'] for s in per_session]):.3f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return results


def summarise(per_session: list[dict], with_corr: bool) -> dict:
    """Mean DSC, PPV, TPR, LTPR, LFPR and (with ``with_corr``) Corr and SC over sessions."""
    from bids_mdpp.metrics import overall_score, volume_correlation

    def number(value) -> float:  # scores reloaded from JSON hold None where NaN was
        return math.nan if value is None else float(value)

    mean = {k: float(np.mean([number(s[k]) for s in per_session]))
            for k in ("dsc", "ppv", "tpr", "ltpr", "lfpr")}
    mean["n"] = len(per_session)
    if with_corr:
        corr = volume_correlation([s["predicted_volume_mm3"] for s in per_session],
                                  [s["reference_volume_mm3"] for s in per_session])
        mean["corr"] = corr
        mean["sc"] = overall_score(mean["dsc"], mean["ppv"], mean["lfpr"], mean["ltpr"], corr)
    return mean


def markdown(result: dict) -> str:
    """The Markdown table of ``result``: DSC (synthetic, real) and SC (synthetic) per subset."""
    def cell(value) -> str:
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else f"{value:.3f}"

    columns = [LABELS[m] for m in result["settings"]["modes"]]
    head = ["T1w", "FLAIR", "T2w", "ceT1w"]
    lines = []
    for title, key, metric in (("DSC, held-out synthetic subjects", "synthetic", "dsc"),
                               ("SC, held-out synthetic subjects", "synthetic", "sc"),
                               ("DSC, real patient (mslub-cross sub-26)", "real", "dsc")):
        if not any(key in r for r in result["subsets"].values()):
            continue
        paper_index = 1 if metric == "sc" else 0
        lines += [f"**{title}** (paper: Table 1, UMCL, models trained on real data)", "",
                  "| " + " | ".join(head + columns + [f"paper {c}" for c in
                                                      ("MD", "MD+", "MD++", "IM")]) + " |",
                  "|" + "---|" * (len(head) + len(columns) + 4)]
        for name, row in result["subsets"].items():
            present = set(name.split("+"))
            marks = ["●" if c in present else "○" for c in head]
            ours = [cell(row.get(key, {}).get(col, {}).get(metric)) for col in columns]
            paper = [f"{v:.3f}" for v in PAPER_TABLE_1[name][paper_index]]
            lines.append("| " + " | ".join(marks + ours + paper) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if argv is None:
        from bids_mdpp.allocator import reexec_with_tuned_allocator

        reexec_with_tuned_allocator(sys.argv[1:], program=[sys.argv[0]])
    logging.basicConfig(level=logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    modes = [m for m in args.modes.split(",") if m]
    make_data(args)
    train_labels, test_labels = split(args)
    real_labels = args.real_labels or args.real / "derivatives" / "manual"
    started = time.perf_counter()

    from bids_mdpp.contrasts import parse_contrasts, subset_name

    if args.prepare_only:
        from bids_mdpp.training.data import find_labelled_sessions

        labels_dir = (args.data / "derivatives" / "lesions").absolute()
        sessions = find_labelled_sessions(args.data.absolute(), labels_dir,
                                          model_contrasts=CONTRASTS,
                                          participant_labels=train_labels)
        for session in sessions:
            prepare_cached(args, session)
        prepare_eval(args.data.absolute(), labels_dir, test_labels, args.work / "eval",
                     args.threads)
        if args.real.is_dir():
            prepare_eval(args.real.absolute(), real_labels.absolute(), None, args.work / "eval",
                         args.threads)
        return 0

    models = []
    for mode in modes:
        if mode == "independent":
            for name in args.im_subsets.split(","):
                models.append(train_model(args, mode, parse_contrasts(name.replace("+", ",")),
                                          train_labels))
        else:
            models.append(train_model(args, mode, CONTRASTS, train_labels))

    synthetic = prepare_eval(args.data.absolute(), (args.data / "derivatives" / "lesions").absolute(),
                             test_labels, args.work / "eval", args.threads)
    real = prepare_eval(args.real.absolute(), real_labels.absolute(), None, args.work / "eval",
                        args.threads) if args.real.is_dir() else []
    table: dict[str, dict] = {subset_name(s): {} for s in subsets()}
    for model in models:
        evaluated = subsets() if model["mode"] in UNIFIED else [tuple(model["contrasts"])]
        column = LABELS[model["mode"]]
        for source, caches, with_corr in (("synthetic", synthetic, True), ("real", real, False)):
            if not caches:
                continue
            scored = score_model(Path(model["directory"]), evaluated, caches, args.threads,
                                 source)
            for name, per_session in scored.items():
                table[name].setdefault(source, {})[column] = {
                    **summarise(per_session, with_corr), "sessions": per_session}
    import torch

    from bids_mdpp import __version__

    result = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
                    "load_average_at_end": list(os.getloadavg())},
        "settings": {"bids_mdpp": __version__, "modes": modes, "contrasts": list(CONTRASTS),
                     "train_subjects": train_labels, "test_subjects": test_labels,
                     "real": str(args.real) if real else None, "steps": args.steps,
                     "epochs": args.epochs, "batch_size": args.batch_size, "crop": args.crop,
                     "network_size": args.network_size, "seed": args.seed,
                     "threshold": 0.5, "connectivity": 18, "grid_mm": 1.0},
        "models": models,
        "total_seconds": round(time.perf_counter() - started, 1),
        "subsets": table,
        "paper_table_1": {k: {"dsc": dict(zip(("MD", "MD+", "MD++", "IM"), v[0])),
                              "sc": dict(zip(("MD", "MD+", "MD++", "IM"), v[1]))}
                          for k, v in PAPER_TABLE_1.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(without_nan(result), indent=2, allow_nan=False))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def without_nan(value):
    """``value`` with every NaN float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
