"""``bids_mdpp adapt`` within one scanner and protocol, scored on lesions it never saw.

The one labelled 3D patient held here (mslub-cross sub-26) is split at the midline.  For each
hemisphere (a *fold*):

1. a copy of the subject's images is written under ``--work`` with everything on the other side
   of the midline set to 0 (``--other-side zero``; world x in RAS: the kept side begins
   ``--gap-mm`` from x = 0; the lesion mask is not copied) or, with ``--other-side mirror``,
   replaced by the kept side's mirror image across the plane where the kept side begins, so
   that the copy is a whole (symmetric) brain: the intensity model's template fit, which the
   teacher of ``adapt --intensity-model combine`` needs, fails on half a brain;
2. ``bids_mdpp adapt`` runs on that copy from the base model (its own process, no label read);
3. the whole subject is preprocessed once (model grid) and every non-empty subset of its
   contrasts is segmented with the base model and with each fold's adapted model;
4. each fold's model and the base model are scored inside the hemisphere the fold's adaptation
   never saw (``|x| ≥ gap``, the band around the midline is left out of both folds): DSC at the
   card's threshold for the subset, and the predicted volume (mm³) more than 3 mm from every
   reference lesion (:func:`bids_mdpp.reliability.false_positive_volume`'s rule).

This complements ``benchmarks/adapt.py`` (leave one patient out, which here also changes
scanner and protocol): it asks whether what adapt learns from a site's images carries over to
lesions it did not see, on the same kind of images.  Inputs that use the anchor weights of an
adapted model (``--flair-subsets base``, the default: they are the base model's weights) are
not predicted again.

With ``--write-card MODEL_DIR`` the mean over the folds, for the subsets without FLAIR (the ones
adapt changes), is stored in that model's card as ``metrics.views.NAME`` (``--card-name``), a
real-scan view that :meth:`bids_mdpp.model.ModelCard.real_scan_dsc` reads for subsets its
``real_scans`` lacks.

``--teacher-intensity-model`` is passed to ``bids_mdpp adapt --intensity-model`` (what the
teacher's map is: the base model's alone, ``off``, adapt's default, or averaged with the
intensity model, ``combine``).  ``--intensity-model combine`` (the default, as at the
participant level) averages every
prediction, base and adapted, with the per-session intensity model's lesion posterior
(:mod:`bids_mdpp.intensity_model`, fitted once per subset on the whole subject: it reads no
label and learns nothing across sessions); the card's view records which was used.

Usage::

    python benchmarks/adapt_hemispheres.py [--model BASE_MODEL] [--data ../shared/data/mslub-cross]
        [--subject 26] [--gap-mm 4] [--epochs 4] [--steps-per-epoch 50] [--seed 0]
        [--flair-subsets base] [--intensity-model combine|off] [--other-side zero|mirror]
        [--teacher-intensity-model combine|off] [--base-subsets T1w] [--work DIR] [--reuse-adapted]
        [--nprocs N]
        [--output benchmarks/results/adapt_hemispheres.json]
        [--write-card MODEL_DIR [--card-name mslub-cross-unseen-hemisphere]]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "results" / "adapt_hemispheres.json"
#: Hemisphere kept for adaptation → sign of world x (RAS) it keeps.
SIDES = {"right": 1.0, "left": -1.0}
#: Lesion voxels within this distance (mm) of the reference are not false positives.
NEAR_LESION_MM = 3.0


def world_x(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World x (mm, RAS) of every voxel centre of a grid, shape ``shape[:3]``."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape[:3]), indexing="ij")
    return affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k + affine[0, 3]


def side_of(x_mm: np.ndarray, side: str, gap_mm: float) -> np.ndarray:
    """Voxels of ``side`` (``right``: x ≥ gap, ``left``: x ≤ −gap)."""
    return SIDES[side] * x_mm >= gap_mm


def other_side(side: str) -> str:
    return "left" if side == "right" else "right"


#: What the half datasets hold beyond the kept side.
OTHER_SIDE = ("zero", "mirror")


def mirrored(values: np.ndarray, affine: np.ndarray, side: str, gap_mm: float) -> np.ndarray:
    """``values`` (X, Y, Z) with every voxel short of the kept ``side`` replaced by the value
    at its mirror image across the plane where that side begins (world x = ±``gap_mm``),
    linearly interpolated (0 beyond the image); the dtype is kept (integers rounded)."""
    from scipy import ndimage

    if values.ndim != 3:
        raise SystemExit(f"--other-side mirror takes 3-D images, got shape {values.shape}")
    sign = SIDES[side]
    out = np.array(values, copy=True)
    short = ~side_of(world_x(values.shape, affine), side, gap_mm)
    ijk = np.vstack([np.asarray(short.nonzero(), dtype=float), np.ones(int(short.sum()))])
    world = affine @ ijk
    world[0] = 2 * sign * gap_mm - world[0]  # sign·x' = 2·gap − sign·x: on the kept side
    source = np.linalg.inv(affine) @ world
    sampled = ndimage.map_coordinates(np.asarray(values, dtype=np.float32), source[:3], order=1,
                                      cval=0.0)
    if np.issubdtype(out.dtype, np.integer):
        sampled = np.rint(sampled)
    out[short] = sampled.astype(out.dtype)
    return out


def write_half_dataset(data: Path, subject: str, out: Path, side: str, gap_mm: float,
                       other_side: str = "zero") -> Path:
    """A BIDS copy of ``sub-SUBJECT``'s images of ``data`` with only ``side`` kept (0 elsewhere,
    or its mirror image with ``other_side="mirror"``, :func:`mirrored`); the top-level files
    come along, derivatives (the masks) do not.  Returns ``out``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for item in data.iterdir():
        if item.is_file():
            shutil.copy(item, out / item.name)
    source = data / f"sub-{subject}"
    if not source.is_dir():
        raise SystemExit(f"{source}: no such subject in {data}")
    for path in sorted(source.rglob("*")):
        target = out / path.relative_to(data)
        if path.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith((".nii", ".nii.gz")):
            image = nib.load(str(path))
            values = np.asanyarray(image.dataobj).copy()
            if other_side == "mirror":
                values = mirrored(values, image.affine, side, gap_mm)
            else:
                values[~side_of(world_x(values.shape, image.affine), side, gap_mm)] = 0
            nib.save(nib.Nifti1Image(values, image.affine, image.header), str(target))
        else:
            shutil.copy(path, target)
    return out


