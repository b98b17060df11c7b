"""The group level: one cohort table, optional ISBI-2015 scores, one HTML report.

:func:`run_group` reads what the participant level wrote (never modifies it) and writes, each
atomically, in ``OUTPUT_DIR``:

* ``group_lesions.tsv`` + ``group_lesions.json`` (data dictionary): one row per participant
  and session — total lesion volume, lesion count, contrasts, modality code, model, QC flags;
* with reference masks (``--labels DERIVATIVES_DIR``): ``group_scores.tsv`` (one row per
  scored participant and session) and ``group_scores_summary.tsv`` (one row per modality code
  and one for the whole cohort, ``all``: mean and sample standard deviation of each metric,
  ``n``, and the Pearson volume correlation within the group), each with a ``.json``;
* ``group_lesions.html``: the cohort report (:mod:`bids_mdpp.reports.group`).

A session counts when its mask, probseg, stats table and their sidecars all exist, so the
group level can run while participant jobs are still writing: unfinished sessions are
skipped and logged.  Session folders are read only through the final (atomically renamed)
file names.  When one session has several masks (a re-run that chose another reference
image), the most recently written is used and the others are named in the log.  Sessions
are ordered by participant, then by session label in natural order (``2`` before ``10``).

Scoring: the reference mask of each session is found with
:func:`bids_mdpp.bids.find_reference_mask`; any voxel > 0 is lesion.  A reference on another
grid than the prediction is resampled onto the prediction's grid with nearest-neighbour
interpolation (with a warning giving its volume before and after).  Metrics and their edge
cases are those of :mod:`bids_mdpp.metrics` (18-connected lesions); Corr is computed over all
scored sessions, each participant/session being one subject, and every session's SC uses it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_mdpp.bids import natural_key
from bids_mdpp.errors import InputDataError, NoInputError
from bids_mdpp.imageio import write_json, write_text

LOGGER = logging.getLogger("bids_mdpp.group")

#: ``<key>_label-lesion_mask.nii.gz`` in native space (no ``space-`` entity).
MASK_NAME = re.compile(
    r"^(?P<key>sub-(?P<subject>[A-Za-z0-9]+)(?:_ses-(?P<session>[A-Za-z0-9]+))?"
    r"(?:_(?:acq|ce|rec|run)-[A-Za-z0-9]+)*)_label-lesion_mask\.nii\.gz$"
)

#: Files besides the mask that make a session complete (suffixes after ``<key>``).
SESSION_FILES = ("_label-lesion_mask.json", "_label-lesion_probseg.nii.gz",
                 "_label-lesion_probseg.json", "_label-lesion_stats.tsv",
                 "_label-lesion_stats.json")

#: Mask-sidecar keys without which a session cannot enter the table.
REQUIRED_KEYS = ("ModalityCode", "ContrastsUsed", "LesionCount", "TotalLesionVolume", "Model")

LESION_DICTIONARY: dict[str, dict] = {
    "participant_id": {"Description": "Participant label with the sub- prefix."},
    "session_id": {"Description": "Session label with the ses- prefix (n/a without sessions)."},
    "total_lesion_volume_mm3": {"Description": "Total volume of the lesion mask.",
                                "Units": "mm^3"},
    "lesion_count": {"Description": "Number of lesions: connected components of the mask "
                                    "(connectivity in the mask sidecar, 26 by default)."},
    "reference_contrast": {"Description": "Contrast whose native grid the mask is on."},
    "contrasts_used": {"Description": "Comma-separated contrasts the network received."},
    "contrasts_missing": {"Description": "Comma-separated contrasts the model knows but this "
                                         "session lacked (zero-filled inputs)."},
    "modality_code": {"Description": "Binary modality code: one digit per contrast of "
                                     "model_contrasts, 1 = present."},
    "model_contrasts": {"Description": "Comma-separated contrasts the model knows, in the order "
                                       "of the modality code."},
    "model": {"Description": "Name of the model that produced the mask."},
    "model_version": {"Description": "Version of that model."},
    "mask_file": {"Description": "The lesion mask, relative to this dataset's root."},
}

_QC_DESCRIPTION = "Quality-control value {name!r} from the QC object of the mask sidecar."

SCORE_DICTIONARY: dict[str, dict] = {
    "participant_id": LESION_DICTIONARY["participant_id"],
    "session_id": LESION_DICTIONARY["session_id"],
    "modality_code": LESION_DICTIONARY["modality_code"],
    "contrasts_used": LESION_DICTIONARY["contrasts_used"],
    "dsc": {"Description": "Dice similarity coefficient 2|P∩R|/(|P|+|R|); 1 when both masks "
                           "are empty."},
    "ppv": {"Description": "Positive predictive value |P∩R|/|P|; n/a for an empty prediction "
                           "(1 when both masks are empty)."},
    "tpr": {"Description": "True positive rate |P∩R|/|R|; n/a for an empty reference (1 when "
                           "both masks are empty)."},
    "lfpr": {"Description": "Lesion-wise false positive rate: predicted lesions (18-connected) "
                            "overlapping no reference voxel / predicted lesions."},
    "ltpr": {"Description": "Lesion-wise true positive rate: reference lesions (18-connected) "
                            "overlapping at least one predicted voxel / reference lesions."},
    "vd": {"Description": "Absolute volume difference |V(P)-V(R)|/V(R); n/a for an empty "
                          "reference (0 when both masks are empty)."},
    "corr": {"Description": "Pearson correlation of predicted and reference total lesion "
                            "volumes over the scored sessions of the cohort (ISBI 2015)."},
    "sc": {"Description": "ISBI 2015 score DSC/8 + PPV/8 + (1-LFPR)/4 + LTPR/4 + Corr/4, with "
                          "the cohort's Corr."},
    "predicted_volume_mm3": {"Description": "Volume of the predicted mask.", "Units": "mm^3"},
    "reference_volume_mm3": {"Description": "Volume of the reference mask on the prediction's "
                                            "grid.", "Units": "mm^3"},
    "predicted_lesions": {"Description": "Lesions (18-connected components) of the prediction."},
    "reference_lesions": {"Description": "Lesions (18-connected components) of the reference."},
    "false_positive_lesions": {"Description": "Predicted lesions overlapping no reference voxel."},
    "detected_reference_lesions": {"Description": "Reference lesions overlapping at least one "
                                                  "predicted voxel."},
    "reference_resampled": {"Description": "true when the reference mask was on another grid "
                                           "and was resampled (nearest neighbour)."},
    "reference_mask": {"Description": "The reference mask, relative to the labels folder."},
}

SUMMARY_DICTIONARY: dict[str, dict] = {
    "modality_code": {"Description": "Modality code of the group of sessions, or 'all' for "
                                     "the whole cohort."},
    "contrasts_used": LESION_DICTIONARY["contrasts_used"],
    "n": {"Description": "Number of scored sessions in the group."},
    "corr": {"Description": "Pearson correlation of predicted and reference total lesion "
                            "volumes within the group (n/a with fewer than 2 sessions or zero "
                            "variance)."},
}

#: Metrics summarised per modality code (mean and sample standard deviation).
SUMMARISED = ("dsc", "ppv", "tpr", "lfpr", "ltpr", "vd", "sc")


@dataclass(frozen=True)
class SessionRecord:
    """One finished participant/session found in OUTPUT_DIR."""

    subject: str
    session: str | None
    key: str
    mask: Path
    sidecar: dict = field(repr=False)


@dataclass(frozen=True)
class GroupResult:
    """What :func:`run_group` wrote and what it left out.

    ``not_processed``: participants of BIDS_DIR without any finished result; ``excluded``:
    session key → why it could not enter the table; ``unscored``: session key → why it was not
    scored (no or unreadable reference mask).
    """

    lesions_tsv: Path
    report: Path
    sessions: tuple[SessionRecord, ...]
    scores_tsv: Path | None = None
    summary_tsv: Path | None = None
    not_processed: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)
    unscored: dict[str, str] = field(default_factory=dict)


# --- gathering --------------------------------------------------------------------------------

def _read_sidecar(path: Path) -> dict:
    """The mask sidecar, checked for :data:`REQUIRED_KEYS` (InputDataError naming the file)."""
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputDataError(path, f"not a readable JSON sidecar ({exc})") from exc
    if not isinstance(sidecar, dict):
        raise InputDataError(path, "the sidecar is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in sidecar]
    if missing:
        raise InputDataError(path, f"the sidecar lacks {', '.join(missing)}")
    checks = {
        "ModalityCode": isinstance(sidecar["ModalityCode"], str)
        and re.fullmatch(r"[01]+", sidecar["ModalityCode"]) is not None,
        "ContrastsUsed": isinstance(sidecar["ContrastsUsed"], list)
        and all(isinstance(c, str) for c in sidecar["ContrastsUsed"]),
        "LesionCount": isinstance(sidecar["LesionCount"], int)
        and not isinstance(sidecar["LesionCount"], bool) and sidecar["LesionCount"] >= 0,
        "TotalLesionVolume": isinstance(sidecar["TotalLesionVolume"], (int, float))
        and not isinstance(sidecar["TotalLesionVolume"], bool)
        and math.isfinite(sidecar["TotalLesionVolume"]) and sidecar["TotalLesionVolume"] >= 0,
    }
    wrong = [f"{key}={sidecar[key]!r}" for key, ok in checks.items() if not ok]
    if wrong:
        raise InputDataError(path, f"invalid sidecar value(s): {', '.join(wrong)}")
    return sidecar


def find_sessions(
    output_dir: Path, participant_labels: Sequence[str] | None = None
) -> tuple[list[SessionRecord], dict[str, str]]:
    """Finished sessions in ``output_dir`` and the excluded ones (key → reason)."""
    wanted = {label.removeprefix("sub-") for label in participant_labels or []}
    by_session: dict[tuple[str, str | None], list[tuple[Path, re.Match]]] = {}
    for mask in sorted(output_dir.glob("sub-*/anat/*_label-lesion_mask.nii.gz")) + sorted(
            output_dir.glob("sub-*/ses-*/anat/*_label-lesion_mask.nii.gz")):
        match = MASK_NAME.match(mask.name)
        if match is None or (wanted and match["subject"] not in wanted):
            continue
        by_session.setdefault((match["subject"], match["session"]), []).append((mask, match))
    records: list[SessionRecord] = []
    excluded: dict[str, str] = {}
    for (subject, session), found in by_session.items():
        complete = [(m, k) for m, k in found if all(
            (m.parent / f"{k['key']}{suffix}").is_file() for suffix in SESSION_FILES)]
        if not complete:
            LOGGER.warning("%s: outputs incomplete (still running or failed); skipped",
                           found[0][1]["key"])
            excluded[found[0][1]["key"]] = (
                "outputs incomplete (mask, probseg, stats or a sidecar missing)")
            continue
        complete.sort(key=lambda item: item[0].stat().st_mtime, reverse=True)
        mask, match = complete[0]
        if len(complete) > 1:
            LOGGER.warning("%s: several lesion masks; using the newest, %s (not used: %s)",
                           match["key"], mask.name, ", ".join(m.name for m, _ in complete[1:]))
        try:
            sidecar = _read_sidecar(mask.parent / f"{match['key']}_label-lesion_mask.json")
        except InputDataError as exc:
            LOGGER.warning("%s: excluded: %s", match["key"], exc)
            excluded[match["key"]] = str(exc)
            continue
        records.append(SessionRecord(subject, session, match["key"], mask, sidecar))
    records.sort(key=lambda r: (natural_key(r.subject), natural_key(r.session)))
    return records, excluded


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _tsv_value(value: object) -> object:
    """A TSV cell: booleans as true/false, lists and objects as JSON, None as NaN (n/a)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return math.nan
    if isinstance(value, (int, float, str)):
        return value
    return json.dumps(value)


