"""The model grid and resampling onto it and back.

The model grid has the axes of the reference image in its canonical (RAS+) voxel order,
including any obliquity of the acquisition, isotropic voxels of ``grid_mm`` (the model
card's grid), and the extent of the brain's bounding box plus a margin.  Keeping the
reference's axes makes the way back to the reference's native grid
(:func:`resample_to_target`) a pure change of sampling.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.affines import apply_affine
from nibabel.processing import resample_from_to
from scipy import ndimage
from scipy.linalg import polar

from bids_mdpp.preproc.sitkio import nib_to_sitk, with_data

#: Space (mm) kept around the brain's bounding box on the model grid.
MARGIN_MM = 8.0


def model_grid(reference: nib.spatialimages.SpatialImage, brain: nib.spatialimages.SpatialImage, *,
               grid_mm: float = 1.0, margin_mm: float = MARGIN_MM) -> nib.Nifti1Image:
    """An empty (uint8 zeros) image defining the model grid.

    Parameters
    ----------
    reference
        The reference image (canonical orientation); gives the axes.
    brain
        A brain mask (values ≥ 0.5 are brain) on any grid; gives the extent.
    grid_mm
        Voxel size (mm) of the isotropic grid.
    margin_mm
        Space (mm) added on every side of the brain's bounding box.
    """
    rotation, _ = polar(reference.affine[:3, :3])  # the reference's axes, orthonormalised
    inside = np.asarray(brain.dataobj) >= 0.5
    voxels = np.argwhere(inside & ~ndimage.binary_erosion(inside))  # the outermost voxels
    if len(voxels) == 0:
        raise ValueError("the brain mask is empty: no model grid can be placed")
    corners = np.array([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)])
    points = apply_affine(brain.affine, (voxels[:, None, :] + corners[None]).reshape(-1, 3))
    along_axes = points @ rotation  # coordinates (mm) along the reference's axes
    low = along_axes.min(axis=0) - margin_mm
    high = along_axes.max(axis=0) + margin_mm
    shape = np.ceil((high - low) / grid_mm).astype(int) + 1
    affine = np.eye(4)
    affine[:3, :3] = rotation * grid_mm
    affine[:3, 3] = rotation @ low
    return _empty(affine, shape)


def _empty(affine: np.ndarray, shape) -> nib.Nifti1Image:
    image = nib.Nifti1Image(np.zeros(tuple(int(s) for s in shape), np.uint8), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def resample_to_grid(img: nib.spatialimages.SpatialImage, grid: nib.spatialimages.SpatialImage,
                     transform: sitk.Transform | None = None, *, linear: bool = True,
                     ) -> nib.Nifti1Image:
    """``img`` resampled onto ``grid`` (float32; 0 outside ``img``).

    ``transform`` maps points of the grid's (reference) space to ``img``'s space (the ITK
    convention of :mod:`bids_mdpp.preproc.register`); None for the reference itself.
    Linear interpolation keeps intensities non-negative; ``linear=False`` takes the nearest
    neighbour.
    """
    resampled = sitk.Resample(
        nib_to_sitk(img), nib_to_sitk(grid), transform or sitk.Transform(3, sitk.sitkIdentity),
        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)
    data = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)
    return with_data(grid, data.astype(np.float32, copy=False))


def field_of_view(native: nib.spatialimages.SpatialImage, grid: nib.spatialimages.SpatialImage,
                  ) -> np.ndarray:
    """Boolean array on ``grid``: voxels inside the field of view of ``native`` (same space)."""
    ones = with_data(native, np.ones(native.shape[:3], np.float32))
    return np.asarray(resample_to_grid(ones, grid).dataobj) >= 0.5


def resample_to_target(data: np.ndarray, source: nib.spatialimages.SpatialImage,
                       target: nib.spatialimages.SpatialImage, *, order: int = 1) -> nib.Nifti1Image:
    """A map ``data`` on ``source``'s grid resampled onto ``target``'s exact grid.

    Spline ``order`` (0 nearest, 1 linear, 3 cubic), value 0 outside the source.  The result
    has ``target``'s shape and affine (float32, or the input type for ``order=0``).
    """
    values = np.asarray(data)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    if order > 0:
        values = values.astype(np.float32, copy=False)
    moved = resample_from_to(nib.Nifti1Image(values, source.affine), (target.shape[:3], target.affine),
                             order=order, mode="constant", cval=0.0)
    return with_data(target, np.asarray(moved.dataobj).astype(values.dtype, copy=False))
