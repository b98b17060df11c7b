"""Brain extraction that works on raw skull-on scans and keeps skull-stripped ones intact.

* Already skull-stripped input is recognised by a large exact-zero background whose border
  runs through tissue: the voxels on the edge of the non-zero region are as bright as
  tissue (at least 15 % of the median), whereas a scanner-masked raw image is edged by
  noise.  Its mask is the non-zero region, closed and hole-filled.
* Otherwise a brain template is fitted to the image with an affine transform
  (:mod:`bids_mdpp.preproc.templatefit`); its brain mask, carried onto the model grid, is
  refined on the image's own intensities (:func:`refine_brain_mask`).  The result is a
  *filled* brain mask: ventricles, periventricular and juxtacortical lesions lie inside it
  by construction.
"""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_mdpp.errors import InputDataError
from bids_mdpp.preproc.sitkio import with_data

#: A skull-stripped image has at least this fraction of exact zeros ...
STRIPPED_ZERO_FRACTION = 0.2
#: ... and the median intensity on the edge of its non-zero region is at least this
#: fraction of the median non-zero intensity.
STRIPPED_EDGE_RATIO = 0.15
#: Refinement: the affine mask is trusted this deep inside (mm) and may grow this far (mm).
CORE_DEPTH_MM = 4.0
BAND_WIDTH_MM = 3.0
#: Refinement: band voxels are brain when their intensity lies between these percentiles
#: of the trusted core, with the lower bound scaled by ``LOW_FACTOR``.
LOW_PERCENTILE, HIGH_PERCENTILE, LOW_FACTOR = 5.0, 99.9, 0.8

def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def _ball(radius_mm: float, zooms) -> np.ndarray:
    """Ellipsoidal structuring element of ``radius_mm`` on a grid of voxel size ``zooms``."""
    radii = [max(0, int(np.floor(radius_mm / z))) for z in zooms]
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    return sum((g * z / radius_mm) ** 2 for g, z in zip(grids, zooms)) <= 1.0


def is_skull_stripped(img: nib.spatialimages.SpatialImage) -> bool:
    """True for an already skull-stripped image (see the module docstring)."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    nonzero = data != 0
    if 1.0 - nonzero.mean() < STRIPPED_ZERO_FRACTION or not nonzero.any():
        return False
    region = _largest_component(nonzero)
    edge = region & ~ndimage.binary_erosion(region)
    return float(np.median(data[edge])) >= STRIPPED_EDGE_RATIO * float(np.median(data[nonzero]))


def nonzero_brain_mask(img: nib.spatialimages.SpatialImage, *,
                       name: os.PathLike | str = "image") -> nib.Nifti1Image:
    """Mask (uint8) of a skull-stripped image: its largest non-zero region, closed, filled."""
    zooms = img.header.get_zooms()[:3]
    region = _largest_component(np.asarray(img.dataobj) != 0)
    closed = ndimage.binary_closing(region, _ball(2.0, zooms), border_value=0) | region
    mask = ndimage.binary_fill_holes(closed)
    check_not_empty(mask, name)
    return with_data(img, mask.astype(np.uint8))


def check_not_empty(mask: np.ndarray, name) -> None:
    if not mask.any():
        raise InputDataError(name, "brain extraction produced an empty brain mask")


def refine_brain_mask(image: nib.spatialimages.SpatialImage, prior: nib.spatialimages.SpatialImage,
                      *, name: os.PathLike | str = "image") -> nib.Nifti1Image:
    """A filled brain mask (uint8) from an affine template mask and the image's intensities.

    ``prior`` (fraction of brain per voxel, on ``image``'s grid) is trusted
    ``CORE_DEPTH_MM`` inside its edge.  In a band from there to ``BAND_WIDTH_MM`` outside
    its edge, voxels whose intensity is within the core's tissue range are added; the
    result is opened (1.5 mm, to cut thin bridges to the scalp), reduced to the component
    holding the core, closed (3 mm) and hole-filled, so ventricles, sulci and lesions stay
    inside.  Raises :class:`InputDataError` naming ``name`` for an empty mask.
    """
    zooms = image.header.get_zooms()[:3]
    data = np.asarray(image.dataobj, dtype=np.float32)
    affine_mask = np.asarray(prior.dataobj) >= 0.5
    check_not_empty(affine_mask, name)
    core = ndimage.binary_erosion(affine_mask, _ball(CORE_DEPTH_MM, zooms))
    if not core.any():
        core = affine_mask
    band = ndimage.binary_dilation(affine_mask, _ball(BAND_WIDTH_MM, zooms)) & ~core
    low, high = np.percentile(data[core], [LOW_PERCENTILE, HIGH_PERCENTILE])
    tissue = band & (data >= LOW_FACTOR * low) & (data <= high)
    candidate = ndimage.binary_opening(core | tissue, _ball(1.5, zooms)) | core
    labels, _ = ndimage.label(candidate)
    keep = np.unique(labels[core])
    brain = np.isin(labels, keep[keep > 0])
    brain = ndimage.binary_closing(brain, _ball(3.0, zooms), border_value=0) | brain
    brain = ndimage.binary_fill_holes(brain)
    check_not_empty(brain, name)
    return with_data(image, brain.astype(np.uint8))