def qc_columns(qc: dict) -> dict[str, object]:
    """Flatten the QC object: ``{"EmptyMask": True, "RegistrationCost": {"T1w": -0.6}}`` →
    ``{"qc_empty_mask": "true", "qc_registration_cost_T1w": -0.6}``."""
    columns: dict[str, object] = {}
    for name, value in (qc or {}).items():
        column = f"qc_{_snake(name)}"
        if isinstance(value, dict):
            columns.update({f"{column}_{sub}": _tsv_value(v) for sub, v in value.items()})
        else:
            columns[column] = _tsv_value(value)
    return columns


def lesion_row(record: SessionRecord, output_dir: Path) -> dict[str, object]:
    """The ``group_lesions.tsv`` row of one session."""
    sidecar = record.sidecar
    model = sidecar.get("Model") or {}
    return {
        "participant_id": f"sub-{record.subject}",
        "session_id": f"ses-{record.session}" if record.session else math.nan,
        "total_lesion_volume_mm3": float(sidecar["TotalLesionVolume"]),
        "lesion_count": int(sidecar["LesionCount"]),
        "reference_contrast": sidecar.get("ReferenceContrast", math.nan),
        "contrasts_used": ",".join(sidecar["ContrastsUsed"]),
        "contrasts_missing": ",".join(sidecar.get("ContrastsMissing", [])),
        "modality_code": str(sidecar["ModalityCode"]),
        "model_contrasts": ",".join(sidecar.get("ModelContrasts", [])),
        "model": model.get("Name", math.nan) if isinstance(model, dict) else str(model),
        "model_version": model.get("Version", math.nan) if isinstance(model, dict) else math.nan,
        "mask_file": record.mask.relative_to(output_dir).as_posix(),
        **qc_columns(sidecar.get("QC") or {}),
    }


