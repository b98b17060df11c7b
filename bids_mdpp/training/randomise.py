"""Domain randomisation of training crops, on the fly (in the manner of SynthSeg).

The synthetic engine draws each subject's anatomy, contrasts and acquisition once, and a
training run sees a few dozen such subjects.  To make the network rely on shape and context
rather than on the exact look of those few images, a share of the samples is re-imaged at
random before it reaches the network, each present contrast on its own:

1. **Contrast**: a random monotone, piecewise-linear remapping of the intensity (relative to
   the white-matter peak, which stays where the normalisation put it), so that the ratios
   between tissues, lesions and normal bright anatomy change from sample to sample while their
   order on that contrast is kept (a lesion stays brighter than white matter on FLAIR).
2. **Resolution**: a thick-slice acquisition along one in-plane axis (a Gaussian slice profile
   as wide as the slice, then sampling at that spacing and linear interpolation back), and an
   independent in-plane blur on both axes.
3. **Bias**: a smooth multiplicative field (a coarse random grid, upsampled cubically), what
   the bias correction of preprocessing leaves behind.

Every draw of one sample comes from a generator seeded by :attr:`SampleParams.randomise_seed`
(:mod:`bids_mdpp.training.slabs`), so a sample does not depend on the worker that made it.
Intensities are the normalised ones of :class:`bids_mdpp.session.PreprocResult`: background
−1, white-matter peak −0.5, so ``level = intensity + 1`` is 0.5 at white matter.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from bids_mdpp.synth.acquisition import FWHM_PER_SIGMA

#: Intensity knots of the contrast remapping, as multiples of the white-matter level.
CONTRAST_KNOTS = (0.0, 0.5, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
#: Index of the white-matter knot (1.0), the fixed point of the remapping.
WM_KNOT = 2


@dataclass(frozen=True)
class RandomisationSettings:
    """Share and ranges of the domain randomisation (lengths in voxels of the model grid).

    ``p``: chance that one present contrast of one sample is randomised (0: never, the
    default).  ``contrast_log_range``: each segment of the intensity remapping has its slope
    multiplied by exp(U(−r, r)).  ``slice_max``: the thickest simulated slice, drawn
    uniformly from 1 (none) to it.  ``blur_max``: in-plane Gaussian σ per axis, U(0, it).
    ``bias_log_max``: standard deviation of the log bias field, U(0, it), on a
    ``bias_grid`` × ``bias_grid`` grid of control points over the crop.
    """

    p: float = 0.0
    contrast_log_range: float = 0.2
    slice_max: float = 4.0
    blur_max: float = 1.0
    bias_log_max: float = 0.2
    bias_grid: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"the domain randomisation share must lie in [0, 1], got {self.p}")
        if self.slice_max < 1.0:
            raise ValueError(f"slice_max must be at least 1 voxel, got {self.slice_max}")
        if min(self.contrast_log_range, self.blur_max, self.bias_log_max) < 0:
            raise ValueError("randomisation ranges cannot be negative")
        if self.bias_grid < 2:
            raise ValueError(f"bias_grid must be at least 2, got {self.bias_grid}")

    def to_dict(self) -> dict:
        return asdict(self)


def remap_contrast(level: np.ndarray, slopes: np.ndarray, wm_level: float) -> np.ndarray:
    """Monotone piecewise-linear remapping of ``level`` (any shape, ≥ 0).

    ``slopes`` (len(CONTRAST_KNOTS) − 1,) multiply each segment between the knots
    ``CONTRAST_KNOTS × wm_level``; the white-matter knot maps onto itself, so the
    normalisation's anchor holds.  Beyond the last knot the last segment's slope continues."""
    knots = np.asarray(CONTRAST_KNOTS) * wm_level
    steps = np.diff(knots) * slopes
    values = np.concatenate([[0.0], np.cumsum(steps)])
    values += knots[WM_KNOT] - values[WM_KNOT]
    out = np.interp(level, knots, values)
    beyond = level > knots[-1]
    if beyond.any():
        out[beyond] = values[-1] + (level[beyond] - knots[-1]) * slopes[-1]
    return np.maximum(out, 0.0)


def thick_slices(level: np.ndarray, axis: int, thickness: float) -> np.ndarray:
    """Image ``level`` (..., H, W) with slices ``thickness`` voxels thick along in-plane
    ``axis`` (0: H, 1: W): a Gaussian profile of that FWHM, sampled every ``thickness`` voxels
    and interpolated linearly back onto the grid.  Shape is kept."""
    if thickness <= 1.0:
        return level
    dim = level.ndim - 2 + axis
    sigma = [0.0] * level.ndim
    sigma[dim] = thickness / FWHM_PER_SIGMA
    blurred = ndimage.gaussian_filter(level, sigma, mode="nearest")
    n = level.shape[dim]
    samples = np.unique(np.round(np.append(np.arange(0.0, n - 1, thickness), n - 1)).astype(int))
    if len(samples) < 2:
        return blurred
    sampled = np.take(blurred, samples, axis=dim)
    grid = np.arange(n)
    left = np.clip(np.searchsorted(samples, grid, side="right") - 1, 0, len(samples) - 2)
    weight = (grid - samples[left]) / (samples[left + 1] - samples[left])
    shape = [1] * level.ndim
    shape[dim] = n
    weight = weight.reshape(shape)
    return (np.take(sampled, left, axis=dim) * (1.0 - weight)
            + np.take(sampled, left + 1, axis=dim) * weight)


def bias_field(rng: np.random.Generator, shape: tuple[int, int], grid: int,
               log_sigma: float) -> np.ndarray:
    """A smooth multiplicative field of ``shape`` (H, W): exp of a ``grid`` × ``grid`` normal
    grid (σ ``log_sigma``) upsampled cubically."""
    coarse = rng.normal(0.0, log_sigma, (grid, grid))
    zoom = (shape[0] / grid, shape[1] / grid)
    fine = ndimage.zoom(coarse, zoom, order=3, mode="nearest", grid_mode=True)
    return np.exp(fine[: shape[0], : shape[1]])


def randomise_contrast(level: np.ndarray, foreground: np.ndarray, seed: int,
                       settings: RandomisationSettings, wm_level: float) -> np.ndarray:
    """Re-image one contrast of a crop: ``level`` (S, H, W) ≥ 0 (0 = background) with its
    ``foreground`` mask (S, H, W) → the randomised level (S, H, W), 0 outside the foreground.

    Every draw comes from ``seed``; the same field and resolution apply to the S slices."""
    rng = np.random.default_rng(seed)
    slopes = np.exp(rng.uniform(-1, 1, len(CONTRAST_KNOTS) - 1) * settings.contrast_log_range)
    axis = int(rng.integers(2))
    thickness = float(rng.uniform(1.0, settings.slice_max))
    blur = rng.uniform(0.0, settings.blur_max, 2)
    log_sigma = float(rng.uniform(0.0, settings.bias_log_max))
    out = remap_contrast(level, slopes, wm_level) * foreground
    out = thick_slices(out, axis, thickness)
    out = ndimage.gaussian_filter(out, (0.0, *blur), mode="nearest")
    out = out * bias_field(rng, level.shape[-2:], settings.bias_grid, log_sigma)[None]
    return np.where(foreground, out, 0.0).astype(level.dtype)
