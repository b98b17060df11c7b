"""Rigid co-registration: accuracy, the ITK transform convention, files and failures."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.affines import apply_affine
from test_preproc_support import phantom_brain

from bids_mdpp.errors import InputDataError
from bids_mdpp.preproc.bias import foreground_mask
from bids_mdpp.preproc.register import (affine_matrix, mean_displacement, read_transform,
                                        register_rigid, write_transform, xfm_filename)
from bids_mdpp.preproc.reorient import to_canonical
from bids_mdpp.preproc.sitkio import RAS_TO_LPS, nib_to_sitk

#: The known motion of the synthetic test: rotation (degrees about z) and shift (mm, RAS).
ANGLE_DEG, SHIFT_MM = 6.0, np.array([3.0, -2.0, 2.5])


def _moved_phantom(contrast: str):
    """The phantom re-acquired after the head moved by a known rigid motion.

    Returns (fixed image, moving image, motion) where ``motion`` (4×4, RAS) maps a point of
    the fixed acquisition to the same tissue point in the moving one.
    """
    fixed, _, _ = phantom_brain(shape=(48, 52, 44), contrast="FLAIR")
    moving_same_grid, _, _ = phantom_brain(shape=(48, 52, 44), contrast=contrast, seed=3)
    theta = np.radians(ANGLE_DEG)
    centre = apply_affine(fixed.affine, (np.asarray(fixed.shape) - 1) / 2)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre, centre + SHIFT_MM
    motion = back @ rotation @ to_centre
    # the head moved: the tissue at world point p now sits at motion(p)
    moving = nib.Nifti1Image(np.asarray(moving_same_grid.dataobj), motion @ fixed.affine)
    return fixed, moving, motion


def _points_lps(image, mask):
    return apply_affine(image.affine, np.argwhere(mask)) @ RAS_TO_LPS.T


def test_recovers_a_known_motion_in_the_itk_convention():
    fixed, moving, motion = _moved_phantom("T1w")
    found = register_rigid(fixed, moving)
    # ITK convention: the transform maps a fixed (reference) point to the moving point
    expected = sitk.AffineTransform(3)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    motion_lps = lps @ motion @ lps
    expected.SetMatrix(tuple(motion_lps[:3, :3].ravel()))
    expected.SetTranslation(tuple(motion_lps[:3, 3]))
    brain = np.asarray(fixed.dataobj) > 0
    points = _points_lps(fixed, brain)
    assert mean_displacement(found, expected, points) < 0.5
    assert mean_displacement(found.GetInverse(), expected, points) > 2.0


def test_transform_file_round_trip_and_name(tmp_path):
    transform = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.05, 0.02, (4.0, -5.0, 6.0))
    path = write_transform(transform, tmp_path / xfm_filename("T1w", "FLAIR"))
    assert path.name == "from-T1w_to-FLAIR_mode-image_xfm.txt"
    assert np.allclose(affine_matrix(read_transform(path)), affine_matrix(transform))
    text = path.read_text()
    assert text.startswith("#Insight Transform File V1.0") and "FixedParameters: 1 2 3" in text


def test_unreadable_transform_file_names_the_file(tmp_path):
    bad = tmp_path / "from-T1w_to-FLAIR_mode-image_xfm.txt"
    bad.write_text("not a transform\n")
    with pytest.raises(InputDataError, match="from-T1w_to-FLAIR.*not a readable ITK transform"):
        read_transform(bad)


def test_impossible_registration_names_the_moving_file():
    fixed, _, _ = phantom_brain(shape=(48, 52, 44))
    speck = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32),
                            np.diag([0.05, 0.05, 0.05, 1.0]))
    with pytest.raises(InputDataError, match="sub-x_T2w.nii.gz: rigid registration to .*FLAIR"):
        register_rigid(fixed, speck, fixed_name="sub-x_FLAIR.nii.gz", moving_name="sub-x_T2w.nii.gz")


def test_matches_the_database_registration_of_real_raw_scans(shared_data, tmp_path):
    """MSLUB longitudinal sub-01: our rigid T1w→FLAIR and T2w→FLAIR transforms against the
    database's own affine ones, as mean displacement (mm) over the FLAIR's foreground."""
    anat = shared_data / "mslub-long" / "sub-01" / "ses-2" / "anat"
    xfms = shared_data / "mslub-long" / "derivatives" / "reference-xfm" / "sub-01" / "ses-2" / "anat"
    flair = to_canonical(nib.load(anat / "sub-01_ses-2_FLAIR.nii.gz"))
    foreground = sitk.GetArrayFromImage(foreground_mask(nib_to_sitk(flair))).transpose(2, 1, 0) > 0
    points = _points_lps(flair, foreground)
    for contrast in ("T1w", "T2w"):
        moving = to_canonical(nib.load(anat / f"sub-01_ses-2_{contrast}.nii.gz"))
        found = register_rigid(flair, moving)
        reference_file = xfms / f"sub-01_ses-2_{xfm_filename(contrast, 'FLAIR')}"
        database = read_transform(reference_file)
        error = mean_displacement(found, database, points)
        assert error < 1.5, f"{contrast}: {error:.2f} mm from the database's transform"
        # same direction convention as the database's files: far closer to them than to
        # their inverses
        assert error < 0.5 * mean_displacement(found, database.GetInverse(), points)
        # and the same file layout: 12 matrix/translation parameters and a centre
        ours = write_transform(found, tmp_path / reference_file.name)
        assert len(read_transform(ours).GetParameters()) == len(database.GetParameters()) == 12