def _write_table(frame, dictionary: dict[str, dict], tsv: Path) -> Path:
    """Write a DataFrame as a BIDS TSV (n/a for missing) and its JSON data dictionary."""
    text = frame.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.10g",
                        lineterminator="\n")
    write_text(text, tsv)
    described = {column: dictionary.get(column) or {
        "Description": _QC_DESCRIPTION.format(name=column.removeprefix("qc_"))}
        for column in frame.columns}
    write_json(described, tsv.with_suffix(".json"))
    return tsv


# --- scoring ----------------------------------------------------------------------------------

def mask_on_grid(reference: Path, target) -> tuple[np.ndarray, bool]:
    """Reference mask (bool) on the grid of the image ``target``; True when it was resampled."""
    from nibabel.processing import resample_from_to

    from bids_mdpp.imageio import load_image
    from bids_mdpp.lesions import voxel_volume_mm3

    img = load_image(reference, check_data=False)
    data = np.asarray(img.dataobj)
    if not np.all(np.isfinite(data)):
        raise InputDataError(reference, "the reference mask holds NaN or infinite values")
    if img.shape == target.shape and np.allclose(img.affine, target.affine, atol=1e-3):
        return data > 0, False
    binary = img.__class__((data > 0).astype(np.uint8), img.affine)
    resampled = np.asarray(resample_from_to(binary, target, order=0).dataobj) > 0
    before = float((data > 0).sum()) * voxel_volume_mm3(img.affine)
    after = float(resampled.sum()) * voxel_volume_mm3(target.affine)
    LOGGER.warning(
        "%s: reference mask on another grid (shape %s) than the prediction (shape %s); "
        "resampled with nearest neighbour: %.1f mm³ before, %.1f mm³ after",
        reference, img.shape, target.shape, before, after,
    )
    return resampled, True


