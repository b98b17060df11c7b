"""Lesions as connected components of a binary mask: count, volumes (mm³), centroids (mm).

A lesion is a connected component of the mask under **26-connectivity** by default (voxels
touching by a face, an edge or a corner belong to the same lesion; 18 and 6 are available).
Volumes come from the voxel volume of the image's affine (``|det(A[:3, :3])|`` mm³), and
centroids are the voxel centres of mass mapped through the affine, i.e. scanner/world RAS+
coordinates in mm as nibabel reports them.

A minimum lesion size (mm³) removes smaller components; the default, 0, keeps everything
(the network's output is not post-processed unless asked, as in the authors' inference).

Lesions are numbered 1…n from the largest to the smallest (ties: the order in which
``scipy.ndimage.label`` scans the volume), so ``lesion_id`` 1 is always the largest lesion.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nibabel.affines import apply_affine
from scipy import ndimage

#: Default neighbourhood of a voxel when counting lesions (face + edge + corner neighbours).
DEFAULT_CONNECTIVITY = 26

#: Neighbourhood size → ``scipy.ndimage.generate_binary_structure`` connectivity rank.
_RANK = {6: 1, 18: 2, 26: 3}

#: Columns of the lesion table, in order (also the TSV header).
COLUMNS: tuple[str, ...] = (
    "lesion_id", "n_voxels", "volume_mm3", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
)


@dataclass(frozen=True)
class LesionTable:
    """The lesions of one mask.

    Attributes
    ----------
    rows : tuple[dict, ...]
        One dict per lesion with the keys of :data:`COLUMNS`, largest lesion first.
    voxel_volume_mm3 : float
        Volume of one voxel (mm³).
    min_size_mm3 : float
        Components smaller than this (mm³) were removed (0 = none removed).
    connectivity : int
        6, 18 or 26.
    mask : numpy.ndarray
        The binary mask after removing small lesions, shape ``(X, Y, Z)``, dtype uint8.
    """

    rows: tuple[dict, ...]
    voxel_volume_mm3: float
    min_size_mm3: float
    connectivity: int
    mask: np.ndarray = field(repr=False, compare=False)

    @property
    def count(self) -> int:
        """Number of lesions."""
        return len(self.rows)

    @property
    def total_volume_mm3(self) -> float:
        """Total lesion volume (mm³)."""
        return float(sum(row["volume_mm3"] for row in self.rows))


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume (mm³) of one voxel of an image with this 4×4 affine (rounded to 1e-9 mm³, so that
    a 2 mm grid gives exactly 8 mm³ rather than the determinant's 7.999…)."""
    return round(float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))), 9)


def structure(connectivity: int = DEFAULT_CONNECTIVITY) -> np.ndarray:
    """The 3×3×3 neighbourhood for 6-, 18- or 26-connectivity (``ValueError`` otherwise)."""
    if connectivity not in _RANK:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    return ndimage.generate_binary_structure(3, _RANK[connectivity])


def label_lesions(mask: np.ndarray,
                  connectivity: int = DEFAULT_CONNECTIVITY) -> tuple[np.ndarray, int]:
    """Connected components of a 3D mask: ``(labels (X, Y, Z) int32, number of components)``."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    labels, count = ndimage.label(mask > 0, structure=structure(connectivity))
    return labels, int(count)


def lesion_table(
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    min_size_mm3: float = 0.0,
    connectivity: int = DEFAULT_CONNECTIVITY,
) -> LesionTable:
    """Count and measure the lesions of a binary mask.

    Parameters
    ----------
    mask
        Shape ``(X, Y, Z)``; any non-zero voxel is lesion.
    affine
        4×4 voxel → world (mm) matrix of the mask's image.
    min_size_mm3
        Remove components whose volume is strictly below this (mm³); 0 keeps all.
    connectivity
        6, 18 or 26 (default).

    Returns
    -------
    LesionTable
        Per-lesion rows (largest first), totals, and the cleaned mask.
    """
    if not np.isfinite(min_size_mm3) or min_size_mm3 < 0:
        raise ValueError(
            f"minimum lesion size must be a finite number ≥ 0 mm³, got {min_size_mm3!r}")
    labels, count = label_lesions(mask, connectivity)
    voxel_mm3 = voxel_volume_mm3(affine)
    index = np.arange(1, count + 1)
    inside = labels > 0
    sizes = np.asarray(ndimage.sum_labels(inside, labels, index), dtype=np.int64).reshape(-1)
    keep = index[sizes * voxel_mm3 >= min_size_mm3]
    centres = np.asarray(ndimage.center_of_mass(inside, labels, keep), dtype=float).reshape(-1, 3)
    world = apply_affine(np.asarray(affine, dtype=float), centres)
    kept_sizes = sizes[keep - 1]
    order = np.argsort(-kept_sizes, kind="stable")
    rows = tuple(
        {
            "lesion_id": rank + 1,
            "n_voxels": int(kept_sizes[i]),
            "volume_mm3": float(kept_sizes[i] * voxel_mm3),
            "centroid_x_mm": float(world[i, 0]),
            "centroid_y_mm": float(world[i, 1]),
            "centroid_z_mm": float(world[i, 2]),
        }
        for rank, i in enumerate(order)
    )
    cleaned = np.isin(labels, keep).astype(np.uint8)
    return LesionTable(rows=rows, voxel_volume_mm3=voxel_mm3, min_size_mm3=float(min_size_mm3),
                       connectivity=connectivity, mask=cleaned)
