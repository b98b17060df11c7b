"""Hard negatives: normal anatomy that is bright on FLAIR or T2w and is never a lesion.

Drawn per subject (:class:`MimicParams`, from the subject's own random stream), built on the
template canvas (:func:`build_mimics`, in the regions of :mod:`bids_mdpp.synth.regions`) and
painted into the tissue before lesions are mixed in (:func:`paint_mimics`):

- periventricular **caps** at the frontal and occipital horns (thickest at the horn's tip)
  and a thin periventricular **band** along the lateral ventricles;
- the **septum** pellucidum and fornix on the midline between the lateral ventricles;
- **cingulate** and **insular** cortex brighter than the rest of the grey matter, and a bright
  rim where cortex meets sulcal CSF (**cortical partial volume**, FLAIR);
- **choroid plexus** in the atria and the fourth ventricle, in every contrast;
- **CSF inflow** artefacts in the third and fourth ventricles and the basal cisterns (FLAIR);
- dilated **perivascular spaces** in the basal ganglia and the centrum semiovale (CSF-like).

Intensities (:class:`MimicIntensity`, per contrast, WM = 1) follow the ranges measured on
real scans through the product's preprocessing (``benchmarks/synth_vs_real.py``; see the
module constants), widened for other scanners.  None of these maps ever enters the lesion mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_mdpp.contrasts import CONTRASTS, T1_LIKE
from bids_mdpp.synth.fields import smooth_field
from bids_mdpp.synth.geometry import bounding_box, smooth
from bids_mdpp.synth.lesions import Ellipsoid, paint_ellipsoid
from bids_mdpp.synth.regions import HORN_ZONE_MM, template_regions

#: Probability that a subject shows each structure.
PRESENCE: dict[str, float] = {"caps": 0.85, "band": 0.85, "septum": 0.6, "inflow": 0.6,
                              "rim": 0.7}
#: Caps: thickness at the horn's tip (mm); band: thickness (mm); septum: opacity.
CAP_MM, BAND_MM, SEPTUM_OPACITY = (2.0, 7.0), (1.0, 3.0), (0.4, 1.0)
#: Relative variation of the cap and band thickness (smooth field, sigma 3 mm).
THICKNESS_VARIATION, SHAPE_SIGMA_MM = 0.35, 3.0
#: Inflow artefacts: blob field smoothness (mm) and the share of the inflow CSF they cover.
INFLOW_SIGMA_MM, INFLOW_COVER = 3.0, (0.15, 0.7)
#: Choroid plexus: blob field smoothness (mm) and the share of its zone it fills.
CHOROID_SIGMA_MM, CHOROID_COVER = 2.5, (0.2, 0.5)
#: Dilated perivascular spaces: mean count, radius and half length (mm).
PVS_MEAN_COUNT, PVS_RADIUS_MM, PVS_HALF_LENGTH_MM = 8.0, (0.5, 1.3), (1.5, 6.0)
#: Perivascular-space sites and how often each is chosen.
PVS_SITES: dict[str, float] = {"basal_ganglia": 0.55, "semiovale": 0.45}

#: Per contrast, (low, high) of: ``wm_like`` — caps, band and septum as a share of the way
#: from WM to the lesion intensity; ``cingulate`` and ``insula`` — GM intensity factor;
#: ``choroid`` — intensity (WM = 1); ``inflow`` — inflow CSF as a share of the way from CSF
#: to GM; ``rim`` — added at a half-GM, half-CSF voxel.  Real scans (medians, sub-26 and
#: mslub-long sub-01, WM = 1; lesion share = (region − 1) / (lesion − 1)): see
#: docs/training.md, "Hard negatives".
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "FLAIR": {"wm_like": (0.15, 0.95), "cingulate": (1.0, 1.15), "insula": (1.03, 1.2),
              "choroid": (0.6, 1.6), "inflow": (0.3, 1.1), "rim": (0.0, 0.35)},
    "T2w": {"wm_like": (0.05, 0.6), "cingulate": (0.97, 1.1), "insula": (1.0, 1.15),
            "choroid": (1.6, 3.2), "inflow": (0.0, 0.0), "rim": (0.0, 0.0)},
    "PDw": {"wm_like": (0.05, 0.6), "cingulate": (0.98, 1.08), "insula": (1.0, 1.1),
            "choroid": (1.1, 1.5), "inflow": (0.0, 0.0), "rim": (0.0, 0.0)},
    "T1w": {"wm_like": (0.0, 0.4), "cingulate": (0.97, 1.03), "insula": (0.97, 1.05),
            "choroid": (0.4, 0.8), "inflow": (0.0, 0.0), "rim": (0.0, 0.0)},
}
RANGES["ceT1w"] = RANGES["T1w"]


@dataclass(frozen=True)
class MimicIntensity:
    """How one contrast shows the hard negatives (see :data:`RANGES`)."""

    wm_like: tuple[float, float, float]
    cingulate: float
    insula: float
    choroid: float
    inflow: float
    rim: float


@dataclass(frozen=True)
class MimicParams:
    """One subject's hard negatives (lengths in mm at scale 1).

    Attributes
    ----------
    cap_mm : tuple[float, float]
        Cap thickness at the frontal and occipital horn tips (0: none).
    band_mm : float
        Periventricular band thickness (0: none).
    septum : float
        Opacity of the septum pellucidum and fornix (0: not visible).
    inflow_cover, choroid_cover : float
        Share of the inflow CSF and of the choroid zone that the blobs cover (0: none).
    pvs : tuple[Ellipsoid, ...]
        Dilated perivascular spaces (``site`` is a key of :data:`PVS_SITES`).
    seed : int
        Seed of the shape fields.
    intensities : dict[str, MimicIntensity]
        Per contrast (every contrast is drawn).
    """

    cap_mm: tuple[float, float]
    band_mm: float
    septum: float
    inflow_cover: float
    choroid_cover: float
    pvs: tuple[Ellipsoid, ...]
    seed: int
    intensities: dict[str, MimicIntensity]


def draw_mimic_params(rng: np.random.Generator) -> MimicParams:
    """Draw a subject's hard negatives (each structure present with :data:`PRESENCE`)."""
    present = {name: bool(rng.random() < p) for name, p in PRESENCE.items()}
    caps = tuple(_r(rng.uniform(*CAP_MM)) if present["caps"] else 0.0 for _ in range(2))
    pvs = tuple(_draw_pvs(rng) for _ in range(int(rng.poisson(PVS_MEAN_COUNT))))
    intensities = {}
    for contrast in CONTRASTS:
        ranges = RANGES[contrast]
        intensities[contrast] = MimicIntensity(
            wm_like=tuple(_r(rng.uniform(*ranges["wm_like"])) for _ in range(3)),
            **{k: _r(rng.uniform(*ranges[k])) for k in ("cingulate", "insula", "choroid")},
            inflow=_r(rng.uniform(*ranges["inflow"])) if present["inflow"] else 0.0,
            rim=_r(rng.uniform(*ranges["rim"])) if present["rim"] else 0.0,
        )
    return MimicParams(
        cap_mm=caps,
        band_mm=_r(rng.uniform(*BAND_MM)) if present["band"] else 0.0,
        septum=_r(rng.uniform(*SEPTUM_OPACITY)) if present["septum"] else 0.0,
        inflow_cover=_r(rng.uniform(*INFLOW_COVER)) if present["inflow"] else 0.0,
        choroid_cover=_r(rng.uniform(*CHOROID_COVER)),
        pvs=pvs,
        seed=int(rng.integers(2**31)),
        intensities=intensities,
    )