def score_sessions(records: Sequence[SessionRecord], labels_dir: Path):
    """Score every session that has a reference mask.

    Returns ``(scores, summary, unscored)``: a DataFrame with one row per scored session (the
    columns of :data:`SCORE_DICTIONARY`), one row per modality code plus ``all``, and
    session key → reason for those not scored.
    """
    import pandas as pd

    from bids_mdpp.bids import find_reference_mask
    from bids_mdpp.imageio import load_image
    from bids_mdpp.lesions import voxel_volume_mm3
    from bids_mdpp.metrics import overall_score, score_masks, volume_correlation

    rows: list[dict] = []
    unscored: dict[str, str] = {}
    for record in records:
        reference = find_reference_mask(labels_dir, record.subject, record.session)
        if reference is None:
            unscored[record.key] = f"no reference lesion mask in {labels_dir}"
            LOGGER.warning("%s: no reference lesion mask in %s; not scored", record.key, labels_dir)
            continue
        try:
            prediction = load_image(record.mask, check_data=False)
            truth, resampled = mask_on_grid(reference, prediction)
        except InputDataError as exc:
            unscored[record.key] = str(exc)
            LOGGER.warning("%s: not scored: %s", record.key, exc)
            continue
        scores = score_masks(np.asarray(prediction.dataobj), truth,
                             voxel_volume_mm3(prediction.affine))
        row = {
            "participant_id": f"sub-{record.subject}",
            "session_id": f"ses-{record.session}" if record.session else math.nan,
            "modality_code": str(record.sidecar["ModalityCode"]),
            "contrasts_used": ",".join(record.sidecar["ContrastsUsed"]),
            **scores.as_dict(),
            "reference_resampled": "true" if resampled else "false",
            "reference_mask": reference.relative_to(labels_dir).as_posix(),
        }
        row.pop("connectivity")
        rows.append(row)
    columns = [c for c in SCORE_DICTIONARY]
    scores = pd.DataFrame(rows, columns=columns)
    corr = volume_correlation(scores["predicted_volume_mm3"], scores["reference_volume_mm3"])
    scores["corr"] = corr
    scores["sc"] = [overall_score(r.dsc, r.ppv, r.lfpr, r.ltpr, corr)
                    for r in scores.itertuples()]
    summary = summarise_scores(scores)
    return scores, summary, unscored


