"""Discovery: which anatomical contrasts each participant and session has (pybids).

The per-contrast queries are data (:func:`default_queries`), overridable by a filter
file in fMRIPrep's format: ``{"flair": {"acquisition": "3D"}, "t1w": {"run": 2}}``, where
``null`` means "entity absent" and ``"*"`` means "entity present, any value".  The keys are
the canonical contrast names, case-insensitive (``t1w``, ``flair``, ``t2w``, ``pdw``,
``cet1w``).

**When several files match one contrast** (runs, acquisitions, reconstructions) the choice is
deterministic: (1) the finest voxel (smallest voxel volume, e.g. a 3D acquisition over a 2D
one), then (2) the highest ``run`` index (a repeated run usually replaces a failed one), then
(3) the file name in alphabetical order.  A filter file that narrows the query overrides the
rule.  The choice and the candidates are logged and shown in the report.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bids_mdpp.contrasts import CONTRASTS
from bids_mdpp.errors import NoInputError, UsageError
from bids_mdpp.session import SessionInputs

LOGGER = logging.getLogger("bids_mdpp.bids")

NIFTI_EXTENSIONS = [".nii", ".nii.gz"]

#: Anatomical suffixes that exist in BIDS but that bids_mdpp does not use: reported, ignored.
KNOWN_UNUSED_SUFFIXES = (
    "T2starw", "T1map", "T2map", "T2starmap", "R1map", "R2map", "R2starmap", "PDmap", "MTRmap",
    "MTsat", "UNIT1", "inplaneT1", "inplaneT2", "PDT2", "angio", "defacemask", "MP2RAGE", "MESE",
    "MEGRE", "VFA", "IRT1", "MPM", "MTS", "MTR", "T1rho", "S0map", "M0map", "TB1map", "RB1map",
)

#: Reference lesion masks accepted in a labels derivatives folder, in order of preference.
REFERENCE_MASK_PATTERNS = (
    "{key}*_label-lesion_mask.nii*",
    "{key}*_label-lesion_roi.nii*",
    "{key}*_label-lesion*_dseg.nii*",
    "{key}*_lesion-manual*.nii*",
    "{key}*_desc-*lesion*_mask.nii*",
)


def default_queries() -> dict[str, dict]:
    """The pybids query of each contrast (built on call: pybids is imported lazily)."""
    from bids.layout import Query

    base = {"datatype": "anat", "extension": NIFTI_EXTENSIONS}
    return {
        "T1w": {**base, "suffix": "T1w", "ceagent": Query.NONE},
        "ceT1w": {**base, "suffix": "T1w", "ceagent": Query.ANY},
        "T2w": {**base, "suffix": "T2w"},
        "FLAIR": {**base, "suffix": "FLAIR"},
        "PDw": {**base, "suffix": "PDw"},
    }


def strip_label(label: str, prefix: str) -> str:
    """``"sub-01"`` or ``"01"`` → ``"01"`` (also accepts ``sub_01``-free plain labels)."""
    label = label.strip()
    if label.startswith(f"{prefix}-"):
        label = label[len(prefix) + 1:]
    if not label or not re.fullmatch(r"[0-9a-zA-Z]+", label):
        raise UsageError(f"invalid {prefix} label {label!r}: BIDS labels are alphanumeric")
    return label


def natural_key(label: str | None) -> tuple:
    """Sort key of a label in natural order: ``"2"`` < ``"10"``, None first."""
    if label is None:
        return ()
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.findall(r"\d+|\D+", label))


def load_bids_filters(path: os.PathLike | str | None) -> dict[str, dict]:
    """Read an fMRIPrep-style filter file into {canonical contrast: {entity: value}}.

    ``null`` becomes ``Query.NONE`` and ``"*"`` becomes ``Query.ANY``.  Raises UsageError
    naming the file when it is not JSON, not an object, or names an unknown contrast.
    """
    if path is None:
        return {}
    from bids.layout import Query

    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: BIDS filter file does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: BIDS filter file is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: BIDS filter file must hold a JSON object keyed by contrast")
    aliases = {c.lower(): c for c in CONTRASTS}
    aliases.update({"t1w_ce": "ceT1w", "ce_t1w": "ceT1w", "pd": "PDw"})
    filters: dict[str, dict] = {}
    for key, entities in raw.items():
        contrast = aliases.get(key.lower())
        if contrast is None:
            raise UsageError(
                f"{path}: unknown contrast {key!r} in BIDS filter file "
                f"(known: {', '.join(c.lower() for c in CONTRASTS)})"
            )
        if not isinstance(entities, dict):
            raise UsageError(f"{path}: the filter for {key!r} must be a JSON object")
        converted = {}
        for entity, value in entities.items():
            if value is None:
                value = Query.NONE
            elif value == "*":
                value = Query.ANY
            converted[entity] = value
        filters[contrast] = converted
    return filters


def load_layout(bids_dir: os.PathLike | str, participant_labels: Sequence[str] | None = None):
    """Index ``bids_dir`` with pybids, skipping derivatives and unselected subjects.

    Validity is not checked here (see :mod:`bids_mdpp.validation`).
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    bids_dir = Path(bids_dir).resolve()
    ignore: list = ["code", "stimuli", "sourcedata", "models", "derivatives",
                    re.compile(r"^\.")]
    if participant_labels:
        keep = "|".join(re.escape(label) for label in participant_labels)
        ignore.append(re.compile(rf"^(?!/sub-({keep})(/|$)|/dataset_description|/participants)"))
    indexer = BIDSLayoutIndexer(validate=False, ignore=ignore, index_metadata=False)
    return BIDSLayout(str(bids_dir), validate=False, indexer=indexer)


