"""Fake sessions for the outputs and report tests: a tiny raw BIDS dataset and its results.

Imported by ``test_outputs_*`` and ``test_report_*``; it holds builders and fixtures only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_mdpp.session import PreprocResult, SessionInputs

MODEL_CARD = {"name": "tiny", "version": "1.2.3", "mode": "moddrop++",
              "contrasts": ["T1w", "FLAIR", "T2w", "PDw", "ceT1w"]}
SHA = "ab" * 32
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
ITK_IDENTITY = ("#Insight Transform File V1.0\n#Transform 0\nTransform: Euler3DTransform_double_3_3\n"
                "Parameters: 0 0 0 0 0 0\nFixedParameters: 0 0 0 0\n")


@dataclass
class FakeSession:
    """A raw dataset folder, a session's inputs, its preprocessing result and a probability."""

    raw: Path
    inputs: SessionInputs
    preproc: PreprocResult
    prob: nib.Nifti1Image


def ball(shape, centre, radius) -> np.ndarray:
    """Boolean ball of ``radius`` voxels around ``centre`` (voxel indices)."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    dist = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return dist <= radius ** 2


def head(shape, affine, seed: int = 0) -> nib.Nifti1Image:
    """A smooth 'brain' image: bright ellipsoid on a dark background."""
    rng = np.random.default_rng(seed)
    inside = ball(shape, [s / 2 for s in shape], min(shape) * 0.4)
    data = np.where(inside, np.float32(100), np.float32(0))
    data[inside] += rng.normal(0, 5, int(inside.sum())).astype(np.float32)
    return nib.Nifti1Image(data, affine)


def make_session(root: Path, *, subject: str = "01", session: str | None = None,
                 names: dict[str, str] | None = None, shape=(32, 32, 32), voxel_mm=1.0,
                 lesions=(((10, 12, 14), 2.0), ((22, 20, 16), 3.0)), reference: str = "FLAIR",
                 qc: bool = True, prob_data: np.ndarray | None = None,
                 extension: str = ".nii.gz") -> FakeSession:
    """Write a raw dataset with one session and fake preprocessing outputs.

    ``names`` maps contrast → raw file name entities after ``sub-X[_ses-Y]_`` (default:
    FLAIR and T1w without extra entities).  The probability is 0.9 inside each lesion ball
    (centre, radius in voxels) and 0.05 elsewhere, unless ``prob_data`` is given.
    """
    names = names or {"FLAIR": "FLAIR", "T1w": "T1w"}
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "dataset_description.json").write_text(json.dumps(
        {"Name": "fake", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    key = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    anat = raw / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -np.array(shape) * voxel_mm / 2
    files = {}
    for i, (contrast, name) in enumerate(names.items()):
        files[contrast] = anat / f"{key}_{name}{extension}"
        nib.save(head(shape, affine, seed=i), files[contrast])
    work = root / "work" / key
    work.mkdir(parents=True, exist_ok=True)
    mask = work / "brainmask.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(nib.load(files[reference]).dataobj) > 0)
                             .astype(np.uint8), affine), mask)
    xfms = {}
    for contrast in files:
        if contrast != reference:
            xfms[contrast] = work / f"{contrast}_xfm.txt"
            xfms[contrast].write_text(ITK_IDENTITY)
    qc_files = {}
    if qc:
        from matplotlib import pyplot as plt

        for name in ("brainmask", *(f"reg_{c}" for c in xfms)):
            qc_files[name] = work / f"{name}.svg"
            fig = plt.figure(figsize=(2, 1))
            fig.text(0.1, 0.5, name)
            fig.savefig(qc_files[name])
            plt.close(fig)
    preproc = PreprocResult(reference=reference, reference_native=files[reference],
                            images=dict(files), brain_mask=mask, xfms=xfms, qc=qc_files)
    if prob_data is None:
        prob_data = np.full(shape, 0.05, np.float32)
        for centre, radius in lesions:
            prob_data[ball(shape, centre, radius)] = 0.9
    inputs = SessionInputs(subject=subject, session=session, files=files,
                           candidates={c: (p,) for c, p in files.items()})
    return FakeSession(raw, inputs, preproc, nib.Nifti1Image(prob_data, affine))


@pytest.fixture
def fake(tmp_path) -> FakeSession:
    """A session of sub-01 (no session label) with FLAIR and T1w and two lesions."""
    return make_session(tmp_path)
