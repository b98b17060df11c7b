"""A per-session Gaussian mixture of tissue and lesion intensities, with atlas priors.

The network learnt from synthetic images; this model learns nothing beforehand and fits each
session's own intensities, which is what makes tools like SAMSEG (Cerri et al. 2021) robust
to contrasts and scanners.  Inside the brain mask, every voxel's normalised intensities over
the session's contrasts (vector of length C) come from one of four classes — cerebrospinal
fluid, grey matter, white matter, lesion — each a Gaussian with a full C×C covariance.  The
class prior at a voxel is spatial (:mod:`bids_mdpp.atlas_priors`)::

    P(lesion)   = min(LESION_PRIOR_SCALE × lesion frequency
                      + LESION_PRIOR_IN_WHITE_MATTER × white-matter atlas, MAX_LESION_PRIOR)
    P(tissue k) = (1 − P(lesion)) × tissue atlas k

The second term is a floor over the white matter: a patient's lesions also lie where none of
the atlas patients had one (on another patient's 52 ml of lesions painted into a real brain, two
thirds of the volume lay where fewer than 2 % of the other 26 had one), and a prior of nearly
zero there leaves even a clearly bright lesion to white matter.  The atlas is the average of
its patients, and a brain with many lesions has far more than that average: from round
:data:`LOAD_FROM_ROUND` on (counted from 0), the lesion prior is scaled by the session's own lesion load — the
volume of the lesion class's posterior at voxels that can be lesion (:func:`beyond_bound`)
over the volume of the prior — when that exceeds one, at most :data:`MAX_LOAD_SCALE`
(:func:`load_scale`, :func:`scaled_prior`).  Never down: the ratio is below one on a brain with
an ordinary load as well (0.7–1.0 on a real patient with 8.5 ml of lesion), and a prior scaled
down there lost lesions; on a lesion-free brain the class's volume follows the prior down, so
the ratio does not run away upwards either.

Expectation–maximisation (:data:`ITERATIONS` rounds) fits the means and covariances and returns
each voxel's posterior probability of lesion, set to 0 at a voxel that does not itself lie
beyond the bound below in every one of FLAIR, T2w and PDw that imaged it
(:func:`masked_contrasts`; every lesion stands out there): the class's covariance is wide
enough to reach voxels that only the other contrasts make lesion-like (partial volume with
CSF, bright on T2w and dark on T1w but not bright on FLAIR), which on a brain with few lesions
is where it settles.  Without FLAIR, the contrasts left where lesions are bright (T2w, PDw)
make CSF bright as well, and its partial volume beside the ventricles is what the class
settles on; a voxel darker than grey matter's mean by :data:`GREY_FLOOR_SD` grey-matter
standard deviations on T1w or ce-T1w (:func:`floored_contrasts`), as dark as CSF, is then not
lesion either (few lesion voxels are: 2.5 % of a real patient's).  In the contrasts that
separate lesions from white matter (:func:`held_contrasts`), the lesion class starts at the white-matter mean shifted
by :data:`INITIAL_SHIFT_SD` white-matter standard deviations (darker on T1w and ce-T1w,
brighter on FLAIR, T2w and PDw; in the other contrasts it starts at the white-matter mean), and
its mean is held at least :data:`MIN_SHIFT_SD` standard deviations on that side of white
matter: otherwise the class can slide onto white matter itself, or onto grey matter's partial
volume.  Where the session has a contrast in which lesions are bright (FLAIR, T2w, PDw), only
those are held: many MS lesions are as bright as white matter on T1-weighted images (only some
are "black holes"), and a class held dark there as well misses them.  On T1-weighted images
alone, T1w and ce-T1w are held dark: most MS lesions are dark on ce-T1w, as on T1w, the
enhancing ones are few and small, and a lesion class free to cross white matter there drifts
onto vessels and grey matter.  With one contrast alone, the lesion class is also never
narrower than grey matter (its standard deviation at least :data:`LESION_SPREAD_OF_GREY` times
grey matter's, :func:`spread_floored`): a patient's lesion voxels spread as widely as grey
matter's or wider (partial volume at their borders; on T1w, lesions from as bright as white
matter to black holes), and a narrower class settles on one part of them — on T1w the lesions'
bright half, leaving the rest to grey matter, whose intensities they share; on T2w, in a brain
with few lesions, the bright tail of white matter itself, leaving the lesions to grey matter
and CSF.  T1w and ce-T1w together, with no other contrast, are
modelled from T1w alone (:func:`modelled_contrasts`): fitted jointly, the mixture scored lower
on a real patient and called more lesion on lesion-free brains than from T1w alone.

The participant level combines the posterior with the network's probability as a weighted
mean (:func:`combine`), the weight per contrast subset from the model card
(:meth:`~bids_mdpp.model.ModelCard.network_weight_for`; 0.5 unless the card says otherwise).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_mdpp.atlas_priors import AtlasPriors, lesion_prior_source
from bids_mdpp.config import DEFAULT_NETWORK_WEIGHT, INTENSITY_MODEL_MODES

LOGGER = logging.getLogger("bids_mdpp")

#: Version of the model's definition, for caches of its results (raise it when the posterior
#: of the same images changes; 2: ce-T1w lesions held dark; 3: T1-weighted contrasts held only
#: without a bright-lesion contrast; 4: voxels short of the bound in the masked contrasts are
#: not lesion; 5: without FLAIR, neither are voxels as dark as CSF on T1w or ce-T1w; 6: on one
#: T1-weighted image alone the lesion class is never narrower than grey matter, and T1w with
#: ce-T1w is modelled from T1w alone; 7: so is it on any one contrast alone; 8: a floor on the
#: lesion prior over the white matter; 9: the lesion prior scaled by the session's lesion load).
VERSION = 9
#: Expectation–maximisation rounds.
ITERATIONS = 25
#: Lesion prior = this × the atlas's lesion frequency, capped at MAX_LESION_PRIOR.
LESION_PRIOR_SCALE = 1.0
MAX_LESION_PRIOR = 0.5
#: Added to the lesion prior: this × the white-matter atlas probability (a white-matter lesion
#: is possible where no atlas patient had one).
LESION_PRIOR_IN_WHITE_MATTER = 0.01
#: Floor of the lesion prior (a lesion is never impossible).
MIN_LESION_PRIOR = 1e-4
#: From this expectation–maximisation round on (counted from 0: the eleventh of 25; the classes
#: have settled), the lesion prior is scaled by the session's lesion load (:func:`load_scale`) ...
LOAD_FROM_ROUND = 10
#: ... by at most this factor.
MAX_LOAD_SCALE = 4.0
#: The lesion mean starts this many white-matter standard deviations from white matter ...
INITIAL_SHIFT_SD = 2.5
#: ... and stays at least this many on the lesion side of it.
MIN_SHIFT_SD = 2.0
#: Without FLAIR, a voxel darker than grey matter's mean by this many grey-matter standard
#: deviations on a T1-weighted contrast (:func:`floored_contrasts`) is not lesion.
GREY_FLOOR_SD = 2.0
#: On one contrast alone (:func:`spread_floored`), the lesion class's standard deviation is at
#: least this times grey matter's.
LESION_SPREAD_OF_GREY = 1.0
#: Side of white matter the lesion mean starts on and is held on, per contrast.
LESION_SIGN = {"T1w": -1.0, "ceT1w": -1.0, "FLAIR": 1.0, "T2w": 1.0, "PDw": 1.0}
#: Added to every covariance's diagonal (normalised intensity units squared).
COVARIANCE_FLOOR = 1e-4
#: The Gaussians are fitted on at most about this many brain voxels (every k-th one); the
#: posterior is then computed at every voxel.
MAX_FIT_VOXELS = 200_000
#: Normalised values at or below this are the background: the contrast did not image the voxel.
NOT_IMAGED = -0.999
#: The fewest voxels imaged by every contrast that the Gaussians are fitted on.
MIN_FIT_VOXELS = 1000
#: Class order in the mixture.
CLASSES = ("CSF", "GM", "WM", "lesion")


def lesion_posterior(volumes: Mapping[str, np.ndarray], brain_mask: np.ndarray,
                     priors: AtlasPriors) -> np.ndarray:
    """Posterior probability of lesion per voxel (float32, 0 outside the brain): the first of
    :func:`session_fit`'s results."""
    return session_fit(volumes, brain_mask, priors)[0]


