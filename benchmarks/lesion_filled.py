"""Real anatomy with few or no lesions: a labelled patient's lesions filled with normal white matter.

A model can look good on a patient with several millilitres of lesion and still call normal
bright anatomy lesion on a patient with almost none: with few lesion voxels in the image, the
per-session intensity model's lesion class and the network's borderline voxels have nothing
better to settle on than the insula, the cingulate or the periventricular caps.  No lesion-free
or low-load real brain with a reference is in the data the project holds, so this script makes
them from a labelled one.  For each labelled session of ``--data`` it writes, into a new BIDS
dataset, two participants with the same images:

* ``<label>free``: every reference lesion filled (an empty reference mask);
* ``<label>low``: the smallest lesions kept, as many as fit in ``--low-load-mm3`` (1 ml by
  default, the load at which unseen low-load patients showed their false positives), the rest
  filled.

A filled voxel takes the local mean of the normal-appearing white matter around it (a Gaussian
of :data:`LOCAL_SIGMA_MM` weighting white-matter voxels only) plus noise whose fine-scale
standard deviation matches that of the white matter.  The filled region is each removed lesion
grown by :data:`GROWTH_MM` (its partial-volume rim), outside the kept lesions and the
cerebrospinal fluid.  White matter is estimated without any model: brain voxels more than
:data:`CLEARANCE_MM` from every reference lesion whose intensity in every contrast lies within
the central part of the white-matter peak (T1-weighted images: the upper part of the brain
histogram, where white matter is brightest).  Unlabelled abnormal tissue of the patient (dirty-
appearing white matter, lesions the raters left out) stays, so the false-positive volume on
these brains is an upper bound of what a truly lesion-free brain with this anatomy would get.

Then score any model on them like any labelled data::

    python benchmarks/lesion_filled.py --out /tmp/filled
    python benchmarks/model_views.py --data /tmp/filled --labels /tmp/filled/derivatives/manual \\
        --output benchmarks/results/model_views_lesion_filled.json --write-card real-lesions-filled

Usage::

    python benchmarks/lesion_filled.py --out DIR [--data ../shared/data/mslub-cross]
        [--labels DATA/derivatives/manual] [--low-load-mm3 1000] [--seed 0]

The dataset's ``dataset_description.json`` names this script under ``GeneratedBy``, so
``model_views.py --write-card`` marks the view ``"kind": "lesion-filled"`` and the card's
real-scan DSC (the participant report's caution) does not read it.
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

#: Name under ``GeneratedBy`` of the datasets this script writes.
GENERATOR = "benchmarks/lesion_filled.py"
#: Each removed lesion is filled together with this much of the tissue around it (mm).
GROWTH_MM = 2.0
#: White matter used for the fill lies at least this far from every reference lesion (mm).
CLEARANCE_MM = 3.0
#: Width (standard deviation, mm) of the neighbourhood whose white matter a filled voxel takes.
LOCAL_SIGMA_MM = 3.0
#: Brain voxels whose T1-weighted intensity lies at or above this percentile of the brain's are
#: white-matter candidates (white matter is the brightest tissue there) ...
T1_WHITE_MATTER_PERCENTILE = 60.0
#: ... and, in every contrast, within this many robust standard deviations of their median.
WHITE_MATTER_SPREAD = 1.5
#: Brain voxels darker on T1w than halfway between the CSF and white-matter medians are CSF and
#: are not filled (unless they belong to a removed lesion).
CSF_PERCENTILE = 5.0


def components(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected lesions (26-connectivity) of a boolean ``label``: the labelled array (0 outside,
    1..n) and each component's voxel count ``(n,)``."""
    from scipy import ndimage

    labelled, count = ndimage.label(label, np.ones((3, 3, 3), bool))
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    return labelled, sizes


