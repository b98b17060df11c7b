"""Lesions for synthetic subjects: real consensus masks, recombined, plus ellipsoids in WM.

The 27 MSLUB consensus lesion masks shipped in ``bids_mdpp/data/lesion-atlas`` (FSL MNI152
1 mm grid, Lesjak et al. 2018) are resampled onto the template canvas.  A subject's lesions
(:class:`LesionParams`) are the union of 1–3 of them, each possibly mirrored left/right,
with a random subset of their connected components kept, grown or shrunk, plus a few
ellipsoids placed in white matter (periventricular, juxtacortical, deep or infratentorial).
Lesions are confined to white matter: their fraction fades out where the template's WM
probability falls below 0.5.  Each lesion then gets its own severity, and some become
T1 "black holes" or enhance after contrast (ring-like or nodular).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from bids_mdpp.atlas_priors import lesion_atlas_paths
from bids_mdpp.imageio import load_image
from bids_mdpp.synth.anatomy import Template
from bids_mdpp.synth.confluent import add_confluent, cap_volume
from bids_mdpp.synth.geometry import Grid, bounding_box, resample, rigid_matrix, smooth, to_sitk
from bids_mdpp.synth.regions import distance_to

#: Where lesions may sit: their fraction is multiplied by clip((WM − lo) / (hi − lo), 0, 1).
WM_LOW, WM_HIGH = 0.15, 0.5
#: Smoothness of the grown lesion edges (Gaussian sigma, mm): partial volume.
EDGE_SIGMA_MM = 0.6
#: Growth is a shift of the 0.5 level of the mask smoothed with this sigma (mm).
GROWTH_SIGMA_MM = 1.0
#: Components smaller than this (mm³) never enhance nor become black holes.
MIN_SPECIAL_VOLUME_MM3 = 8.0
#: Ellipsoid sites and how often each is chosen.
SITES: dict[str, float] = {
    "periventricular": 0.4,
    "juxtacortical": 0.25,
    "deep": 0.2,
    "infratentorial": 0.15,
}


def atlas_paths() -> list[Path]:
    """The shipped lesion masks, sorted (27 files)."""
    return lesion_atlas_paths()


@functools.lru_cache(maxsize=64)
def _atlas_on_canvas(index: int, template: Template) -> tuple[np.ndarray, np.ndarray]:
    """Atlas mask ``index`` on the canvas, stored sparsely: (flat indices, fractions)."""
    path = atlas_paths()[index]
    img = load_image(path)
    mask = np.asarray(img.dataobj, np.float32)
    fraction = resample(to_sitk(mask, Grid(mask.shape, img.affine)), template.grid)
    flat = np.flatnonzero(fraction > 0.05)
    return flat, fraction.ravel()[flat]


@dataclass(frozen=True)
class Ellipsoid:
    """A synthetic lesion: ``site`` and a quantile that picks a voxel among that site's."""

    site: str
    site_quantile: float
    radii_mm: tuple[float, float, float]
    angles_deg: tuple[float, float, float]


@dataclass(frozen=True)
class LesionParams:
    """A subject's lesions (see the module docstring).

    Attributes
    ----------
    atlas : tuple[int, ...]
        Indices into :func:`atlas_paths` of the masks combined (1–3).
    mirror : tuple[bool, ...]
        Per mask: mirror it left/right.
    keep_fraction : float
        Probability that each connected component of the union is kept (the largest always is).
    growth_mm : float
        Outward (> 0) or inward (< 0) shift of the lesion borders (mm).
    ellipsoids : tuple[Ellipsoid, ...]
        Synthetic lesions added to the union.
    component_seed : int
        Seed of the per-component draws (kept or not, severity, black hole, enhancement).
    black_hole_fraction : float
        Probability that a lesion is a T1 black hole.
    n_enhancing : int
        Number of lesions that enhance after gadolinium (0 for most subjects).
    ring_fraction : float
        Probability that an enhancing lesion enhances as a ring rather than a nodule.
    load_class : str
        ``free``, ``low``, ``typical`` or ``high`` (:mod:`bids_mdpp.synth.load`).
    max_volume_mm3 : float
        Low load: lesions are dropped until their canvas volume is at most this (0: no cap).
    confluent_mm3 : float
        High load: confluent periventricular lesions fill the canvas volume up to this (0: none).
    confluent_irregularity_mm : float
        How far a smooth random field shifts the border of the confluent lesions (mm).
    """

    atlas: tuple[int, ...]
    mirror: tuple[bool, ...]
    keep_fraction: float
    growth_mm: float
    ellipsoids: tuple[Ellipsoid, ...]
    component_seed: int
    black_hole_fraction: float
    n_enhancing: int
    ring_fraction: float
    load_class: str = "typical"
    max_volume_mm3: float = 0.0
    confluent_mm3: float = 0.0
    confluent_irregularity_mm: float = 0.0


