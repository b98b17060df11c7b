"""Everything one session shows, on the template canvas, before any contrast is chosen.

A :class:`Scene` gathers the template, the subject's lesions, the within-tissue texture,
the vessels (only needed for contrast-enhanced T1w), the non-brain head (when the subject
has one) and the transform from the subject's space to the canvas.  Contrasts
(:mod:`bids_mdpp.synth.contrasts`) paint it; acquisitions
(:mod:`bids_mdpp.synth.acquisition`) sample it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from bids_mdpp.synth.anatomy import AnatomyParams, Template, load_template, subject_transform
from bids_mdpp.synth.fields import smooth_field, tube_network
from bids_mdpp.synth.geometry import bounding_box
from bids_mdpp.synth.head import LAYERS, HeadParams, layer_depth
from bids_mdpp.synth.lesions import LesionMaps, LesionParams, make_lesions
from bids_mdpp.synth.mimics import MimicMaps, MimicParams, build_mimics

#: Texture fields: fine grain and slow undulation (Gaussian sigma, mm).
TEXTURE_SIGMA_MM = (1.0, 4.0)
#: Pial vessels: smoothness of the two fields (mm) and tube width (field units).
VESSEL_SIGMA_MM = 2.5
VESSEL_WIDTH = 0.12
#: Choroid plexus: smoothness (mm) and level of the blob field inside the ventricles.
CHOROID_SIGMA_MM = 3.0
CHOROID_LEVEL = 1.0
#: The superior sagittal sinus lies within this distance of the midline (mm), above z = 0.
SINUS_HALF_WIDTH_MM = 4.0


@dataclass(frozen=True)
class SceneParams:
    """What makes one session's scene: anatomy, lesions, head (None: no head), seeds and
    the hard negatives (None: none)."""

    anatomy: AnatomyParams
    lesions: LesionParams
    head: HeadParams | None
    texture_seed: int
    vessel_seed: int
    mimics: MimicParams | None = None


@dataclass(frozen=True, eq=False)
class HeadVoxels:
    """The canvas voxels where the non-brain head shows, as flat indices and 1-D values.

    Attributes
    ----------
    index : np.ndarray
        Flat canvas indices of the voxels outside the brain's core and inside the skin.
    depth : np.ndarray
        Their distance from the brain hull in local layer units (mm).
    weight : np.ndarray
        Their non-brain fraction, ``1 − brain``.
    texture : np.ndarray
        The coarse texture field at those voxels.
    sinus : np.ndarray
        1 in the superior sagittal sinus (bright after gadolinium), else 0.
    """

    index: np.ndarray
    depth: np.ndarray
    weight: np.ndarray
    texture: np.ndarray
    sinus: np.ndarray


@dataclass(frozen=True, eq=False)
class Scene:
    """One session on the canvas (maps shaped ``template.grid.shape``, float32).

    Attributes
    ----------
    template : Template
    lesions : LesionMaps
    texture : tuple[np.ndarray, np.ndarray]
        Standardised fine and coarse texture fields (the fine one is 0 outside the brain box).
    vessels : np.ndarray | None
        Vessel and choroid-plexus fraction in [0, 1] (None when not built).
    head : HeadParams | None
    head_voxels : HeadVoxels | None
        Where the non-brain head shows; None without a head.
    to_canvas : sitk.Transform
        Subject-space point (mm) → canvas point (mm).
    head_scale : tuple[float, float, float]
        The subject's head size relative to the template (x, y, z).
    mimics : MimicMaps | None
        The hard negatives (None: none).
    mimic_params : MimicParams | None
        What drew them (their intensities per contrast).
    """

    template: Template
    lesions: LesionMaps
    texture: tuple[np.ndarray, np.ndarray]
    vessels: np.ndarray | None
    head: HeadParams | None
    head_voxels: HeadVoxels | None
    to_canvas: sitk.Transform
    head_scale: tuple[float, float, float]
    mimics: MimicMaps | None = None
    mimic_params: MimicParams | None = None


def build_scene(params: SceneParams, scale: float = 1.0, *, with_vessels: bool = True) -> Scene:
    """Apply ``params`` (deterministic); ``with_vessels=False`` skips the vessel map."""
    template = load_template(scale)
    coarse = smooth_field(template.grid, TEXTURE_SIGMA_MM[1], params.texture_seed + 1)
    fine = _in_brain_box(
        template, lambda grid: smooth_field(grid, TEXTURE_SIGMA_MM[0], params.texture_seed))
    depth = layer_depth(template, params.head) if params.head is not None else None
    return Scene(
        template=template,
        lesions=make_lesions(template, params.lesions),
        texture=(fine, coarse),
        vessels=_vessels(template, params) if with_vessels else None,
        head=params.head,
        head_voxels=None if depth is None else _head_voxels(template, params.head, depth, coarse),
        to_canvas=subject_transform(template, params.anatomy),
        head_scale=params.anatomy.head_scale,
        mimics=None if params.mimics is None else build_mimics(template, params.mimics),
        mimic_params=params.mimics,
    )


def _in_brain_box(template: Template, make) -> np.ndarray:
    """``make(sub_grid)`` computed on the brain box only, 0 elsewhere on the canvas."""
    box = template.brain_box
    out = np.zeros(template.grid.shape, np.float32)
    out[box] = make(template.grid.crop(box))
    return out


def _head_voxels(template: Template, head: HeadParams, depth: np.ndarray, coarse) -> HeadVoxels:
    visible = (template.brain < 1.0) & (depth < sum(head.thickness_mm) + 1.0)
    index = np.flatnonzero(visible)
    depth = depth.ravel()[index]
    grid = template.grid
    x, _, z = np.unravel_index(index, grid.shape)
    x_mm = grid.affine[0, 0] * x + grid.affine[0, 3]
    z_mm = grid.affine[2, 2] * z + grid.affine[2, 3]
    csf_layer = head.thickness_mm[list(LAYERS).index("csf")]
    sinus = (np.abs(x_mm) < SINUS_HALF_WIDTH_MM) & (z_mm > 0) & (depth > 0) & (depth < csf_layer)
    return HeadVoxels(
        index=index,
        depth=depth,
        weight=1.0 - template.brain.ravel()[index],
        texture=coarse.ravel()[index],
        sinus=sinus.astype(np.float32),
    )


def _vessels(template: Template, params: SceneParams) -> np.ndarray:
    """Pial vessels in sulcal CSF and choroid plexus in the ventricles, in [0, 1]."""
    sulcal_csf = template.csf * (1.0 - template.ventricles)
    vessels = _in_brain_box(
        template, lambda sub: tube_network(sub, VESSEL_SIGMA_MM, params.vessel_seed, VESSEL_WIDTH))
    vessels *= sulcal_csf
    box = bounding_box(template.ventricles > 0, margin=2)
    if box is not None:
        blobs = smooth_field(template.grid.crop(box), CHOROID_SIGMA_MM, params.vessel_seed + 2)
        choroid = template.ventricles[box] / (1.0 + np.exp(-(blobs - CHOROID_LEVEL) / 0.25))
        vessels[box] = np.maximum(vessels[box], choroid)
    return vessels
