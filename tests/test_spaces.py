"""Template spaces (``--output-spaces``): which templates are available, and the affine fit."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bids_mdpp.errors import UsageError
from bids_mdpp.preproc.sitkio import sitk_to_nib
from bids_mdpp.preproc.templatefit import fit_brain_to_template
from bids_mdpp.spaces import check_spaces, template_files
from bids_mdpp.templates import nilearn_files


@pytest.fixture
def no_templateflow(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "empty-templateflow"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_bundled_space_needs_no_templateflow(no_templateflow, tmp_path):
    t1, mask = template_files("MNI152NLin2009aSym")
    assert t1.is_file() and mask.is_file() and str(t1).startswith(str(tmp_path / "cache"))
    assert check_spaces(["MNI152NLin2009aSym", "MNI152NLin2009aSym"]) == ("MNI152NLin2009aSym",)


def test_a_space_missing_from_templateflow_is_a_usage_error_saying_what_to_provide(no_templateflow):
    with pytest.raises(UsageError) as info:
        check_spaces(["MNI152NLin2009aSym", "MNI152NLin2009cAsym"])
    message = str(info.value)
    assert "TEMPLATEFLOW_HOME" in message and "empty-templateflow" in message
    assert "tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz" in message and "MNI152NLin2009aSym" in message
    with pytest.raises(UsageError, match="letters and digits"):
        check_spaces(["../etc"])


def test_a_prefilled_templateflow_space_is_used(tmp_path, monkeypatch):
    folder = tmp_path / "tf" / "tpl-MNI152NLin2009cAsym"
    folder.mkdir(parents=True)
    for suffix in ("T1w", "desc-brain_mask"):
        nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.float32), np.eye(4)),
                 str(folder / f"tpl-MNI152NLin2009cAsym_res-01_{suffix}.nii.gz"))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "tf"))
    t1, _ = template_files("MNI152NLin2009cAsym")
    assert t1.parent == folder


def test_the_affine_fit_recovers_a_known_transform(no_templateflow):
    """The template's brain, moved by a known affine and seen on a 2 mm grid, is found again
    within 1.5 mm (mean displacement over the brain)."""
    t1_path, mask_path = nilearn_files(1)
    t1, mask = sitk.ReadImage(str(t1_path), sitk.sitkFloat32), sitk.ReadImage(str(mask_path))
    brain = sitk.Mask(t1, sitk.Cast(mask > 0, sitk.sitkUInt8))
    truth = sitk.AffineTransform(3)  # template points → subject points
    rotation = sitk.Euler3DTransform((0, 0, 0), 0.12, -0.06, 0.08)
    matrix = np.reshape(rotation.GetMatrix(), (3, 3)) @ np.diag([0.92, 0.97, 0.9])
    truth.SetMatrix(matrix.ravel().tolist())
    truth.SetTranslation((6.0, -9.0, 4.0))
    truth.SetCenter(mask.TransformContinuousIndexToPhysicalPoint(
        [s / 2 for s in mask.GetSize()]))
    # the subject's grid: 2 mm, covering the moved brain; subject image = template ∘ truth⁻¹
    grid = sitk.Image([100, 120, 100], sitk.sitkFloat32)
    grid.SetSpacing((2.0, 2.0, 2.0))
    centre = np.asarray(truth.TransformPoint(truth.GetCenter()))
    grid.SetOrigin(tuple(centre - np.asarray([99.0, 119.0, 99.0])))
    inverse = truth.GetInverse()
    subject = sitk.Resample(brain, grid, inverse, sitk.sitkLinear, 0.0)
    subject_mask = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkFloat32), grid, inverse,
                                 sitk.sitkLinear, 0.0) > 0.5
    image = sitk_to_nib(subject)
    mask_img = sitk_to_nib(sitk.Cast(subject_mask, sitk.sitkUInt8), dtype=np.uint8)

    found = fit_brain_to_template(image, mask_img, t1_path, mask_path)

    brain_voxels = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[::500]
    points = [mask.TransformIndexToPhysicalPoint([int(v) for v in idx[::-1]]) for idx in brain_voxels]
    error = np.mean([np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p)))
                     for p in points])
    assert error < 1.5, f"mean displacement error {error:.2f} mm"