def draw_ellipsoid(rng: np.random.Generator) -> Ellipsoid:
    """One synthetic lesion: a site by :data:`SITES`, radii 1.2–7 mm, elongated up to 2.2×."""
    site = str(rng.choice(list(SITES), p=list(SITES.values())))
    radius = float(np.clip(rng.lognormal(np.log(2.5), 0.45), 1.2, 7.0))
    radii = np.array([radius, radius * rng.uniform(0.7, 1.0), radius * rng.uniform(1.0, 2.2)])
    return Ellipsoid(
        site=site,
        site_quantile=round(float(rng.random()), 6),
        radii_mm=tuple(round(float(r), 3) for r in radii),
        angles_deg=tuple(round(float(a), 2) for a in rng.uniform(0, 180, 3)),
    )


def draw_lesion_params(rng: np.random.Generator) -> LesionParams:
    """Draw a subject's lesions: widely varying count and load, mostly in WM."""
    n_atlas = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    atlas = tuple(int(i) for i in rng.choice(len(atlas_paths()), n_atlas, replace=False))
    n_ellipsoids = int(min(rng.geometric(0.2), 15))  # at least one: never lesion-free
    has_enhancing = rng.random() < 0.45
    return LesionParams(
        atlas=atlas,
        mirror=tuple(bool(rng.random() < 0.5) for _ in atlas),
        keep_fraction=round(float(rng.uniform(0.3, 1.0)), 3),
        growth_mm=round(float(rng.uniform(-0.4, 0.8)), 3),
        ellipsoids=tuple(draw_ellipsoid(rng) for _ in range(n_ellipsoids)),
        component_seed=int(rng.integers(2**31)),
        black_hole_fraction=round(float(rng.uniform(0.0, 0.4)), 3),
        n_enhancing=int(1 + rng.poisson(1.5)) if has_enhancing else 0,
        ring_fraction=round(float(rng.uniform(0.3, 0.9)), 3),
    )


@dataclass(frozen=True, eq=False)
class LesionMaps:
    """A subject's lesions on the canvas; maps have shape ``(X, Y, Z)``, float32 in [0, 1].

    Attributes
    ----------
    fraction : np.ndarray
        Lesion fraction of each voxel (partial volume at the borders).
    severity : np.ndarray
        Severity of the lesion a voxel belongs to (0 where there is none).
    black_hole : np.ndarray
        Weight of T1 black holes.
    enhancing : np.ndarray
        Weight of gadolinium enhancement.
    n_lesions : int
        Connected components (26-connectivity) of ``fraction > 0.5``.
    n_enhancing, n_ring, n_black_holes : int
        How many of them enhance, enhance as a ring, are black holes.
    volume_mm3 : float
        Volume of ``fraction > 0.5`` (mm³).
    ellipsoid_centres_mm : tuple
        RAS centres (mm, template space) where the ellipsoids were placed.
    """

    fraction: np.ndarray
    severity: np.ndarray
    black_hole: np.ndarray
    enhancing: np.ndarray
    n_lesions: int
    n_enhancing: int
    n_ring: int
    n_black_holes: int
    volume_mm3: float
    ellipsoid_centres_mm: tuple


