"""Real anatomy for synthetic subjects: the MNI152 2009 template, deformed per subject.

The template is nilearn's bundled ICBM 2009a symmetric MNI152 (T1, grey- and white-matter
probability maps, brain mask; 197 × 233 × 189 voxels of 1 mm, RAS), placed on a slightly
larger *canvas* so that a skull and scalp fit around the brain.  CSF = brain mask − GM − WM.
The lateral and third ventricles are the large deep CSF components.

A subject's anatomy is the template under a transform drawn per subject
(:class:`AnatomyParams`): a head-size scaling, a smooth random displacement, and an
enlargement of the ventricles (atrophy) that pushes the periventricular tissue outwards.
The transform maps subject-space points (mm) to canvas points, so that any map on the
canvas can be sampled in any subject's space by :func:`bids_mdpp.synth.geometry.resample`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bids_mdpp.synth.fields import smooth_field
from bids_mdpp.synth.geometry import (
    Grid,
    affine_transform,
    bounding_box,
    chain,
    from_sitk,
    make_grid,
    resample,
    smooth,
    to_sitk,
)

#: Canvas margin added around the template, except below it (mm): room for the scalp.
CANVAS_MARGIN_MM = 10.0
#: Exponent that sharpens the template's tissue fractions (1: as published).
SHARPEN_GAMMA = 2.0
#: A deep CSF voxel is farther than this from the outside of the brain mask (mm).
VENTRICLE_DEPTH_MM = 12.0
#: Deep CSF components at least this large (mm³) and this close to the midline (mm) are
#: ventricles (smaller or lateral ones are insular cisterns).
VENTRICLE_MIN_VOLUME_MM3 = 1500.0
VENTRICLE_MAX_MIDLINE_MM = 35.0
#: Spacing of the displacement-field grid (mm, at scale 1) and smoothness of the random
#: displacement and of the ventricle push (Gaussian sigma, mm).
DISPLACEMENT_SPACING_MM = 3.0
DEFORMATION_SIGMA_MM = 24.0
ATROPHY_SIGMA_MM = 12.0


@dataclass(frozen=True, eq=False)
class Template:
    """The template on the canvas; every map has shape ``grid.shape`` ``(X, Y, Z)``, float32.

    Attributes
    ----------
    grid : Grid
        The canvas (1 mm voxels at ``scale`` 1, ``1 / scale`` mm otherwise).
    gm, wm, csf, brain : np.ndarray
        Tissue fractions in [0, 1]; ``brain`` = ``gm + wm + csf`` (the brain mask).
    ventricles : np.ndarray
        1 inside the lateral and third ventricles, else 0.
    detail : np.ndarray
        Standardised residual of the template T1 after regressing it on the tissue maps:
        the anatomical detail (deep nuclei, cortical layering) the maps leave out; 0 outside.
    scale : float
        Sampling factor: 1 for 1 mm voxels, 0.5 for 2 mm (quick tests).
    brain_box : tuple[slice, slice, slice]
        The canvas voxels around the brain (every map above is 0 outside it).
    """

    grid: Grid
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    detail: np.ndarray
    scale: float
    brain_box: tuple[slice, slice, slice]


@functools.lru_cache(maxsize=2)
def load_template(scale: float = 1.0) -> Template:
    """The template on its canvas at voxel size ``1 / scale`` mm (cached; arrays are read-only)."""
    if not 0.2 <= scale <= 1.0:
        raise ValueError(f"scale must be between 0.2 and 1, got {scale}")
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    native = Grid(tuple(t1_img.shape), t1_img.affine)
    maps = {
        "t1": np.asarray(t1_img.dataobj, np.float32),
        "gm": np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, np.float32),
        "wm": np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, np.float32),
        "brain": np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj, np.float32),
    }
    canvas = _canvas_grid(native, scale)
    maps = {name: resample(to_sitk(array, native), canvas) for name, array in maps.items()}
    brain = np.clip(maps["brain"], 0.0, 1.0)
    gm = np.minimum(np.clip(maps["gm"], 0.0, 1.0), brain)
    wm = np.minimum(np.clip(maps["wm"], 0.0, 1.0), brain - gm)
    gm, wm, csf = _sharpen(gm, wm, brain - gm - wm, brain)
    template = Template(
        grid=canvas,
        gm=gm,
        wm=wm,
        csf=csf,
        brain=brain,
        ventricles=_ventricles(csf, brain, canvas).astype(np.float32),
        detail=_detail(maps["t1"], gm, wm, csf, brain),
        scale=float(scale),
        brain_box=bounding_box(brain > 0, margin=2),
    )
    for array in (gm, wm, csf, brain, template.ventricles, template.detail):
        array.setflags(write=False)
    return template


def _sharpen(gm, wm, csf, brain):
    """Narrow the partial-volume bands of the average template (fractions ** γ, renormalised).

    An average of many brains blurs every tissue boundary; single brains (and the images
    the model will see) are sharper.  The fractions still sum to ``brain``.
    """
    powered = [np.power(t, SHARPEN_GAMMA) for t in (gm, wm, csf)]
    total = powered[0] + powered[1] + powered[2]
    scale = np.divide(brain, total, out=np.zeros_like(total), where=total > 1e-6)
    return tuple((p * scale).astype(np.float32) for p in powered)


def _canvas_grid(native: Grid, scale: float) -> Grid:
    """The template's field of view widened by :data:`CANVAS_MARGIN_MM` except at the bottom.

    (The brainstem reaches the template's bottom edge; the head continues below it.)
    """
    lo = native.affine[:3, 3]
    hi = native.affine[:3, :3] @ (np.array(native.shape) - 1) + lo
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    lo = lo - np.array([CANVAS_MARGIN_MM, CANVAS_MARGIN_MM, 0.0])
    hi = hi + CANVAS_MARGIN_MM
    step = 1.0 / scale
    shape = np.floor((hi - lo) / step).astype(int) + 1
    return make_grid(np.eye(3), [step] * 3, shape, (lo + hi) / 2)


def _ventricles(csf: np.ndarray, brain: np.ndarray, grid: Grid) -> np.ndarray:
    depth = from_sitk(sitk.SignedMaurerDistanceMap(
        to_sitk((brain > 0.5).astype(np.uint8), grid), insideIsPositive=True,
        squaredDistance=False, useImageSpacing=True))
    labels, n = ndimage.label((csf > 0.5) & (depth > VENTRICLE_DEPTH_MM))
    if n == 0:
        return np.zeros(csf.shape, bool)
    index = np.arange(1, n + 1)
    volume = ndimage.sum_labels(np.ones(csf.shape), labels, index) * np.prod(grid.zooms)
    centres = np.array(ndimage.center_of_mass(np.ones(csf.shape), labels, index))
    centre_x = centres @ grid.affine[0, :3] + grid.affine[0, 3]
    keep = index[(volume >= VENTRICLE_MIN_VOLUME_MM3) & (np.abs(centre_x) <= VENTRICLE_MAX_MIDLINE_MM)]
    return np.isin(labels, keep)


def _detail(t1, gm, wm, csf, brain) -> np.ndarray:
    inside = brain > 0.5
    design = np.stack([gm[inside], wm[inside], csf[inside]], axis=1)
    coef, *_ = np.linalg.lstsq(design, t1[inside], rcond=None)
    residual = np.zeros(t1.shape, np.float32)
    residual[inside] = t1[inside] - design @ coef
    std = float(residual[inside].std())
    return residual / std if std > 0 else residual


@dataclass(frozen=True)
class AnatomyParams:
    """How one subject's anatomy differs from the template.

    Attributes
    ----------
    head_scale : tuple[float, float, float]
        Size of the subject's head relative to the template along x, y, z.
    deformation_mm : float
        Standard deviation of the smooth random displacement (mm).
    deformation_seed : int
        Seed of its three component fields.
    ventricle_enlargement_mm : float
        How far the ventricle walls move outwards (mm): atrophy.
    """

    head_scale: tuple[float, float, float]
    deformation_mm: float
    deformation_seed: int
    ventricle_enlargement_mm: float


def draw_anatomy_params(rng: np.random.Generator) -> AnatomyParams:
    """Draw a subject's anatomy: head size ±8 %, 1–3.5 mm displacement, 0–4 mm atrophy."""
    overall = rng.uniform(0.92, 1.08)
    return AnatomyParams(
        head_scale=tuple(round(float(overall * rng.uniform(0.97, 1.03)), 4) for _ in range(3)),
        deformation_mm=round(float(rng.uniform(1.0, 3.5)), 3),
        deformation_seed=int(rng.integers(2**31)),
        ventricle_enlargement_mm=round(float(4.0 * rng.beta(1.5, 3.0)), 3),
    )


def subject_transform(template: Template, params: AnatomyParams) -> sitk.Transform:
    """Subject-space point (mm) → canvas point (mm): undo the head size, then displace."""
    unscale = np.diag([*(1.0 / np.asarray(params.head_scale, float)), 1.0])
    return chain(affine_transform(unscale), displacement_transform(template, params))


def displacement_transform(template: Template, params: AnatomyParams) -> sitk.Transform:
    """The smooth random displacement plus the ventricle push, on a coarse grid (mm)."""
    grid = _displacement_grid(template)
    field = np.zeros((*grid.shape, 3), np.float32)
    if params.deformation_mm > 0:
        for axis in range(3):
            field[..., axis] = params.deformation_mm * smooth_field(
                grid, DEFORMATION_SIGMA_MM, params.deformation_seed + axis
            )
    if params.ventricle_enlargement_mm > 0:
        field += params.ventricle_enlargement_mm * _ventricle_push(template)
    # SimpleITK wants LPS vectors, float64, on an image whose first index is our last axis
    field[..., :2] *= -1
    image = sitk.GetImageFromArray(field.astype(np.float64), isVector=True)
    reference = to_sitk(np.zeros(grid.shape, np.float32), grid)
    image.CopyInformation(reference)
    return sitk.DisplacementFieldTransform(image)


def _displacement_grid(template: Template) -> Grid:
    canvas = template.grid
    step = max(DISPLACEMENT_SPACING_MM, 2.0 * float(canvas.zooms.max()))
    extent = canvas.zooms * (np.array(canvas.shape) - 1)
    shape = np.ceil(extent / step).astype(int) + 1
    centre = canvas.affine[:3, :3] @ ((np.array(canvas.shape) - 1) / 2) + canvas.affine[:3, 3]
    return make_grid(np.eye(3), [step] * 3, shape, centre)


@functools.lru_cache(maxsize=2)
def _ventricle_push(template: Template) -> np.ndarray:
    """Unit-maximum displacement towards the ventricles, shape ``(X', Y', Z', 3)``.

    On the coarse displacement grid.  Sampling the template at ``x + u(x)`` with ``u``
    pointing at the ventricles makes them look larger: their walls move outwards by ``|u|``
    and the tissue around them is compressed.
    """
    grid = _displacement_grid(template)
    near = resample(to_sitk(template.ventricles, template.grid), grid)
    near = smooth(near, grid, ATROPHY_SIGMA_MM)
    gradient = np.stack(np.gradient(near, *grid.zooms), axis=-1)
    gradient /= np.linalg.norm(gradient, axis=-1).max()
    gradient.setflags(write=False)
    return gradient
