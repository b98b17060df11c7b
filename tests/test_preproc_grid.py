"""The model grid, resampling onto it, and the exact way back to the native grid."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from test_preproc_support import dice, ellipsoid, oblique_affine

from bids_mdpp.preproc.grid import model_grid, resample_to_grid, resample_to_target
from bids_mdpp.preproc.reorient import to_canonical

SHAPE, ZOOMS = (64, 60, 18), (0.75, 0.75, 4.0)  # a thick-slice 2D acquisition


def _native():
    affine = oblique_affine(zooms=ZOOMS, angle_deg=9.0, origin=(20.0, -20.0, -30.0))
    centre = apply_affine(affine, (np.asarray(SHAPE) - 1) / 2)
    brain = ellipsoid(SHAPE, affine, centre, (18, 16, 22))
    data = np.where(brain, 100.0, 0.0).astype(np.float32)
    return nib.Nifti1Image(data, affine), brain, centre


def test_grid_has_the_reference_axes_isotropic_voxels_and_a_margin():
    native, brain, _ = _native()
    reference = to_canonical(native)
    prior = to_canonical(nib.Nifti1Image(brain.astype(np.float32), native.affine))
    grid = model_grid(reference, prior, grid_mm=1.5, margin_mm=6.0)
    assert np.allclose(grid.header.get_zooms()[:3], 1.5)
    axes_grid = grid.affine[:3, :3] / 1.5
    axes_reference = reference.affine[:3, :3] / np.linalg.norm(reference.affine[:3, :3], axis=0)
    assert np.allclose(axes_grid, axes_reference, atol=1e-6)
    # every brain voxel lies inside the grid, at least the margin minus a voxel from its edge
    points = apply_affine(np.linalg.inv(grid.affine), apply_affine(native.affine, np.argwhere(brain)))
    assert points.min() >= (6.0 - 1.5 - 2.0) / 1.5  # minus half a thick native voxel
    assert np.all(points.max(axis=0) <= np.asarray(grid.shape) - 1 - (6.0 - 1.5 - 2.0) / 1.5)


def test_empty_brain_cannot_place_a_grid():
    native, brain, _ = _native()
    with pytest.raises(ValueError, match="empty"):
        model_grid(native, nib.Nifti1Image(np.zeros(SHAPE, np.float32), native.affine))


def test_resampling_the_reference_onto_the_grid_keeps_world_positions():
    native, brain, centre = _native()
    reference = to_canonical(native)
    grid = model_grid(reference, to_canonical(nib.Nifti1Image(brain.astype(np.float32),
                                                              native.affine)))
    on_grid = resample_to_grid(reference, grid)
    assert on_grid.get_data_dtype() == np.float32 and np.allclose(on_grid.affine, grid.affine)
    centre_voxel = np.round(apply_affine(np.linalg.inv(grid.affine), centre)).astype(int)
    assert on_grid.get_fdata()[tuple(centre_voxel)] == pytest.approx(100.0)
    assert np.asarray(on_grid.dataobj).min() >= 0.0


def test_map_made_on_the_grid_goes_back_to_the_native_grid_exactly():
    """A blob drawn on the native reference, carried onto the grid like the reference image,
    and brought back with ``resample_to_target`` overlaps itself (Dice ≥ 0.98)."""
    native, brain, centre = _native()
    reference = to_canonical(native)
    grid = model_grid(reference, to_canonical(nib.Nifti1Image(brain.astype(np.float32),
                                                              native.affine)))
    blob = ellipsoid(SHAPE, native.affine, centre + (4.0, -3.0, 2.0), (9.0, 7.0, 12.0))
    blob_on_grid = resample_to_grid(to_canonical(nib.Nifti1Image(blob.astype(np.float32),
                                                                 native.affine)), grid)
    back = resample_to_target(np.asarray(blob_on_grid.dataobj), grid, native, order=1)
    assert back.shape == native.shape and np.allclose(back.affine, native.affine)
    assert dice(np.asarray(back.dataobj) >= 0.5, blob) >= 0.98
    labels = resample_to_target(np.asarray(blob_on_grid.dataobj) >= 0.5, grid, native, order=0)
    assert labels.get_data_dtype() == np.uint8
    assert dice(np.asarray(labels.dataobj) > 0, blob) >= 0.95  # thresholded twice: coarser


def test_field_of_view_on_the_grid():
    from bids_mdpp.preproc.grid import field_of_view

    native, brain, _ = _native()
    reference = to_canonical(native)
    grid = model_grid(reference, to_canonical(nib.Nifti1Image(brain.astype(np.float32),
                                                              native.affine)), margin_mm=30.0)
    inside = field_of_view(native, grid)
    assert 0 < inside.sum() < inside.size  # a 30 mm margin reaches beyond the 72 mm slab
    centre = np.round(apply_affine(np.linalg.inv(grid.affine),
                                   apply_affine(native.affine, np.asarray(SHAPE) / 2))).astype(int)
    assert inside[tuple(centre)]
