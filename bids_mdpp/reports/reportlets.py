"""Report figures ("reportlets"): lesions over each contrast in three orientations (nilearn).

Each figure is a mosaic: one row of axial, one of coronal and one of sagittal slices, placed
through the lesions (evenly spaced quantiles of the lesion voxels' world coordinates) or,
when there is no lesion, evenly through the brain.  The mask is drawn as a red contour; the
probability map as a filled, semi-transparent overlay.  Figures are PNG files.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from nibabel.affines import apply_affine  # noqa: E402

from bids_mdpp.imageio import atomic_path  # noqa: E402

#: Slices per orientation in a mosaic.
N_CUTS = 6
#: Probabilities below this are transparent in the filled overlay.
PROBABILITY_FLOOR = 0.1
DPI = 80


def _image(img: nib.Nifti1Image | os.PathLike | str) -> nib.Nifti1Image:
    return img if isinstance(img, nib.spatialimages.SpatialImage) else nib.load(str(img))


def cut_coords(mask: nib.Nifti1Image, background: nib.Nifti1Image,
               n_cuts: int = N_CUTS) -> dict[str, list[float]]:
    """World coordinates (mm) of ``n_cuts`` slices per axis for a nilearn ``mosaic``.

    Slices go through the lesions (quantiles of the mask voxels' coordinates, so larger
    lesion loads get more slices); with an empty mask, evenly through the background's
    foreground (voxels above its minimum).
    """
    mask_data = np.asarray(mask.dataobj) > 0
    if mask_data.any():
        points = apply_affine(mask.affine, np.argwhere(mask_data))
    else:
        data = np.asarray(background.dataobj)
        points = apply_affine(background.affine, np.argwhere(data > data.min()))
    if len(points) == 0:
        points = apply_affine(background.affine, np.argwhere(np.ones(background.shape[:3], bool)))
    quantiles = np.linspace(0.1, 0.9, n_cuts) if mask_data.any() else np.linspace(0.2, 0.8, n_cuts)
    cuts = {}
    for axis, name in enumerate("xyz"):
        values = np.unique(np.round(np.quantile(points[:, axis], quantiles), 1))
        cuts[name] = [float(v) for v in values]
    return cuts


def _display_range(background: nib.Nifti1Image) -> tuple[float, float]:
    """Intensity window: 0.5th–99.5th percentile of the foreground."""
    data = np.asarray(background.dataobj, dtype=np.float32)
    foreground = data[data > data.min()]
    if foreground.size == 0:
        return float(data.min()), float(data.max()) or 1.0
    low, high = np.percentile(foreground, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-6))


def _plot(background, mask, dest: Path, title: str, *, probability=None) -> Path:
    """Draw one mosaic with slices through the mask's lesions; save it atomically as PNG."""
    from matplotlib import pyplot as plt
    from nilearn import plotting

    background, mask = _image(background), _image(mask)
    vmin, vmax = _display_range(background)
    display = plotting.plot_anat(
        background, display_mode="mosaic", cut_coords=cut_coords(mask, background),
        title=title, vmin=vmin, vmax=vmax, black_bg=True, draw_cross=False, annotate=True,
        dim=0, colorbar=False,
    )
    if probability is not None:
        display.add_overlay(_image(probability), cmap="hot", vmin=0.0, vmax=1.0,
                            threshold=PROBABILITY_FLOOR, transparency=0.6, colorbar=True)
    if np.asarray(mask.dataobj).any():
        display.add_contours(mask, levels=[0.5], colors="red", linewidths=1.0)
    with atomic_path(dest) as tmp:
        display.savefig(str(tmp), dpi=DPI)
    display.close()
    plt.close("all")
    return Path(dest)


def lesion_contours(background, mask, dest: os.PathLike | str, *, title: str) -> Path:
    """Lesion mask contours (red) over ``background``; axial, coronal, sagittal rows (PNG)."""
    return _plot(background, mask, Path(dest), title)


def lesion_probability(background, probability, mask, dest: os.PathLike | str, *,
                       title: str) -> Path:
    """Lesion probability (filled, ≥ 0.1 shown) and mask contours over ``background`` (PNG)."""
    return _plot(background, mask, Path(dest), title, probability=probability)