def _rank(paths: Iterable[str]) -> list[Path]:
    """Order candidate files by the documented rule (finest voxel, latest run, name)."""
    import nibabel as nib
    import numpy as np

    def key(path: str) -> tuple[float, int, str]:
        try:
            zooms = nib.load(path).header.get_zooms()[:3]
            voxel = float(np.prod(zooms))
        except Exception:  # an unreadable extra file ranks last; it is checked if chosen
            voxel = float("inf")
        match = re.search(r"_run-(\d+)", Path(path).name)
        run = int(match.group(1)) if match else 0
        return (voxel, -run, Path(path).name)

    return [Path(p) for p in sorted(paths, key=key)]


def discover(
    bids_dir: os.PathLike | str,
    *,
    participant_labels: Sequence[str] | None = None,
    session_labels: Sequence[str] | None = None,
    bids_filters: Mapping[str, Mapping] | None = None,
    layout=None,
) -> list[SessionInputs]:
    """Find the anatomical contrasts of every selected participant and session.

    Parameters
    ----------
    bids_dir
        Root of a BIDS dataset.
    participant_labels, session_labels
        Labels with or without ``sub-``/``ses-``; None selects all.
    bids_filters
        {contrast: {entity: value}} from :func:`load_bids_filters`, merged over the defaults.
    layout
        An existing ``BIDSLayout`` (indexed with :func:`load_layout`) to reuse.

    Returns
    -------
    list[SessionInputs]
        One per participant and session, sorted; a session may have no file at all (the
        participant pipeline reports that as its own error, naming the files it saw).

    Raises
    ------
    NoInputError
        A requested participant or session does not exist, or the dataset has no subject.
    """
    subjects_wanted = [strip_label(s, "sub") for s in participant_labels or []]
    sessions_wanted = [strip_label(s, "ses") for s in session_labels or []]
    all_subjects = sorted(p.name[4:] for p in Path(bids_dir).glob("sub-*") if p.is_dir())
    if not all_subjects:
        raise NoInputError(f"{bids_dir}: no participant (sub-*) folder found")
    missing = [s for s in subjects_wanted if s not in all_subjects]
    if missing:
        raise NoInputError(
            f"participant label(s) not found in {bids_dir}: {', '.join('sub-' + m for m in missing)}"
            f" (found: {', '.join('sub-' + s for s in all_subjects[:20])}"
            f"{' …' if len(all_subjects) > 20 else ''})"
        )
    subjects = subjects_wanted or all_subjects
    if layout is None:
        layout = load_layout(bids_dir, subjects_wanted or None)
    queries = default_queries()
    for contrast, extra in (bids_filters or {}).items():
        queries[contrast] = {**queries[contrast], **extra}

    found: list[SessionInputs] = []
    for subject in subjects:
        sessions = sorted(layout.get_sessions(subject=subject)) or [None]
        if sessions_wanted:
            unknown = [s for s in sessions_wanted if s not in sessions]
            selected = [s for s in sessions if s in sessions_wanted]
            if not selected:
                raise NoInputError(
                    f"session label(s) {', '.join('ses-' + s for s in unknown)} not found for "
                    f"sub-{subject} (found: {', '.join('ses-' + str(s) for s in sessions if s)})"
                )
            sessions = selected
        for session in sessions:
            found.append(_discover_session(layout, subject, session, queries))
    return found


