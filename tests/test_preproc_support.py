"""Helpers for the preprocessing tests: synthetic heads and volume overlap (no tests here)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

#: Intensity of each layer outside the brain, relative to the brain's 75th percentile:
#: (cerebrospinal fluid 0–2 mm, skull 2–7 mm, scalp 7–12 mm), per contrast.
SHELL_LEVELS = {
    "T1w": (0.25, 0.05, 1.3),
    "ceT1w": (0.25, 0.05, 1.3),
    "FLAIR": (0.2, 0.05, 0.9),
    "T2w": (1.4, 0.05, 0.9),
    "PDw": (1.1, 0.05, 1.0),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def add_skull(img: nib.Nifti1Image, brain: np.ndarray, contrast: str, *, seed: int = 0
              ) -> nib.Nifti1Image:
    """A skull-stripped image wrapped in CSF, skull and scalp shells, with a noisy background.

    Layers follow the distance (mm) from ``brain``: CSF 0–2 mm, skull 2–7 mm, scalp 7–12 mm;
    Rician-like noise (2 % of the tissue level) everywhere, so no exact zero is left.
    """
    rng = np.random.default_rng(seed)
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    zooms = img.header.get_zooms()[:3]
    level = float(np.percentile(data[brain], 75))
    distance = ndimage.distance_transform_edt(~brain, sampling=zooms)
    csf, skull, scalp = SHELL_LEVELS[contrast]
    for (inner, outer), value in zip(((0, 2), (2, 7), (7, 12)), (csf, skull, scalp)):
        data[(distance > inner) & (distance <= outer)] = value * level
    data[distance > 12] = 0.0
    noise = rng.normal(0, 0.02 * level, (2, *data.shape)).astype(np.float32)
    data = np.hypot(data + noise[0], noise[1])
    return nib.Nifti1Image(data.astype(np.float32), img.affine)


def moved(img: nib.Nifti1Image, angle_deg: float, shift_mm) -> nib.Nifti1Image:
    """The same voxels under an affine rotated by ``angle_deg`` about x and shifted (mm)."""
    theta = np.radians(angle_deg)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    rotation[:3, 3] = shift_mm
    return nib.Nifti1Image(np.asarray(img.dataobj), rotation @ img.affine)


def oblique_affine(zooms=(1.0, 1.0, 1.0), angle_deg: float = 12.0, origin=(-20.0, -25.0, -15.0),
                   flip_x: bool = True) -> np.ndarray:
    """A voxel-to-world affine rotated about z and y, LPS-like (x flipped) when asked."""
    a, b = np.radians(angle_deg), np.radians(angle_deg / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ np.diag([-1.0 if flip_x else 1.0, 1.0, 1.0]) @ np.diag(zooms)
    affine[:3, 3] = origin
    return affine


def ellipsoid(shape, affine, centre_mm, radii_mm) -> np.ndarray:
    """Boolean ellipsoid (world coordinates, mm) on a voxel grid."""
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(affine, ijk)
    inside = (((xyz - np.asarray(centre_mm)) / np.asarray(radii_mm)) ** 2).sum(axis=1) <= 1.0
    return inside.reshape(shape)


#: Tissue intensities per contrast: (white matter, grey matter, CSF).
TISSUE = {"T1w": (1.0, 0.65, 0.2), "ceT1w": (1.0, 0.65, 0.2), "FLAIR": (0.7, 1.0, 0.1),
          "T2w": (0.5, 0.75, 1.5), "PDw": (0.7, 0.85, 1.0)}


def phantom_brain(shape=(44, 48, 40), affine=None, contrast="T1w", *, seed=0):
    """A small synthetic brain: WM core, GM shell, CSF pockets; background exactly 0.

    Returns ``(image, brain_mask, white_matter_mask)``; intensities carry 3 % noise.
    """
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    centre = nib.affines.apply_affine(affine, (np.asarray(shape) - 1) / 2)
    brain = ellipsoid(shape, affine, centre, (16, 19, 15))
    wm = ellipsoid(shape, affine, centre, (13.5, 16.5, 12.5))
    # off-centre ventricles and a second CSF pocket make the phantom asymmetric
    ventricles = (ellipsoid(shape, affine, centre + (2, 4, 2), (3, 7, 3))
                  | ellipsoid(shape, affine, centre + (7, -8, -3), (2.5, 2.5, 2.5)))
    wm_level, gm_level, csf_level = TISSUE[contrast]
    data = np.zeros(shape, np.float32)
    data[brain] = gm_level
    data[wm] = wm_level
    data[ventricles] = csf_level
    rng = np.random.default_rng(seed)
    data[brain] *= 1 + 0.03 * rng.standard_normal(int(brain.sum())).astype(np.float32)
    return nib.Nifti1Image(100 * data, affine), brain, wm & ~ventricles


def downsampled(img: nib.Nifti1Image, factors) -> nib.Nifti1Image:
    """``img`` on a grid ``factors`` times coarser per axis, same orientation and extent."""
    from nibabel.processing import resample_from_to

    factors = np.asarray(factors, dtype=float)
    shape = np.maximum(1, np.floor(np.asarray(img.shape[:3]) / factors)).astype(int)
    affine = img.affine @ np.diag([*factors, 1.0])
    affine[:3, 3] = nib.affines.apply_affine(img.affine, (factors - 1) / 2)
    out = resample_from_to(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine),
                           (tuple(shape), affine), order=1)
    return nib.Nifti1Image(np.asarray(out.dataobj, dtype=np.float32), affine)
