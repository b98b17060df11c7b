"""Intensity normalisation by the white-matter peak (Roy et al. 2018, FLEXCONN; as in ModDrop++).

Over the brain's non-zero voxels up to their 99th percentile, a Gaussian kernel density
estimate (bandwidth = p99 / 80) is evaluated on 80 points; its local maxima are the tissue
peaks.  T1w and ce-T1w take the highest-intensity peak (white matter is the brightest
tissue); the authors take the tallest one for T2w, PDw and FLAIR (ours: see below).
Intensities are divided by the peak, then mapped by ``x / 2 − 1``: background −1,
white-matter peak −0.5.

Our additions: local maxima lower than ``MIN_PEAK_FRACTION`` of the tallest are noise
wiggles of the estimate and are not candidates.  In T2w, PDw and FLAIR white matter is the
darkest parenchymal tissue, but grey matter (with its partial volume) can form a peak about as
tall as white matter's, so "the tallest" flips between the two from one scan to the next (by
the GM/WM ratio, 15–35 %).  These contrasts therefore take the darkest peak at least
``RIVAL_PEAK_FRACTION`` as tall as the tallest, ignoring peaks darker than ``DARK_PEAK_RATIO``
of the tallest one's intensity (CSF in FLAIR, partial volume at the brain's edge).  Where white
matter's peak is the tallest — the usual case — this is the same peak.
"""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from scipy.signal import argrelextrema
from scipy.stats import gaussian_kde

from bids_mdpp.contrasts import T1_LIKE
from bids_mdpp.errors import InputDataError
from bids_mdpp.preproc.sitkio import with_data

GRID_POINTS = 80
BANDWIDTH_DIVISOR = 80.0
UPPER_PERCENTILE = 99.0
#: Peaks lower than this fraction of the tallest are ignored.
MIN_PEAK_FRACTION = 0.05
#: T2w, PDw, FLAIR: peaks this tall relative to the tallest compete to be white matter's.
RIVAL_PEAK_FRACTION = 0.5
#: ... unless darker than this fraction of the tallest peak's intensity (CSF, edges).
DARK_PEAK_RATIO = 0.6
#: The density is estimated on at most this many voxels (a fixed, seeded subsample).
MAX_SAMPLES = 200_000
BACKGROUND = -1.0


def kde_peaks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(grid, density, peak_indices)`` of the KDE of positive ``values`` ≤ their p99.

    The grid spans the values ± 3 bandwidths (80 points), as statsmodels' ``KDEUnivariate``
    does in the original code.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[values > 0]
    if values.size < 2:
        raise ValueError("fewer than 2 non-zero voxels")
    upper = np.percentile(values, UPPER_PERCENTILE)
    values = values[values <= upper]
    if values.size > MAX_SAMPLES:
        values = np.random.default_rng(0).choice(values, MAX_SAMPLES, replace=False)
    bandwidth = upper / BANDWIDTH_DIVISOR
    spread = values.std(ddof=1)
    if spread == 0:
        raise ValueError("all non-zero voxels have the same intensity")
    kde = gaussian_kde(values, bw_method=bandwidth / spread)  # factor × std = bandwidth
    grid = np.linspace(values.min() - 3 * bandwidth, values.max() + 3 * bandwidth, GRID_POINTS)
    density = kde(grid)
    peaks = argrelextrema(density, np.greater)[0]
    if peaks.size == 0:
        peaks = np.array([int(np.argmax(density))])
    return grid, density, peaks


def white_matter_peak(values: np.ndarray, contrast: str) -> float:
    """Intensity of the white-matter peak of ``values`` (see the module docstring)."""
    grid, density, peaks = kde_peaks(values)
    peaks = peaks[density[peaks] >= MIN_PEAK_FRACTION * density[peaks].max()]
    if contrast in T1_LIKE:
        return float(grid[peaks.max()])
    tallest = peaks[np.argmax(density[peaks])]
    rivals = peaks[(density[peaks] >= RIVAL_PEAK_FRACTION * density[tallest])
                   & (grid[peaks] >= DARK_PEAK_RATIO * grid[tallest])]
    return float(grid[rivals.min()])


def normalize_wm_peak(img: nib.spatialimages.SpatialImage, mask: nib.spatialimages.SpatialImage,
                      contrast: str, *, name: os.PathLike | str = "image") -> tuple[nib.Nifti1Image, float]:
    """Normalised image (float32; −1 outside ``mask``, white-matter peak −0.5) and the peak.

    Raises :class:`InputDataError` naming ``name`` when the brain holds no usable intensity.
    """
    data = np.clip(np.asarray(img.dataobj, dtype=np.float32), 0.0, None)
    brain = np.asarray(mask.dataobj) > 0
    try:
        peak = white_matter_peak(data[brain], contrast)
    except ValueError as exc:
        raise InputDataError(name, f"cannot normalise intensities inside the brain mask ({exc})") from exc
    if peak <= 0:
        raise InputDataError(name, f"white-matter peak at {peak:g}: no tissue signal in the brain")
    out = np.full(data.shape, BACKGROUND, dtype=np.float32)
    out[brain] = data[brain] / peak / 2.0 - 1.0
    return with_data(img, out), peak