def smallest_within(sizes_mm3: np.ndarray, budget_mm3: float) -> list[int]:
    """Component numbers (1-based) of the smallest lesions whose volumes (mm³) add up to at
    most ``budget_mm3``, taken smallest first."""
    kept, total = [], 0.0
    for index in np.argsort(sizes_mm3, kind="stable"):
        if total + sizes_mm3[index] > budget_mm3:
            break
        kept.append(int(index) + 1)
        total += float(sizes_mm3[index])
    return kept


def white_matter(images: dict[str, np.ndarray], brain: np.ndarray, lesions: np.ndarray,
                 voxel_mm: np.ndarray) -> np.ndarray:
    """Normal-appearing white matter (boolean): brain voxels at least :data:`CLEARANCE_MM` from
    ``lesions``, in the bright part of the T1-weighted histogram, and near the median of those
    voxels in every contrast (images keyed by contrast, all of one shape with ``brain``)."""
    from scipy import ndimage

    far = ndimage.distance_transform_edt(~lesions, sampling=voxel_mm) > CLEARANCE_MM
    t1 = images.get("T1w", images.get("ceT1w"))
    candidate = brain & far
    if t1 is not None:
        candidate &= t1 >= np.percentile(t1[brain], T1_WHITE_MATTER_PERCENTILE)
    for image in images.values():
        values = image[candidate]
        median = np.median(values)
        spread = 1.4826 * np.median(np.abs(values - median))
        candidate &= np.abs(image - median) <= WHITE_MATTER_SPREAD * spread
    if candidate.sum() < 1000:
        raise ValueError(f"only {int(candidate.sum())} white-matter voxels found to fill from")
    return candidate


def local_white_matter(image: np.ndarray, wm: np.ndarray, sigma_voxels) -> np.ndarray:
    """Each voxel's local mean of ``image`` over the white matter ``wm`` (boolean, same shape):
    the white-matter voxels weighted by a Gaussian of ``sigma_voxels`` (per axis, voxels)."""
    from scipy import ndimage

    weight = ndimage.gaussian_filter(wm.astype(np.float32), sigma_voxels)
    local = ndimage.gaussian_filter(np.where(wm, image, 0).astype(np.float32), sigma_voxels)
    return local / np.maximum(weight, 1e-3)


def fill(images: dict[str, np.ndarray], brain: np.ndarray, label: np.ndarray,
         keep: np.ndarray, voxel_mm, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``images`` (contrast → float array) with the reference lesions outside ``keep`` filled
    by local normal white matter, and the filled region (boolean).  ``brain``, ``label`` and
    ``keep`` are boolean arrays of the images' shape; ``voxel_mm`` the voxel size (mm)."""
    from scipy import ndimage

    voxel_mm = np.asarray(voxel_mm, float)
    removed = label & ~keep
    grow = ndimage.distance_transform_edt(~removed, sampling=voxel_mm) <= GROWTH_MM
    near_kept = ndimage.binary_dilation(keep)
    wm = white_matter(images, brain, label, voxel_mm)
    t1 = images.get("T1w", images.get("ceT1w"))
    region = grow & brain & ~near_kept
    if t1 is not None:
        csf_level = np.percentile(t1[brain], CSF_PERCENTILE)
        region &= (t1 > 0.5 * (csf_level + np.median(t1[wm]))) | removed
    rng = np.random.default_rng(seed)
    filled = {}
    for name, image in images.items():
        image = np.asarray(image, np.float32)
        local = local_white_matter(image, wm, LOCAL_SIGMA_MM / voxel_mm)
        fine = image - ndimage.gaussian_filter(image, 1.0)
        noise = ndimage.gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), 0.5)
        noise_fine = noise - ndimage.gaussian_filter(noise, 1.0)
        noise *= fine[wm].std() / max(float(noise_fine[wm].std()), 1e-6)
        filled[name] = np.where(region, local + noise, image).astype(np.float32)
    return filled, region