def anchor_is_base(model, base) -> bool:
    """Whether ``model`` has anchor weights and they are the weights ``base`` segments an input
    with the anchor contrast with (then those inputs need not be predicted again)."""
    if model.anchor_network is None:
        return False
    theirs = base.network_for([model.anchor_contrast]).state_dict()
    return all(np.array_equal(value.numpy(), theirs[key].numpy())
               for key, value in model.anchor_network.state_dict().items())


def far_from_lesions(label: np.ndarray) -> np.ndarray:
    """Voxels more than :data:`NEAR_LESION_MM` voxels (1 mm grid) from every reference lesion."""
    from scipy import ndimage

    return ~ndimage.binary_dilation(label, iterations=int(round(NEAR_LESION_MM)))


def region_scores(probability: np.ndarray, label: np.ndarray, far: np.ndarray,
                  region: np.ndarray, threshold: float, voxel_mm3: float) -> dict:
    """DSC (None when neither has a voxel) and the predicted volume (mm³) in ``far``
    (:func:`far_from_lesions`), inside ``region``."""
    mask = (probability >= threshold) & region
    reference = label & region
    total = int(mask.sum() + reference.sum())
    return {"dsc": None if total == 0 else round(2 * int((mask & reference).sum()) / total, 4),
            "false_positive_away_mm3": round(float((mask & far).sum() * voxel_mm3), 1)}


def fold_summary(rows: Mapping[str, Mapping]) -> dict:
    """Mean base and adapted DSC over the subsets without FLAIR and over those with it."""
    summary = {}
    for group, with_flair in (("without_flair", False), ("with_flair", True)):
        names = [n for n in rows if ("FLAIR" in n.split("+")) == with_flair
                 and rows[n]["base"]["dsc"] is not None and rows[n]["adapted"]["dsc"] is not None]
        if names:
            base = sum(rows[n]["base"]["dsc"] for n in names) / len(names)
            adapted = sum(rows[n]["adapted"]["dsc"] for n in names) / len(names)
            summary[group] = {"subsets": len(names), "base": round(base, 4),
                              "adapted": round(adapted, 4), "change": round(adapted - base, 4)}
    return summary


def mean_over_folds(folds: Mapping[str, Mapping]) -> dict:
    """Per subset, the mean over the folds of the base and adapted scores (None-aware)."""
    names = sorted({n for fold in folds.values() for n in fold["subsets"]})
    means = {}
    for name in names:
        entry = {}
        for model in ("base", "adapted"):
            entry[model] = {}
            for view in ("dsc", "false_positive_away_mm3"):
                values = [fold["subsets"][name][model][view] for fold in folds.values()
                          if name in fold["subsets"] and fold["subsets"][name][model][view] is not None]
                entry[model][view] = round(sum(values) / len(values), 4) if values else None
        means[name] = entry
    return means