def _draw_pvs(rng: np.random.Generator) -> Ellipsoid:
    radius = rng.uniform(*PVS_RADIUS_MM)
    return Ellipsoid(
        site=str(rng.choice(list(PVS_SITES), p=list(PVS_SITES.values()))),
        site_quantile=round(float(rng.random()), 6),
        radii_mm=(_r(radius), _r(radius), _r(rng.uniform(*PVS_HALF_LENGTH_MM))),
        angles_deg=tuple(_r(a) for a in rng.uniform(-20, 20, 3)),
    )


def _r(value: float) -> float:
    return round(float(value), 4)


@dataclass(frozen=True, eq=False)
class Patch:
    """A map on part of the canvas: ``values`` (float32 in [0, 1]) on the voxels ``box``."""

    box: tuple[slice, slice, slice]
    values: np.ndarray

    def within(self, outer: tuple[slice, slice, slice]) -> tuple[slice, ...]:
        """This patch's voxels as slices of an array that covers ``outer``."""
        return tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(self.box, outer))


@dataclass(frozen=True, eq=False)
class MimicMaps:
    """The hard negatives of one scene on the canvas, as :class:`Patch` objects (None: absent).

    ``wm_like`` holds the caps, the band and the septum, in :attr:`MimicIntensity.wm_like`
    order; ``pvs`` the perivascular spaces.
    """

    wm_like: tuple[Patch | None, Patch | None, Patch | None]
    cingulate: Patch | None
    insula: Patch | None
    choroid: Patch | None
    inflow: Patch | None
    pvs: Patch | None

    def patches(self) -> dict[str, Patch | None]:
        """Every patch by name (``caps``, ``band``, ``septum``, ``cingulate`` …)."""
        return dict(zip(("caps", "band", "septum"), self.wm_like),
                    cingulate=self.cingulate, insula=self.insula, choroid=self.choroid,
                    inflow=self.inflow, pvs=self.pvs)


