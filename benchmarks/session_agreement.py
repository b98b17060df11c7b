"""Agreement of a model's lesion masks between two sessions of one patient (no labels needed).

For every requested subset of contrasts (written like :func:`bids_mdpp.contrasts.subset_name`):

1. a BIDS dataset of that subset's images of both sessions is built under ``--work`` and the
   console script runs on it as users run it (``benchmarks/real_scans.py`` does both);
2. the second session's reference image (the image its mask lies on, named by the mask sidecar's
   ``SpatialReference``) is registered rigidly to the first session's with the product's own
   registration (:func:`bids_mdpp.preproc.register.register_rigid`), once per reference contrast;
3. the second session's mask is resampled onto the first session's grid (nearest neighbour) and
   compared with the first session's mask.

Reported per subset: each session's total lesion volume (mm³) and lesion count (mask sidecars),
the relative volume difference ``|V2 − V1| / ((V1 + V2) / 2)``, and the DSC of the two masks on
the first session's grid.  Lesions really change between sessions (203 days apart in MSLUB's
longitudinal patient), so perfect agreement is not expected; a model whose masks change much more
between subsets than between sessions, or that disagrees with itself across sessions, is not
stable.  Writes ``benchmarks/results/session_agreement.json``.

Usage::

    python benchmarks/session_agreement.py [--model MODEL_DIR] [--data ../shared/data/mslub-long] \\
        [--subject 01] [--sessions 1 2] [--subsets "T1w+FLAIR+T2w,FLAIR,T2w,T1w"] [--work DIR] \\
        [--nprocs N] [--tta] [--intensity-model combine|off] \\
        [--output benchmarks/results/session_agreement.json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_scans  # noqa: E402  (the subset datasets and the console-script runs)

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mslub-long"
RESULTS = HERE / "results" / "session_agreement.json"
DEFAULT_SUBSETS = "T1w+FLAIR+T2w,T1w+FLAIR,FLAIR+T2w,T1w+T2w,FLAIR,T2w,T1w"


def mask_on_fixed_grid(mask: nib.spatialimages.SpatialImage, fixed: nib.spatialimages.SpatialImage,
                       transform: sitk.Transform) -> np.ndarray:
    """``mask`` (moving space) resampled onto ``fixed``'s grid with nearest neighbour (bool).

    ``transform`` maps fixed points to moving points (LPS mm), as
    :func:`bids_mdpp.preproc.register.register_rigid` returns it.
    """
    from bids_mdpp.preproc.sitkio import nib_to_sitk

    moved = sitk.Resample(nib_to_sitk(mask, dtype=np.uint8), nib_to_sitk(fixed), transform,
                          sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(moved).transpose(2, 1, 0) > 0


def agreement(first: np.ndarray, second_on_first: np.ndarray, first_sidecar: dict,
              second_sidecar: dict) -> dict:
    """Volumes, counts, relative volume difference and DSC of two sessions' masks."""
    v1, v2 = float(first_sidecar["TotalLesionVolume"]), float(second_sidecar["TotalLesionVolume"])
    both = first.sum() + second_on_first.sum()
    return {
        "volume_mm3": [round(v1, 1), round(v2, 1)],
        "lesion_count": [int(first_sidecar["LesionCount"]), int(second_sidecar["LesionCount"])],
        "relative_volume_difference": round(abs(v2 - v1) / ((v1 + v2) / 2), 4) if v1 + v2 else 0.0,
        "dsc_between_sessions": round(float(2 * (first & second_on_first).sum() / both), 4)
        if both else 1.0,
    }


def session_outputs(out_dir: Path, subject: str, session: str) -> tuple[Path, dict]:
    """The mask of ``sub-<subject>_ses-<session>`` in ``out_dir`` and its sidecar."""
    masks = sorted(out_dir.glob(f"sub-{subject}/ses-{session}/anat/*_label-lesion_mask.nii.gz"))
    if len(masks) != 1:
        raise real_scans.BenchmarkError(
            f"{out_dir}: expected one lesion mask of sub-{subject} ses-{session}, found {len(masks)}")
    sidecar = masks[0].with_name(masks[0].name.replace(".nii.gz", ".json"))
    return masks[0], json.loads(sidecar.read_text(encoding="utf-8"))


