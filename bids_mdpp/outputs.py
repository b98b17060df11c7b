"""The participant-level BIDS-derivatives dataset: names, sidecars, lesion tables, transforms.

Layout of ``OUTPUT_DIR`` (see ``docs/outputs.md``)::

    dataset_description.json, .bidsignore, README.md
    sub-X/[ses-Y/]anat/<key>_label-lesion_mask.nii.gz (+ .json)      uint8 0/1
    sub-X/[ses-Y/]anat/<key>_label-lesion_probseg.nii.gz (+ .json)   float32 0–1
    sub-X/[ses-Y/]anat/<key>_label-lesion_stats.tsv (+ .json)        one row per lesion
    sub-X/[ses-Y/]anat/<key>_from-<contrast>_to-<reference>_mode-image_xfm.txt
    sub-X/[ses-Y/]anat/<key>_space-<template>_label-lesion_{mask,probseg}.nii.gz (+ .json),
        <key>_from-<reference>_to-<template>_mode-image_xfm.txt   (--output-spaces)

``<key>`` is ``sub-X[_ses-Y]`` plus the ``acq-``, ``rec-`` and ``run-`` entities of the
reference image.  Every name is built from entities with pybids' ``build_path`` and the
patterns of :data:`PATH_PATTERNS`; every file is written atomically (temporary name, then
rename), so a killed run never leaves a half-written file under a final name.  Maps are on
the native grid of the reference image; a voxel is lesion where the probability is ≥ the
threshold.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_mdpp import __version__
from bids_mdpp.contrasts import code_to_string, modality_code
from bids_mdpp.errors import InputDataError, ModelError
from bids_mdpp.imageio import atomic_path, save_image, write_json, write_text
from bids_mdpp.lesions import COLUMNS, DEFAULT_CONNECTIVITY, LesionTable, lesion_table
from bids_mdpp.session import PreprocResult, SessionInputs

LOGGER = logging.getLogger("bids_mdpp.outputs")

#: BIDS version the derivatives follow.
BIDS_VERSION = "1.10.0"

#: Name of the raw dataset in BIDS URIs (``bids:raw:sub-01/anat/…``) and ``DatasetLinks``.
RAW_LINK = "raw"
#: Start of the output dataset's ``Name`` and of the first line of the README it writes.
DATASET_NAME = "bids_mdpp lesion segmentation"

_KEY = ("sub-{subject}[/ses-{session}]/{datatype<anat>|anat}/sub-{subject}[_ses-{session}]"
        "[_acq-{acquisition}][_rec-{reconstruction}][_run-{run}]")

#: pybids ``build_path`` patterns of every file a session writes.
PATH_PATTERNS: tuple[str, ...] = (
    _KEY + "[_space-{space}]_label-{label}_{suffix<mask|probseg>}{extension<.nii.gz|.json>|.nii.gz}",
    _KEY + "_label-{label}_{suffix<stats>}{extension<.tsv|.json>|.tsv}",
    _KEY + "_from-{from}_to-{to}_mode-{mode<image>|image}_{suffix<xfm>}{extension<.txt>|.txt}",
)

#: pybids ``build_path`` pattern of the report figures (``OUTPUT_DIR/sub-X/figures/``).
FIGURE_PATTERN = ("sub-{subject}/figures/sub-{subject}[_ses-{session}][_acq-{acquisition}]"
                  "[_rec-{reconstruction}][_run-{run}]_desc-{desc}_{suffix}"
                  "{extension<.png|.svg>|.png}")

#: Entities of the reference image that the output names keep.
KEPT_ENTITIES = ("acquisition", "reconstruction", "run")

#: Files and folders of OUTPUT_DIR that are not BIDS (reports, figures, logs, work, tables).
BIDSIGNORE: tuple[str, ...] = (
    "*.html", "**/figures", "logs", "work", "*_xfm.txt", "*_stats.tsv", "*_stats.json",
    "group_*",
)

#: The core files of a session, as keys of :func:`derivative_paths`.
CORE_FILES = ("mask", "mask_json", "probseg", "probseg_json", "stats", "stats_json")

#: Data dictionary of the lesion table (``<key>_label-lesion_stats.json``).
STATS_DICTIONARY: dict[str, dict] = {
    "lesion_id": {"LongName": "Lesion number",
                  "Description": "1 is the largest lesion; lesions are numbered by "
                                 "decreasing volume."},
    "n_voxels": {"LongName": "Number of voxels",
                 "Description": "Voxels of the lesion on the native grid of the reference image."},
    "volume_mm3": {"LongName": "Lesion volume", "Description": "n_voxels times the voxel volume.",
                   "Units": "mm^3"},
    "centroid_x_mm": {"LongName": "Centroid x", "Units": "mm",
                      "Description": "Centre of mass, scanner (world) RAS+ x coordinate."},
    "centroid_y_mm": {"LongName": "Centroid y", "Units": "mm",
                      "Description": "Centre of mass, scanner (world) RAS+ y coordinate."},
    "centroid_z_mm": {"LongName": "Centroid z", "Units": "mm",
                      "Description": "Centre of mass, scanner (world) RAS+ z coordinate."},
}


@dataclass(frozen=True)
class SessionOutputs:
    """What :func:`write_session_outputs` wrote for one session.

    ``paths`` maps each of :data:`CORE_FILES` to its file; ``xfms`` maps each moving contrast
    to its transform; ``summary`` is the mask sidecar (counts, volumes, contrasts, model, QC);
    ``lesions`` is the lesion table.
    """

    paths: dict[str, Path]
    xfms: dict[str, Path]
    summary: dict
    lesions: LesionTable = field(repr=False)

    @property
    def mask(self) -> Path:
        return self.paths["mask"]

    @property
    def probseg(self) -> Path:
        return self.paths["probseg"]

    @property
    def stats(self) -> Path:
        return self.paths["stats"]


def _entities(inputs: SessionInputs, reference: str) -> dict[str, str]:
    """Subject, session and the kept entities of the reference image."""
    from bids.layout import parse_file_entities

    if reference not in inputs.files:
        raise ValueError(f"{inputs.key}: reference contrast {reference!r} is not among "
                         f"the files found ({', '.join(inputs.contrasts) or 'none'})")
    parsed = parse_file_entities(str(inputs.files[reference]))
    entities = {"subject": inputs.subject, "session": inputs.session}
    entities.update({name: str(parsed[name]) for name in KEPT_ENTITIES if name in parsed})
    return entities


def _build(output_dir: Path, entities: Mapping[str, str | None],
           patterns: tuple[str, ...] = PATH_PATTERNS) -> Path:
    from bids.layout.writing import build_path

    relative = build_path(dict(entities), list(patterns), strict=True)
    if relative is None:
        raise ValueError(f"no output name pattern matches the entities {dict(entities)}")
    return Path(output_dir) / relative


def derivative_paths(output_dir: os.PathLike | str, inputs: SessionInputs,
                     reference: str) -> dict[str, Path]:
    """The mask, probseg and stats files of a session and their sidecars (see :data:`CORE_FILES`)."""
    base = _entities(inputs, reference)
    files = {
        "mask": {"suffix": "mask", "extension": ".nii.gz"},
        "mask_json": {"suffix": "mask", "extension": ".json"},
        "probseg": {"suffix": "probseg", "extension": ".nii.gz"},
        "probseg_json": {"suffix": "probseg", "extension": ".json"},
        "stats": {"suffix": "stats", "extension": ".tsv"},
        "stats_json": {"suffix": "stats", "extension": ".json"},
    }
    return {name: _build(Path(output_dir), {**base, "label": "lesion", **extra})
            for name, extra in files.items()}


def space_paths(output_dir: os.PathLike | str, inputs: SessionInputs, reference: str,
                space: str) -> dict[str, Path]:
    """The template-space mask and probseg (+ sidecars) and the transform of a session."""
    base = {**_entities(inputs, reference), "space": space, "label": "lesion"}
    paths = {name: _build(Path(output_dir), {**base, "suffix": suffix, "extension": ext})
             for name, suffix, ext in (("mask", "mask", ".nii.gz"), ("mask_json", "mask", ".json"),
                                       ("probseg", "probseg", ".nii.gz"),
                                       ("probseg_json", "probseg", ".json"))}
    paths["xfm"] = _build(Path(output_dir), {**_entities(inputs, reference), "from": reference,
                                             "to": space, "suffix": "xfm"})
    return paths


def xfm_path(output_dir: os.PathLike | str, inputs: SessionInputs, reference: str,
             moving: str) -> Path:
    """``<key>_from-<moving>_to-<reference>_mode-image_xfm.txt`` of a session."""
    entities = {**_entities(inputs, reference), "from": moving, "to": reference, "suffix": "xfm"}
    return _build(Path(output_dir), entities)


def figure_path(output_dir: os.PathLike | str, inputs: SessionInputs, reference: str, *,
                desc: str, suffix: str, extension: str = ".png") -> Path:
    """``sub-X/figures/<key>_desc-<desc>_<suffix>.png`` (``desc`` reduced to letters and digits)."""
    entities = {**_entities(inputs, reference), "extension": extension, "suffix": suffix,
                "desc": "".join(ch for ch in desc if ch.isalnum())}
    return _build(Path(output_dir), entities, (FIGURE_PATTERN,))


def session_is_done(output_dir: os.PathLike | str, inputs: SessionInputs, reference: str,
                    spaces: tuple[str, ...] = ()) -> bool:
    """True when the session's mask, probseg, stats and their sidecars all exist, and so do
    the files of every template space in ``spaces``."""
    wanted = list(derivative_paths(output_dir, inputs, reference).values())
    for space in spaces:
        wanted += list(space_paths(output_dir, inputs, reference, space).values())
    return all(path.is_file() for path in wanted)


def bids_uri(path: os.PathLike | str, subject: str, dataset: str = RAW_LINK) -> str:
    """``bids:raw:sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz`` for a file of the raw dataset.

    The relative path starts at the file's ``sub-<subject>`` folder.
    """
    path = Path(path)
    folders = path.parts[:-1]
    marker = f"sub-{subject}"
    if marker not in folders:
        raise InputDataError(path, f"the file is not inside a {marker}/ folder of a BIDS dataset")
    start = len(folders) - 1 - folders[::-1].index(marker)
    return f"bids:{dataset}:" + "/".join(path.parts[start:])


# --- dataset level ----------------------------------------------------------------------------

def _container() -> dict | None:
    """``GeneratedBy.Container`` from ``BIDS_MDPP_CONTAINER`` (``docker`` or ``docker:<image>``).

    For Singularity/Apptainer without an image part, the image file the runtime reports
    (``APPTAINER_CONTAINER`` / ``SINGULARITY_CONTAINER``) is the tag.
    """
    value = os.environ.get("BIDS_MDPP_CONTAINER", "").strip()
    if not value:
        return None
    kind, _, image = value.partition(":")
    if not image and kind.lower() in ("singularity", "apptainer"):
        runtime = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
        image = Path(runtime).name if runtime else ""
    return {"Type": kind.lower(), **({"Tag": image} if image else {})}


def _code_url() -> str | None:
    """The project URL declared in the installed package's metadata, if any."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata("bids_mdpp")
    except PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("source", "code", "repository", "homepage"):
            return url.strip()
    return meta.get("Home-page") or None


