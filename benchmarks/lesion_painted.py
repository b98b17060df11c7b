"""Real anatomy with many lesions: another patient's lesion mask painted into a labelled patient.

A patient with confluent lesions (50 ml and more) tests what a patient with a few millilitres
cannot: whether the probabilities inside large lesions reach the threshold, and whether the
per-session intensity model, whose lesion class then holds a large share of the white matter,
still tells lesion from normal tissue.  The data the project holds has one labelled patient
(8.5 ml) and, from the same database, the lesion masks of 27 others on the same MNI grid, five
of them over 35 ml.  This script paints such a mask into the labelled patient's images and
writes, into a new BIDS dataset, one participant per mask (``<label>high``, or
``<label>high<N>`` for the N-th of several) whose reference is the painted lesions together with
the patient's own.

The painted region is the mask inside the patient's brain, outside its own lesions and outside
its cerebrospinal fluid (a ventricle of this patient where the other patient had white matter
stays a ventricle).  A painted voxel takes the patient's local normal white matter
(:func:`lesion_filled.local_white_matter`) plus the offset from local white matter, in every
contrast at once, of one of the patient's own reference lesion voxels, drawn among those as deep
inside their lesion as the painted voxel is inside the painted region (depth in whole
millimetres from the nearest non-lesion tissue, cerebrospinal fluid not counting as an edge,
capped at the deepest depth with at least :data:`MIN_VOXELS_PER_DEPTH` real voxels), at a
quantile of their lesion strength that varies smoothly in space (:data:`COHERENCE_MM`).  So
the painted lesions have the real lesions' intensities, their joint behaviour across contrasts
(bright on FLAIR and T2w, as dark on T1w as those lesions are), their partial-volume rims and
their voxel-scale noise; what they do not have is the other patient's atrophy (enlarged
ventricles) or the texture of lesions larger than the patient's own.

The painted masks are among the 27 whose frequency is the intensity model's lesion prior, which
would tell the model where the painted lesions lie (it does: on a 52 ml mask, half the prior
inside the painted lesions came from that mask itself, and the mixture's DSC fell from 0.65 to
0.52 without it).  So the dataset also holds, in ``derivatives/lesion-atlas``
(:data:`LESION_ATLAS_DIR`), the shipped masks less the painted ones, and a model is scored with
the prior made from those (``BIDS_MDPP_LESION_ATLAS``, :mod:`bids_mdpp.atlas_priors`)::

    python benchmarks/lesion_painted.py --out /tmp/painted
    BIDS_MDPP_LESION_ATLAS=/tmp/painted/derivatives/lesion-atlas \\
      python benchmarks/model_views.py --data /tmp/painted --labels /tmp/painted/derivatives/manual \\
        --output benchmarks/results/model_views_lesion_painted.json --write-card real-lesions-painted

Usage::

    python benchmarks/lesion_painted.py --out DIR [--data ../shared/data/mslub-cross]
        [--labels DATA/derivatives/manual] [--masks MASK ...] [--seed 0]

The masks default to :data:`DEFAULT_MASKS` (the largest of ``../shared/data/lesion-atlas``,
52 ml); each must lie on the labelled images' grid.  The dataset's ``dataset_description.json``
names this script under ``GeneratedBy``, so ``model_views.py --write-card`` marks the view
``"kind": "lesion-painted"`` and the card's real-scan DSC (the participant report's caution)
does not read it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from lesion_filled import (CSF_PERCENTILE, LOCAL_SIGMA_MM, local_white_matter,  # noqa: E402
                           load_on_mask_grid, white_matter, write_descriptions,
                           write_participant)

#: Name under ``GeneratedBy`` of the datasets this script writes.
GENERATOR = "benchmarks/lesion_painted.py"
#: The lesion masks painted by default (MSLUB patient 12, 52 ml, on the FSL MNI152 1 mm grid).
DEFAULT_MASKS = (ROOT.parent / "shared" / "data" / "lesion-atlas"
                 / "mslub-12_space-MNI152NLin6Asym_label-lesion_mask.nii.gz",)
#: Folder of the written dataset that holds the shipped lesion masks less the painted ones.
LESION_ATLAS_DIR = Path("derivatives") / "lesion-atlas"
#: Where the white matter within :data:`lesion_filled.LOCAL_SIGMA_MM` of a painted voxel weighs
#: less than this (deep in a confluent lesion), its local white matter is taken over
#: :data:`BROAD_SIGMA_MM` instead.
MIN_LOCAL_WEIGHT = 0.1
BROAD_SIGMA_MM = 10.0
#: Neighbouring painted voxels draw real voxels of similar lesion strength
#: (:func:`lesion_strength`): the quantile each draws is read off a random field smoothed over
#: this many mm, so that bright and dark parts of the painted lesions form patches as in real
#: lesions, rather than a speckle.
COHERENCE_MM = 2.0
#: Depths (whole mm) are capped at the deepest one with at least this many real lesion voxels.
MIN_VOXELS_PER_DEPTH = 50


def csf(images: dict[str, np.ndarray], brain: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Cerebrospinal fluid (boolean): brain voxels darker on the T1-weighted image than halfway
    between its :data:`lesion_filled.CSF_PERCENTILE` percentile and the white-matter median
    (the rule :func:`lesion_filled.fill` keeps CSF out of its region with)."""
    t1 = images.get("T1w", images.get("ceT1w"))
    if t1 is None:
        raise ValueError("a T1-weighted image (T1w or ceT1w) is needed to tell CSF apart")
    level = 0.5 * (np.percentile(t1[brain], CSF_PERCENTILE) + np.median(t1[wm]))
    return brain & (t1 <= level)


