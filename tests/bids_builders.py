"""Builders of tiny NIfTI images and BIDS datasets for the tests."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def write_nifti(path: Path, data=None, *, shape=(16, 16, 12), zooms=(1.0, 1.0, 1.0), seed=0,
                affine=None) -> Path:
    """Write a small float32 NIfTI (random data unless ``data`` is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = np.random.default_rng(seed).random(shape, dtype=np.float32)
    if affine is None:
        affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def make_bids(root: Path, files: list[str], *, name: str = "tiny") -> Path:
    """A minimal BIDS dataset at ``root`` holding the given relative NIfTI paths."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": name, "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    subjects = sorted({f.split("/")[0] for f in files})
    (root / "participants.tsv").write_text("participant_id\n" + "".join(f"{s}\n" for s in subjects))
    (root / "README").write_text("A tiny dataset made by the tests.\n")
    for i, rel in enumerate(files):
        write_nifti(root / rel, seed=i)
    return root
