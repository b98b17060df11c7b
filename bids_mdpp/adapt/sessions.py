"""The adaptation cohort: which sessions can teach, their preprocessing and the teacher's maps.

A session teaches when, among the contrasts the base model knows, it has FLAIR and at least
one other.  The others are skipped, each with its reason (logged, and listed in the model
card): no FLAIR (the teacher would have nothing reliable to say), FLAIR alone (no other
contrast to adapt), an unreadable image (the message names the file), a failed preprocessing,
or a teacher that finds no lesion at all with every contrast.  Sessions without FLAIR are not
used even when the same subject has a FLAIR session: their images are not registered to it,
and what the teacher would say about them is unknown.

Each usable session is preprocessed exactly as at the participant level
(:func:`bids_mdpp.workflows.preproc.run_preprocessing`, cached under ``WORK_DIR/<key>``, the
layout the participant level uses, so that a later ``participant -w WORK_DIR`` reuses it).  The
teacher's probability map is the base model on every contrast of the session (three
orientations fused) and, with ``intensity_model="combine"``, averaged with the per-session
intensity model's lesion posterior on those contrasts (:mod:`bids_mdpp.intensity_model`, the
participant level's default; where that model cannot be fitted the network's map teaches
alone, and the card lists the session with the reason).  It is cached with the session's slab
arrays (:mod:`bids_mdpp.training.slabs`) under ``WORK_DIR/adapt/<key>``: ``images.npy``,
``brain.npy``, ``label.npy`` (the teacher's mask, which chooses the slices sampled),
``teacher.npy`` (X, Y, Z) float16 and ``teacher.json`` (the intensity model's entry), reused
while the preprocessed images, the base model and the intensity model mode are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_mdpp.adapt import ANCHOR_CONTRAST
from bids_mdpp.config import DEFAULT_NETWORK_WEIGHT
from bids_mdpp.errors import InputDataError, NoInputError
from bids_mdpp.session import SessionInputs
from bids_mdpp.training.slabs import SubjectCache

LOGGER = logging.getLogger("bids_mdpp.adapt")

#: Bumped when the teacher's maps change meaning (invalidates their caches).
TEACHER_VERSION = "fused-3-orientations-v1"
TEACHER_NAME = "teacher.npy"
#: What the teacher's map was averaged with: the intensity model's sidecar entry.
TEACHER_ENTRY_NAME = "teacher.json"


@dataclass(frozen=True)
class CohortSession:
    """A session that teaches: its slab cache, the teacher's map and its provenance."""

    key: str
    contrasts: tuple[str, ...]
    cache: SubjectCache
    provenance: dict
    #: The intensity model's entry for the teacher's map (``{"Mode": "off"}`` when the network
    #: taught alone; ``Skipped`` says why when the mixture could not be fitted).
    teacher_intensity_model: dict = field(default_factory=lambda: {"Mode": "off"})

    @property
    def teacher_path(self) -> Path:
        """The teacher's probability map, (X, Y, Z) float16 on the model grid."""
        return self.cache.directory / TEACHER_NAME


@dataclass(frozen=True)
class SkippedSession:
    """A session that could not teach, and why."""

    key: str
    reason: str


def select_sessions(sessions: list[SessionInputs], model_contrasts: tuple[str, ...]
                    ) -> tuple[list[SessionInputs], list[SkippedSession]]:
    """Split discovered sessions into those that can teach (the model's contrasts only) and
    the skipped ones with their reasons."""
    from bids_mdpp.participant import usable_inputs

    usable, skipped = [], []
    for inputs in sessions:
        try:
            known = usable_inputs(inputs, model_contrasts)
        except NoInputError as exc:
            skipped.append(SkippedSession(inputs.key, str(exc).removeprefix(f"{inputs.key}: ")))
            continue
        if ANCHOR_CONTRAST not in known.files:
            skipped.append(SkippedSession(
                inputs.key, f"no {ANCHOR_CONTRAST} (only {', '.join(known.contrasts)}): the "
                            "teacher needs it"))
        elif len(known.files) == 1:
            skipped.append(SkippedSession(
                inputs.key, f"{ANCHOR_CONTRAST} is its only contrast the model knows: nothing "
                            "to adapt"))
        else:
            usable.append(known)
    return usable, skipped


def refusal(skipped: list[SkippedSession], bids_dir: Path) -> NoInputError:
    """The error when no session can teach: what was looked for and why each session failed."""
    reasons = "; ".join(f"{s.key}: {s.reason}" for s in skipped) or "no session found"
    return NoInputError(
        f"{bids_dir}: no session can teach the adaptation; it needs at least one session with "
        f"{ANCHOR_CONTRAST} and another contrast the model knows, readable and preprocessed "
        f"(skipped: {reasons})")


def teacher_fingerprint(images: dict[str, Path], brain_mask: Path, model_sha256: str,
                        threshold: float, intensity_model: str = "off",
                        network_weight: float = DEFAULT_NETWORK_WEIGHT) -> str:
    """sha256 over the preprocessed images, the brain mask, the base model, its threshold and
    the intensity model (its mode and, when on, its version and the network's weight)."""
    from bids_mdpp.intensity_model import VERSION
    from bids_mdpp.model import sha256_of

    digest = hashlib.sha256(TEACHER_VERSION.encode())
    for path in [*(images[c] for c in sorted(images)), brain_mask]:
        digest.update(sha256_of(path).encode())
    digest.update(f"{model_sha256}:{threshold:.6f}".encode())
    if intensity_model != "off":  # "off" keeps the fingerprints of caches made before the mode
        digest.update(f":intensity-model={intensity_model}:v{VERSION}:"
                      f"network-weight={network_weight:g}".encode())
    return digest.hexdigest()