def depth_mm(lesion: np.ndarray, transparent: np.ndarray, voxel_mm) -> np.ndarray:
    """Whole millimetres (int, ≥ 1 inside ``lesion``, 0 outside) from each lesion voxel to the
    nearest voxel that is neither lesion nor ``transparent`` (boolean, same shape)."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(lesion | transparent, sampling=voxel_mm)
    return np.where(lesion, np.maximum(np.floor(distance), 1), 0).astype(int)


def local_white_matter_everywhere(image: np.ndarray, wm: np.ndarray, voxel_mm,
                                  near: np.ndarray) -> np.ndarray:
    """:func:`lesion_filled.local_white_matter` over :data:`lesion_filled.LOCAL_SIGMA_MM` where
    ``near`` (boolean, :func:`enough_white_matter_near`), over :data:`BROAD_SIGMA_MM` elsewhere."""
    voxel_mm = np.asarray(voxel_mm, float)
    return np.where(near, local_white_matter(image, wm, LOCAL_SIGMA_MM / voxel_mm),
                    local_white_matter(image, wm, BROAD_SIGMA_MM / voxel_mm))


def enough_white_matter_near(wm: np.ndarray, voxel_mm) -> np.ndarray:
    """Where the white matter ``wm`` within :data:`lesion_filled.LOCAL_SIGMA_MM` of a voxel weighs
    at least :data:`MIN_LOCAL_WEIGHT` (boolean)."""
    from scipy import ndimage

    sigma = LOCAL_SIGMA_MM / np.asarray(voxel_mm, float)
    return ndimage.gaussian_filter(wm.astype(np.float32), sigma) >= MIN_LOCAL_WEIGHT


def lesion_strength(offsets: np.ndarray, names) -> np.ndarray:
    """How lesion-like each real lesion voxel is ``(N,)``: its offsets from white matter
    ``(N, C)`` in units of each contrast's robust spread, summed with the sign lesions take in
    that contrast (brighter on FLAIR, T2w and PDw, darker on T1w and ce-T1w)."""
    sign = np.array([-1.0 if name in ("T1w", "ceT1w") else 1.0 for name in names])
    centred = offsets - np.median(offsets, axis=0)
    spread = 1.4826 * np.median(np.abs(centred), axis=0)
    return (centred / np.maximum(spread, 1e-6)) @ sign


def smooth_field(shape, sigma_voxels, seed: int) -> np.ndarray:
    """Gaussian white noise of ``shape`` smoothed by ``sigma_voxels`` (float32)."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return ndimage.gaussian_filter(noise, sigma_voxels)


