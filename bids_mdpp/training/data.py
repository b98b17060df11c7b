"""Training data from a BIDS dataset and a derivatives folder of reference lesion masks.

Data flows as at inference: discovery (:func:`bids_mdpp.bids.discover`) → the SAME
preprocessing (:func:`bids_mdpp.workflows.preproc.run_preprocessing`, cached in the work
directory so a re-run skips it) → the reference mask mapped onto the model grid → the slab
cache of :mod:`bids_mdpp.training.slabs`.

* A session without a reference mask is skipped with a warning; no mask at all is an error.
* The mask is expected in the world space of the reference contrast's native image (as the
  participant level writes its own masks).  It is mapped onto the model grid in world
  coordinates: linear interpolation of the binary mask, then a threshold at 0.5 (inclusive).
* The split is **subject-wise**: every session of a subject lands on the same side.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_mdpp.errors import InputDataError, NoInputError, UsageError
from bids_mdpp.model import sha256_of
from bids_mdpp.session import SessionInputs

LOGGER = logging.getLogger("bids_mdpp.training")

#: Bumped whenever the mapping of a mask onto the model grid changes (invalidates caches).
LABEL_MAPPING_VERSION = "linear-0.5-v2"
#: Threshold of the linearly resampled binary mask.  ``>= 0.5`` keeps a lesion's volume on a
#: grid offset by half a voxel, where every boundary voxel interpolates to exactly 0.5
#: (``> 0.5`` lost 17 % of the real mslub-cross lesion volume there; ``>= 0.5`` adds 3 %).
HALF = 0.5 - 1e-4


@dataclass(frozen=True)
class LabelledSession:
    """One participant/session with its reference lesion mask (native space)."""

    inputs: SessionInputs
    mask: Path

    @property
    def key(self) -> str:
        return self.inputs.key


@dataclass(frozen=True)
class PreparedSession:
    """A labelled session after preprocessing: everything on the model grid.

    ``images`` are the normalised contrasts (background −1, white-matter peak −0.5),
    ``brain_mask`` the brain mask, ``mask_native`` the reference lesion mask as given;
    ``provenance`` records the input files and their sha256 for the model card.
    """

    key: str
    subject: str
    images: dict[str, Path]
    brain_mask: Path
    mask_native: Path
    provenance: dict = field(default_factory=dict)

    @property
    def contrasts(self) -> tuple[str, ...]:
        return tuple(self.images)

    def fingerprint(self, *extra: str) -> str:
        """sha256 over the preprocessed files, the reference mask and ``extra`` strings."""
        digest = hashlib.sha256(LABEL_MAPPING_VERSION.encode())
        for path in [*(self.images[c] for c in sorted(self.images)), self.brain_mask,
                     self.mask_native]:
            digest.update(sha256_of(path).encode())
        for item in extra:
            digest.update(item.encode())
        return digest.hexdigest()

    def label_on_grid(self) -> np.ndarray:
        """The reference mask on the model grid, (X, Y, Z) uint8 in {0, 1}."""
        return mask_to_grid(self.mask_native, self.brain_mask)


def find_labelled_sessions(
    bids_dir: Path,
    labels_dir: Path,
    *,
    model_contrasts: Sequence[str],
    participant_labels: Sequence[str] | None = None,
    require_all: bool = False,
) -> list[LabelledSession]:
    """Sessions of ``bids_dir`` that have a reference mask in ``labels_dir``.

    A session is skipped with a warning when it has no mask, no contrast among
    ``model_contrasts``, or (``require_all``, for the ``independent`` mode) lacks one of them.

    Raises
    ------
    NoInputError
        ``labels_dir`` does not exist, or no session is left (the message says where the
        masks were looked for and which names are accepted).
    """
    from bids_mdpp.bids import REFERENCE_MASK_PATTERNS, discover, find_reference_mask

    if not labels_dir.is_dir():
        raise NoInputError(f"{labels_dir}: the labels folder (--labels) does not exist")
    sessions = discover(bids_dir, participant_labels=participant_labels)
    found: list[LabelledSession] = []
    for inputs in sessions:
        usable = [c for c in inputs.contrasts if c in model_contrasts]
        if require_all and len(usable) < len(model_contrasts):
            missing = [c for c in model_contrasts if c not in usable]
            LOGGER.warning("%s: skipped, it lacks %s", inputs.key, ", ".join(missing))
            continue
        if not usable:
            LOGGER.warning("%s: skipped, none of %s found", inputs.key, ", ".join(model_contrasts))
            continue
        mask = find_reference_mask(labels_dir, inputs.subject, inputs.session)
        if mask is None:
            LOGGER.warning("%s: skipped, no reference lesion mask in %s", inputs.key, labels_dir)
            continue
        files = {c: p for c, p in inputs.files.items() if c in usable}
        found.append(LabelledSession(SessionInputs(inputs.subject, inputs.session, files), mask))
    if not found:
        patterns = ", ".join(p.format(key="sub-X[_ses-Y]") for p in REFERENCE_MASK_PATTERNS)
        raise NoInputError(
            f"{labels_dir}: no session of {bids_dir} has both a reference lesion mask and the "
            f"contrasts {', '.join(model_contrasts)} (masks are looked for under "
            f"sub-X/[ses-Y/] with names {patterns})"
        )
    return found


def split_subjects(
    sessions: Sequence[LabelledSession], val_fraction: float, seed: int
) -> tuple[list[LabelledSession], list[LabelledSession]]:
    """Subject-wise split into (training, validation), reproducible for ``seed``.

    ``round(val_fraction × subjects)`` subjects go to validation, at least one when
    ``val_fraction`` > 0, and at least one subject always stays for training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
    subjects = sorted({s.inputs.subject for s in sessions})
    n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * len(subjects)))
    n_val = min(n_val, len(subjects) - 1)
    if val_fraction > 0 and n_val == 0:
        LOGGER.warning("Only one subject: training without validation")
    order = np.random.default_rng(seed).permutation(len(subjects))
    val_subjects = {subjects[i] for i in order[:n_val]}
    train = [s for s in sessions if s.inputs.subject not in val_subjects]
    val = [s for s in sessions if s.inputs.subject in val_subjects]
    return train, val


