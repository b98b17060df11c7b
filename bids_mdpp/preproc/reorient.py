"""Reorientation to the closest canonical (RAS+) voxel order.

Reorienting only permutes and flips voxel axes (no interpolation), so the world position of
every voxel, and therefore every transform between images, is unchanged.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np

from bids_mdpp.preproc.sitkio import with_data


def to_canonical(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """``img`` with voxel axes reordered to the closest RAS+ orientation (data type kept)."""
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine))
    return with_data(canonical, np.asanyarray(canonical.dataobj))
