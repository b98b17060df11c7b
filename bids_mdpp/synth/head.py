"""A plausible non-brain head around the template brain: CSF, skull, scalp and fat layers.

The layers are shells at increasing distance from a smooth hull of the brain mask (the
mask smoothed so that the skull does not follow the sulci).  The hull is open at the
bottom of the canvas, so the head continues downwards like a neck instead of closing under
the brainstem.  A subject's layer thicknesses (:class:`HeadParams`) vary, and a smooth
random field thickens and thins them locally.  Each contrast gives each layer its own
intensity (:data:`bids_mdpp.synth.contrasts.HEAD_INTENSITY`); :func:`head_profile` turns
those into an image with partial-volume ramps between layers.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bids_mdpp.synth.anatomy import Template
from bids_mdpp.synth.fields import smooth_field
from bids_mdpp.synth.geometry import Grid, from_sitk, smooth, to_sitk

#: Layers from the brain outwards, with the range of their thickness (mm).
LAYERS: dict[str, tuple[float, float]] = {
    "csf": (1.5, 3.5),  # subarachnoid space and dura
    "inner_table": (1.0, 2.5),  # cortical bone
    "diploe": (1.5, 4.5),  # fatty marrow
    "outer_table": (1.0, 2.0),
    "muscle": (1.0, 3.5),  # galea, temporalis
    "fat": (2.5, 6.0),  # subcutaneous fat
    "skin": (1.0, 2.0),
}
#: Smoothing of the brain mask that defines the hull (Gaussian sigma, mm) and its level.
HULL_SIGMA_MM = 4.0
HULL_LEVEL = 0.3
#: Width of the partial-volume ramp between two layers (mm).
RAMP_MM = 0.8
#: Smoothness of the local thickness variation (Gaussian sigma, mm).
THICKNESS_SIGMA_MM = 20.0


@dataclass(frozen=True)
class HeadParams:
    """A subject's head: layer thicknesses (mm, in :data:`LAYERS` order) and their variation."""

    thickness_mm: tuple[float, ...]
    variation: float
    variation_seed: int


def draw_head_params(rng: np.random.Generator) -> HeadParams:
    """Draw layer thicknesses in their ranges and a ±10–30 % local variation."""
    return HeadParams(
        thickness_mm=tuple(round(float(rng.uniform(lo, hi)), 3) for lo, hi in LAYERS.values()),
        variation=round(float(rng.uniform(0.1, 0.3)), 3),
        variation_seed=int(rng.integers(2**31)),
    )


@functools.lru_cache(maxsize=2)
def hull_distance(template: Template) -> np.ndarray:
    """Signed distance (mm) to the brain hull, positive outside; shape ``(X, Y, Z)``, float32."""
    grid = template.grid
    hull = smooth(template.brain, grid, HULL_SIGMA_MM) > HULL_LEVEL
    hull = ndimage.binary_fill_holes(hull)
    # Repeat the bottom slice below the canvas so that the hull stays open downwards.
    extra = int(np.ceil(40.0 / grid.zooms[2]))
    padded = np.concatenate([np.repeat(hull[:, :, :1], extra, axis=2), hull], axis=2)
    padded_grid = Grid(padded.shape, grid.affine @ _shift_z(-extra))
    distance = from_sitk(sitk.SignedMaurerDistanceMap(
        to_sitk(padded.astype(np.uint8), padded_grid), insideIsPositive=False,
        squaredDistance=False, useImageSpacing=True))
    distance = np.ascontiguousarray(distance[:, :, extra:], np.float32)
    distance.setflags(write=False)
    return distance


def _shift_z(voxels: int) -> np.ndarray:
    shift = np.eye(4)
    shift[2, 3] = voxels
    return shift


def layer_depth(template: Template, params: HeadParams) -> np.ndarray:
    """Distance from the hull in units of the subject's local thickness (mm at variation 0)."""
    variation = smooth_field(template.grid, THICKNESS_SIGMA_MM, params.variation_seed)
    stretch = np.clip(1.0 + params.variation * variation, 0.6, 1.3)
    return hull_distance(template) / stretch


def head_profile(depth: np.ndarray, params: HeadParams, intensities) -> np.ndarray:
    """Intensity of the non-brain head at each ``depth`` (mm): layer values with ramps.

    ``intensities`` gives one value per layer (in :data:`LAYERS` order); inside the hull the
    first layer's (CSF) value holds, and beyond the skin the intensity falls to 0.
    Returns an array shaped like ``depth``, float32.
    """
    bounds = np.concatenate([[0.0], np.cumsum(params.thickness_mm)])
    points, values = [], []
    for k, value in enumerate(intensities):
        lo, hi = bounds[k], bounds[k + 1]
        half = min(RAMP_MM, hi - lo) / 2.0
        points += [lo + half, hi - half]
        values += [value, value]
    points.append(bounds[-1] + RAMP_MM / 2.0)
    values.append(0.0)
    return np.interp(depth, points, values).astype(np.float32)