def load_on_mask_grid(inputs, mask_path: Path, others: tuple[Path, ...] = ()) -> tuple:
    """A labelled session's images and reference mask, checked to share one grid: the mask
    (boolean), the images' paths and nibabel images (contrast → each), their arrays (float32),
    the brain (voxels above 0 in every image) and the voxel size (mm, ``(3,)``).  ``inputs`` is
    the session's :class:`~bids_mdpp.bids.SessionInputs`; ``others`` are further images (masks
    to paint, say) that must lie on the grid as well.  Exits naming the first file that does
    not."""
    import nibabel as nib

    mask_image = nib.load(str(mask_path))
    label = np.asarray(mask_image.dataobj) > 0
    paths = {contrast: Path(path) for contrast, path in inputs.files.items()}
    loaded = {contrast: nib.load(str(path)) for contrast, path in paths.items()}
    checked = [(paths[c], image) for c, image in loaded.items()]
    checked += [(path, nib.load(str(path))) for path in others]
    for path, image in checked:
        if image.shape[:3] != label.shape or not np.allclose(image.affine, mask_image.affine,
                                                             atol=1e-3):
            raise SystemExit(f"{path}: not on the grid of the reference mask {mask_path}; this "
                             f"script works on the images' own grid")
    arrays = {c: np.asarray(image.dataobj, np.float32) for c, image in loaded.items()}
    brain = np.all([a > 0 for a in arrays.values()], axis=0)
    return (label, paths, loaded, arrays, brain,
            np.asarray(mask_image.header.get_zooms()[:3], float))


def write_participant(out: Path, source: str, participant: str, paths: dict, loaded: dict,
                      images: dict[str, np.ndarray], mask_path: Path, reference: np.ndarray,
                      affine: np.ndarray) -> None:
    """Write participant ``participant`` of a copy of ``source`` into the dataset ``out``: its
    ``images`` (contrast → float array) as float32 NIfTI files named after the source's
    ``paths`` (contrast → path; their headers from ``loaded``, contrast → image) with the source's
    JSON sidecars, and its ``reference`` lesion mask (boolean, on ``affine``) under
    ``derivatives/manual``, named after ``mask_path``."""
    import nibabel as nib

    anat = out / f"sub-{participant}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    for contrast, path in paths.items():
        name = path.name.replace(f"sub-{source}", f"sub-{participant}", 1)
        header = loaded[contrast].header.copy()
        header.set_data_dtype(np.float32)
        nib.save(nib.Nifti1Image(images[contrast], loaded[contrast].affine, header),
                 str(anat / name))
        sidecar = path.with_name(path.name.split(".")[0] + ".json")
        if sidecar.exists():
            shutil.copyfile(sidecar, anat / name.replace(".nii.gz", ".json"))
    mask_dir = out / "derivatives" / "manual" / f"sub-{participant}" / "anat"
    mask_dir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(reference.astype(np.uint8), affine),
             str(mask_dir / mask_path.name.replace(f"sub-{source}", f"sub-{participant}", 1)))


def write_dataset(data: Path, labels: Path, out: Path, *, low_load_mm3: float, seed: int) -> list[dict]:
    """Write the lesion-filled dataset (see the module docstring); one record per participant
    written (its label, source, kept and filled volumes in mm³)."""
    import nibabel as nib

    from bids_mdpp.bids import discover, find_reference_mask

    records = []
    found = [(s, find_reference_mask(labels, s.subject, s.session)) for s in discover(data)]
    sessions = [(s, Path(mask)) for s, mask in found if mask is not None]
    if not sessions:
        raise SystemExit(f"{labels}: no reference mask for any session of {data}")
    out.mkdir(parents=True, exist_ok=True)
    for number, (inputs, mask_path) in enumerate(sessions):
        mask_image = nib.load(str(mask_path))
        label, paths, loaded, arrays, brain, voxel_mm = load_on_mask_grid(inputs, mask_path)
        labelled, sizes = components(label)
        sizes_mm3 = sizes * float(np.prod(voxel_mm))
        source = inputs.subject
        for suffix, kept_numbers in (("free", []), ("low", smallest_within(sizes_mm3, low_load_mm3))):
            keep = np.isin(labelled, kept_numbers)
            images, region = fill(arrays, brain, label, keep, voxel_mm, seed=seed + number)
            participant = f"{source}{suffix}"
            write_participant(out, source, participant, paths, loaded, images, mask_path,
                              keep, mask_image.affine)
            records.append({"participant_id": f"sub-{participant}", "source": f"sub-{source}",
                            "kept_mm3": round(float(keep.sum() * np.prod(voxel_mm)), 1),
                            "kept_lesions": len(kept_numbers),
                            "filled_mm3": round(float(region.sum() * np.prod(voxel_mm)), 1)})
    _write_descriptions(data, out, low_load_mm3=low_load_mm3, seed=seed, records=records)
    return records


