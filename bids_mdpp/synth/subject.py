"""One synthetic subject: draw every parameter first, then render deterministically.

:func:`draw_subject` makes a :class:`SubjectSpec` from ``(seed, index)`` alone, so a subject
never depends on the others, on the order they are rendered in or on the number of worker
processes.  :func:`render_session` turns one of its sessions into NIfTI images and the
reference lesion mask.  Parameters for every contrast are drawn whether or not the subject
has it, so that restricting the contrasts changes nothing else.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from bids_mdpp.contrasts import CONTRASTS, choose_reference
from bids_mdpp.synth.acquisition import (
    Acquisition,
    AcquisitionParams,
    HeadPosition,
    draw_acquisition_params,
    draw_head_position,
    plan_acquisition,
    render_image,
)
from bids_mdpp.synth.anatomy import draw_anatomy_params
from bids_mdpp.synth.bounds import bound_contrast, bound_mimics
from bids_mdpp.synth.contrasts import ContrastParams, draw_contrast_params, paint
from bids_mdpp.synth.geometry import nifti_image
from bids_mdpp.synth.head import draw_head_params
from bids_mdpp.synth.lesions import draw_ellipsoid, draw_lesion_params
from bids_mdpp.synth.load import DEFAULT_LOAD_MIX, apply_load_class, draw_load_class
from bids_mdpp.synth.mimics import draw_mimic_params
from bids_mdpp.synth.scene import Scene, SceneParams, build_scene

#: Probability that a subject has each contrast (FLAIR in a majority, as at real sites).
CONTRAST_PROBABILITY: dict[str, float] = {
    "T1w": 0.8, "FLAIR": 0.8, "T2w": 0.65, "PDw": 0.3, "ceT1w": 0.35,
}
#: Probability that a second session keeps the first session's contrasts.
SAME_PROTOCOL_PROBABILITY = 0.7
#: Random streams of a subject beside its main one: ``[seed, index, stream]``.  The load
#: class and the hard negatives draw from their own, so that the main draws stay those of
#: a generator without them.
LOAD_STREAM, MIMIC_STREAM = 1, 2


@dataclass(frozen=True)
class SynthOptions:
    """Dataset-wide choices.

    Attributes
    ----------
    contrasts : tuple[str, ...]
        The contrasts subjects may have (canonical names).
    sessions_fraction : float
        Share of subjects with a second session.
    clean_fraction : float
        Share of subjects that are clean (1 mm, stripped, co-registered).
    skull_fraction : float
        Share of the other (raw) subjects whose images show the whole head.
    scale : float
        Voxel sizes are divided by it (0.5: every grid twice as coarse; for quick tests).
    complete : bool
        Every session has every contrast of ``contrasts`` (as in a research protocol, or the
        UMCL data of the paper) instead of a random subset.
    load_mix : dict[str, float]
        Share of each lesion-load class (:mod:`bids_mdpp.synth.load`), adding up to 1.
    hard_negatives : bool
        Draw the bright normal anatomy of :mod:`bids_mdpp.synth.mimics`.
    lesion_floor, normal_ceiling : dict[str, float]
        Per contrast (T2w, FLAIR, PDw), the faintest lesion tissue and the brightest normal
        tissue relative to WM (:mod:`bids_mdpp.synth.bounds`); empty: the drawn ranges.
    """

    contrasts: tuple[str, ...] = CONTRASTS
    sessions_fraction: float = 0.25
    clean_fraction: float = 0.3
    skull_fraction: float = 0.7
    scale: float = 1.0
    complete: bool = False
    load_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOAD_MIX))
    hard_negatives: bool = True
    lesion_floor: dict[str, float] = field(default_factory=dict)
    normal_ceiling: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionSpec:
    """Everything drawn for one session; ``label`` is None for a dataset without sessions."""

    label: str | None
    contrasts: tuple[str, ...]
    scene: SceneParams
    position: HeadPosition
    contrast_params: dict[str, ContrastParams]
    acquisitions: dict[str, AcquisitionParams]


@dataclass(frozen=True)
class SubjectSpec:
    """Everything drawn for one subject (label without ``sub-``)."""

    label: str
    kind: str
    scale: float
    sessions: tuple[SessionSpec, ...]


def subject_label(index: int) -> str:
    """``0`` → ``"s001"``."""
    return f"s{index + 1:03d}"


def draw_contrast_subset(rng: np.random.Generator, pool: tuple[str, ...],
                         complete: bool = False) -> tuple[str, ...]:
    """Each contrast of ``pool`` with its :data:`CONTRAST_PROBABILITY`; never empty.

    With ``complete`` the whole pool (the random draws are still made, so that every other
    choice of the subject stays the same).
    """
    draws = {c: rng.random() < CONTRAST_PROBABILITY[c] for c in CONTRASTS}
    chosen = tuple(c for c in CONTRASTS if c in pool and (complete or draws[c]))
    if chosen:
        return chosen
    weights = np.array([CONTRAST_PROBABILITY[c] for c in pool])
    fallback = str(rng.choice(list(pool), p=weights / weights.sum()))
    return tuple(c for c in CONTRASTS if c == fallback)


def draw_subject(index: int, seed: int, options: SynthOptions) -> SubjectSpec:
    """Draw subject ``index`` of the dataset seeded ``seed`` (independent of the others)."""
    rng = np.random.default_rng([seed, index])
    kind_draw, head_draw, sessions_draw = rng.random(3)
    if kind_draw < options.clean_fraction:
        kind = "clean"
    else:
        kind = "raw" if head_draw < options.skull_fraction else "raw-stripped"
    clean = kind == "clean"
    field_strength = float(rng.choice([1.5, 3.0], p=[0.4, 0.6]))
    scene = SceneParams(
        anatomy=draw_anatomy_params(rng),
        lesions=draw_lesion_params(rng),
        head=draw_head_params(rng) if kind == "raw" else None,
        texture_seed=int(rng.integers(2**31)),
        vessel_seed=int(rng.integers(2**31)),
    )
    contrast_params = {c: draw_contrast_params(c, rng) for c in CONTRASTS}
    load_rng = np.random.default_rng([seed, index, LOAD_STREAM])
    lesions = apply_load_class(scene.lesions, draw_load_class(load_rng, options.load_mix),
                               load_rng, scene.anatomy.head_scale)
    mimics = (draw_mimic_params(np.random.default_rng([seed, index, MIMIC_STREAM]))
              if options.hard_negatives else None)
    contrast_params, mimics = _bounded(contrast_params, mimics, options)
    scene = dataclasses.replace(scene, lesions=lesions, mimics=mimics)
    with_sessions = options.sessions_fraction > 0
    n_sessions = 2 if sessions_draw < options.sessions_fraction else 1
    sessions = []
    contrasts = draw_contrast_subset(rng, options.contrasts, options.complete)
    for number in range(1, n_sessions + 1):
        if number > 1:
            scene = _follow_up(scene, rng)
            if rng.random() >= SAME_PROTOCOL_PROBABILITY:
                contrasts = draw_contrast_subset(rng, options.contrasts, options.complete)
        position = draw_head_position(rng, clean)
        acquisitions = {c: draw_acquisition_params(rng, clean, field_strength) for c in CONTRASTS}
        sessions.append(SessionSpec(
            label=str(number) if with_sessions else None,
            contrasts=contrasts,
            scene=scene,
            position=position,
            contrast_params={c: contrast_params[c] for c in contrasts},
            acquisitions={c: acquisitions[c] for c in contrasts},
        ))
    return SubjectSpec(subject_label(index), kind, float(options.scale), tuple(sessions))


def _bounded(contrast_params: dict[str, ContrastParams], mimics, options: SynthOptions):
    """The drawn intensities under ``options``' bounds (after every draw: streams unchanged)."""
    if not options.lesion_floor and not options.normal_ceiling:
        return contrast_params, mimics
    bounded = {c: bound_contrast(p, options.lesion_floor.get(c), options.normal_ceiling.get(c))
               for c, p in contrast_params.items()}
    if mimics is not None:
        intensities = {c: bound_mimics(i, bounded[c], options.normal_ceiling.get(c))
                       for c, i in mimics.intensities.items()}
        mimics = dataclasses.replace(mimics, intensities=intensities)
    return bounded, mimics


