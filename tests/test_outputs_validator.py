"""The written folder is a valid BIDS-derivatives dataset that pybids indexes (real MSLUB data).

The mslub-cross images are already bias-corrected, skull-stripped and on one grid, so they
serve as their own "preprocessed" images; the probability map is the smoothed consensus mask.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from test_outputs_fakes import DATA_DIR, ITK_IDENTITY, MODEL_CARD, SHA

from bids_mdpp.outputs import write_dataset_description, write_session_outputs
from bids_mdpp.reports.boilerplate import write_citation
from bids_mdpp.reports.participant import SessionReport, write_participant_report
from bids_mdpp.session import PreprocResult, SessionInputs

RAW = DATA_DIR / "mslub-cross"
VALIDATOR = (shutil.which("bids-validator-deno")
             or str(Path(sys.executable).parent / "bids-validator-deno"))

pytestmark = pytest.mark.skipif(not RAW.is_dir(), reason=f"real data not found at {RAW}")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """OUTPUT_DIR after a full participant write (outputs, report, citation, a work folder)."""
    tmp = tmp_path_factory.mktemp("mslub")
    anat = RAW / "sub-26" / "anat"
    files = {"T1w": anat / "sub-26_T1w.nii.gz", "FLAIR": anat / "sub-26_FLAIR.nii.gz",
             "T2w": anat / "sub-26_T2w.nii.gz", "ceT1w": anat / "sub-26_ce-gadolinium_T1w.nii.gz"}
    flair = nib.load(files["FLAIR"])
    brain = tmp / "brainmask.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(flair.dataobj) > 0).astype(np.uint8), flair.affine), brain)
    xfms = {}
    for contrast in ("T1w", "T2w", "ceT1w"):
        xfms[contrast] = tmp / f"{contrast}.txt"
        xfms[contrast].write_text(ITK_IDENTITY)
    preproc = PreprocResult("FLAIR", files["FLAIR"], dict(files), brain, xfms, {})
    inputs = SessionInputs("26", None, files, {c: (p,) for c, p in files.items()})
    manual = nib.load(RAW / "derivatives/manual/sub-26/anat/sub-26_label-lesion_mask.nii.gz")
    prob = ndimage.gaussian_filter(np.asarray(manual.dataobj, dtype=np.float32), 1.0)
    out = tmp / "out"
    write_dataset_description(out, bids_dir=RAW)
    outputs = write_session_outputs(out, inputs, preproc, nib.Nifti1Image(prob, manual.affine),
                                    model_card=MODEL_CARD, model_sha256=SHA)
    report = SessionReport(inputs, preproc, outputs, "Images were used as provided.", None)
    write_participant_report(out, "26", [report])
    write_citation(out, report.methods)
    (out / "work" / "sub-26").mkdir(parents=True)
    (out / "work" / "sub-26" / "node.pklz").write_bytes(b"cache")
    return out


@pytest.mark.skipif(not Path(VALIDATOR).exists(), reason="bids-validator-deno is not installed")
def test_bids_validator_reports_no_error(written):
    run = subprocess.run([VALIDATOR, str(written), "--datasetTypes", "derivative", "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    issues = json.loads(run.stdout)["issues"]["issues"]
    errors = [issue for issue in issues if issue["severity"] == "error"]
    assert errors == [], errors
    assert "README_FILE_MISSING" not in {issue["code"] for issue in issues}
    assert run.returncode == 0


def test_pybids_finds_the_mask_as_a_derivative(written):
    import bids

    layout = bids.BIDSLayout(str(RAW), derivatives=str(written))
    masks = layout.get(scope="bids_mdpp", subject="26", suffix="mask", label="lesion",
                       extension=".nii.gz")
    assert [Path(m.path).name for m in masks] == ["sub-26_label-lesion_mask.nii.gz"]
    assert masks[0].get_metadata()["LesionCount"] > 0


def test_the_mask_matches_the_consensus_it_came_from(written):
    mask = np.asarray(nib.load(written / "sub-26/anat/sub-26_label-lesion_mask.nii.gz").dataobj)
    manual = np.asarray(nib.load(
        RAW / "derivatives/manual/sub-26/anat/sub-26_label-lesion_mask.nii.gz").dataobj) > 0
    dice = 2 * np.logical_and(mask > 0, manual).sum() / ((mask > 0).sum() + manual.sum())
    assert dice > 0.8
