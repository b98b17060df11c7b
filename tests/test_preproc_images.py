"""Reorientation, nibabel ↔ SimpleITK conversion and N4 bias correction."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.affines import apply_affine
from test_preproc_support import oblique_affine, phantom_brain

from bids_mdpp.errors import InputDataError
from bids_mdpp.preproc.bias import foreground_mask, n4_correct, shrink_factors
from bids_mdpp.preproc.reorient import to_canonical
from bids_mdpp.preproc.sitkio import RAS_TO_LPS, affine_of, nib_to_sitk, sitk_to_nib


def test_conversion_keeps_voxels_and_world_positions():
    affine = oblique_affine(zooms=(0.9, 1.1, 3.0))
    data = np.random.default_rng(0).random((12, 10, 8)).astype(np.float32)
    image = nib_to_sitk(nib.Nifti1Image(data, affine))
    assert image.GetSize() == (12, 10, 8)
    assert image.GetPixel(3, 4, 5) == data[3, 4, 5]
    world_ras = apply_affine(affine, (3, 4, 5))
    assert np.allclose(image.TransformIndexToPhysicalPoint((3, 4, 5)), RAS_TO_LPS @ world_ras)
    back = sitk_to_nib(image)
    assert np.allclose(back.affine, affine) and np.array_equal(back.get_fdata(), data)
    assert np.allclose(affine_of(image), affine)


def test_canonical_reorientation_moves_no_voxel_in_the_world():
    affine = oblique_affine(zooms=(0.7, 0.7, 4.0))
    data = np.arange(10 * 12 * 6, dtype=np.uint16).reshape(10, 12, 6)
    canonical = to_canonical(nib.Nifti1Image(data, affine))
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    assert canonical.get_data_dtype() == np.uint16
    value = data[2, 7, 4]
    (ijk,) = np.argwhere(np.asarray(canonical.dataobj) == value)
    assert np.allclose(apply_affine(canonical.affine, ijk), apply_affine(affine, (2, 7, 4)))


def test_shrink_factors_leave_thick_slices_alone():
    image = sitk.Image(64, 64, 20, sitk.sitkFloat32)
    image.SetSpacing((0.5, 1.0, 4.0))
    assert shrink_factors(image, 4.0) == [8, 4, 1]


def test_n4_flattens_a_smooth_bias_field_and_keeps_the_background():
    image, brain, wm = phantom_brain(contrast="T1w")
    x = np.linspace(-1, 1, image.shape[0])[:, None, None]
    field = (1.0 + 0.35 * x) * np.ones(image.shape)
    biased = nib.Nifti1Image((image.get_fdata() * field).astype(np.float32), image.affine)
    corrected, estimate = n4_correct(biased, shrink_mm=2.0)
    before, after = biased.get_fdata()[wm], corrected.get_fdata()[wm]
    assert after.std() / after.mean() < 0.5 * before.std() / before.mean()
    assert np.all(corrected.get_fdata()[~brain] == 0)
    assert estimate.shape == image.shape and np.allclose(corrected.affine, image.affine)


def test_foreground_mask_holds_the_bright_object():
    image, brain, _ = phantom_brain(contrast="FLAIR")
    mask = sitk.GetArrayFromImage(foreground_mask(nib_to_sitk(image))).transpose(2, 1, 0) > 0
    assert (mask & brain).sum() / brain.sum() > 0.95 and not (mask & ~brain).sum() > 0.05 * brain.sum()


def test_n4_refuses_an_image_without_positive_intensities():
    negative = nib.Nifti1Image(-1 - np.random.default_rng(0).random((20, 20, 20)).astype(np.float32),
                               np.eye(4))
    with pytest.raises(InputDataError, match="sub-3_PDw.nii.gz: no voxel has a positive"):
        n4_correct(negative, name="sub-3_PDw.nii.gz")