def session_fit(volumes: Mapping[str, np.ndarray], brain_mask: np.ndarray,
                priors: AtlasPriors) -> tuple[np.ndarray, MixtureFit | None]:
    """Posterior probability of lesion per voxel (float32, 0 outside the brain) and the
    :class:`MixtureFit` it came from (None for an empty brain mask).

    Parameters
    ----------
    volumes
        Normalised images on the model grid (white-matter peak −0.5), keyed by contrast
        (keys of :data:`LESION_SIGN`), each of shape ``(X, Y, Z)``.
    brain_mask
        Boolean ``(X, Y, Z)``.
    priors
        :class:`~bids_mdpp.atlas_priors.AtlasPriors` on the same grid.

    A voxel outside a contrast's field of view (normalised value at the background, −1: a 2D
    acquisition that stops short of the cerebellum, say) is scored with the contrasts that
    imaged it — the class Gaussians restricted to those dimensions — and gets 0 where none
    did.  The Gaussians are fitted on the voxels every contrast imaged; raises
    :class:`ValueError` when fewer than :data:`MIN_FIT_VOXELS` are.  Only the
    :func:`modelled_contrasts` of ``volumes`` are read.
    """
    unknown = [c for c in volumes if c not in LESION_SIGN]
    if unknown or not volumes:
        raise ValueError(f"no lesion model for contrasts {unknown or '(none)'}")
    contrasts = modelled_contrasts(tuple(volumes))
    inside = np.asarray(brain_mask, bool)
    out = np.zeros(inside.shape, np.float32)
    if not inside.any():
        return out, None
    x = np.stack([np.asarray(volumes[c], np.float64)[inside] for c in contrasts], axis=1)
    prior = class_prior(priors.tissue[:, inside].astype(np.float64),
                        priors.lesion_frequency[inside].astype(np.float64))
    imaged = x > NOT_IMAGED
    everywhere = imaged.all(axis=1)
    if everywhere.sum() < MIN_FIT_VOXELS:
        raise ValueError(f"only {int(everywhere.sum())} brain voxels were imaged by every "
                         f"contrast ({', '.join(contrasts)}); at least {MIN_FIT_VOXELS} are needed")
    stride = max(1, int(everywhere.sum()) // MAX_FIT_VOXELS)
    fit = fit_mixture(x[everywhere][::stride], prior[:, everywhere][:, ::stride], contrasts)
    prior = scaled_prior(prior, fit.lesion_prior_scale)
    posterior = np.zeros(len(x))
    # Each voxel's pattern of imaging contrasts as one integer (bit k: contrast k imaged).
    codes = imaged.astype(np.int64) @ (1 << np.arange(len(contrasts), dtype=np.int64))
    for code in np.flatnonzero(np.bincount(codes)):
        if code == 0:
            continue
        rows = codes == code
        dims = np.flatnonzero((code >> np.arange(len(contrasts))) & 1)
        restricted = MixtureFit(means=fit.means[:, dims],
                                covariances=fit.covariances[:, dims][:, :, dims])
        posterior[rows] = class_posteriors(x[rows][:, dims], prior[:, rows], restricted)[3]
    posterior *= beyond_bound(x, fit, contrasts)
    out[inside] = posterior
    return out, fit


def lesion_bound(fit: MixtureFit, contrasts: Sequence[str]) -> np.ndarray:
    """The intensity ``(C,)`` :data:`MIN_SHIFT_SD` white-matter standard deviations from the
    white-matter mean, on the lesion side of each contrast (:data:`LESION_SIGN`)."""
    sign = np.array([LESION_SIGN[c] for c in contrasts])
    return fit.means[2] + MIN_SHIFT_SD * sign * np.sqrt(np.diag(fit.covariances[2]))


def grey_floor(fit: MixtureFit) -> np.ndarray:
    """The intensity ``(C,)`` :data:`GREY_FLOOR_SD` grey-matter standard deviations darker than
    the grey-matter mean."""
    return fit.means[1] - GREY_FLOOR_SD * np.sqrt(np.diag(fit.covariances[1]))


def beyond_bound(x: np.ndarray, fit: MixtureFit, contrasts: Sequence[str]) -> np.ndarray:
    """Whether each voxel of ``x`` ``(N, C)`` can be lesion by its own intensities (boolean
    ``(N,)``): beyond :func:`lesion_bound` in every one of the :func:`masked_contrasts` that
    imaged it, and not darker than :func:`grey_floor` in any of the :func:`floored_contrasts`
    that imaged it.  True where no such contrast imaged the voxel."""
    sign = np.array([LESION_SIGN[c] for c in contrasts])
    imaged = x > NOT_IMAGED
    masked = np.isin(contrasts, masked_contrasts(contrasts))
    floored = np.isin(contrasts, floored_contrasts(contrasts))
    short = (sign * (x - lesion_bound(fit, contrasts)) < 0) & imaged & masked
    dark = (x < grey_floor(fit)) & imaged & floored
    return ~(short | dark).any(axis=1)


@dataclass(frozen=True)
class MixtureFit:
    """Fitted class Gaussians, classes in :data:`CLASSES` order: ``means`` ``(4, C)`` and
    ``covariances`` ``(4, C, C)`` (normalised intensity units); ``lesion_prior_scale``, the
    factor the lesion prior was scaled by (:func:`load_scale`, :func:`scaled_prior`)."""

    means: np.ndarray
    covariances: np.ndarray
    lesion_prior_scale: float = 1.0


def class_prior(tissue: np.ndarray, lesion_frequency: np.ndarray) -> np.ndarray:
    """Spatial class priors ``(4, N)`` from the tissue atlas ``(3, N)`` (CSF, grey matter,
    white matter; summing to one) and the lesion frequency ``(N,)``; each column sums to one."""
    lesion = np.clip(LESION_PRIOR_SCALE * lesion_frequency
                     + LESION_PRIOR_IN_WHITE_MATTER * tissue[2], MIN_LESION_PRIOR,
                     MAX_LESION_PRIOR)
    return np.concatenate([tissue * (1.0 - lesion), lesion[None]], axis=0)


def scaled_prior(prior: np.ndarray, scale: float) -> np.ndarray:
    """``prior`` ``(4, N)`` (:func:`class_prior`) with the lesion row multiplied by ``scale``
    (capped at :data:`MAX_LESION_PRIOR`) and the tissue rows rescaled so that each column still
    sums to one."""
    if scale == 1.0:
        return prior
    lesion = np.minimum(scale * prior[3], MAX_LESION_PRIOR)
    tissue = prior[:3] * ((1.0 - lesion) / (1.0 - prior[3]))[None]
    return np.concatenate([tissue, lesion[None]], axis=0)


def load_scale(lesion_posterior_: np.ndarray, can_be_lesion: np.ndarray,
               lesion_prior: np.ndarray) -> float:
    """The factor the lesion prior is scaled by for a session: the volume of the lesion
    posterior ``(N,)`` at voxels that can be lesion (boolean ``(N,)``, :func:`beyond_bound`)
    over the volume of the atlas's lesion prior ``(N,)``, between 1 and :data:`MAX_LOAD_SCALE`.

    A brain with no more lesion than the atlas's patients keeps the atlas's prior: on a real
    patient with 8.5 ml of lesion it is 1.0 with every contrast subset but T1w + T2w (1.02),
    as on that patient's lesion-filled copies and on lesion-free synthetic brains; on a copy of
    its anatomy with 56 ml of lesion it is 1.9–3.9, depending on the contrasts.
    """
    load = float(lesion_posterior_[can_be_lesion].sum()) / max(float(lesion_prior.sum()), 1e-12)
    return float(np.clip(load, 1.0, MAX_LOAD_SCALE))


def class_posteriors(x: np.ndarray, prior: np.ndarray, fit: MixtureFit) -> np.ndarray:
    """Posterior class probabilities ``(4, N)`` of the voxels ``x`` ``(N, C)`` under ``fit``
    and the spatial ``prior`` ``(4, N)``."""
    log_joint = np.log(np.clip(prior, 1e-12, None)) + np.stack(
        [_log_gaussian(x, m, c) for m, c in zip(fit.means, fit.covariances)])
    log_joint -= log_joint.max(axis=0)
    posterior = np.exp(log_joint)
    posterior /= posterior.sum(axis=0)
    return posterior


def fit_mixture(x: np.ndarray, prior: np.ndarray, contrasts: Sequence[str], *,
                iterations: int = ITERATIONS) -> MixtureFit:
    """Expectation–maximisation of the class Gaussians.

    ``x`` has shape ``(N, C)`` (intensities of N voxels over the C ``contrasts``) and
    ``prior`` ``(4, N)`` (:func:`class_prior`).  Each round re-estimates the Gaussians from
    the current posteriors (the first from the priors, the lesion class then starting beside
    white matter, shaped as white matter), holds the lesion mean on its side of white matter in
    the :func:`held_contrasts` (and, from the second round, where :func:`spread_floored`, the
    lesion class at least as wide as grey matter), from round :data:`LOAD_FROM_ROUND` scales
    the lesion prior by the session's lesion load (:func:`load_scale`), and updates the
    posteriors.  The returned fit carries the last scale.
    """
    sign = np.array([LESION_SIGN[c] for c in contrasts])
    held = np.isin(contrasts, held_contrasts(contrasts))
    floored_spread = spread_floored(contrasts)
    atlas_prior = prior
    scale = 1.0
    posterior = prior
    fit = None
    for iteration in range(iterations):
        means, covariances = _weighted_gaussians(x, posterior)
        if iteration == 0:
            wm_sd = np.sqrt(np.diag(covariances[2]))
            means[3] = means[2] + INITIAL_SHIFT_SD * (sign * held) * wm_sd
            covariances[3] = covariances[2].copy()
        elif floored_spread:
            covariances[3] = widened(covariances[3], LESION_SPREAD_OF_GREY
                                     * np.sqrt(np.diag(covariances[1])))
        fit = MixtureFit(means=np.stack(means), covariances=np.stack(covariances))
        bound = lesion_bound(fit, contrasts)
        too_close = held & (sign * (fit.means[3] - bound) < 0)
        fit.means[3] = np.where(too_close, bound, fit.means[3])
        if iteration >= LOAD_FROM_ROUND:
            scale = load_scale(posterior[3], beyond_bound(x, fit, contrasts), atlas_prior[3])
            prior = scaled_prior(atlas_prior, scale)
        posterior = class_posteriors(x, prior, fit)
    return MixtureFit(means=fit.means, covariances=fit.covariances, lesion_prior_scale=scale)


def modelled_contrasts(contrasts: Sequence[str]) -> tuple[str, ...]:
    """The contrasts the mixture reads from a session that has ``contrasts``: all of them, but
    T1w alone from T1w and ce-T1w without any other (the joint fit scored lower than T1w's on
    a real patient, and called more false positives on a lesion-free and a low-load copy of
    its anatomy and on three lesion-free synthetic brains)."""
    if set(contrasts) == {"T1w", "ceT1w"}:
        return ("T1w",)
    return tuple(contrasts)


def spread_floored(contrasts: Sequence[str]) -> bool:
    """Whether the lesion class is kept at least as wide as grey matter
    (:data:`LESION_SPREAD_OF_GREY`) when the mixture reads ``contrasts``: one contrast alone.
    Beside another contrast the lesion class is told from grey matter without it (held wide
    there, it lowered a real patient's score with every contrast and called more on a
    lesion-free copy of that patient's anatomy with T1w + FLAIR and with FLAIR + T2w)."""
    return len(contrasts) == 1


def widened(covariance: np.ndarray, min_sd: np.ndarray) -> np.ndarray:
    """``covariance`` ``(C, C)`` with each standard deviation raised to at least ``min_sd``
    ``(C,)`` and the correlations kept."""
    scale = np.maximum(min_sd / np.sqrt(np.diag(covariance)), 1.0)
    return covariance * np.outer(scale, scale)


def held_contrasts(contrasts: Sequence[str]) -> tuple[str, ...]:
    """The contrasts in which the lesion mean is held on its side of white matter: those where
    lesions are bright (FLAIR, T2w, PDw: the :func:`masked_contrasts`) when the session has
    one, else all (T1w, ce-T1w)."""
    return masked_contrasts(contrasts) or tuple(contrasts)


def masked_contrasts(contrasts: Sequence[str]) -> tuple[str, ...]:
    """The contrasts in which a voxel must lie beyond the bound to be lesion
    (:func:`beyond_bound`): those where every lesion is bright (FLAIR, T2w, PDw); none on
    T1-weighted images alone, where many lesions are as bright as white matter and a voxel
    short of the bound may still be one (a posterior of 0 there was over-confident)."""
    return tuple(c for c in contrasts if LESION_SIGN[c] > 0)


def floored_contrasts(contrasts: Sequence[str]) -> tuple[str, ...]:
    """The T1-weighted contrasts (T1w, ce-T1w) in which a voxel as dark as CSF is not lesion
    (:func:`grey_floor`): those of a session that has T2w or PDw but no FLAIR, where CSF's
    partial volume is as bright as a lesion in every other contrast.  With FLAIR (CSF dark
    there) none; on T1-weighted images alone none either (nothing there tells a dark lesion
    from CSF's partial volume but the priors)."""
    if "FLAIR" in contrasts or not masked_contrasts(contrasts):
        return ()
    return tuple(c for c in contrasts if LESION_SIGN[c] < 0)


def _weighted_gaussians(x: np.ndarray, weights: np.ndarray) -> tuple[list, list]:
    """Means ``(C,)`` and covariances ``(C, C)`` of each class under ``weights`` ``(K, N)``."""
    means, covariances = [], []
    for w in weights:
        w = w / max(float(w.sum()), 1e-12)
        mean = w @ x
        centred = x - mean
        cov = (w[:, None] * centred).T @ centred + COVARIANCE_FLOOR * np.eye(x.shape[1])
        means.append(mean)
        covariances.append(cov)
    return means, covariances


def _log_gaussian(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Log density of N(mean, cov) at each row of ``x`` ``(N, C)``; shape ``(N,)``."""
    inverse = np.linalg.inv(cov)
    _, log_det = np.linalg.slogdet(cov)
    centred = x - mean
    mahalanobis = ((centred @ inverse) * centred).sum(axis=1)
    return -0.5 * (mahalanobis + log_det + x.shape[1] * np.log(2 * np.pi))



def combine(network_probability: np.ndarray, posterior: np.ndarray, *,
            network_weight: float = DEFAULT_NETWORK_WEIGHT) -> np.ndarray:
    """``network_weight`` × the network's probability + (1 − ``network_weight``) × the
    intensity model's posterior (float32).

    Both have the grid's shape and lie in [0, 1]; ``network_weight`` lies in [0, 1].  With the
    default, the mean: at threshold 0.5 a voxel is lesion when the two sum to at least 1 (one
    sure model and one at least undecided, or both leaning).  With 0, the posterior alone.
    """
    if not 0.0 <= network_weight <= 1.0:
        raise ValueError(f"network_weight must lie between 0 and 1, got {network_weight!r}")
    network = np.asarray(network_probability, np.float32)
    return (np.float32(network_weight) * network
            + np.float32(1.0 - network_weight) * np.asarray(posterior, np.float32)
            ).astype(np.float32)


def combine_for_session(preproc, volumes: Mapping[str, np.ndarray], brain: np.ndarray,
                        network: np.ndarray | Callable[[], np.ndarray], *,
                        cache_dir: Path | None,
                        network_weight: float = DEFAULT_NETWORK_WEIGHT) -> tuple[np.ndarray, dict]:
    """The network's probability combined with the intensity model's posterior for one
    preprocessed session (:func:`combine`, with ``network_weight``), and the sidecar's
    ``IntensityModel`` entry.

    ``preproc`` has ``images`` (contrast → image on the model grid) and ``brain_mask`` (path);
    ``volumes`` are those images' arrays, ``brain`` the mask's, all ``(X, Y, Z)``.  ``network``
    is the network's map of that shape, or a function that computes it: it is called only when
    the map is needed, so that with ``network_weight`` 0 (the posterior alone) the network
    never runs.  The template fit that carries the atlas priors can fail on an unusual brain,
    and the mixture needs voxels that every contrast imaged; otherwise the network's
    probability is returned alone, with a warning and the reason in the entry (``Skipped``).
    nilearn's template is written once into ``cache_dir``.
    """
    from bids_mdpp.atlas_priors import session_priors
    from bids_mdpp.errors import InputDataError

    def network_map() -> np.ndarray:
        return network() if callable(network) else network

    try:
        priors = session_priors(preproc.images, preproc.brain_mask, cache_dir=cache_dir)
        posterior, fit = session_fit(volumes, brain, priors)
    except (InputDataError, ValueError) as exc:
        LOGGER.warning("intensity model skipped, the network's probability is kept alone: %s", exc)
        return network_map(), {"Mode": "off", "Skipped": str(exc)}
    entry = {**describe("combine", network_weight=network_weight),
             "Contrasts": list(modelled_contrasts(tuple(volumes))),
             "LesionPriorScale": round(fit.lesion_prior_scale if fit is not None else 1.0, 3)}
    if network_weight == 0.0:
        return posterior.astype(np.float32), entry
    return combine(network_map(), posterior, network_weight=network_weight), entry


def combination_text(network_weight: float) -> str:
    """How the network's probability and the posterior are combined, in words."""
    if network_weight == DEFAULT_NETWORK_WEIGHT:
        return "mean of the network's probability and the posterior"
    if network_weight == 0.0:
        return ("the posterior alone (the model card gives the network no weight for these "
                "contrasts)")
    return (f"weighted mean: {network_weight:g} x the network's probability + "
            f"{1.0 - network_weight:g} x the posterior")


def describe(mode: str, *, network_weight: float = DEFAULT_NETWORK_WEIGHT) -> dict:
    """What the outputs' sidecars record of the intensity model under ``mode`` (one of
    :data:`bids_mdpp.config.INTENSITY_MODEL_MODES`: ``combine`` combines the network's
    probability with the posterior, the network weighing ``network_weight``; ``off`` keeps
    the network's alone)."""
    if mode not in INTENSITY_MODEL_MODES:
        raise ValueError(f"intensity model mode must be one of {INTENSITY_MODEL_MODES}, "
                         f"got {mode!r}")
    if mode == "off":
        return {"Mode": "off"}
    return {
        "Mode": mode,
        "Method": "per-session Gaussian mixture (CSF, grey matter, white matter, lesion; full "
                  "covariance over the contrasts) fitted by expectation-maximisation inside the "
                  "brain mask, with spatial priors carried by an affine fit of the MNI152 2009a "
                  "template",
        "TissuePriors": "MNI152 2009a symmetric grey/white matter probability maps (nilearn)",
        "LesionPrior": f"{LESION_PRIOR_SCALE:g} x lesion frequency + "
                       f"{LESION_PRIOR_IN_WHITE_MATTER:g} x white-matter probability, scaled "
                       f"by the session's lesion load (LesionPriorScale: the lesion posterior's "
                       f"volume over the prior's, from round {LOAD_FROM_ROUND + 1}, between 1 "
                       f"and {MAX_LOAD_SCALE:g}; capped at {MAX_LESION_PRIOR:g})",
        "LesionMasks": lesion_prior_source(),
        "Iterations": ITERATIONS,
        "MinimumLesionShift": f"{MIN_SHIFT_SD:g} white-matter standard deviations (in FLAIR, "
                              f"T2w and PDw; in T1w and ce-T1w, darker, when none of those is "
                              f"given)",
        "LesionIntensityMask": f"a voxel is lesion only at least {MIN_SHIFT_SD:g} white-matter "
                               f"standard deviations brighter than the white-matter mean in "
                               f"each of FLAIR, T2w and PDw given (none on T1w or ce-T1w); "
                               f"without FLAIR, with T2w or PDw, not where it is more than "
                               f"{GREY_FLOOR_SD:g} grey-matter standard deviations darker than "
                               f"the grey-matter mean on T1w or ce-T1w (as dark as CSF)",
        "MinimumLesionSpread": f"{LESION_SPREAD_OF_GREY:g} x the grey-matter standard "
                               f"deviation, with one contrast alone",
        "Combination": combination_text(network_weight),
        "NetworkWeight": network_weight,
    }