def _follow_up(scene: SceneParams, rng: np.random.Generator) -> SceneParams:
    """A later session: slightly more atrophy and 0–3 new lesions (none when lesion-free)."""
    enlargement = scene.anatomy.ventricle_enlargement_mm + float(rng.uniform(0, 0.8))
    anatomy = dataclasses.replace(scene.anatomy, ventricle_enlargement_mm=round(enlargement, 3))
    new = tuple(draw_ellipsoid(rng) for _ in range(int(rng.integers(0, 4))))
    if scene.lesions.load_class == "free":
        new = ()
    lesions = dataclasses.replace(scene.lesions, ellipsoids=scene.lesions.ellipsoids + new)
    return dataclasses.replace(scene, anatomy=anatomy, lesions=lesions)


@dataclass(frozen=True, eq=False)
class RenderedSession:
    """One rendered session.

    Attributes
    ----------
    images : dict[str, nib.Nifti1Image]
        One image per contrast, in canonical order.
    mask : nib.Nifti1Image
        The lesion mask (uint8) on the grid of ``reference``.
    reference : str
        The contrast whose grid the mask is on (FLAIR when present).
    acquisitions : dict[str, Acquisition]
        Per contrast, the geometry: ``acquisitions[c].sample(map, scene.template)`` puts
        any canvas map (e.g. ``scene.template.wm``) on that image's grid.
    scene : Scene
    """

    images: dict[str, nib.Nifti1Image]
    mask: nib.Nifti1Image
    reference: str
    acquisitions: dict[str, Acquisition]
    scene: Scene


def render_session(subject: SubjectSpec, session: SessionSpec) -> RenderedSession:
    """Render one session (deterministic for a given spec)."""
    scene = build_scene(session.scene, subject.scale, with_vessels="ceT1w" in session.contrasts)
    has_head = subject.kind == "raw"
    images, acquisitions = {}, {}
    for contrast in session.contrasts:
        params = session.acquisitions[contrast]
        acquisition = plan_acquisition(scene, session.position, params, has_head=has_head)
        canvas = paint(session.contrast_params[contrast], scene)
        images[contrast] = render_image(canvas, acquisition, params, scene.template,
                                        stripped=not has_head)
        acquisitions[contrast] = acquisition
    reference = choose_reference(session.contrasts)
    grid = acquisitions[reference].grid
    lesion = acquisitions[reference].sample(scene.lesions.fraction, scene.template) > 0.5
    return RenderedSession(images, nifti_image(lesion.astype(np.uint8), grid), reference,
                           acquisitions, scene)