def summarise_scores(scores):
    """Per modality code (and ``all``): n, mean and sample sd of :data:`SUMMARISED`, corr."""
    import pandas as pd

    from bids_mdpp.metrics import volume_correlation

    groups = [("all", "all", scores)] + [
        (code, used, group) for (code, used), group in
        scores.groupby(["modality_code", "contrasts_used"], sort=True)]
    rows = []
    for code, used, group in groups:
        row = {"modality_code": code, "contrasts_used": used, "n": len(group)}
        for metric in SUMMARISED:
            row[f"{metric}_mean"] = group[metric].mean()
            row[f"{metric}_sd"] = group[metric].std(ddof=1)
        row["corr"] = volume_correlation(group["predicted_volume_mm3"],
                                         group["reference_volume_mm3"])
        rows.append(row)
    return pd.DataFrame(rows)


def _summary_dictionary() -> dict[str, dict]:
    described = dict(SUMMARY_DICTIONARY)
    for metric in SUMMARISED:
        base = SCORE_DICTIONARY[metric]["Description"]
        described[f"{metric}_mean"] = {"Description": f"Mean over the group (n/a values "
                                                      f"skipped) of: {base}"}
        described[f"{metric}_sd"] = {"Description": f"Sample standard deviation (n-1) over "
                                                    f"the group of: {base}"}
    return described


# --- entry point ------------------------------------------------------------------------------