def prepare_session(
    session: LabelledSession,
    work_dir: Path,
    *,
    grid_mm: float = 1.0,
    plugin: str = "Linear",
    plugin_args: dict | None = None,
    omp_nthreads: int = 1,
    bids_dir: Path | None = None,
) -> PreparedSession:
    """Check the inputs, preprocess them (cached under ``work_dir/preproc/<key>``) and
    record their provenance.  Bad images raise :class:`InputDataError` naming the file."""
    from bids_mdpp.imageio import load_image

    for path in session.inputs.files.values():
        load_image(path)
    check_mask(session.mask)
    from bids_mdpp.workflows.preproc import run_preprocessing

    result = run_preprocessing(
        session.inputs, work_dir / "preproc" / session.key, grid_mm=grid_mm, plugin=plugin,
        plugin_args=plugin_args, omp_nthreads=omp_nthreads,
    )

    provenance = {
        **input_provenance(session.inputs, bids_dir),
        "mask": {"file": session.mask.name, "sha256": sha256_of(session.mask)},
    }
    return PreparedSession(
        key=session.key, subject=session.inputs.subject, images=dict(result.images),
        brain_mask=result.brain_mask, mask_native=session.mask, provenance=provenance,
    )


def input_provenance(inputs: SessionInputs, bids_dir: Path | None = None) -> dict:
    """What a model card records of a session's images: its key, its contrasts and, per
    contrast, the file (relative to ``bids_dir`` when inside it) and its sha256."""
    def name(path: Path) -> str:
        if bids_dir is not None and Path(path).is_relative_to(bids_dir):
            return str(Path(path).relative_to(bids_dir))
        return Path(path).name

    return {
        "session": inputs.key,
        "contrasts": list(inputs.contrasts),
        "inputs": {c: {"file": name(p), "sha256": sha256_of(p)} for c, p in inputs.files.items()},
    }


def check_mask(path: Path) -> None:
    """A reference mask must be a readable 3D image with finite voxels (it may be empty)."""
    from bids_mdpp.imageio import load_image

    data = np.asanyarray(load_image(path, check_data=False).dataobj)
    if not np.issubdtype(data.dtype, np.number) or not np.all(np.isfinite(data)):
        raise InputDataError(path, "the lesion mask holds NaN, infinite or non-numeric values")
    if data.min() < 0:
        raise InputDataError(path, "the lesion mask holds negative values")