def dataset_description(bids_dir: os.PathLike | str) -> dict:
    """The content of ``dataset_description.json`` (deterministic for a given environment)."""
    bids_dir = Path(bids_dir).resolve()
    generated = {"Name": "bids_mdpp", "Version": __version__}
    url = _code_url()
    if url:
        generated["CodeURL"] = url
    container = _container()
    if container:
        generated["Container"] = container
    source = {"URL": f"bids:{RAW_LINK}:"}
    try:
        raw = json.loads((bids_dir / "dataset_description.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = {}
    if isinstance(raw, dict) and raw.get("DatasetDOI"):
        source["DOI"] = str(raw["DatasetDOI"])
    raw_name = raw.get("Name") if isinstance(raw, dict) else None
    return {
        "Name": f"{DATASET_NAME}{f' of {raw_name}' if raw_name else ''}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {RAW_LINK: bids_dir.as_uri()},
    }


def _write_if_changed(text: str, dest: Path) -> Path:
    """Atomic write that skips an identical file (parallel jobs write the same bytes)."""
    try:
        if dest.read_text(encoding="utf-8") == text:
            return dest
    except (OSError, UnicodeDecodeError):
        pass
    return write_text(text, dest)


#: Names BIDS accepts for a dataset's README; one written by the user is never replaced.
README_NAMES = ("README", "README.md", "README.rst", "README.txt")


def readme_text(description: Mapping) -> str:
    """``README.md`` of the output dataset: what it holds and where to read more (Markdown)."""
    generated = description["GeneratedBy"][0]
    return f"""# {description["Name"]}

Multiple-sclerosis lesion segmentation written by {generated["Name"]} {generated["Version"]}
(ModDrop++: one network for any subset of T1w, T2w, FLAIR, PDw and contrast-enhanced T1w) from
the raw BIDS dataset linked in `dataset_description.json`.

- `sub-<label>/[ses-<label>/]anat/*_label-lesion_mask.nii.gz`: binary lesion mask (uint8) on the
  native grid of the session's reference contrast (FLAIR when present);
- `*_label-lesion_probseg.nii.gz`: lesion probability (float32, 0–1) on the same grid;
- `*_label-lesion_stats.tsv`: one row per lesion (voxels, volume in mm³, centroid in mm;
  columns described in the `.json`);
- `*_from-<contrast>_to-<reference>_mode-image_xfm.txt`: rigid registration of each contrast (ITK);
- `*_space-<template>_*`: the same maps on a template grid, when requested;
- `sub-<label>.html`: the participant's visual report; `logs/`: run logs and `CITATION.md`, a
  methods paragraph with the references to cite.

Each image's JSON sidecar names its source images, the model (with its sha256), the contrasts
used and the threshold that made the mask.
"""


def _readme_is_ours_or_absent(output_dir: Path) -> bool:
    """True when no README exists in ``output_dir`` or its README.md was written by us."""
    present = [output_dir / name for name in README_NAMES if (output_dir / name).exists()]
    if not present:
        return True
    if present != [output_dir / "README.md"]:
        return False
    try:
        first = present[0].read_text(encoding="utf-8").partition("\n")[0]
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith(f"# {DATASET_NAME}")


def write_dataset_description(output_dir: os.PathLike | str, *, bids_dir: os.PathLike | str) -> Path:
    """Write ``dataset_description.json``, ``.bidsignore`` and ``README.md``; safe to call from
    parallel jobs.

    Idempotent: the content depends only on ``bids_dir``, the version and the container, the
    write is atomic, and an identical file is left untouched.  ``.bidsignore`` keeps any line
    already there and adds :data:`BIDSIGNORE`; a README the user wrote is kept as it is.
    """
    output_dir = Path(output_dir)
    description = dataset_description(bids_dir)
    dest = _write_if_changed(json.dumps(description, indent=2) + "\n",
                             output_dir / "dataset_description.json")
    if _readme_is_ours_or_absent(output_dir):
        _write_if_changed(readme_text(description), output_dir / "README.md")
    ignore = output_dir / ".bidsignore"
    try:
        lines = [line for line in ignore.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        lines = []
    lines += [entry for entry in BIDSIGNORE if entry not in lines]
    _write_if_changed("\n".join(lines) + "\n", ignore)
    return dest


# --- session level ----------------------------------------------------------------------------

def _card_dict(model_card: Mapping | object) -> dict:
    card = dataclasses.asdict(model_card) if dataclasses.is_dataclass(model_card) else dict(model_card)
    if not card.get("contrasts"):
        raise ModelError(None, "the model card does not list the contrasts the model knows")
    return card


def provenance(inputs: SessionInputs, preproc: PreprocResult, model_card: Mapping | object,
               model_sha256: str) -> dict:
    """Sidecar keys shared by the mask and the probseg: sources, contrasts, code, model."""
    card = _card_dict(model_card)
    model_contrasts = list(card["contrasts"])
    used = [c for c in model_contrasts if c in preproc.images]
    return {
        "Sources": [bids_uri(inputs.files[c], inputs.subject) for c in used],
        "SpatialReference": bids_uri(inputs.files[preproc.reference], inputs.subject),
        "ModalityCode": code_to_string(modality_code(used, model_contrasts)),
        "ModelContrasts": model_contrasts,
        "ContrastsUsed": used,
        "ContrastsMissing": [c for c in model_contrasts if c not in used],
        "ContrastsIgnored": [c for c in inputs.contrasts if c not in used],
        "ReferenceContrast": preproc.reference,
        "Model": model_provenance(card, model_sha256),
    }


def model_provenance(card: Mapping, model_sha256: str) -> dict:
    """The ``Model`` entry of a sidecar: name, version, mode, sha256 and, for a model made by
    ``bids_mdpp adapt``, ``AdaptedFrom`` (the base model) and ``AdaptedOn`` (dataset, sessions;
    ``TeacherIntensityModel`` when the teacher's map was combined with the intensity model);
    for a model with anchor weights, ``AnchorWeights`` (the contrast whose inputs use them,
    the other inputs that do, ``Subsets``, when there are any, and their sha256)."""
    model = {"Name": card.get("name"), "Version": card.get("version"), "Mode": card.get("mode"),
             "SHA256": model_sha256}
    adaptation = (card.get("training") or {}).get("adaptation")
    if isinstance(adaptation, dict):
        base = adaptation.get("base_model") or {}
        model["AdaptedFrom"] = {"Name": base.get("name"), "Version": base.get("version"),
                                "SHA256": base.get("sha256")}
        model["AdaptedOn"] = {
            "Dataset": adaptation.get("dataset"),
            "Sessions": [s.get("session") for s in adaptation.get("sessions") or []],
            "LabelsUsed": bool(adaptation.get("labels_used", False))}
        teacher = (adaptation.get("teacher_intensity_model") or {}).get("mode", "off")
        if teacher != "off":
            model["AdaptedOn"]["TeacherIntensityModel"] = teacher
    anchor = card.get("anchor")
    if isinstance(anchor, dict) and anchor:
        model["AnchorWeights"] = {"Contrast": anchor.get("contrast"),
                                  **({"Subsets": list(anchor["subsets"])}
                                     if anchor.get("subsets") else {}),
                                  "SHA256": anchor.get("sha256")}
    return model


def _probability(prob_native: nib.Nifti1Image, reference: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The probability map as float32 in [0, 1], checked against the reference's native grid."""
    ref = nib.load(str(reference))
    data = np.asarray(prob_native.dataobj, dtype=np.float32)
    if data.shape != ref.shape[:3] or not np.allclose(prob_native.affine, ref.affine, atol=1e-3):
        raise ValueError(f"the probability map (shape {data.shape}) is not on the native grid of "
                         f"{reference} (shape {ref.shape[:3]})")
    if not np.isfinite(data).all():
        raise ValueError("the probability map holds NaN or infinite values")
    if data.min() < -1e-3 or data.max() > 1 + 1e-3:
        raise ValueError(f"the probability map leaves [0, 1] ({data.min()}…{data.max()})")
    return np.clip(data, 0.0, 1.0), ref


def _like(data: np.ndarray, ref: nib.Nifti1Image) -> nib.Nifti1Image:
    """A NIfTI image of ``data`` on the reference's grid: its affine in both qform and sform
    (codes kept; an unset code becomes 1, scanner), units mm."""
    img = nib.Nifti1Image(data, ref.affine)
    img.set_qform(ref.affine, code=int(ref.header["qform_code"]) or 1)
    img.set_sform(ref.affine, code=int(ref.header["sform_code"]) or 1)
    img.header.set_xyzt_units("mm")
    return img


def _stats_tsv(table: LesionTable) -> str:
    lines = ["\t".join(COLUMNS)]
    for row in table.rows:
        lines.append("\t".join(
            str(row[c]) if isinstance(row[c], int) else f"{row[c]:.3f}" for c in COLUMNS))
    return "\n".join(lines) + "\n"


def write_session_outputs(
    output_dir: os.PathLike | str,
    inputs: SessionInputs,
    preproc: PreprocResult,
    prob_native: nib.Nifti1Image,
    *,
    model_card: Mapping | object,
    model_sha256: str,
    threshold: float = 0.5,
    min_lesion_mm3: float = 0.0,
    qc: Mapping | None = None,
    inference: Mapping | None = None,
) -> SessionOutputs:
    """Write the derivatives of one session and return what was written.

    Parameters
    ----------
    prob_native
        Lesion probability (0–1) on the native grid of ``preproc.reference_native``.
    model_card
        The model card (dict or ``ModelCard``): ``contrasts`` (the model's order), ``name``,
        ``version``, ``mode``.
    model_sha256
        SHA-256 of the weights file.
    threshold
        A voxel is lesion where the probability is ≥ this.
    min_lesion_mm3
        Remove lesions smaller than this (mm³); 0 (default) keeps every lesion.
    qc
        Extra QC flags for the mask sidecar (e.g. ``{"RegistrationCost": {"T1w": -0.61}}``).
    inference
        How the network ran (:attr:`bids_mdpp.inference.Predictor.settings`: ``Precision``,
        ``TestTimeAugmentation``; or ``NetworkSkipped``, why it did not) and the intensity
        model's entry (``IntensityModel``), recorded as ``Inference`` in both sidecars.
    """
    output_dir = Path(output_dir)
    paths = derivative_paths(output_dir, inputs, preproc.reference)
    prob, ref = _probability(prob_native, Path(preproc.reference_native))
    table = lesion_table(prob >= threshold, ref.affine, min_size_mm3=min_lesion_mm3,
                         connectivity=DEFAULT_CONNECTIVITY)
    common = provenance(inputs, preproc, model_card, model_sha256)
    if inference is not None:
        common["Inference"] = dict(inference)

    xfms = {}
    for moving, source in sorted(preproc.xfms.items()):
        dest = xfm_path(output_dir, inputs, preproc.reference, moving)
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
        xfms[moving] = dest

    save_image(_like(prob, ref), paths["probseg"])
    write_json({"Description": "Lesion probability (0-1) fused over three slice orientations.",
                **common}, paths["probseg_json"])
    write_text(_stats_tsv(table), paths["stats"])
    write_json(STATS_DICTIONARY, paths["stats_json"])
    save_image(_like(table.mask, ref), paths["mask"])
    summary = {
        "Type": "Lesion",
        "Description": "Binary lesion mask: probability >= Threshold, lesions smaller than "
                       "MinimumLesionSize removed.",
        **common,
        "Threshold": float(threshold),
        "MinimumLesionSize": float(min_lesion_mm3),
        "Connectivity": table.connectivity,
        "LesionCount": table.count,
        "TotalLesionVolume": round(table.total_volume_mm3, 3),
        "QC": {"EmptyMask": table.count == 0, **dict(qc or {})},
    }
    write_json(summary, paths["mask_json"])
    LOGGER.info("%s: %d lesions, %.1f mm³ → %s", inputs.key, table.count,
                table.total_volume_mm3, paths["mask"].name)
    return SessionOutputs(paths=paths, xfms=xfms, summary=summary, lesions=table)
