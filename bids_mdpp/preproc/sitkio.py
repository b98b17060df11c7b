"""Exact conversion between nibabel images (RAS+ affine) and SimpleITK images (LPS).

nibabel describes a voxel's position with a 4×4 affine in RAS+ millimetres; ITK uses an
origin, a spacing and a direction matrix in LPS millimetres.  The two are related by
``diag(-1, -1, 1)``.  Converting in memory (rather than through a file) keeps one source
of truth for the geometry: the affine nibabel reads.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk

#: RAS+ ↔ LPS (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def nib_to_sitk(img: nib.spatialimages.SpatialImage, *, dtype=np.float32) -> sitk.Image:
    """A SimpleITK image with ``img``'s voxels (cast to ``dtype``) and geometry.

    nibabel arrays are indexed ``(i, j, k)``; SimpleITK arrays ``(k, j, i)``.
    """
    data = np.asarray(img.dataobj, dtype=dtype)
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    linear = RAS_TO_LPS @ img.affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetDirection(tuple(float(d) for d in (linear / spacing).ravel()))
    out.SetOrigin(tuple(float(o) for o in RAS_TO_LPS @ img.affine[:3, 3]))
    return out


def affine_of(image: sitk.Image) -> np.ndarray:
    """The RAS+ voxel-to-world affine (4×4, mm) of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = RAS_TO_LPS @ np.asarray(image.GetOrigin(), dtype=float)
    return affine


def sitk_to_nib(image: sitk.Image, *, dtype=np.float32) -> nib.Nifti1Image:
    """A nibabel image with ``image``'s voxels (cast to ``dtype``) and geometry."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(dtype, copy=False)
    out = nib.Nifti1Image(data, affine_of(image))
    out.set_qform(out.affine, code=1)
    out.set_sform(out.affine, code=1)
    return out


def with_data(template: nib.spatialimages.SpatialImage, data: np.ndarray) -> nib.Nifti1Image:
    """A new image with ``data`` on ``template``'s grid (qform and sform set to its affine)."""
    out = nib.Nifti1Image(np.asarray(data), template.affine)
    out.set_qform(template.affine, code=1)
    out.set_sform(template.affine, code=1)
    return out
