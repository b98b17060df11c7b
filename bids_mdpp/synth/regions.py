"""Where the bright things that are not lesions live: anatomical regions for hard negatives.

Real FLAIR and T2w images are full of hyperintense normal anatomy.  This module finds, from
tissue maps and the lateral ventricles, the places where it sits:

- ``caps``: the white matter capping the frontal and occipital horns of the lateral
  ventricles (the ends of the ventricles along y);
- the distance to the lateral ventricles (mm), for thin periventricular bands;
- ``septum``: the midline sheet between the two lateral ventricles (septum pellucidum, with
  the fornix along its lower edge);
- ``cingulate`` and ``insula``: grey matter of the cingulate gyrus (medial, around the
  corpus callosum) and of the insula (deep to the Sylvian fissure); ``deep_gm``: basal
  ganglia and thalami;
- ``choroid``: the atria of the lateral ventricles and the fourth ventricle, where the
  choroid plexus lies;
- ``inflow``: CSF of the third and fourth ventricles and of the basal cisterns, where CSF
  flow spoils the FLAIR inversion;
- ``pvs_sites``: centres for dilated perivascular spaces, in the basal ganglia and in the
  centrum semiovale.

The same function serves the template canvas (where the generator paints) and a real
subject's grid (where :mod:`benchmarks.synth_vs_real` measures): boxes are written in the
coordinates of the MNI152 template (mm, RAS), and ``to_template`` maps a grid's world
coordinates there.  Thresholds shorter than a voxel grow to one voxel.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bids_mdpp.synth.geometry import Grid, from_sitk, to_sitk

#: A lateral ventricle holds at least this much deep CSF (mm³).
LATERAL_MIN_VOLUME_MM3 = 1000.0
#: Width of the horn-tip zone along y in which caps sit (mm from the tip).
HORN_ZONE_MM = 14.0
#: Caps and bands reach at most this far from the ventricle (mm).
PERIVENTRICULAR_REACH_MM = 8.0
#: The septum: midline voxels with a lateral ventricle this close on both sides (mm).
SEPTUM_REACH_MM = 4.0
SEPTUM_HALF_WIDTH_MM = 2.0
#: Grey matter this close to the lateral ventricles and this near the midline is cingulate.
CINGULATE_REACH_MM = 16.0
CINGULATE_HALF_WIDTH_MM = 14.0
#: Boxes in template coordinates (x as |x|), mm: (low, high) per axis.
INSULA_BOX = ((31.0, 44.0), (-30.0, 28.0), (-14.0, 24.0))
DEEP_GM_BOX = ((0.0, 32.0), (-38.0, 26.0), (-16.0, 24.0))
THIRD_VENTRICLE_BOX = ((0.0, 4.0), (-32.0, 6.0), (-16.0, 14.0))
FOURTH_VENTRICLE_BOX = ((0.0, 10.0), (-60.0, -34.0), (-54.0, -20.0))
CISTERN_BOX = ((0.0, 30.0), (-45.0, 16.0), (-48.0, -6.0))
ATRIUM_Y_MM = (-52.0, -16.0)
#: Perivascular-space sites: basal ganglia (deep GM below z = 8 mm) and centrum semiovale
#: (white matter 18–48 mm above the AC, deeper than 12 mm from the brain's surface).
BASAL_GANGLIA_Z_MM = (-12.0, 8.0)
SEMIOVALE_Z_MM = (18.0, 48.0)
SEMIOVALE_DEPTH_MM = 12.0
#: Deep grey matter lies deeper than this under the brain's surface (mm).
DEEP_GM_DEPTH_MM = 18.0


@dataclass(frozen=True, eq=False)
class Regions:
    """Hard-negative regions on one grid; boolean or float32 maps shaped ``grid.shape``.

    Attributes
    ----------
    lateral : np.ndarray
        The lateral ventricles (bool).
    to_lateral_mm : np.ndarray
        Distance to the lateral ventricles (mm, 0 inside).
    caps : np.ndarray
        Horn-tip zones: 1 at the frontal horns, 2 at the occipital horns, 0 elsewhere (uint8),
        restricted to white matter within :data:`PERIVENTRICULAR_REACH_MM`.
    septum : np.ndarray
        Midline sheet between the lateral ventricles (bool).
    cingulate, insula, deep_gm : np.ndarray
        Grey-matter zones (bool).
    choroid : np.ndarray
        Ventricular CSF where the choroid plexus lies (bool).
    inflow : np.ndarray
        CSF of the third and fourth ventricles and the basal cisterns (bool).
    pvs_sites : dict[str, np.ndarray]
        ``basal_ganglia`` and ``semiovale``: candidate centres, world mm, each ``(N, 3)``.
    horn_y_mm : tuple[float, float]
        Template y (mm) of the frontal and of the occipital tip of the lateral ventricles.
    """

    lateral: np.ndarray
    to_lateral_mm: np.ndarray
    caps: np.ndarray
    septum: np.ndarray
    cingulate: np.ndarray
    insula: np.ndarray
    deep_gm: np.ndarray
    choroid: np.ndarray
    inflow: np.ndarray
    pvs_sites: dict[str, np.ndarray]
    horn_y_mm: tuple[float, float]


def find_regions(gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, brain: np.ndarray,
                 lateral: np.ndarray, grid: Grid, to_template: np.ndarray | None = None) -> Regions:
    """The regions of a brain with tissue fractions ``gm``, ``wm``, ``csf`` (or 0/1 masks).

    ``brain`` is the brain mask, ``lateral`` the lateral ventricles, all shaped
    ``grid.shape``.  ``to_template`` (4 × 4) maps the grid's world coordinates (mm) to the
    template's; None: they are template coordinates already.
    """
    voxel = float(grid.zooms.max())
    lateral = lateral.astype(bool)
    x, y, z = _template_coordinates(grid, to_template)
    ax = np.abs(x)
    to_lateral = distance_to(lateral, grid)
    depth = distance_to(brain < 0.5, grid)
    white, grey, fluid = wm > 0.5, gm > 0.5, csf > 0.5
    near = white & (to_lateral > 0) & (to_lateral <= max(PERIVENTRICULAR_REACH_MM, voxel))
    caps = np.zeros(grid.shape, np.uint8)
    front = back = 0.0
    if lateral.any():
        lat_y = np.broadcast_to(y, grid.shape)[lateral]
        front, back = float(lat_y.max()), float(lat_y.min())
        caps[near & (y >= front - HORN_ZONE_MM)] = 1
        caps[near & (y <= back + HORN_ZONE_MM)] = 2
    reach = max(SEPTUM_REACH_MM, voxel)
    left = distance_to(lateral & (x < 0), grid) <= reach
    right = distance_to(lateral & (x > 0), grid) <= reach
    septum = left & right & ~lateral & (ax <= max(SEPTUM_HALF_WIDTH_MM, voxel)) & ~fluid
    cingulate = (grey & (ax <= CINGULATE_HALF_WIDTH_MM) & (to_lateral <= CINGULATE_REACH_MM)
                 & (y >= -60.0) & (z >= -8.0))
    insula = grey & _in_box((ax, y, z), INSULA_BOX) & (depth >= max(10.0, voxel))
    deep_gm = grey & _in_box((ax, y, z), DEEP_GM_BOX) & (depth >= DEEP_GM_DEPTH_MM) & ~cingulate
    ventricular_csf = fluid & ~lateral
    third = ventricular_csf & _in_box((ax, y, z), THIRD_VENTRICLE_BOX) & (depth >= 10.0)
    fourth = ventricular_csf & _in_box((ax, y, z), FOURTH_VENTRICLE_BOX) & (depth >= 4.0)
    cisterns = ventricular_csf & _in_box((ax, y, z), CISTERN_BOX) & ~third & ~fourth
    choroid = (lateral & (y >= ATRIUM_Y_MM[0]) & (y <= ATRIUM_Y_MM[1])) | fourth
    basal = deep_gm & (z >= BASAL_GANGLIA_Z_MM[0]) & (z <= BASAL_GANGLIA_Z_MM[1])
    semiovale = (white & (z >= SEMIOVALE_Z_MM[0]) & (z <= SEMIOVALE_Z_MM[1])
                 & (depth >= max(SEMIOVALE_DEPTH_MM, voxel)) & (to_lateral > 4.0))
    return Regions(
        lateral=lateral,
        to_lateral_mm=to_lateral,
        caps=caps,
        septum=septum,
        cingulate=cingulate,
        insula=insula,
        deep_gm=deep_gm,
        choroid=choroid,
        inflow=third | fourth | cisterns,
        pvs_sites={"basal_ganglia": _world_points(basal, grid),
                   "semiovale": _world_points(semiovale, grid)},
        horn_y_mm=(front, back),
    )


@functools.lru_cache(maxsize=2)
def template_regions(template) -> Regions:
    """:func:`find_regions` on the template canvas (cached; ``template`` is a
    :class:`~bids_mdpp.synth.anatomy.Template`)."""
    return find_regions(template.gm, template.wm, template.csf, template.brain,
                        lateral_ventricles(template.ventricles > 0.5, template.grid), template.grid)


def lateral_ventricles(ventricles: np.ndarray, grid: Grid,
                       to_template: np.ndarray | None = None) -> np.ndarray:
    """The lateral ventricles among deep CSF ``ventricles``: large components off the midline.

    The template's deep CSF also holds the third ventricle, the interhemispheric fissure
    and the fourth ventricle, all on the midline, and the cisterns below the ventricles;
    the midline plane (|x| < 1 mm) and everything below z = −8 mm are cut away first.
    """
    x, _, z = _template_coordinates(grid, to_template)
    candidates = ventricles.astype(bool) & (np.abs(x) >= 1.0) & (z >= -8.0)
    labels, n = ndimage.label(candidates)
    if n == 0:
        return np.zeros(ventricles.shape, bool)
    index = np.arange(1, n + 1)
    centre_x = np.asarray(ndimage.mean(np.broadcast_to(x, ventricles.shape), labels, index))
    volume = ndimage.sum_labels(np.ones(labels.shape), labels, index) * float(np.prod(grid.zooms))
    return np.isin(labels, index[(np.abs(centre_x) > 5.0) & (volume >= LATERAL_MIN_VOLUME_MM3)])


def distance_to(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """Distance (mm) of every voxel to the nearest voxel of ``mask`` (0 inside; large when empty)."""
    if not mask.any():
        return np.full(mask.shape, 1e6, np.float32)
    distance = from_sitk(sitk.SignedMaurerDistanceMap(
        to_sitk(mask.astype(np.uint8), grid), insideIsPositive=False, squaredDistance=False,
        useImageSpacing=True))
    return np.maximum(distance, 0.0).astype(np.float32)


def _template_coordinates(grid: Grid, to_template: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Template x, y, z (mm) of every voxel: broadcastable axes when the grid is axis-aligned."""
    matrix = grid.affine if to_template is None else np.asarray(to_template) @ grid.affine
    off_diagonal = matrix[:3, :3] - np.diag(np.diag(matrix[:3, :3]))
    if not np.any(np.abs(off_diagonal) > 1e-9):
        axes = []
        for axis in range(3):
            shape = [1, 1, 1]
            shape[axis] = grid.shape[axis]
            values = matrix[axis, axis] * np.arange(grid.shape[axis]) + matrix[axis, 3]
            axes.append(values.reshape(shape).astype(np.float32))
        return tuple(axes)
    index = np.indices(grid.shape, dtype=np.float32)
    return tuple(np.einsum("j,j...->...", matrix[axis, :3].astype(np.float32), index)
                 + np.float32(matrix[axis, 3]) for axis in range(3))


def _in_box(coords, box) -> np.ndarray:
    inside = True
    for values, (lo, hi) in zip(coords, box):
        inside = inside & (values >= lo) & (values <= hi)
    return inside


def _world_points(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """World coordinates (mm) of the voxels of ``mask``, ``(N, 3)``, in C order (stable)."""
    return np.argwhere(mask) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