def mask_to_grid(mask_path: Path, grid_path: Path) -> np.ndarray:
    """Map a lesion mask onto the grid of ``grid_path`` in world coordinates.

    Voxels > 0 are lesion; the binary mask is resampled with linear interpolation and
    thresholded at ≥ 0.5 (nearest neighbour when that loses every lesion).  Returns (X, Y, Z)
    uint8.  A mask with lesions that all fall
    outside the grid raises :class:`InputDataError` (it is not in the image's space).
    """
    import nibabel as nib
    from nibabel.processing import resample_from_to

    from bids_mdpp.imageio import load_image

    mask = load_image(mask_path, check_data=False)
    binary = (np.asanyarray(mask.dataobj) > 0).astype(np.float32)
    grid = nib.load(str(grid_path))
    mapped = resample_from_to(
        nib.Nifti1Image(binary, mask.affine), (grid.shape[:3], grid.affine), order=1,
        mode="constant", cval=0.0,
    )
    label = (np.asarray(mapped.dataobj) >= HALF).astype(np.uint8)
    if binary.any() and not label.any():  # lesions smaller than half a grid voxel
        nearest = resample_from_to(
            nib.Nifti1Image(binary, mask.affine), (grid.shape[:3], grid.affine), order=0,
            mode="constant", cval=0.0,
        )
        label = (np.asarray(nearest.dataobj) >= HALF).astype(np.uint8)
    if binary.any() and not label.any():
        raise InputDataError(
            mask_path,
            "none of the lesion mask's voxels falls inside the preprocessed image; is the mask "
            "in the space of the reference contrast (same affine as its NIfTI header)?",
        )
    return label


def cache_session(prepared: PreparedSession, cache_root: Path, contrasts: Sequence[str]):
    """The slab cache of a prepared session, reused when its inputs are unchanged."""
    import nibabel as nib

    from bids_mdpp.training.slabs import open_subject_cache, write_subject_cache

    fingerprint = prepared.fingerprint(",".join(contrasts))
    directory = cache_root / prepared.key
    cache = open_subject_cache(directory, fingerprint)
    if cache is not None:
        LOGGER.info("%s: reusing the slab cache in %s", prepared.key, directory)
        return cache
    volumes = {c: np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
               for c, p in prepared.images.items() if c in contrasts}
    brain = np.asarray(nib.load(str(prepared.brain_mask)).dataobj)
    LOGGER.info("%s: writing the slab cache in %s", prepared.key, directory)
    return write_subject_cache(
        directory, key=prepared.key, subject=prepared.subject, volumes=volumes,
        label=prepared.label_on_grid(), brain=brain, contrasts=contrasts, fingerprint=fingerprint,
    )


def prepare_data(config) -> tuple[tuple[str, ...], list, list, dict]:
    """Everything the Trainer needs from a :class:`~bids_mdpp.training.TrainingConfig`.

    Returns (model contrasts, training caches, validation caches, the data section of the
    model card).  The model's contrasts are ``config.contrasts``, else those of the
    ``--init-from`` model, else every contrast some labelled session has (canonical order).
    """
    from bids_mdpp.contrasts import CONTRASTS

    grid_mm, contrasts = config.grid_mm, config.contrasts
    if config.init_from is not None:
        from bids_mdpp.model import load_model

        card = load_model(config.init_from).card
        grid_mm, contrasts = card.grid_mm, contrasts or card.contrasts
    sessions = find_labelled_sessions(
        config.bids_dir, config.labels_dir, model_contrasts=contrasts or CONTRASTS,
        participant_labels=config.participant_labels or None,
        require_all=config.mode == "independent",
    )
    contrasts = contrasts or tuple(c for c in CONTRASTS
                                   if any(c in s.inputs.files for s in sessions))
    train, val = split_subjects(sessions, config.val_fraction, config.seed)
    LOGGER.info("Model contrasts: %s; %d training and %d validation session(s)",
                ", ".join(contrasts), len(train), len(val))
    from bids_mdpp.workflows.preproc import nipype_plugin

    plugin, plugin_args = nipype_plugin(config.nprocs)
    work = config.effective_work_dir
    caches: dict[str, list] = {"training": [], "validation": []}
    records = []
    for split, group in (("training", train), ("validation", val)):
        for session in group:
            prepared = prepare_session(
                session, work, grid_mm=grid_mm, plugin=plugin, plugin_args=plugin_args,
                omp_nthreads=config.omp_nthreads, bids_dir=config.bids_dir,
            )
            caches[split].append(cache_session(prepared, work / "slabs", contrasts))
            records.append({**prepared.provenance, "split": split})
    data_card = {
        "dataset": dataset_name(config.bids_dir),
        "labels": config.labels_dir.name,
        "grid_mm": grid_mm,
        "subjects": {split: sorted({s.inputs.subject for s in group})
                     for split, group in (("training", train), ("validation", val))},
        "counts": {
            "training_sessions": len(train), "validation_sessions": len(val),
            "sessions_per_contrast": {c: sum(c in s.inputs.files for s in sessions)
                                      for c in contrasts},
        },
        "sessions": records,
    }
    return tuple(contrasts), caches["training"], caches["validation"], data_card


def dataset_name(bids_dir: Path) -> str:
    """The ``Name`` in ``dataset_description.json``, else the folder's name."""
    import json

    try:
        return str(json.loads((bids_dir / "dataset_description.json").read_text())["Name"])
    except (OSError, ValueError, KeyError, TypeError):
        return bids_dir.name
