"""Intensity bounds: keep lesions and bright normal anatomy apart on a contrast.

The drawn intensity ranges of :mod:`bids_mdpp.synth.contrasts` and
:mod:`bids_mdpp.synth.mimics` let the faintest lesions and the brightest normal anatomy
(grey matter, cingulate and insular cortex, periventricular caps and bands, septum, choroid
plexus) overlap on FLAIR.  Bounds separate them, per contrast, relative to white matter
(WM = 1):

- a *lesion floor* raises the subject's mean lesion intensity (``lesion``, around which its
  lesions spread with their severity) to at least the floor;
- a *normal ceiling* lowers grey matter, the grey-matter zones, the caps, band and septum and
  the choroid plexus to at most the ceiling.

Both act on the drawn parameters after every random draw, so a bounded dataset has the same
subjects, anatomy, lesions and acquisitions as the unbounded one with the same seed; only the
intensities differ, and ``manifest.json`` records the bounded values.  Texture, partial
volume, bias fields and noise still spread voxels around these means.  Lesions are darker
than WM on T1w and ce-T1w, so bounds are only accepted for T2w, FLAIR and PDw.
"""
from __future__ import annotations

import dataclasses

from bids_mdpp.contrasts import CONTRASTS, parse_contrasts
from bids_mdpp.synth.assignments import named_numbers
from bids_mdpp.synth.contrasts import ContrastParams
from bids_mdpp.synth.mimics import MimicIntensity

#: Contrasts on which lesions are brighter than WM, so that bounds make sense.
BOUNDABLE = ("T2w", "FLAIR", "PDw")


def parse_bounds(text: str, what: str) -> dict[str, float]:
    """``"FLAIR=1.3,T2w=1.5"`` → ``{"FLAIR": 1.3, "T2w": 1.5}`` (canonical contrast names).

    ``what`` names the bound in messages.  Raises ValueError for a part that is not
    CONTRAST=VALUE, an unknown contrast or one of T1w / ce-T1w, a contrast given twice, or a
    value that is not a number above 1 (WM).
    """
    bounds: dict[str, float] = {}
    form = "CONTRAST=VALUE (e.g. FLAIR=1.3)"
    for part, name, level in named_numbers(text, form, lambda name: f"{what} of {name}"):
        try:
            named = parse_contrasts(name)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        if len(named) != 1:
            raise ValueError(f"{part!r} is not {form}")
        contrast = named[0]
        if contrast not in BOUNDABLE:
            raise ValueError(f"{what}: lesions are darker than white matter on {contrast}; "
                             f"bounds apply to {', '.join(BOUNDABLE)}")
        if contrast in bounds:
            raise ValueError(f"{what}: {contrast} is given twice")
        if not level > 1.0:
            raise ValueError(f"{what} of {contrast} must be above white matter (1), got {level:g}")
        bounds[contrast] = level
    return bounds


def check_bounds(lesion_floor: dict[str, float], normal_ceiling: dict[str, float]) -> None:
    """Raise ValueError where a contrast's ceiling is not below its floor."""
    for contrast in CONTRASTS:
        if contrast in lesion_floor and contrast in normal_ceiling \
                and normal_ceiling[contrast] >= lesion_floor[contrast]:
            raise ValueError(
                f"the normal-tissue ceiling of {contrast} ({normal_ceiling[contrast]:g}) must be "
                f"below its lesion floor ({lesion_floor[contrast]:g})")


def bound_contrast(params: ContrastParams, floor: float | None,
                   ceiling: float | None) -> ContrastParams:
    """``params`` with its mean lesion at least ``floor`` and grey matter at most ``ceiling``."""
    changes = {}
    if floor is not None and params.lesion < floor:
        changes["lesion"] = floor
    if ceiling is not None and params.gm > ceiling:
        changes["gm"] = ceiling
    return dataclasses.replace(params, **changes) if changes else params


def bound_mimics(intensity: MimicIntensity, params: ContrastParams,
                 ceiling: float | None) -> MimicIntensity:
    """The hard negatives of a contrast held at or below ``ceiling`` (``params`` already bounded).

    Caps, band and septum go towards ``1 + share · (lesion − 1)``, so their shares are capped
    at ``(ceiling − 1) / (lesion − 1)``; the cingulate and insula factors multiply grey matter,
    so they are capped at ``ceiling / gm`` (never below 1); the choroid plexus at ``ceiling``.
    """
    if ceiling is None:
        return intensity
    top_share = (ceiling - 1.0) / max(params.lesion - 1.0, 1e-6)
    top_factor = max(ceiling / params.gm, 1.0)
    return dataclasses.replace(
        intensity,
        wm_like=tuple(round(min(s, top_share), 4) for s in intensity.wm_like),
        cingulate=round(min(intensity.cingulate, top_factor), 4),
        insula=round(min(intensity.insula, top_factor), 4),
        choroid=min(intensity.choroid, ceiling),
    )
