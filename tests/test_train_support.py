"""Synthetic data for the training tests: tiny brains with blob lesions, as caches or BIDS.

Imported by the ``test_train_*`` modules; it holds no test itself.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

#: Normalised intensities (background −1, white matter −0.5) per contrast: (GM, CSF, lesion).
NORMALISED = {"T1w": (-0.62, -0.85, -0.7), "FLAIR": (-0.35, -0.9, 0.2),
              "T2w": (-0.3, 0.4, 0.1), "PDw": (-0.35, -0.2, -0.2), "ceT1w": (-0.62, -0.85, -0.4)}
#: Raw scanner-like intensities per contrast: (WM, GM, CSF, lesion).
RAW = {"T1w": (900, 650, 250, 550), "FLAIR": (500, 650, 100, 1200), "T2w": (400, 600, 1500, 1100),
       "PDw": (700, 850, 950, 950), "ceT1w": (900, 650, 250, 800)}
TINY_NETWORK = ("--network-size", "tiny")


def phantom(seed: int, shape=(40, 40, 40)):
    """Tissue maps of a tiny brain: (wm, gm, csf, lesion) boolean arrays of ``shape``."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.asarray(shape, dtype=np.float32) - 1)[:, None, None, None] / 2
    radii = np.asarray(shape, dtype=np.float32)[:, None, None, None] * rng.uniform(0.36, 0.42)
    r = np.sqrt((((grid - centre) / radii) ** 2).sum(0))
    brain = r < 1.0
    gm = brain & (r > 0.75)
    csf = r < 0.18
    wm = brain & ~gm & ~csf
    lesion = np.zeros(shape, bool)
    for _ in range(int(rng.integers(3, 6))):
        point = centre[:, 0, 0, 0] + rng.uniform(-0.5, 0.5, 3) * radii[:, 0, 0, 0]
        size = rng.uniform(1.8, 3.2)
        lesion |= np.sqrt(((grid - point[:, None, None, None]) ** 2).sum(0)) < size
    lesion &= wm
    return wm, gm, csf & brain, lesion


def normalised_subject(seed: int, contrasts=("T1w", "FLAIR", "T2w"), shape=(40, 40, 40)):
    """Normalised volumes on the model grid + label + brain mask, as preprocessing makes them."""
    rng = np.random.default_rng(seed + 1000)
    wm, gm, csf, lesion = phantom(seed, shape)
    brain = wm | gm | csf
    volumes = {}
    for contrast in contrasts:
        g, c, les = NORMALISED[contrast]
        v = np.full(shape, -1.0, np.float32)
        v[wm], v[gm], v[csf] = -0.5, g, c
        v[lesion] = les
        v[brain] += 0.02 * rng.standard_normal(int(brain.sum()))
        volumes[contrast] = v
    return volumes, lesion.astype(np.uint8), brain.astype(np.uint8)


def write_bids_dataset(root: Path, subjects: dict[str, tuple[str, ...]], *, sessions=None,
                       masks=True, shape=(40, 40, 40), labels_name="labels") -> tuple[Path, Path]:
    """A skull-stripped multi-contrast BIDS dataset and its lesion-mask derivatives.

    ``subjects``: label → contrasts.  ``sessions``: label → session labels (None: no
    sessions).  ``masks``: True for all, or a set of "sub-X[_ses-Y]" keys that get a mask.
    Returns (bids_dir, labels_dir).
    """
    bids = root / "bids"
    labels = bids / "derivatives" / labels_name
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "tiny training set", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    (bids / "participants.tsv").write_text(
        "participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
    labels.mkdir(parents=True)
    (labels / "dataset_description.json").write_text(json.dumps(
        {"Name": "masks", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "manual"}]}))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -np.asarray(shape) / 2
    for n, (subject, contrasts) in enumerate(subjects.items()):
        for m, session in enumerate((sessions or {}).get(subject, [None])):
            key = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            folder = Path(f"sub-{subject}") / (f"ses-{session}" if session else "") / "anat"
            rng = np.random.default_rng(100 * n + m)
            wm, gm, csf, lesion = phantom(100 * n + m, shape)
            smooth = ndimage.gaussian_filter
            for contrast in contrasts:
                w, g, c, les = RAW[contrast]
                v = np.zeros(shape, np.float32)
                v[wm], v[gm], v[csf] = w, g, c
                v[lesion] = les
                brain = wm | gm | csf
                v = smooth(v, 0.6) * brain
                v[brain] *= 1 + 0.03 * rng.standard_normal(int(brain.sum()))
                name = key + ("_ce-gadolinium_T1w" if contrast == "ceT1w" else f"_{contrast}")
                (bids / folder).mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(v.astype(np.float32), affine),
                         str(bids / folder / f"{name}.nii.gz"))
            if masks is True or key in masks:
                (labels / folder).mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine),
                         str(labels / folder / f"{key}_label-lesion_mask.nii.gz"))
    return bids, labels