def _write_descriptions(data: Path, out: Path, *, low_load_mm3: float, seed: int,
                        records: list[dict]) -> None:
    write_descriptions(
        data, out, generator=GENERATOR,
        name="Lesion-filled copies of a labelled dataset (lesion-free and low-load real anatomy)",
        about=f"reference lesions filled with local normal white matter; 'free' participants: "
              f"all, 'low': all but the smallest within {low_load_mm3:g} mm3; seed {seed}",
        labels_name="Reference lesions kept in the lesion-filled copies", records=records,
        columns=("participant_id", "source", "kept_mm3", "kept_lesions", "filled_mm3"),
        readme="Copies of a labelled MS dataset with its reference lesions filled by local normal "
               "white\nmatter, written by {generator} to measure false positives on real "
               "anatomy.\n")


def write_descriptions(data: Path, out: Path, *, generator: str, name: str, about: str,
                       labels_name: str, records: list[dict], columns: tuple[str, ...],
                       readme: str) -> None:
    """The top-level files of a copy of ``data`` written into ``out`` by ``generator``:
    ``dataset_description.json`` (``name``; ``about`` describes what was done), the reference
    masks' ``derivatives/manual/dataset_description.json`` (``labels_name``),
    ``participants.tsv`` (the ``columns`` of ``records``) and ``README`` (``readme``, where
    ``{generator}`` stands for the generator's name)."""
    description = {
        "Name": name, "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "GeneratedBy": [{"Name": generator, "Description": about}],
        "SourceDatasets": [{"URL": data.resolve().as_uri()}],
    }
    (out / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n", "utf-8")
    derivative = {"Name": labels_name, "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                  "GeneratedBy": [{"Name": generator}]}
    labels_root = out / "derivatives" / "manual"
    labels_root.mkdir(parents=True, exist_ok=True)
    (labels_root / "dataset_description.json").write_text(json.dumps(derivative, indent=2) + "\n",
                                                         "utf-8")
    rows = ["\t".join(columns)] + ["\t".join(str(r[c]) for c in columns) for r in records]
    (out / "participants.tsv").write_text("\n".join(rows) + "\n", "utf-8")
    (out / "README").write_text(readme.format(generator=generator), "utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mslub-cross",
                        help="labelled BIDS dataset whose lesions are filled (default: mslub-cross)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="reference masks (default: DATA/derivatives/manual)")
    parser.add_argument("--out", type=Path, required=True,
                        help="new BIDS dataset to write (absent or empty)")
    parser.add_argument("--low-load-mm3", type=float, default=1000.0,
                        help="most lesion volume kept in the low-load copy, mm3 (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fill's noise")
    args = parser.parse_args(argv)
    if args.low_load_mm3 <= 0:
        parser.error(f"--low-load-mm3 must be positive, got {args.low_load_mm3:g}")
    if not args.data.is_dir():
        parser.error(f"{args.data}: no such dataset")
    labels = args.labels or args.data / "derivatives" / "manual"
    if not labels.is_dir():
        parser.error(f"{labels}: no such labels folder")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out}: exists and is not empty")
    for record in write_dataset(args.data, labels, args.out, low_load_mm3=args.low_load_mm3,
                                seed=args.seed):
        print(json.dumps(record))


if __name__ == "__main__":
    main()
