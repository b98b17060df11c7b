"""Brain extraction: skull-stripped detection, template fit and refinement, failures.

Ground truth for a skull-on scan: the MSLUB cross-sectional patient's FLAIR is already
skull-stripped (its non-zero region is the database's brain mask).  We wrap it in CSF, skull
and scalp shells with a noisy background (:func:`test_preproc_support.add_skull`), move the
head by a known rigid motion, and compare our mask with the moved original brain.  The
consensus lesion mask of the same patient checks that no lesion is cut.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from test_preproc_support import add_skull, dice, moved, phantom_brain

from bids_mdpp.errors import InputDataError
from bids_mdpp.preproc import brainmask, templatefit
from bids_mdpp.preproc.grid import model_grid, resample_to_grid, resample_to_target
from bids_mdpp.preproc.reorient import to_canonical
from bids_mdpp.templates import get_template

MOTION = (12.0, (4.0, -10.0, 6.0))  # degrees about x, shift (mm)


def _scanner_masked(img: nib.Nifti1Image, brain: np.ndarray) -> nib.Nifti1Image:
    """A raw scan whose background the scanner set to exactly 0 beyond the head."""
    from scipy import ndimage

    head = add_skull(img, brain, "T1w")
    outside = ndimage.distance_transform_edt(~brain) > 14
    return nib.Nifti1Image(np.where(outside, 0, head.get_fdata()).astype(np.float32), img.affine)


def test_skull_stripped_detection_on_phantoms():
    image, brain, _ = phantom_brain()
    assert brainmask.is_skull_stripped(image)
    assert not brainmask.is_skull_stripped(add_skull(image, brain, "T1w"))
    assert not brainmask.is_skull_stripped(_scanner_masked(image, brain))


def test_skull_stripped_detection_on_real_scans(shared_data):
    stripped = shared_data / "mslub-cross" / "sub-26" / "anat" / "sub-26_T2w.nii.gz"
    raw = shared_data / "mslub-long" / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T2w.nii.gz"
    assert brainmask.is_skull_stripped(nib.load(stripped))
    assert not brainmask.is_skull_stripped(nib.load(raw))  # zero background, but edged by noise


def test_stripped_input_keeps_its_nonzero_voxels_on_the_grid_and_back(shared_data):
    native = nib.load(shared_data / "mslub-cross" / "sub-26" / "anat" / "sub-26_FLAIR.nii.gz")
    image = to_canonical(native)
    prior = brainmask.nonzero_brain_mask(image)
    grid = model_grid(image, prior, grid_mm=1.0)
    on_grid = np.asarray(resample_to_grid(prior, grid).dataobj) > 0  # as RefineBrainMask does
    back = np.asarray(resample_to_target(on_grid, grid, native, order=0).dataobj) > 0
    nonzero = np.asarray(native.dataobj) != 0
    assert (back & nonzero).sum() / nonzero.sum() >= 0.99


def test_raw_scan_mask_covers_the_brain_and_every_lesion(shared_data, tmp_path):
    anat = shared_data / "mslub-cross" / "sub-26" / "anat"
    lesions = nib.load(shared_data / "mslub-cross" / "derivatives" / "manual" / "sub-26" / "anat"
                       / "sub-26_label-lesion_mask.nii.gz")
    flair = nib.load(anat / "sub-26_FLAIR.nii.gz")
    brain = np.asarray(flair.dataobj) != 0
    head = to_canonical(moved(add_skull(flair, brain, "FLAIR", seed=1), *MOTION))
    truth = moved(nib.Nifti1Image(brain.astype(np.float32), flair.affine), *MOTION)
    lesion_moved = moved(nib.Nifti1Image((np.asarray(lesions.dataobj) > 0).astype(np.float32),
                                         lesions.affine), *MOTION)
    assert not brainmask.is_skull_stripped(head)

    template_t1, template_mask = get_template(cache_dir=tmp_path)
    to_template = templatefit.fit_template(head, template_t1, template_mask, name="head.nii.gz")
    prior_native = templatefit.warp_template_mask(template_mask, head, to_template)
    grid = model_grid(head, prior_native, grid_mm=1.0)
    prior = templatefit.warp_template_mask(template_mask, grid, to_template)
    mask = np.asarray(brainmask.refine_brain_mask(resample_to_grid(head, grid), prior).dataobj) > 0

    truth_on_grid = np.asarray(resample_to_grid(truth, grid).dataobj) >= 0.5
    lesion_on_grid = np.asarray(resample_to_grid(lesion_moved, grid).dataobj) >= 0.5
    assert truth_on_grid.sum() > 0.95 * brain.sum()  # the grid holds the whole brain
    assert dice(mask, truth_on_grid) >= 0.9
    assert mask[lesion_on_grid].mean() >= 0.99


def test_empty_masks_name_the_file():
    empty = nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.eye(4))
    with pytest.raises(InputDataError, match="sub-1_FLAIR.nii.gz: brain extraction produced an empty"):
        brainmask.nonzero_brain_mask(empty, name="sub-1_FLAIR.nii.gz")
    image, _, _ = phantom_brain()
    with pytest.raises(InputDataError, match="sub-1_T1w.nii.gz: brain extraction produced an empty"):
        brainmask.refine_brain_mask(image, nib.Nifti1Image(np.zeros(image.shape, np.float32),
                                                           image.affine), name="sub-1_T1w.nii.gz")


def test_failed_template_fit_names_the_file(tmp_path):
    template_t1, template_mask = get_template(cache_dir=tmp_path)
    speck = nib.Nifti1Image(np.random.default_rng(0).random((10, 10, 10)).astype(np.float32) + 1,
                            np.diag([0.1, 0.1, 0.1, 1.0]))
    with pytest.raises(InputDataError, match="sub-1_FLAIR.nii.gz: registration of the brain template"):
        templatefit.fit_template(speck, template_t1, template_mask, name="sub-1_FLAIR.nii.gz")


def test_refinement_trims_an_oversized_prior_and_fills_the_inside():
    image, brain, _ = phantom_brain(contrast="T1w")
    head = add_skull(image, brain, "T1w")
    from scipy import ndimage

    oversized = ndimage.binary_dilation(brain, iterations=2)  # affine fit 2 mm too large
    prior = nib.Nifti1Image(oversized.astype(np.float32), image.affine)
    refined = np.asarray(brainmask.refine_brain_mask(head, prior).dataobj) > 0
    assert dice(refined, brain) > dice(oversized, brain)
    assert refined[brain].mean() > 0.97  # ventricles and pockets are inside
