"""N4 bias-field correction (SimpleITK; Tustison et al. 2010).

The field is estimated on a shrunk copy of the image (about ``shrink_mm`` per voxel along
every axis, so thick 2D slices are not shrunk further) inside a foreground mask, then evaluated
on the full-resolution grid and divided out.  Exact zeros (masked background) stay zero.
"""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bids_mdpp.errors import InputDataError
from bids_mdpp.preproc.sitkio import nib_to_sitk, sitk_to_nib

#: Voxel size (mm) of the shrunk image the field is fitted on.
SHRINK_MM = 4.0
#: Iterations per fitting level (4 levels of B-spline refinement).
ITERATIONS = (50, 50, 40, 30)


def foreground_mask(image: sitk.Image) -> sitk.Image:
    """Bright-foreground mask (uint8): Otsu threshold of the positive voxels, largest
    component, closed (2 mm) and hole-filled.  On most contrasts it holds the brain and
    some scalp."""
    positive = sitk.Cast(image > 0, sitk.sitkUInt8)
    above = sitk.OtsuThreshold(image, positive, 0, 1, 128, True, 1)
    components = sitk.ConnectedComponent(sitk.Cast(above, sitk.sitkUInt8))
    largest = sitk.RelabelComponent(components, sortByObjectSize=True) == 1
    radius = [max(1, int(round(2.0 / s))) for s in image.GetSpacing()]
    closed = sitk.BinaryMorphologicalClosing(largest, radius)
    return sitk.Cast(sitk.BinaryFillhole(closed), sitk.sitkUInt8)


def shrink_factors(image: sitk.Image, target_mm: float = SHRINK_MM) -> list[int]:
    """Per-axis integer shrink factors giving voxels of about ``target_mm`` (at least 1, and
    leaving at least 4 voxels along each axis)."""
    return [max(1, min(int(round(target_mm / spacing)), size // 4))
            for spacing, size in zip(image.GetSpacing(), image.GetSize())]


def n4_correct(img: nib.spatialimages.SpatialImage, *, mask: nib.spatialimages.SpatialImage | None = None,
               shrink_mm: float = SHRINK_MM, iterations: tuple[int, ...] = ITERATIONS,
               name: os.PathLike | str = "image") -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Bias-corrected image (float32) and the estimated multiplicative field (float32).

    Parameters
    ----------
    img
        A 3D image (any voxel type, intensities ≥ 0).
    mask
        Voxels used to fit the field (same grid); default: :func:`foreground_mask`.  Voxels ≤ 0
        are always left out (N4 works on log intensities).
    shrink_mm
        Voxel size (mm) of the shrunk copy the field is fitted on.
    iterations
        Maximum iterations at each B-spline fitting level.
    name
        File named in the :class:`InputDataError` raised when the correction fails.
    """
    if not np.any(np.asarray(img.dataobj) > 0):
        raise InputDataError(name, "no voxel has a positive intensity: not a magnitude image")
    image = nib_to_sitk(img)
    fit_mask = foreground_mask(image) if mask is None else sitk.Cast(nib_to_sitk(mask) > 0, sitk.sitkUInt8)
    fit_mask = sitk.And(fit_mask, sitk.Cast(image > 0, sitk.sitkUInt8))
    factors = shrink_factors(image, shrink_mm)
    small = sitk.Shrink(image, factors)
    small_mask = sitk.Shrink(fit_mask, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(iterations))
    try:
        n4.Execute(small, small_mask)
        field = sitk.Exp(n4.GetLogBiasFieldAsImage(image))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise InputDataError(name, f"N4 bias-field correction failed ({reason})") from exc
    corrected = sitk.Divide(image, field)
    corrected_nib = sitk_to_nib(corrected)
    data = np.asarray(corrected_nib.dataobj)
    data[np.asarray(img.dataobj) <= 0] = 0.0  # keep the exact-zero background
    return corrected_nib, sitk_to_nib(field)