def make_lesions(template: Template, params: LesionParams) -> LesionMaps:
    """Apply ``params`` on ``template`` (deterministic)."""
    grid = template.grid
    rng = np.random.default_rng(params.component_seed)
    union = np.zeros(grid.shape, np.float32)
    for index, mirror in zip(params.atlas, params.mirror):
        flat, values = _atlas_on_canvas(index, template)
        mask = np.zeros(grid.shape, np.float32)
        mask.ravel()[flat] = values
        union = np.maximum(union, np.flip(mask, axis=0) if mirror else mask)
    union = _keep_components(union > 0.5, params.keep_fraction, rng).astype(np.float32)
    centres = []
    for ellipsoid in params.ellipsoids:
        sites = lesion_sites(template)
        candidates = sites[ellipsoid.site]
        if len(candidates) == 0:  # a site can vanish on a very coarse canvas
            candidates = np.concatenate(list(sites.values()))
        centre = candidates[min(int(ellipsoid.site_quantile * len(candidates)), len(candidates) - 1)]
        centres.append(tuple(round(float(c), 2) for c in centre))
        paint_ellipsoid(union, grid, centre, ellipsoid)
    if params.confluent_mm3 > 0:
        union = add_confluent(union, template, params.confluent_mm3,
                              params.confluent_irregularity_mm, params.component_seed + 1)
    box = bounding_box(union > 0.5, margin=int(np.ceil(6.0 / grid.zooms.min())))
    fraction = np.zeros(grid.shape, np.float32)
    severity, black_hole, enhancing = (np.zeros(grid.shape, np.float32) for _ in range(3))
    counts = (0, 0, 0, 0)
    if box is not None:
        sub = Grid(tuple(s.stop - s.start for s in box), grid.affine)
        maps = (fraction[box], severity[box], black_hole[box], enhancing[box])
        counts = _fill_box(union[box], template.wm[box], sub, params, rng, *maps)
        if params.max_volume_mm3 > 0:
            kept = cap_volume(maps, float(np.prod(grid.zooms)), params.max_volume_mm3, rng)
            counts = _recount(maps, kept) if kept < counts[0] else counts
    voxel = float(np.prod(grid.zooms))
    return LesionMaps(
        fraction=fraction,
        severity=severity,
        black_hole=black_hole,
        enhancing=enhancing,
        n_lesions=counts[0],
        n_enhancing=counts[1],
        n_ring=counts[2],
        n_black_holes=counts[3],
        volume_mm3=float((fraction > 0.5).sum()) * voxel,
        ellipsoid_centres_mm=tuple(centres),
    )


