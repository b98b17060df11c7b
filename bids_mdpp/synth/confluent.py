"""Lesion-load extremes on the canvas: confluent periventricular lesions and a volume cap.

:func:`add_confluent` grows a union of lesions to a target volume with confluent
periventricular white-matter lesions (the white matter nearest the lateral ventricles first,
the border made irregular by a smooth random field), as in patients with a high lesion load.
:func:`cap_volume` keeps a random subset of the lesions whose total volume stays under a cap,
as in patients with a low lesion load.  Both are deterministic for a seed.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_mdpp.synth.fields import smooth_field
from bids_mdpp.synth.regions import template_regions

#: Confluent lesions grow from the lateral ventricles up to this far into white matter (mm).
CONFLUENT_REACH_MM = 30.0
#: Irregularity of their border: smoothness (mm) of the field that shifts it.
CONFLUENT_SIGMA_MM = 4.0
#: The target is exceeded by this factor on the canvas: the WM confinement and the soft
#: edges of :func:`bids_mdpp.synth.lesions.make_lesions` shave the border afterwards.
CONFLUENT_MARGIN = 1.12


def add_confluent(union: np.ndarray, template, target_mm3: float, irregularity_mm: float,
                  seed: int) -> np.ndarray:
    """``union`` (canvas lesion fraction) plus confluent periventricular lesions.

    White-matter voxels (WM > 0.5, above z = −10 mm) within :data:`CONFLUENT_REACH_MM` of the
    lateral ventricles are ranked by their distance to them plus ``irregularity_mm`` times a
    smooth standardised field, and the first ones are added until ``union > 0.5`` holds
    ``target_mm3`` × :data:`CONFLUENT_MARGIN`.  Returns a new array.
    """
    grid = template.grid
    voxel_mm3 = float(np.prod(grid.zooms))
    missing = int(np.ceil(target_mm3 * CONFLUENT_MARGIN / voxel_mm3)) - int((union > 0.5).sum())
    if missing <= 0:
        return union
    regions = template_regions(template)
    z = grid.affine[2, 2] * np.arange(grid.shape[2]) + grid.affine[2, 3]
    candidates = ((template.wm > 0.5) & (regions.to_lateral_mm > 0)
                  & (regions.to_lateral_mm <= CONFLUENT_REACH_MM) & (union <= 0.5)
                  & (z >= -10.0)[None, None, :])
    flat = np.flatnonzero(candidates)
    if flat.size == 0:
        return union
    field = smooth_field(grid, CONFLUENT_SIGMA_MM, seed).ravel()[flat]
    score = regions.to_lateral_mm.ravel()[flat] + irregularity_mm * field
    chosen = flat[np.argsort(score, kind="stable")[:missing]]
    out = union.copy()
    out.ravel()[chosen] = 1.0
    # close the small holes that the ranking leaves between chosen voxels
    out[ndimage.binary_closing(out > 0.5) & (template.wm > 0.5)] = 1.0
    return out


def cap_volume(maps: tuple[np.ndarray, ...], voxel_mm3: float, max_mm3: float,
               rng: np.random.Generator) -> int:
    """Remove lesions from ``maps`` (in place) until the lesions left hold at most ``max_mm3``.

    ``maps[0]`` is the lesion fraction; a lesion is a 26-connected component of
    ``fraction > 0.5`` with its partial-volume fringe (within 2 voxels); the others
    (severity, black holes, enhancement) lose the same voxels.  Lesions are visited in a
    random order and kept while they fit; when none fits, the smallest is kept alone.
    Returns the number of lesions kept.
    """
    fraction = maps[0]
    labels, n = ndimage.label(fraction > 0.5, structure=np.ones((3, 3, 3)))
    if n == 0:
        return 0
    volumes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_mm3
    keep = np.zeros(n + 1, bool)
    total = 0.0
    for k in rng.permutation(n):
        if total + volumes[k] <= max_mm3:
            keep[k + 1] = True
            total += volumes[k]
    if not keep.any():
        keep[int(np.argmin(volumes)) + 1] = True
    if keep[1:].all():
        return n
    spread = ndimage.grey_dilation(labels, size=(5, 5, 5))
    spread = np.where(labels > 0, labels, spread)
    drop = (fraction > 0) & ~keep[spread]
    for array in maps:
        array[drop] = 0.0
    return int(keep.sum())