def _not_processed(bids_dir: Path | None, records, participant_labels) -> tuple[str, ...]:
    """Participants of the input dataset (or of the selection) with no finished result."""
    if participant_labels:
        expected = {label.removeprefix("sub-") for label in participant_labels}
    elif bids_dir is not None and Path(bids_dir).is_dir():
        expected = {p.name[4:] for p in Path(bids_dir).glob("sub-*") if p.is_dir()}
    else:
        return ()
    done = {r.subject for r in records}
    return tuple(f"sub-{s}" for s in sorted(expected - done, key=natural_key))


def run_group(
    output_dir: os.PathLike | str,
    *,
    bids_dir: os.PathLike | str | None = None,
    labels_dir: os.PathLike | str | None = None,
    participant_labels: Sequence[str] | None = None,
) -> GroupResult:
    """Gather every finished session of ``output_dir`` into cohort tables and a report.

    Parameters
    ----------
    output_dir
        The participant level's output folder (BIDS derivatives); the group files go there.
    bids_dir
        The raw dataset: participants it holds without a result are listed in the report.
    labels_dir
        A derivatives folder of reference lesion masks: when given, every session is scored.
    participant_labels
        Only these participants (with or without ``sub-``).

    Raises
    ------
    NoInputError
        No finished participant result (exit 66), or ``labels_dir`` holds no reference mask
        for any of them.
    """
    import pandas as pd

    from bids_mdpp.reports.group import write_group_report

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise NoInputError(f"{output_dir}: no such folder; run the participant level first")
    records, excluded = find_sessions(output_dir, participant_labels)
    selection = f" for {', '.join(participant_labels)}" if participant_labels else ""
    if not records:
        detail = "; ".join(f"{k}: {v}" for k, v in excluded.items())
        raise NoInputError(
            f"{output_dir}: no finished participant results{selection} "
            "(sub-*/[ses-*/]anat/*_label-lesion_mask.nii.gz with its probseg, stats and "
            f"sidecars); run the participant level first{f' ({detail})' if detail else ''}"
        )
    not_processed = _not_processed(Path(bids_dir) if bids_dir else None, records,
                                   participant_labels)
    if not_processed:
        LOGGER.warning("No results for %s", ", ".join(not_processed))
    lesions = pd.DataFrame([lesion_row(r, output_dir) for r in records])
    lesions_tsv = _write_table(lesions, LESION_DICTIONARY, output_dir / "group_lesions.tsv")
    LOGGER.info("Cohort table of %d session(s): %s", len(records), lesions_tsv)

    scores = summary = None
    scores_tsv = summary_tsv = None
    unscored: dict[str, str] = {}
    if labels_dir is not None:
        labels_dir = Path(labels_dir)
        scores, summary, unscored = score_sessions(records, labels_dir)
        if scores.empty:
            raise NoInputError(
                f"{labels_dir}: no reference lesion mask for any of the {len(records)} "
                "session(s) (looked for sub-X/[ses-Y/]…_label-lesion_mask, _label-lesion_roi, "
                "_dseg, _lesion-manual and _desc-…lesion…_mask NIfTI files)"
            )
        scores_tsv = _write_table(scores, SCORE_DICTIONARY, output_dir / "group_scores.tsv")
        summary_tsv = _write_table(summary, _summary_dictionary(),
                                   output_dir / "group_scores_summary.tsv")
        LOGGER.info("Scored %d session(s) (Corr %.3f): %s", len(scores),
                    scores["corr"].iloc[0], scores_tsv)
    report = write_group_report(
        output_dir, lesions, scores=scores, summary=summary, not_processed=not_processed,
        excluded=excluded, unscored=unscored,
    )
    LOGGER.info("Group report: %s", report)
    return GroupResult(
        lesions_tsv=lesions_tsv, report=report, sessions=tuple(records), scores_tsv=scores_tsv,
        summary_tsv=summary_tsv, not_processed=not_processed, excluded=excluded,
        unscored=unscored,
    )
