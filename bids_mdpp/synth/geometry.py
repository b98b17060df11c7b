"""Voxel grids, rigid motions and resampling between them (SimpleITK under a NIfTI face).

Everything in :mod:`bids_mdpp.synth` is expressed in RAS world coordinates (mm) and in
C-ordered NumPy arrays indexed ``(x, y, z)`` like nibabel's; SimpleITK (LPS world) does the
resampling because it is multi-threaded.  This module is the only place that converts
between the two conventions.  An ``(X, Y, Z)`` array becomes a SimpleITK image without a
transposing copy: the image's first index runs along the array's last axis, and its
direction matrix says so (SimpleITK images may have any orthonormal direction).
"""
from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: RAS ↔ LPS: negate x and y.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: ``shape`` ``(X, Y, Z)`` and the voxel → RAS-world ``affine`` (4 × 4, mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def zooms(self) -> np.ndarray:
        """Voxel size along each array axis (mm), shape ``(3,)``."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def directions(self) -> np.ndarray:
        """Unit RAS direction of each array axis, as columns, shape ``(3, 3)``."""
        return self.affine[:3, :3] / self.zooms

    def crop(self, box: tuple[slice, ...]) -> "Grid":
        """The sub-grid of the voxels ``box`` (one slice per axis, steps of 1)."""
        start = np.array([b.start or 0 for b in box], float)
        stop = [b.stop if b.stop is not None else n for b, n in zip(box, self.shape)]
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ start + self.affine[:3, 3]
        return Grid(tuple(int(e - s) for e, s in zip(stop, start)), affine)

    def world_coordinates(self) -> np.ndarray:
        """RAS coordinates (mm) of every voxel, shape ``(3, X, Y, Z)``, float32."""
        idx = np.mgrid[tuple(slice(0, n) for n in self.shape)].astype(np.float32)
        return np.einsum("ij,j...->i...", self.affine[:3, :3].astype(np.float32), idx) + (
            self.affine[:3, 3].astype(np.float32)[:, None, None, None]
        )


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice] | None:
    """The smallest box (one slice per axis) holding every true voxel, widened by ``margin``.

    None when ``mask`` is empty.
    """
    hits = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if len(hits[0]) == 0:
        return None
    return tuple(slice(max(int(h[0]) - margin, 0), min(int(h[-1]) + margin + 1, n))
                 for h, n in zip(hits, mask.shape))


def make_grid(directions: np.ndarray, zooms, shape, centre) -> Grid:
    """A grid with axis ``directions`` (columns, RAS), voxel ``zooms`` (mm) centred on ``centre``."""
    directions = np.asarray(directions, float)
    zooms = np.asarray(zooms, float)
    shape = tuple(int(n) for n in shape)
    affine = np.eye(4)
    affine[:3, :3] = directions * zooms
    half_extent = affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    affine[:3, 3] = np.asarray(centre, float) - half_extent
    return Grid(shape, affine)


def nifti_image(data: np.ndarray, grid: Grid) -> nib.Nifti1Image:
    """``data`` on ``grid`` as a NIfTI image with scanner-anatomical qform and sform, in mm."""
    img = nib.Nifti1Image(data, grid.affine)
    img.set_data_dtype(data.dtype)
    img.set_qform(grid.affine, code=1)
    img.set_sform(grid.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def to_sitk(array: np.ndarray, grid: Grid) -> sitk.Image:
    """An ``(X, Y, Z)`` array on ``grid`` as a SimpleITK image (no transposition)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    _set_geometry(image, grid)
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """An image made by :func:`to_sitk` or :func:`resample` back as an ``(X, Y, Z)`` array."""
    return sitk.GetArrayFromImage(image)


def grid_of(image: sitk.Image) -> Grid:
    """The RAS grid of an image made by :func:`to_sitk`."""
    directions = _RAS_TO_LPS @ np.array(image.GetDirection()).reshape(3, 3)[:, ::-1]
    affine = np.eye(4)
    affine[:3, :3] = directions * np.array(image.GetSpacing())[::-1]
    affine[:3, 3] = _RAS_TO_LPS @ np.array(image.GetOrigin())
    return Grid(tuple(int(n) for n in image.GetSize()[::-1]), affine)


def _set_geometry(image: sitk.Image, grid: Grid) -> None:
    image.SetSpacing([float(z) for z in grid.zooms[::-1]])
    image.SetDirection((_RAS_TO_LPS @ grid.directions[:, ::-1]).ravel().tolist())
    image.SetOrigin((_RAS_TO_LPS @ grid.affine[:3, 3]).tolist())


def resample(
    image: sitk.Image,
    grid: Grid,
    transform: sitk.Transform | None = None,
    *,
    nearest: bool = False,
) -> np.ndarray:
    """Sample ``image`` on ``grid``: ``transform`` maps output points to ``image`` points.

    Linear interpolation (nearest neighbour with ``nearest``); 0 outside ``image``.
    Returns an ``(X, Y, Z)`` float32 array (the input's type with ``nearest``).
    """
    reference = sitk.Image([int(n) for n in grid.shape[::-1]], image.GetPixelID())
    _set_geometry(reference, grid)
    if image.GetPixelID() != sitk.sitkFloat32 and not nearest:
        image = sitk.Cast(image, sitk.sitkFloat32)
        reference = sitk.Cast(reference, sitk.sitkFloat32)
    out = sitk.Resample(
        image,
        reference,
        transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity),
        sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
        0.0,
    )
    return from_sitk(out)


def rigid_matrix(rotation_deg, translation_mm) -> np.ndarray:
    """4 × 4 RAS rigid motion: rotations about x, then y, then z (degrees), then a translation (mm)."""
    ax, ay, az = np.deg2rad(np.asarray(rotation_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx
    matrix[:3, 3] = np.asarray(translation_mm, float)
    return matrix


def affine_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """A 4 × 4 RAS point mapping as a SimpleITK transform (which works in LPS)."""
    lps = _RAS_TO_LPS @ matrix[:3, :3] @ _RAS_TO_LPS
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(lps.ravel().tolist())
    transform.SetTranslation((_RAS_TO_LPS @ matrix[:3, 3]).tolist())
    return transform


def chain(*transforms: sitk.Transform) -> sitk.CompositeTransform:
    """One transform applying ``transforms`` in the order given (first argument first)."""
    composite = sitk.CompositeTransform(3)
    for transform in reversed(transforms):  # SimpleITK applies the last added first
        composite.AddTransform(transform)
    return composite


def smooth(array: np.ndarray, grid: Grid, sigma_mm, *, periodic: bool = False) -> np.ndarray:
    """Gaussian smoothing with standard deviation ``sigma_mm`` (scalar or per array axis, mm).

    Edges repeat the border values, or wrap around with ``periodic`` (for white noise, so
    that the smoothed field has the same variance everywhere).
    """
    sigma_vox = np.broadcast_to(np.asarray(sigma_mm, float), (3,)) / grid.zooms
    mode = "wrap" if periodic else "nearest"
    return ndimage.gaussian_filter(np.asarray(array, np.float32), sigma_vox, mode=mode)