def build_mimics(template, params: MimicParams) -> MimicMaps:
    """Apply ``params`` on ``template`` (deterministic)."""
    regions = template_regions(template)
    grid = template.grid
    voxel = float(grid.zooms.max())
    ramp = max(1.0, voxel)
    box = _clip(bounding_box(regions.lateral, margin=int(np.ceil(12.0 / voxel))), template.brain_box)
    wm_like: list[Patch | None] = [None, None, None]
    if box is not None:
        sub = grid.crop(box)
        d = regions.to_lateral_mm[box]
        wm = template.wm[box]
        shape = 1.0 + THICKNESS_VARIATION * np.clip(smooth_field(sub, SHAPE_SIGMA_MM, params.seed), -2, 2)
        if max(params.cap_mm) > 0:
            wm_like[0] = Patch(box, _caps(regions.caps[box], d, _y_mm(sub), regions, params.cap_mm,
                                          shape, ramp) * wm)
        if params.band_mm > 0:
            band = np.clip((params.band_mm * shape - d) / ramp + 0.5, 0, 1) * (d > 0)
            wm_like[1] = Patch(box, (band * wm).astype(np.float32))
        if params.septum > 0:
            wm_like[2] = Patch(box, (params.septum * regions.septum[box]).astype(np.float32))
    return MimicMaps(
        wm_like=tuple(wm_like),
        cingulate=_soft(regions.cingulate, template),
        insula=_soft(regions.insula, template),
        choroid=_blobs(regions.choroid, template, params.choroid_cover, params.seed + 1,
                       CHOROID_SIGMA_MM, template.csf),
        inflow=_blobs(regions.inflow, template, params.inflow_cover, params.seed + 2,
                      INFLOW_SIGMA_MM, template.csf),
        pvs=_pvs(template, regions, params.pvs),
    )


def _clip(box, outer):
    if box is None:
        return None
    return tuple(slice(max(b.start, o.start), min(b.stop, o.stop)) for b, o in zip(box, outer))


def _y_mm(grid) -> np.ndarray:
    return (grid.affine[1, 1] * np.arange(grid.shape[1]) + grid.affine[1, 3]).reshape(1, -1, 1)


def _caps(zone, d, y, regions, cap_mm, shape, ramp) -> np.ndarray:
    """Caps: thickest at each horn's tip, thinning over :data:`HORN_ZONE_MM` along y."""
    front, back = regions.horn_y_mm
    towards_tip = np.where(zone == 1, (y - (front - HORN_ZONE_MM)) / HORN_ZONE_MM,
                           ((back + HORN_ZONE_MM) - y) / HORN_ZONE_MM)
    thickness = np.where(zone == 1, cap_mm[0], cap_mm[1]) * shape * np.clip(towards_tip, 0.25, 1.0)
    caps = np.clip((thickness - d) / ramp + 0.5, 0, 1) * (zone > 0)
    return caps.astype(np.float32)