def _fill_box(union, wm, grid, params, rng, fraction, severity, black_hole, enhancing):
    """Grow, confine to WM, label and characterise the lesions inside one bounding box."""
    level = 0.5 - 0.5 * np.tanh(params.growth_mm / GROWTH_SIGMA_MM)
    grown = smooth(union, grid, GROWTH_SIGMA_MM) > level
    allowed = np.clip((wm - WM_LOW) / (WM_HIGH - WM_LOW), 0.0, 1.0)
    fraction[...] = np.clip(smooth(grown.astype(np.float32), grid, EDGE_SIGMA_MM), 0, 1) * allowed
    labels, n = ndimage.label(fraction > 0.5, structure=np.ones((3, 3, 3)))
    if n == 0:
        return 0, 0, 0, 0
    index = np.arange(1, n + 1)
    volume = ndimage.sum_labels(np.ones(labels.shape), labels, index) * float(np.prod(grid.zooms))
    big = index[volume >= MIN_SPECIAL_VOLUME_MM3]
    draws = rng.random((3, n + 1))  # severity, black hole, ring — one column per label
    is_black = np.zeros(n + 1, bool)
    is_black[big] = draws[1, big] < params.black_hole_fraction
    n_enh = min(params.n_enhancing, max(1, len(big) // 3), len(big))
    # larger lesions enhance more often (choice weighted by the square root of the volume)
    weights = np.sqrt(volume[big - 1])
    enhancing_labels = (rng.choice(big, n_enh, replace=False, p=weights / weights.sum())
                        if n_enh else np.array([], int))
    is_ring = np.zeros(n + 1, bool)
    is_ring[enhancing_labels] = draws[2, enhancing_labels] < params.ring_fraction
    # spread the labels over the partial-volume fringe so that it shares its lesion's traits
    reach = max(1, int(round(2.0 / grid.zooms.min())))
    spread = ndimage.grey_dilation(labels, size=(2 * reach + 1,) * 3)
    spread = np.where(labels > 0, labels, spread)
    in_lesion = fraction > 0
    draws[0, 0] = 0.0
    severity[in_lesion] = draws[0][spread[in_lesion]]
    black_hole[...] = fraction * is_black[spread]
    core = labels * ndimage.binary_erosion(labels > 0, structure=np.ones((3, 3, 3)))
    has_core = np.zeros(n + 1, bool)
    has_core[np.unique(core)] = True
    ring_like = is_ring & has_core
    enh = np.zeros(n + 1, bool)
    enh[enhancing_labels] = True
    weight = np.where(ring_like[spread], fraction * (core == 0), fraction * enh[spread])
    enhancing[...] = np.where(enh[spread], weight, 0.0)
    return n, int(n_enh), int(ring_like.sum()), int(is_black.sum())


def _recount(maps, n_lesions: int) -> tuple[int, int, int, int]:
    """Lesion counts after :func:`cap_volume`: enhancing ones and black holes among those left
    (ring-enhancing ones are counted as enhancing)."""
    fraction, _, black_hole, enhancing = maps
    labels, n = ndimage.label(fraction > 0.5, structure=np.ones((3, 3, 3)))
    index = np.arange(1, n + 1)
    enhanced = np.asarray(ndimage.maximum(enhancing, labels, index)) > 0.05 if n else []
    black = np.asarray(ndimage.maximum(black_hole, labels, index)) > 0.05 if n else []
    return n_lesions, int(np.sum(enhanced)), 0, int(np.sum(black))


def _keep_components(mask: np.ndarray, keep_fraction: float, rng: np.random.Generator) -> np.ndarray:
    box = bounding_box(mask, margin=1)
    if box is None:
        return mask
    labels, n = ndimage.label(mask[box], structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = rng.random(n + 1) < keep_fraction
    keep[0] = False
    keep[int(np.argmax(sizes[1:])) + 1] = True
    out = np.zeros_like(mask)
    out[box] = keep[labels]
    return out


def paint_ellipsoid(volume: np.ndarray, grid: Grid, centre_mm, ellipsoid: Ellipsoid) -> None:
    """Draw a soft-edged ellipsoid (1 inside, ~1 mm ramp) into ``volume`` (maximum)."""
    rotation = rigid_matrix(ellipsoid.angles_deg, (0, 0, 0))[:3, :3]
    radii = np.asarray(ellipsoid.radii_mm, float)
    inverse = np.linalg.inv(grid.affine)
    centre_vox = inverse[:3, :3] @ np.asarray(centre_mm, float) + inverse[:3, 3]
    half = int(np.ceil((radii.max() + 2.0) / grid.zooms.min()))
    lo = np.maximum(np.floor(centre_vox).astype(int) - half, 0)
    hi = np.minimum(np.floor(centre_vox).astype(int) + half + 1, grid.shape)
    if np.any(hi <= lo):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    idx = np.mgrid[box].reshape(3, -1).astype(float)
    offset = grid.affine[:3, :3] @ idx + grid.affine[:3, 3:4] - np.asarray(centre_mm, float)[:, None]
    local = rotation.T @ offset / radii[:, None]
    r = np.sqrt((local**2).sum(axis=0))
    value = np.clip(0.5 + (1.0 - r) * radii.min(), 0.0, 1.0).reshape(hi - lo)
    volume[box] = np.maximum(volume[box], value)


@functools.lru_cache(maxsize=2)
def lesion_sites(template: Template) -> dict[str, np.ndarray]:
    """RAS coordinates (mm) of candidate ellipsoid centres per site, each ``(N, 3)``.

    All are voxels with WM probability > 0.8.  Periventricular: within 8 mm of a ventricle;
    infratentorial: below the tentorium (posterior fossa, z < −22 mm and y < −20 mm);
    juxtacortical: within 4 mm of cortical GM (GM > 0.5 within 20 mm of the brain surface);
    deep: the rest of the supratentorial WM.  (On a canvas coarser than those distances,
    they grow to one voxel.)
    """
    grid = template.grid
    core = template.wm > 0.8
    to_ventricle = distance_to(template.ventricles > 0.5, grid)
    depth = distance_to(template.brain < 0.5, grid)
    cortex = (template.gm > 0.5) & (depth < 20.0)
    to_cortex = distance_to(cortex, grid)
    z_mm, y_mm = _world_axis(grid, 2), _world_axis(grid, 1)
    posterior_fossa = (z_mm < -22.0) & (y_mm < -20.0)
    voxel = float(grid.zooms.max())
    sites = {
        "infratentorial": core & posterior_fossa,
        "periventricular": core & ~posterior_fossa & (to_ventricle <= max(8.0, voxel)),
        "juxtacortical": core & ~posterior_fossa & (to_cortex <= max(4.0, voxel)),
    }
    sites["deep"] = core & ~posterior_fossa & ~sites["periventricular"] & ~sites["juxtacortical"]
    # np.argwhere lists voxels in C order: a stable order for the quantiles
    return {name: np.argwhere(mask) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
            for name, mask in sites.items()}


def _world_axis(grid: Grid, axis: int) -> np.ndarray:
    """World coordinate ``axis`` (mm) of every voxel of an axis-aligned grid, broadcastable."""
    shape = [1, 1, 1]
    shape[axis] = grid.shape[axis]
    values = grid.affine[axis, axis] * np.arange(grid.shape[axis]) + grid.affine[axis, 3]
    return values.reshape(shape)