def _discover_session(layout, subject: str, session: str | None, queries: dict) -> SessionInputs:
    from bids.layout import Query

    where = {"subject": subject, "session": session if session else Query.NONE}
    files: dict[str, Path] = {}
    candidates: dict[str, tuple[Path, ...]] = {}
    used: set[Path] = set()
    for contrast in CONTRASTS:
        query = {**queries[contrast], **where}
        matches = layout.get(return_type="filename", **query)
        if not matches:
            continue
        ranked = _rank(matches)
        candidates[contrast] = tuple(ranked)
        files[contrast] = ranked[0]
        used.update(ranked)
        if len(ranked) > 1:
            LOGGER.info(
                "sub-%s%s: %d %s images; using %s (finest voxel, then latest run, then name); "
                "not used: %s", subject, f" ses-{session}" if session else "", len(ranked),
                contrast, ranked[0].name, ", ".join(p.name for p in ranked[1:]),
            )
    anat = layout.get(return_type="filename", datatype="anat", extension=NIFTI_EXTENSIONS, **where)
    ignored = tuple(sorted(Path(p) for p in anat if Path(p) not in used))
    for path in ignored:
        LOGGER.info("sub-%s: ignoring %s (a contrast bids_mdpp does not use)", subject, path.name)
    return SessionInputs(subject=subject, session=session, files=files,
                         candidates=candidates, ignored=ignored)


def find_reference_mask(
    labels_dir: os.PathLike | str, subject: str, session: str | None
) -> Path | None:
    """The reference lesion mask of one participant/session in a derivatives folder.

    Searched under ``labels_dir/sub-X/[ses-Y/]`` (any depth), in the order of
    :data:`REFERENCE_MASK_PATTERNS`: ``label-lesion_mask``, ``label-lesion_roi``,
    ``label-lesion…_dseg``, ``lesion-manual``, ``desc-…lesion…_mask``.  For a dataset without
    sessions, a file with a ``ses-`` entity is not taken.  Returns None when nothing matches.
    """
    root = Path(labels_dir) / f"sub-{subject}"
    if session:
        root = root / f"ses-{session}"
    if not root.is_dir():
        return None
    key = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    for pattern in REFERENCE_MASK_PATTERNS:
        hits = sorted(
            p for p in root.rglob(pattern.format(key=key))
            if p.name.endswith((".nii", ".nii.gz")) and (session or "_ses-" not in p.name)
        )
        if hits:
            return hits[0]
    return None


def describe_session(inputs: SessionInputs) -> str:
    """One line for logs: ``sub-01 ses-1: FLAIR, T1w (ignored: sub-01_T2starw.nii.gz)``."""
    where = f"sub-{inputs.subject}" + (f" ses-{inputs.session}" if inputs.session else "")
    found = ", ".join(inputs.contrasts) or "no usable contrast"
    extra = f" (ignored: {', '.join(p.name for p in inputs.ignored)})" if inputs.ignored else ""
    return f"{where}: {found}{extra}"