def _soft(mask: np.ndarray, template) -> Patch | None:
    """``mask`` with edges softened over about a millimetre, on its bounding box."""
    box = _clip(bounding_box(mask, margin=2), template.brain_box)
    if box is None:
        return None
    values = np.clip(smooth(mask[box].astype(np.float32), template.grid.crop(box), 0.8), 0, 1)
    return Patch(box, values)


def _blobs(zone: np.ndarray, template, cover: float, seed: int, sigma_mm: float,
           within: np.ndarray) -> Patch | None:
    """Smooth random blobs covering about ``cover`` of ``zone``, times ``within`` (fraction)."""
    box = _clip(bounding_box(zone, margin=1), template.brain_box)
    if box is None or cover <= 0:
        return None
    field = smooth_field(template.grid.crop(box), sigma_mm, seed)
    level = float(np.quantile(field[zone[box]], 1.0 - cover))
    blobs = zone[box] / (1.0 + np.exp(-(field - level) / 0.25))
    return Patch(box, (blobs * within[box]).astype(np.float32))


def _pvs(template, regions, spaces: tuple[Ellipsoid, ...]) -> Patch | None:
    """Perivascular spaces: thin tubes, vertical in the basal ganglia, radial in the
    centrum semiovale (pointing away from the centre of the brain)."""
    if not spaces:
        return None
    grid = template.grid
    canvas = np.zeros(grid.shape, np.float32)
    centre_of_brain = np.array([0.0, -18.0, 12.0])
    for space in spaces:
        sites = regions.pvs_sites[space.site]
        if len(sites) == 0:
            continue
        centre = sites[min(int(space.site_quantile * len(sites)), len(sites) - 1)]
        angles = space.angles_deg
        if space.site == "semiovale":
            direction = centre - centre_of_brain
            direction = direction / max(float(np.linalg.norm(direction)), 1e-6)
            angles = (float(np.degrees(-np.arcsin(direction[1]))),
                      float(np.degrees(np.arctan2(direction[0], direction[2]))), 0.0)
        paint_ellipsoid(canvas, grid, centre, Ellipsoid(space.site, space.site_quantile,
                                                        space.radii_mm, angles))
    box = _clip(bounding_box(canvas > 0, margin=1), template.brain_box)
    if box is None:
        return None
    return Patch(box, canvas[box] * (template.brain[box] > 0.5))


def paint_mimics(tissue: np.ndarray, contrast, maps: MimicMaps, intensity: MimicIntensity,
                 box: tuple[slice, slice, slice], gm: np.ndarray, csf: np.ndarray) -> None:
    """Paint the hard negatives into ``tissue`` (the brain box of a contrast, in place).

    ``contrast`` is the contrast's :class:`~bids_mdpp.synth.contrasts.ContrastParams`;
    ``gm`` and ``csf`` are the template's fractions on ``box``.  Order: grey-matter zones,
    cortical rim, caps / band / septum (towards ``1 + share · (lesion − 1)``), choroid
    plexus, inflow, perivascular spaces (towards the contrast's CSF).
    """
    gm_level = np.float32(contrast.gm)
    for patch, factor in ((maps.cingulate, intensity.cingulate), (maps.insula, intensity.insula)):
        if patch is not None and factor != 1.0:
            where = patch.within(box)
            tissue[where] += patch.values * gm[where] * gm_level * np.float32(factor - 1.0)
    if intensity.rim > 0:
        tissue += np.float32(4.0 * intensity.rim) * gm * csf
    for patch, share in zip(maps.wm_like, intensity.wm_like):
        if patch is not None:
            target = np.float32(1.0 + share * (contrast.lesion - 1.0))
            _towards(tissue, patch, box, target)
    if maps.choroid is not None:
        _towards(tissue, maps.choroid, box, np.float32(intensity.choroid))
    if maps.inflow is not None and intensity.inflow > 0:
        level = contrast.csf + intensity.inflow * (contrast.gm - contrast.csf)
        _towards(tissue, maps.inflow, box, np.float32(level))
    if maps.pvs is not None:
        _towards(tissue, maps.pvs, box, np.float32(contrast.csf))


def _towards(tissue: np.ndarray, patch: Patch, box, target: np.float32) -> None:
    where = patch.within(box)
    tissue[where] += patch.values * (target - tissue[where])