def card_view(result: Mapping) -> dict:
    """The ``metrics.views`` entry of a model card: the subsets without FLAIR, fold means."""
    return {"data": result["data"], "kind": "real", "labels": result["labels"],
            "intensity_model": result.get("intensity_model", "off"),
            "grid": "model grid (1 mm), the hemisphere the adaptation did not see",
            "procedure": "benchmarks/adapt_hemispheres.py: bids_mdpp adapt on one hemisphere of "
                         "the subject (images only), scored on the other; mean of the two folds. "
                         "These are held-out scores of the adaptation recipe, not of a model "
                         "that saw none of the subject's images",
            "command_line": result["command_line"], "created": result["created"],
            "subsets": {name: {"sessions": len(result["folds"]),
                               "dsc": entry["adapted"]["dsc"],
                               "false_positive_away_mm3": entry["adapted"]["false_positive_away_mm3"]}
                        for name, entry in result["mean"].items() if "FLAIR" not in name.split("+")}}


def parse_args(argv=None) -> argparse.Namespace:
    from bids_mdpp.config import INTENSITY_MODEL_MODES
    from bids_mdpp.model import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="base model")
    parser.add_argument("--data", type=Path, default=SHARED / "mslub-cross")
    parser.add_argument("--labels", type=Path, help="default: DATA/derivatives/manual")
    parser.add_argument("--subject", default="26")
    parser.add_argument("--gap-mm", type=float, default=4.0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flair-subsets", choices=("base", "adapted"), default="base")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bids_mdpp-adapt-hemispheres"))
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--intensity-model", choices=INTENSITY_MODEL_MODES,
                        default=INTENSITY_MODEL_MODES[0],
                        help="average every prediction with the intensity model's posterior "
                             "(fitted on the whole subject, no label), as the participant level "
                             "does by default, or score the networks alone")
    parser.add_argument("--other-side", choices=OTHER_SIDE, default="zero",
                        help="what the half datasets hold beyond the kept side: 0, or the kept "
                             "side's mirror image (a whole brain for the teacher's template fit)")
    parser.add_argument("--teacher-intensity-model", choices=INTENSITY_MODEL_MODES,
                        default="off",
                        help="bids_mdpp adapt --intensity-model: the base model's map alone "
                             "(adapt's default) or averaged with the intensity model")
    parser.add_argument("--base-subsets", nargs="*", default=[], metavar="SUBSET",
                        help="bids_mdpp adapt --base-subsets: inputs of exactly these contrasts "
                             "keep the base weights in each fold's model (the shipped model: T1w)")
    parser.add_argument("--reuse-adapted", action="store_true",
                        help="score the models an earlier run adapted in --work instead of "
                             "adapting again (their adapt command is then not recorded)")
    parser.add_argument("--write-card", type=Path, metavar="MODEL_DIR")
    parser.add_argument("--card-name", default="mslub-cross-unseen-hemisphere")
    args = parser.parse_args(argv)
    if args.gap_mm < 0:
        parser.error("--gap-mm cannot be negative")
    args.labels = args.labels or args.data / "derivatives" / "manual"
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None) -> int:
    from bids_mdpp import __version__
    from bids_mdpp.calibration import subsets_of
    from bids_mdpp.atlas_priors import session_priors
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.inference import Predictor
    from bids_mdpp.intensity_model import combine, lesion_posterior
    from bids_mdpp.model import WEIGHTS_NAME, load_model, sha256_of
    from bids_mdpp.training.data import find_labelled_sessions, prepare_session
    from bids_mdpp.workflows.preproc import nipype_plugin

    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    import real_scans  # the console-script runner and the card writer the benchmarks share

    base = load_model(args.model, device="cpu")
    models = {}
    for side in SIDES:
        half = write_half_dataset(args.data, args.subject, args.work / f"keep-{side}", side,
                                  args.gap_mm, args.other_side)
        out = args.work / f"adapted-keep-{side}"
        if args.reuse_adapted:
            if not (out / "model_card.json").is_file():
                raise SystemExit(f"--reuse-adapted: no adapted model in {out}")
            print(f"reusing the model adapted on the {side} hemisphere in {out}", flush=True)
            models[side] = (load_model(out, device="cpu"), None, None)
            continue
        if out.exists():
            shutil.rmtree(out)
        command = [*real_scans.bids_mdpp_command(), "adapt", str(half), str(out), "--model",
                   str(args.model), "-w", str(args.work / f"adapt-work-{side}"), "--epochs",
                   str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch), "--seed",
                   str(args.seed), "--agreement-sessions", "0", "--flair-subsets",
                   args.flair_subsets, "--intensity-model", args.teacher_intensity_model,
                   *(a for name in args.base_subsets for a in ("--base-subsets", name)),
                   "--omp-nthreads", str(args.nprocs)]
        seconds = real_scans.run_command(command, args.work / f"adapt-keep-{side}.log")
        print(f"adapted on the {side} hemisphere in {seconds:.0f} s", flush=True)
        models[side] = (load_model(out, device="cpu"), shlex.join(command), round(seconds, 1))
    reuse = {side: anchor_is_base(model, base) for side, (model, _, _) in models.items()}

    plugin, plugin_args = nipype_plugin(args.nprocs)
    sessions = [s for s in find_labelled_sessions(args.data, args.labels,
                                                  model_contrasts=base.card.contrasts)
                if s.key.split("_")[0] == f"sub-{args.subject}"]
    if len(sessions) != 1:
        raise SystemExit(f"expected one labelled session of sub-{args.subject} in {args.data}")
    prepared = prepare_session(sessions[0], args.work / "score", grid_mm=base.card.grid_mm,
                               plugin=plugin, plugin_args=plugin_args,
                               omp_nthreads=args.nprocs, bids_dir=args.data)
    brain_img = nib.load(str(prepared.brain_mask))
    brain = np.asarray(brain_img.dataobj) > 0
    label = prepared.label_on_grid() > 0
    volumes = {c: np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
               for c, p in prepared.images.items()}
    x_mm = world_x(brain.shape, brain_img.affine)
    unseen = {side: side_of(x_mm, other_side(side), args.gap_mm) & brain for side in SIDES}
    far = far_from_lesions(label)
    voxel_mm3 = float(np.prod(brain_img.header.get_zooms()[:3]))
    present = [c for c in base.card.contrasts if c in volumes]
    priors = None
    if args.intensity_model == "combine":
        priors = session_priors(prepared.images, prepared.brain_mask,
                                cache_dir=args.work / "templates")
    base_predictor = Predictor(base, num_threads=args.nprocs)
    predictors = {side: Predictor(m, num_threads=args.nprocs) for side, (m, _, _) in models.items()}
    folds = {side: {"adapt_command": command, "adapt_wall_seconds": seconds,
                    "anchor_subsets": list(model.anchor_subsets), "subsets": {}}
             for side, (model, command, seconds) in models.items()}
    for subset in subsets_of(present, "all"):
        name = subset_name(subset)
        inputs = {c: volumes[c] for c in subset}
        posterior = None if priors is None else lesion_posterior(inputs, brain, priors)

        def with_intensity_model(probability, card=base.card):
            return probability if posterior is None else combine(
                probability, posterior, network_weight=card.network_weight_for(subset))

        base_probability = with_intensity_model(base_predictor.predict(inputs, brain))
        for side, predictor in predictors.items():
            same_as_base = reuse[side] and predictor.network_for(subset) is predictor.anchor_network
            probability = (base_probability if same_as_base
                           else with_intensity_model(predictor.predict(inputs, brain),
                                                     models[side][0].card))
            threshold = base.card.threshold_for(subset)
            folds[side]["subsets"][name] = {
                "base": region_scores(base_probability, label, far, unseen[side], threshold,
                                      voxel_mm3),
                "adapted": region_scores(probability, label, far, unseen[side],
                                         models[side][0].card.threshold_for(subset), voxel_mm3),
                "anchor_weights": bool(same_as_base)}
            row = folds[side]["subsets"][name]
            print(f"adapted on {side}, scored on {other_side(side)}: {name}: DSC "
                  f"{row['base']['dsc']} -> {row['adapted']['dsc']}", flush=True)
    for side, fold in folds.items():
        fold["scored_on"] = other_side(side)
        fold["reference_volume_mm3"] = round(float((label & unseen[side]).sum() * voxel_mm3), 1)
        fold["summary"] = fold_summary(fold["subsets"])
    result = {
        "base_model": str(args.model), "base_sha256": sha256_of(args.model / WEIGHTS_NAME),
        "data": str(args.data), "labels": str(args.labels), "subject": args.subject,
        "gap_mm": args.gap_mm, "flair_subsets": args.flair_subsets,
        "intensity_model": args.intensity_model, "other_side": args.other_side,
        "teacher_intensity_model": None if args.reuse_adapted else args.teacher_intensity_model,
        "folds": {f"adapted_on_{side}": fold for side, fold in folds.items()},
        "mean": mean_over_folds(folds),
        "bids_mdpp": __version__,
        "command_line": shlex.join(["python", "benchmarks/adapt_hemispheres.py", *args.argv]),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    for key, fold in result["folds"].items():
        print(key, json.dumps(fold["summary"]))
    if args.write_card:
        path = real_scans.update_card_metrics(
            args.write_card, lambda metrics: metrics.setdefault("views", {}).__setitem__(
                args.card_name, card_view(result)))
        print(f"updated {path} (metrics.views.{args.card_name})")
    return 0


if __name__ == "__main__":
    from bids_mdpp.allocator import reexec_with_tuned_allocator

    reexec_with_tuned_allocator(sys.argv[1:], program=[sys.argv[0]])
    sys.exit(main())
