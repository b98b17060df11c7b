"""Contrast physics: random tissue intensities that respect each contrast's ordering.

Intensities are relative to white matter (WM = 1) and drawn per subject and contrast
(:class:`ContrastParams`) so that, at 1.5–3 T clinical settings:

- T1w: WM > GM > CSF; lesions ≈ GM or darker, some much darker ("black holes");
- T2w: CSF > lesion > GM > WM;
- FLAIR: lesion > GM > WM ≫ CSF (CSF suppressed);
- PDw: CSF ≈ lesion ≥ GM > WM;
- ceT1w: like T1w, plus enhancing lesions (ring-like or nodular) and bright vessels and
  choroid plexus.

The ranges were set so that synthetic images, measured like the real MSLUB patient sub-26
(:mod:`bids_mdpp.synth.ratios`: medians relative to WM, with partial volume — T1w GM 0.71,
CSF 0.12, lesion 0.78; T2w GM 1.30, lesion 1.72, CSF 2.88; FLAIR GM 1.15, lesion 1.38,
CSF 0.34), bracket it, and widened to cover other scanners.  No real PDw image was at hand:
its ranges follow the ordering above and the literature (CSF 5–30 % above GM).  :func:`paint` mixes them with the tissue
fractions (partial volume), paints the hard negatives of :mod:`bids_mdpp.synth.mimics` into
the tissue, mixes in the lesions, adds texture and the template's own anatomical detail, and
surrounds the brain with the head's layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_mdpp.contrasts import CONTRASTS, T1_LIKE
from bids_mdpp.synth.head import LAYERS, head_profile
from bids_mdpp.synth.mimics import paint_mimics
from bids_mdpp.synth.scene import Scene

#: Non-brain layer intensities relative to WM (after the CSF layer, in LAYERS order).
HEAD_INTENSITY: dict[str, dict[str, tuple[float, float]]] = {
    "T1w": {"inner_table": (0.02, 0.12), "diploe": (1.0, 1.9), "outer_table": (0.02, 0.12),
            "muscle": (0.45, 0.75), "fat": (1.8, 3.0), "skin": (0.6, 1.0)},
    "T2w": {"inner_table": (0.02, 0.12), "diploe": (0.7, 1.6), "outer_table": (0.02, 0.12),
            "muscle": (0.35, 0.7), "fat": (1.6, 3.2), "skin": (0.6, 1.1)},
    "FLAIR": {"inner_table": (0.02, 0.12), "diploe": (0.7, 1.3), "outer_table": (0.02, 0.12),
              "muscle": (0.45, 0.8), "fat": (1.1, 1.7), "skin": (0.6, 1.0)},
    "PDw": {"inner_table": (0.03, 0.15), "diploe": (1.0, 1.8), "outer_table": (0.03, 0.15),
            "muscle": (0.6, 0.9), "fat": (1.5, 2.6), "skin": (0.7, 1.1)},
}
HEAD_INTENSITY["ceT1w"] = HEAD_INTENSITY["T1w"]


@dataclass(frozen=True)
class ContrastParams:
    """One contrast's intensities relative to WM, and how lesions and texture look in it.

    Attributes
    ----------
    contrast : str
        Canonical name (see :data:`bids_mdpp.contrasts.CONTRASTS`).
    gm, csf, lesion : float
        Mean intensity of grey matter, CSF and lesions (WM = 1).
    lesion_spread : float
        Lesions range over ``lesion · (1 ± lesion_spread / 2)`` with their severity.
    black_hole_depth : float
        T1-like: how far black holes fall from ``lesion`` towards ``csf`` (0–1); else 0.
    enhancement : float
        ceT1w: intensity of enhancing lesion tissue; else 0.
    vessel : float
        ceT1w: intensity of vessels and choroid plexus; else 0.
    texture : tuple[float, float]
        Relative amplitude of the fine and coarse texture fields.
    detail : float
        Weight of the template T1's anatomical detail (negative: inverted contrast).
    head : tuple[float, ...]
        Intensity of each non-brain layer (:data:`bids_mdpp.synth.head.LAYERS` order).
    """

    contrast: str
    gm: float
    csf: float
    lesion: float
    lesion_spread: float
    black_hole_depth: float
    enhancement: float
    vessel: float
    texture: tuple[float, float]
    detail: float
    head: tuple[float, ...]


def draw_contrast_params(contrast: str, rng: np.random.Generator) -> ContrastParams:
    """Draw intensities for ``contrast`` that respect its ordering (module docstring)."""
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; known: {', '.join(CONTRASTS)}")
    u = rng.uniform
    enhancement = vessel = black_hole_depth = 0.0
    if contrast in T1_LIKE:
        gm = u(0.62, 0.84) if contrast == "T1w" else u(0.66, 0.88)
        csf = u(0.02, 0.13)
        lesion = min(gm * u(0.9, 1.2), 0.95)
        black_hole_depth = u(0.4, 0.9)
        detail = u(0.02, 0.045)
        if contrast == "ceT1w":
            enhancement = u(1.15, 1.6)
            vessel = u(1.2, 2.0)
    elif contrast == "T2w":
        gm = u(1.2, 1.55)
        lesion = gm + u(0.3, 1.0)
        csf = lesion + u(1.0, 2.4)
        detail = -u(0.02, 0.05)
    elif contrast == "FLAIR":
        gm = u(1.1, 1.35)
        lesion = gm + u(0.15, 0.6)
        csf = u(0.05, 0.25)
        detail = -u(0.01, 0.03)
    else:  # PDw
        gm = u(1.1, 1.3)
        csf = gm * u(1.05, 1.3)
        lesion = max(csf * u(0.9, 1.05), gm * 1.02)
        detail = -u(0.01, 0.03)
    head = [csf] + [u(*HEAD_INTENSITY[contrast][layer]) for layer in list(LAYERS)[1:]]
    return ContrastParams(
        contrast=contrast,
        gm=_r(gm),
        csf=_r(csf),
        lesion=_r(lesion),
        lesion_spread=_r(u(0.1, 0.4)),
        black_hole_depth=_r(black_hole_depth),
        enhancement=_r(enhancement),
        vessel=_r(vessel),
        texture=(_r(u(0.01, 0.04)), _r(u(0.01, 0.05))),
        detail=_r(detail),
        head=tuple(_r(v) for v in head),
    )


def _r(value: float) -> float:
    return round(float(value), 4)


def paint(params: ContrastParams, scene: Scene) -> np.ndarray:
    """The scene as ``params.contrast`` shows it, on the canvas (WM ≈ 1), float32 ``(X, Y, Z)``."""
    t = scene.template
    image = np.zeros(t.grid.shape, np.float32)
    image[t.brain_box] = _paint_brain(params, scene, t.brain_box)
    if scene.head_voxels is not None:
        voxels = scene.head_voxels
        head = head_profile(voxels.depth, scene.head, params.head)
        head *= 1.0 + np.float32(params.texture[1]) * voxels.texture
        if params.vessel > 0:
            head += voxels.sinus * (np.float32(params.vessel) - head)
        head *= voxels.weight
        image.ravel()[voxels.index] += head
    return np.maximum(image, 0.0, out=image)


def _paint_brain(params: ContrastParams, scene: Scene, box) -> np.ndarray:
    """Brain tissue, lesions, enhancement and vessels inside ``box`` (WM ≈ 1)."""
    t, les = scene.template, scene.lesions
    wm, gm, csf, detail = t.wm[box], t.gm[box], t.csf[box], t.detail[box]
    fraction = les.fraction[box]
    lesion = np.float32(params.lesion) * (
        1.0 + np.float32(params.lesion_spread) * (les.severity[box] - np.float32(0.5))
    )
    if params.black_hole_depth > 0:
        lesion -= np.float32(params.black_hole_depth) * les.black_hole[box] * (
            lesion - np.float32(params.csf))
    tissue = wm + np.float32(params.gm) * gm + np.float32(params.csf) * csf
    if scene.mimics is not None:
        paint_mimics(tissue, params, scene.mimics, scene.mimic_params.intensities[params.contrast],
                     box, gm, csf)
    image = (1.0 - fraction) * tissue
    image += fraction * lesion
    fine, coarse = (field[box] for field in scene.texture)
    image *= 1.0 + np.float32(params.texture[0]) * fine + np.float32(params.texture[1]) * coarse
    image += np.float32(params.detail) * detail * (wm + gm)
    if params.enhancement > 0:
        image += les.enhancing[box] * (np.float32(params.enhancement) - image)
    if params.vessel > 0 and scene.vessels is not None:
        image += scene.vessels[box] * (np.float32(params.vessel) - image)
    return image