def paint(images: dict[str, np.ndarray], brain: np.ndarray, label: np.ndarray,
          mask: np.ndarray, voxel_mm, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``images`` (contrast → float array) with ``mask`` painted in as lesions (see the module
    docstring), and the painted region (boolean).  ``brain``, ``label`` (the patient's own
    lesions) and ``mask`` are boolean arrays of the images' shape; ``voxel_mm`` the voxel size
    (mm).  Raises :class:`ValueError` when nothing of ``mask`` can be painted or ``label`` has no
    lesion to take intensities from."""
    voxel_mm = np.asarray(voxel_mm, float)
    if not label.any():
        raise ValueError("the patient has no reference lesion to take intensities from")
    wm_all = white_matter(images, brain, label, voxel_mm)
    fluid = csf(images, brain, wm_all)
    region = mask & brain & ~label & ~fluid
    if not region.any():
        raise ValueError("the mask has no voxel in this patient's brain outside its lesions and CSF")
    wm = white_matter(images, brain, label | region, voxel_mm)
    names = sorted(images)
    near = enough_white_matter_near(wm, voxel_mm)
    local = {name: local_white_matter_everywhere(np.asarray(images[name], np.float32), wm,
                                                 voxel_mm, near) for name in names}
    real_depth = depth_mm(label, fluid, voxel_mm)[label]
    offsets = np.stack([np.asarray(images[n], np.float32)[label] - local[n][label] for n in names],
                       axis=1)
    counts = np.bincount(real_depth)
    cap = max(d for d in range(1, len(counts)) if counts[d] >= MIN_VOXELS_PER_DEPTH) \
        if counts[1:].max() >= MIN_VOXELS_PER_DEPTH else int(real_depth.max())
    real_depth = np.minimum(real_depth, cap)
    painted_depth = np.minimum(depth_mm(region, fluid, voxel_mm)[region], cap)
    strength = lesion_strength(offsets, names)
    field = smooth_field(region.shape, COHERENCE_MM / voxel_mm, seed)[region]
    drawn = np.empty((int(region.sum()), len(names)), np.float32)
    for depth in np.unique(painted_depth):
        pool = np.flatnonzero(real_depth == depth)
        if pool.size == 0:                      # a depth the real lesions lack: the nearest below
            pool = np.flatnonzero(real_depth == real_depth[real_depth < depth].max())
        pool = pool[np.argsort(strength[pool], kind="stable")]
        rows = np.flatnonzero(painted_depth == depth)
        quantile = (np.argsort(np.argsort(field[rows], kind="stable")) + 0.5) / rows.size
        drawn[rows] = offsets[pool[(quantile * pool.size).astype(int)]]
    painted = {}
    for k, name in enumerate(names):
        image = np.asarray(images[name], np.float32).copy()
        image[region] = local[name][region] + drawn[:, k]
        painted[name] = image
    return painted, region


def write_dataset(data: Path, labels: Path, out: Path, masks: list[Path], *, seed: int) -> list[dict]:
    """Write the painted dataset (see the module docstring); one record per participant written
    (its label, source, mask, and the painted and reference volumes in mm³)."""
    import nibabel as nib

    from bids_mdpp.bids import discover, find_reference_mask

    found = [(s, find_reference_mask(labels, s.subject, s.session)) for s in discover(data)]
    sessions = [(s, Path(m)) for s, m in found if m is not None]
    if not sessions:
        raise SystemExit(f"{labels}: no reference mask for any session of {data}")
    inputs, mask_path = sessions[0]
    reference = nib.load(str(mask_path))
    label, paths, loaded, arrays, brain, voxel_mm = load_on_mask_grid(inputs, mask_path,
                                                                      tuple(masks))
    voxel_mm3 = float(np.prod(voxel_mm))
    out.mkdir(parents=True, exist_ok=True)
    records = []
    source = inputs.subject
    for number, mask_file in enumerate(masks):
        mask = np.asarray(nib.load(str(mask_file)).dataobj) > 0
        try:
            images, region = paint(arrays, brain, label, mask, voxel_mm, seed=seed + number)
        except ValueError as exc:
            raise SystemExit(f"{mask_file}: {exc}") from exc
        participant = f"{source}high" + (str(number + 1) if len(masks) > 1 else "")
        write_participant(out, source, participant, paths, loaded, images, mask_path,
                          label | region, reference.affine)
        records.append({"participant_id": f"sub-{participant}", "source": f"sub-{source}",
                        "mask": mask_file.name,
                        "mask_mm3": round(float(mask.sum()) * voxel_mm3, 1),
                        "painted_mm3": round(float(region.sum()) * voxel_mm3, 1),
                        "reference_mm3": round(float((label | region).sum()) * voxel_mm3, 1)})
    _write_descriptions(data, out, seed=seed, records=records)
    write_atlas_without(out / LESION_ATLAS_DIR, [m.name for m in masks])
    return records


def write_atlas_without(folder: Path, names: list[str]) -> list[Path]:
    """Copy the shipped lesion masks into ``folder``, less those named ``names`` (the painted
    ones), so that the lesion prior of a run with :data:`bids_mdpp.atlas_priors.LESION_ATLAS_ENV`
    set to ``folder`` holds nothing of the painted patients; the copies written."""
    from bids_mdpp.atlas_priors import lesion_atlas_paths

    folder.mkdir(parents=True, exist_ok=True)
    kept = [path for path in lesion_atlas_paths() if path.name not in names]
    for path in kept:
        shutil.copyfile(path, folder / path.name)
    return [folder / path.name for path in kept]


def _write_descriptions(data: Path, out: Path, *, seed: int, records: list[dict]) -> None:
    write_descriptions(
        data, out, generator=GENERATOR,
        name="Lesion-painted copies of a labelled dataset (high-load real anatomy)",
        about=f"other patients' lesion masks painted with the patient's own lesion intensities; "
              f"seed {seed}",
        labels_name="Reference lesions of the lesion-painted copies", records=records,
        columns=("participant_id", "source", "mask", "mask_mm3", "painted_mm3", "reference_mm3"),
        readme="Copies of a labelled MS patient with other patients' lesion masks painted in with "
               "the\npatient's own lesion intensities, written by {generator} to measure a model "
               "on\nhigh-load real anatomy.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mslub-cross",
                        help="labelled BIDS dataset to paint into (default: mslub-cross); its "
                             "first labelled session is used")
    parser.add_argument("--labels", type=Path, default=None,
                        help="reference masks (default: DATA/derivatives/manual)")
    parser.add_argument("--masks", type=Path, nargs="+", default=list(DEFAULT_MASKS),
                        help="lesion masks to paint, on the images' grid (default: the 52 ml "
                             "MSLUB patient 12 of ../shared/data/lesion-atlas)")
    parser.add_argument("--out", type=Path, required=True,
                        help="new BIDS dataset to write (absent or empty)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn intensities")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"{args.data}: no such dataset")
    labels = args.labels or args.data / "derivatives" / "manual"
    if not labels.is_dir():
        parser.error(f"{labels}: no such labels folder")
    for mask in args.masks:
        if not mask.is_file():
            parser.error(f"{mask}: no such mask")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out}: exists and is not empty")
    for record in write_dataset(args.data, labels, args.out, list(args.masks), seed=args.seed):
        print(json.dumps(record))


if __name__ == "__main__":
    main()
