"""Quality-control figures of preprocessing (nilearn mosaics, PNG).

Each figure shows the three orientations (a row of sagittal, coronal and axial slices):

* registration: edges of the reference image (its iso-intensity contour at the brain's
  median, after 1-voxel smoothing) drawn over a co-registered contrast;
* brain mask: the mask's contour drawn over the reference image.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from nibabel.affines import apply_affine  # noqa: E402
from scipy import ndimage  # noqa: E402

from bids_mdpp.imageio import atomic_path  # noqa: E402

#: Slices per orientation.
N_CUTS = 5
DPI = 80


def _cuts(mask: np.ndarray, affine: np.ndarray) -> dict[str, list[float]]:
    """World coordinates (mm) of ``N_CUTS`` slices per axis, evenly through the mask."""
    points = apply_affine(affine, np.argwhere(mask))
    quantiles = np.linspace(0.15, 0.85, N_CUTS)
    return {axis: [float(v) for v in np.unique(np.round(np.quantile(points[:, i], quantiles), 1))]
            for i, axis in enumerate("xyz")}


def _window(img: nib.spatialimages.SpatialImage, mask: np.ndarray) -> tuple[float, float]:
    values = np.asarray(img.dataobj, dtype=np.float32)[mask]
    low, high = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    return float(low), float(max(high, low + 1e-6))


def _figure(background: nib.spatialimages.SpatialImage, region: np.ndarray, dest: Path,
            title: str, draw) -> Path:
    from matplotlib import pyplot as plt
    from nilearn import plotting

    if not region.any():
        region = np.ones(background.shape[:3], bool)
    vmin, vmax = _window(background, region)
    display = plotting.plot_anat(
        background, display_mode="mosaic", cut_coords=_cuts(region, background.affine),
        title=title, vmin=vmin, vmax=vmax, black_bg=True, draw_cross=False, annotate=False,
        dim=0, colorbar=False)
    draw(display)
    with atomic_path(dest) as tmp:
        display.savefig(str(tmp), dpi=DPI)
    display.close()
    plt.close("all")
    return dest


def registration_figure(reference: nib.spatialimages.SpatialImage, moving: nib.spatialimages.SpatialImage,
                        brain: nib.spatialimages.SpatialImage, dest: os.PathLike | str, *,
                        title: str) -> Path:
    """Edges of ``reference`` (red) over ``moving`` (same grid), slices through ``brain``.

    All three images are on one grid (the model grid).
    """
    region = np.asarray(brain.dataobj) > 0
    smooth = ndimage.gaussian_filter(np.asarray(reference.dataobj, dtype=np.float32), 1.0)
    level = float(np.median(smooth[region])) if region.any() else float(smooth.mean())
    edges = nib.Nifti1Image(np.where(region, smooth, 0.0).astype(np.float32), reference.affine)
    return _figure(_plain(moving), region, Path(dest), title,
                   lambda display: display.add_contours(edges, levels=[level], colors="red",
                                                        linewidths=0.8))


def brainmask_figure(reference: nib.spatialimages.SpatialImage, brain: nib.spatialimages.SpatialImage,
                     dest: os.PathLike | str, *, title: str) -> Path:
    """Contour of ``brain`` (red) over ``reference`` (same grid)."""
    region = np.asarray(brain.dataobj) > 0
    mask = nib.Nifti1Image(region.astype(np.uint8), brain.affine)
    reference = _plain(reference)
    return _figure(reference, region, Path(dest), title,
                   lambda display: display.add_contours(mask, levels=[0.5], colors="red",
                                                        linewidths=1.0))


def _plain(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """A float32 copy (nilearn's edge detector and contours want plain arrays)."""
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