def raw_path(data_dir: Path, uri: str) -> Path:
    """The file a ``bids:raw:`` URI of a sidecar names, inside ``data_dir``."""
    prefix = "bids:raw:"
    if not uri.startswith(prefix):
        raise real_scans.BenchmarkError(f"unexpected SpatialReference {uri!r}")
    return data_dir / uri[len(prefix):]


def run_subset(subset: tuple[str, ...], sessions: dict, args: argparse.Namespace,
               transforms: dict) -> dict:
    """Segment both sessions from ``subset`` and compare their masks on the first's grid."""
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.imageio import load_image
    from bids_mdpp.preproc.register import register_rigid

    name = subset_name(subset)
    keys = [f"sub-{args.subject}_ses-{s}" for s in args.sessions]
    missing = [k for k in keys if k not in real_scans.sessions_with_subset(sessions, subset, args.data)]
    if missing:
        raise real_scans.BenchmarkError(f"subset {name}: {', '.join(missing)} lack some of it")
    folder = args.work / name.replace("+", "-")
    bids_dir, out_dir = folder / "bids", folder / "out"
    real_scans.build_subset_dataset(args.data, sessions, keys, subset, bids_dir)
    if out_dir.exists():  # a finished participant would be skipped, not segmented again
        shutil.rmtree(out_dir)
    seconds = real_scans.run_command(
        real_scans.participant_command(bids_dir, out_dir, folder / "work", args.model, args.nprocs,
                                       args.tta, args.intensity_model), folder / "participant.log")
    (mask1, side1), (mask2, side2) = (session_outputs(out_dir, args.subject, s) for s in args.sessions)
    fixed = load_image(raw_path(args.data, side1["SpatialReference"]))
    moving_path = raw_path(args.data, side2["SpatialReference"])
    contrast = side1["ReferenceContrast"]
    if contrast not in transforms:
        transforms[contrast] = register_rigid(fixed, load_image(moving_path),
                                              fixed_name=fixed.get_filename(),
                                              moving_name=moving_path)
    second = mask_on_fixed_grid(load_image(mask2, check_data=False), fixed, transforms[contrast])
    first = np.asarray(load_image(mask1, check_data=False).dataobj) > 0
    return {**agreement(first, second, side1, side2), "reference_contrast": contrast,
            "threshold": [side1.get("Threshold"), side2.get("Threshold")],
            "seconds": round(seconds, 1)}


def parse_args(argv=None) -> argparse.Namespace:
    from bids_mdpp.config import INTENSITY_MODEL_MODES
    from bids_mdpp.model import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--subject", default="01")
    parser.add_argument("--sessions", nargs=2, default=["1", "2"])
    parser.add_argument("--subsets", default=DEFAULT_SUBSETS)
    parser.add_argument("--work", type=Path, help="datasets, outputs and caches (default: temporary)")
    parser.add_argument("--nprocs", type=int, help="passed to the participant level")
    parser.add_argument("--tta", action="store_true", help="participant level with --tta")
    parser.add_argument("--intensity-model", choices=INTENSITY_MODEL_MODES,
                        default=INTENSITY_MODEL_MODES[0],
                        help="passed to the participant level (its default: combine)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.model = args.model.expanduser().absolute()
    args.data = args.data.expanduser().absolute()
    return args


def benchmark(args: argparse.Namespace) -> dict:
    from bids_mdpp import __version__
    from bids_mdpp.contrasts import subset_name
    from bids_mdpp.model import WEIGHTS_NAME, sha256_of

    real_scans.read_model_card(args.model)
    sessions = real_scans.session_images(args.data)
    transforms: dict = {}
    results = {}
    for subset in real_scans.parse_subsets(args.subsets):
        name = subset_name(subset)
        results[name] = run_subset(subset, sessions, args, transforms)
        entry = results[name]
        print(f"{name}: volumes {entry['volume_mm3']} mm³, relative difference "
              f"{entry['relative_volume_difference']:.3f}, DSC between sessions "
              f"{entry['dsc_between_sessions']:.3f}", flush=True)
    return {
        "model": str(args.model), "model_sha256": sha256_of(args.model / WEIGHTS_NAME),
        "data": str(args.data), "subject": args.subject, "sessions": args.sessions,
        "tta": bool(args.tta), "intensity_model": args.intensity_model, "subsets": results,
        "bids_mdpp": __version__,
        "command_line": shlex.join(["python", "benchmarks/session_agreement.py", *args.argv]),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = real_scans.in_work_dir(benchmark, args, "bids_mdpp-sessions-")
    except real_scans.BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
