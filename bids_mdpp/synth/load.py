"""Lesion-load classes: lesion-free, low-load, typical and confluent high-load subjects.

A model trained only on typical patients learns that every brain has lesions and that a
bright periventricular rim is one.  Each subject therefore draws a load class from a mixture
(``--load-mix``, :data:`DEFAULT_LOAD_MIX`) on a random stream of its own, so that the
``typical`` subjects are exactly those the generator drew before classes existed:

- ``free``: no lesion at all (an empty reference mask), also in follow-up sessions;
- ``low``: 2–8 small ellipsoids (and, in half of them, a few components of one MSLUB
  mask), at most :data:`LOW_MAX_MM3` in total (subject space);
- ``typical``: the recombined MSLUB masks and ellipsoids of :mod:`bids_mdpp.synth.lesions`;
- ``high``: those plus confluent periventricular lesions, at least :data:`HIGH_MIN_MM3`.

Volumes are subject-space volumes: the canvas volume times the subject's head-size factor.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bids_mdpp.synth.assignments import named_numbers
from bids_mdpp.synth.lesions import Ellipsoid, LesionParams, draw_ellipsoid

LOAD_CLASSES = ("free", "low", "typical", "high")
DEFAULT_LOAD_MIX: dict[str, float] = {"free": 0.1, "low": 0.2, "typical": 0.5, "high": 0.2}
#: Upper bound of a low load and lower bound of a high load (mm³, subject space).
LOW_MAX_MM3, HIGH_MIN_MM3 = 1000.0, 50000.0
#: Drawn caps and targets (mm³, subject space), inside those bounds with room for the
#: resampling of the mask onto a clinical grid.
LOW_CAP_MM3 = (300.0, 850.0)
HIGH_TARGET_MM3 = (58000.0, 110000.0)
#: Low load: number of ellipsoids and the range of their smallest radius (mm).
LOW_ELLIPSOIDS, LOW_RADIUS_MM = (2, 8), (2.0, 3.5)
#: High load: irregularity of the confluent lesions' border (mm).
HIGH_IRREGULARITY_MM = (2.0, 6.0)


def format_load_mix(mix: dict[str, float]) -> str:
    """``{"free": 0.1, …}`` → ``"free=0.1,low=0.2,typical=0.5,high=0.2"``."""
    return ",".join(f"{name}={mix.get(name, 0.0):g}" for name in LOAD_CLASSES)


def parse_load_mix(text: str) -> dict[str, float]:
    """``"free=0.1,high=0.9"`` → a share per class (absent classes 0).

    Raises ValueError for an unknown class, a share that is not a number in [0, 1], a class
    named twice, or shares that do not add up to 1 (± 0.001).
    """
    mix = dict.fromkeys(LOAD_CLASSES, 0.0)
    seen = set()
    for _, name, share in named_numbers(text, "CLASS=SHARE (e.g. high=0.2)",
                                        lambda name: f"the share of {name!r}"):
        if name not in mix:
            raise ValueError(f"unknown load class {name!r}; known: {', '.join(LOAD_CLASSES)}")
        if name in seen:
            raise ValueError(f"load class {name!r} is given twice")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"the share of {name!r} must be between 0 and 1, got {share:g}")
        seen.add(name)
        mix[name] = share
    total = sum(mix.values())
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"the shares must add up to 1, they add up to {total:g}")
    return mix


def draw_load_class(rng: np.random.Generator, mix: dict[str, float]) -> str:
    """One class, with the probabilities of ``mix``."""
    shares = np.array([mix.get(name, 0.0) for name in LOAD_CLASSES], float)
    return str(LOAD_CLASSES[int(rng.choice(len(LOAD_CLASSES), p=shares / shares.sum()))])


def apply_load_class(params: LesionParams, load_class: str, rng: np.random.Generator,
                     head_scale: tuple[float, float, float]) -> LesionParams:
    """The typical ``params`` turned into ``load_class`` (see the module docstring).

    ``head_scale`` converts the subject-space volumes to canvas volumes.
    """
    if load_class not in LOAD_CLASSES:
        raise ValueError(f"unknown load class {load_class!r}; known: {', '.join(LOAD_CLASSES)}")
    to_canvas = 1.0 / float(np.prod(head_scale))
    if load_class == "free":
        return dataclasses.replace(params, atlas=(), mirror=(), ellipsoids=(), n_enhancing=0,
                                   load_class="free")
    if load_class == "low":
        n_atlas = int(rng.random() < 0.5)
        return dataclasses.replace(
            params,
            atlas=params.atlas[:n_atlas],
            mirror=params.mirror[:n_atlas],
            keep_fraction=round(float(rng.uniform(0.05, 0.3)), 3),
            growth_mm=round(float(rng.uniform(0.0, 0.4)), 3),
            ellipsoids=tuple(small_ellipsoid(rng) for _ in range(int(rng.integers(*LOW_ELLIPSOIDS,
                                                                                   endpoint=True)))),
            n_enhancing=min(params.n_enhancing, 1),
            load_class="low",
            max_volume_mm3=round(float(rng.uniform(*LOW_CAP_MM3)) * to_canvas, 1),
        )
    if load_class == "high":
        return dataclasses.replace(
            params,
            keep_fraction=round(max(params.keep_fraction, float(rng.uniform(0.7, 1.0))), 3),
            growth_mm=round(float(rng.uniform(0.2, 1.0)), 3),
            load_class="high",
            confluent_mm3=round(float(rng.uniform(*HIGH_TARGET_MM3)) * to_canvas, 1),
            confluent_irregularity_mm=round(float(rng.uniform(*HIGH_IRREGULARITY_MM)), 3),
        )
    return params


def small_ellipsoid(rng: np.random.Generator) -> Ellipsoid:
    """An ellipsoid of :func:`draw_ellipsoid` rescaled to a smallest radius in
    :data:`LOW_RADIUS_MM` (its shape kept: 4–7 mm across, elongated up to about 3 times)."""
    ellipsoid = draw_ellipsoid(rng)
    factor = rng.uniform(*LOW_RADIUS_MM) / min(ellipsoid.radii_mm)
    return dataclasses.replace(ellipsoid, radii_mm=tuple(
        round(r * factor, 3) for r in ellipsoid.radii_mm))