def teacher_cache(key: str, subject: str, preproc, base, predictor, directory: Path, *,
                  intensity_model: str = "off", templates_dir: Path | None = None
                  ) -> tuple[SubjectCache, dict]:
    """The session's slab cache with the teacher's map, computed unless already cached, and
    the intensity model's entry for that map (``{"Mode": "off"}`` without it)."""
    import nibabel as nib

    from bids_mdpp.imageio import atomic_path, write_json
    from bids_mdpp.intensity_model import combine_for_session
    from bids_mdpp.training.slabs import open_subject_cache, write_subject_cache

    contrasts = tuple(c for c in base.card.contrasts if c in preproc.images)
    threshold = base.card.threshold_for(contrasts)
    network_weight = base.card.network_weight_for(contrasts)
    fingerprint = teacher_fingerprint(preproc.images, preproc.brain_mask, base.sha256, threshold,
                                      intensity_model, network_weight)
    cache = open_subject_cache(directory, fingerprint)
    entry_path = directory / TEACHER_ENTRY_NAME
    if cache is not None and (directory / TEACHER_NAME).is_file():
        LOGGER.info("%s: reusing the teacher's map in %s", key, directory)
        entry = (json.loads(entry_path.read_text()) if entry_path.is_file()
                 else {"Mode": "off"})
        return cache, entry
    volumes = {c: np.asarray(nib.load(str(preproc.images[c])).dataobj, dtype=np.float32)
               for c in contrasts}
    brain = np.asarray(nib.load(str(preproc.brain_mask)).dataobj) > 0
    LOGGER.info("%s: teacher: the base model on %s%s", key, ", ".join(contrasts),
                ", averaged with the intensity model" if intensity_model != "off" else "")
    if intensity_model == "off":
        probability, entry = predictor.predict(volumes, brain), {"Mode": "off"}
    else:  # the network runs only if its map is needed (its weight, or the mixture's failure)
        probability, entry = combine_for_session(
            preproc, volumes, brain, lambda: predictor.predict(volumes, brain),
            cache_dir=templates_dir, network_weight=network_weight)
        if "Skipped" in entry:
            LOGGER.warning("%s: the network's map teaches alone (%s)", key, entry["Skipped"])
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / TEACHER_NAME) as tmp:
        np.save(tmp, probability.astype(np.float16))
    write_json(entry, entry_path)
    cache = write_subject_cache(
        directory, key=key, subject=subject, volumes=volumes,
        label=(probability >= threshold).astype(np.uint8), brain=brain,
        contrasts=base.card.contrasts, fingerprint=fingerprint)
    return cache, entry


def prepare_session(inputs: SessionInputs, config, base, predictor) -> CohortSession:
    """Check, preprocess (cached) and teach one session; bad data raises InputDataError."""
    from bids_mdpp.imageio import load_image
    from bids_mdpp.training.data import input_provenance
    from bids_mdpp.workflows.preproc import nipype_plugin, run_preprocessing

    for path in inputs.files.values():
        load_image(path)
    plugin, plugin_args = nipype_plugin(config.nprocs)
    work = config.effective_work_dir
    preproc = run_preprocessing(inputs, work / inputs.key, grid_mm=base.card.grid_mm,
                                plugin=plugin, plugin_args=plugin_args,
                                omp_nthreads=config.omp_nthreads)
    cache, entry = teacher_cache(inputs.key, inputs.subject, preproc, base, predictor,
                                 work / "adapt" / inputs.key,
                                 intensity_model=config.intensity_model,
                                 templates_dir=work / "templates")
    provenance = input_provenance(inputs, config.bids_dir)
    return CohortSession(key=inputs.key, contrasts=inputs.contrasts, cache=cache,
                         provenance=provenance, teacher_intensity_model=entry)


def prepare_cohort(config, base, device) -> tuple[list[CohortSession], list[SkippedSession]]:
    """Every session that can teach, prepared; the skipped ones with their reasons.

    Raises
    ------
    NoInputError
        No session can teach (the message lists every session skipped and why).
    """
    from bids_mdpp.bids import discover
    from bids_mdpp.inference import Predictor
    from bids_mdpp.training.slabs import MIN_LESION_VOXELS

    sessions = discover(config.bids_dir, participant_labels=config.participant_labels or None,
                        session_labels=config.session_labels or None,
                        bids_filters=config.bids_filters)
    usable, skipped = select_sessions(sessions, tuple(base.card.contrasts))
    predictor = Predictor(base, device=str(device), precision=config.precision,
                          num_threads=config.omp_nthreads)
    cohort = []
    for inputs in usable:
        try:
            session = prepare_session(inputs, config, base, predictor)
        except InputDataError as exc:
            skipped.append(SkippedSession(inputs.key, str(exc)))
            continue
        if not any(session.cache.lesion_slices):
            skipped.append(SkippedSession(
                inputs.key, f"the base model finds no lesion (no slice with {MIN_LESION_VOXELS} "
                            "or more lesion voxels) with all its contrasts: nothing to teach"))
            continue
        cohort.append(session)
    for entry in skipped:
        LOGGER.warning("%s: skipped, %s", entry.key, entry.reason)
    if not cohort:
        raise refusal(skipped, config.bids_dir)
    LOGGER.info("Adapting on %d session(s): %s", len(cohort), ", ".join(s.key for s in cohort))
    return cohort, skipped
