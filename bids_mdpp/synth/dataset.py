"""Write a synthetic BIDS dataset with reference lesion masks in ``derivatives/lesions``.

Layout (``sessions_fraction`` > 0 gives every subject a ``ses-1`` folder and some a
``ses-2``)::

    OUT_DIR/
      dataset_description.json  README  participants.tsv  participants.json
      .bidsignore  manifest.json            (every drawn parameter, per subject)
      sub-s001/[ses-1/]anat/sub-s001[_ses-1]_{T1w,ce-gadolinium_T1w,T2w,FLAIR,PDw}.nii.gz/.json
      derivatives/lesions/dataset_description.json
      derivatives/lesions/sub-s001/[ses-1/]anat/sub-s001[_ses-1]_label-lesion_mask.nii.gz/.json

The mask lies on the grid of the session's FLAIR, or of the reference contrast chosen by
:func:`bids_mdpp.contrasts.choose_reference` when there is no FLAIR.  Subjects are drawn
from ``(seed, index)`` and rendered in worker processes; the result does not depend on
the number of processes.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from bids_mdpp import __version__
from bids_mdpp.errors import OutputError, UsageError
from bids_mdpp.imageio import save_image, write_json, write_text
from bids_mdpp.synth.subject import (
    RenderedSession,
    SessionSpec,
    SubjectSpec,
    SynthOptions,
    draw_subject,
    render_session,
)

#: ``GeneratedBy`` name that marks a dataset this module wrote (and may overwrite).
GENERATOR = "bids_mdpp synth"
BIDS_VERSION = "1.9.0"
#: BIDS entities and suffix of each contrast's file name.
FILE_PARTS: dict[str, tuple[str, str]] = {
    "T1w": ("", "T1w"),
    "ceT1w": ("_ce-gadolinium", "T1w"),
    "T2w": ("", "T2w"),
    "FLAIR": ("", "FLAIR"),
    "PDw": ("", "PDw"),
}
LESION_DERIVATIVES = Path("derivatives") / "lesions"

README = """\
Synthetic multiple-sclerosis MRI dataset
=========================================

Written by `bids_mdpp synth` (bids_mdpp {version}) with seed {seed}: {n} subjects.
Every image is synthetic.  Anatomy: the ICBM 2009a symmetric MNI152 template (T1 and
tissue probability maps, as bundled with nilearn), deformed per subject.  Lesions: real
consensus lesion masks of the MSLUB database (Lesjak et al. 2018), recombined and
deformed, plus synthetic ellipsoids in white matter.  Contrasts (T1w, T2w, FLAIR, PDw,
gadolinium-enhanced T1w) are drawn around their physics; images are then acquired on
clinical 2D grids with bias fields and Rician noise ("raw" subjects, with or without a
skull and scalp) or on a shared 1 mm grid, stripped and co-registered ("clean" subjects).

derivatives/lesions holds the reference lesion mask of every session, on the grid of its
FLAIR image (or of the first of T2w, PDw, T1w, ce-T1w present).  manifest.json records
every drawn parameter of every subject.

Please cite:
- Lesjak Z, et al. A Novel Public MR Image Dataset of Multiple Sclerosis Patients With
  Lesion Segmentations Based on Multi-rater Consensus. Neuroinformatics 16:51-63 (2018).
  doi:10.1007/s12021-017-9348-7 (lesion masks, CC-BY).
- Fonov V, et al. Unbiased average age-appropriate atlases for pediatric studies.
  NeuroImage 54(1):313-327 (2011); Fonov V, et al. Unbiased nonlinear average
  age-appropriate brain templates from birth to adulthood. NeuroImage 47:S102 (2009).

MNI ICBM152 template notice: Copyright (C) 1993-2009 Louis Collins, McConnell Brain
Imaging Centre, Montreal Neurological Institute, McGill University.  Permission to use,
copy, modify, and distribute this software and its documentation for any purpose and
without fee is hereby granted, provided that the above copyright notice appear in all
copies.  The authors and McGill University make no representations about the suitability
of this software for any purpose.  It is provided "as is" without express or implied
warranty.
"""

PARTICIPANTS_JSON = {
    "synthesis": {
        "Description": "How the subject's images were made",
        "Levels": {
            "clean": "1 mm, skull-stripped, co-registered, bias-corrected (like preprocessed data)",
            "raw": "clinical 2D acquisitions with skull and scalp, each contrast on its own grid",
            "raw-stripped": "clinical 2D acquisitions, skull-stripped, each contrast on its own grid",
        },
    },
    "n_sessions": {"Description": "Number of sessions"},
    "lesion_load": {
        "Description": "Lesion-load class the subject was drawn from",
        "Levels": {
            "free": "no lesion (empty reference masks)",
            "low": "a few small lesions, at most 1000 mm3 in total",
            "typical": "recombined real lesion masks plus synthetic lesions",
            "high": "confluent periventricular lesions, at least 50000 mm3 in total",
        },
    },
    "lesion_volume_mm3": {
        "Description": "Volume of the first session's reference lesion mask, on its grid",
        "Units": "mm^3",
    },
}


def prepare_output_dir(out_dir: os.PathLike | str, overwrite: bool) -> Path:
    """Create ``out_dir``, or empty it when it holds a dataset this module wrote and ``overwrite``.

    Raises :class:`UsageError` for a non-empty folder without ``overwrite`` or one that holds
    anything else, and :class:`OutputError` when it cannot be created.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out}: the output folder is not empty; pass --overwrite to replace "
                             "a dataset written by bids_mdpp synth")
        if not _written_by_us(out):
            raise UsageError(f"{out}: the output folder is not empty and does not hold a dataset "
                             "written by bids_mdpp synth; refusing to delete its contents")
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    return out


def _written_by_us(folder: Path) -> bool:
    try:
        description = json.loads((folder / "dataset_description.json").read_text())
        return any(g.get("Name") == GENERATOR for g in description.get("GeneratedBy", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def write_dataset(
    out_dir: os.PathLike | str,
    n_subjects: int,
    seed: int,
    options: SynthOptions = SynthOptions(),
    *,
    nprocs: int = 1,
    overwrite: bool = False,
    on_subject_done: Callable[[str], None] | None = None,
) -> dict:
    """Draw and write ``n_subjects`` subjects; returns the manifest (also in ``manifest.json``).

    ``on_subject_done(label)`` is called as each subject is finished (e.g. a progress bar).
    """
    if n_subjects < 1:
        raise UsageError(f"the number of subjects must be at least 1, got {n_subjects}")
    root = prepare_output_dir(out_dir, overwrite)
    specs = [draw_subject(i, seed, options) for i in range(n_subjects)]
    _write_description(root, seed)
    results = _render_all(root, specs, nprocs, on_subject_done or (lambda label: None))
    _write_top_level(root, specs, seed, results)
    manifest = {
        "GeneratedBy": {"Name": GENERATOR, "Version": __version__},
        "seed": seed,
        "n_subjects": n_subjects,
        "options": dataclasses.asdict(options),
        "subjects": {
            spec.label: {"spec": dataclasses.asdict(spec), "sessions": results[spec.label]}
            for spec in specs
        },
    }
    write_json(manifest, root / "manifest.json")
    return manifest


def _render_all(root: Path, specs: list[SubjectSpec], nprocs: int, done) -> dict[str, list[dict]]:
    if nprocs <= 1 or len(specs) == 1:
        results = {}
        for spec in specs:
            results[spec.label] = write_subject(root, spec)
            done(spec.label)
        return results
    threads = max(1, (os.cpu_count() or 1) // nprocs)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(nprocs, mp_context=context, initializer=_limit_threads,
                               initargs=(threads,))
    try:
        futures = {pool.submit(write_subject, root, spec): spec.label for spec in specs}
        results = {}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                results[futures[future]] = future.result()  # re-raises a worker's error
                done(futures[future])
        return results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error, skip what has not started


def _limit_threads(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def write_subject(root: Path, spec: SubjectSpec) -> list[dict]:
    """Render and write every session of ``spec``; returns one summary per session."""
    return [_write_session(root, spec, session, render_session(spec, session))
            for session in spec.sessions]


def _write_session(
    root: Path, spec: SubjectSpec, session: SessionSpec, rendered: RenderedSession
) -> dict:
    folder = Path(f"sub-{spec.label}") / (f"ses-{session.label}" if session.label else "") / "anat"
    prefix = f"sub-{spec.label}" + (f"_ses-{session.label}" if session.label else "")
    files = {}
    for contrast, img in rendered.images.items():
        entities, suffix = FILE_PARTS[contrast]
        relative = folder / f"{prefix}{entities}_{suffix}.nii.gz"
        save_image(img, root / relative)
        write_json(_sidecar(contrast, session, spec.kind), root / _json_path(relative))
        files[contrast] = relative.as_posix()
    mask_relative = folder / f"{prefix}_label-lesion_mask.nii.gz"
    save_image(rendered.mask, root / LESION_DERIVATIVES / mask_relative)
    voxel_mm3 = float(np.prod(rendered.mask.header.get_zooms()[:3]))
    volume = float(np.asarray(rendered.mask.dataobj).sum()) * voxel_mm3
    write_json({
        "Type": "Lesion",
        "Description": "Reference lesion mask of the synthetic subject (1 = lesion)",
        "Sources": [f"bids:raw:{files[rendered.reference]}"],
        "SpatialReference": f"bids:raw:{files[rendered.reference]}",
        "LesionVolume_mm3": round(volume, 1),
        "LesionLoad": session.scene.lesions.load_class,
    }, root / LESION_DERIVATIVES / _json_path(mask_relative))
    lesions = rendered.scene.lesions
    return {
        "session": session.label,
        "contrasts": list(session.contrasts),
        "reference": rendered.reference,
        "files": files,
        "mask": (LESION_DERIVATIVES / mask_relative).as_posix(),
        "lesion_volume_mm3": round(volume, 1),
        "lesion_load": session.scene.lesions.load_class,
        "template_lesions": {
            "count": lesions.n_lesions,
            "volume_mm3": round(lesions.volume_mm3, 1),
            "enhancing": lesions.n_enhancing,
            "ring_enhancing": lesions.n_ring,
            "black_holes": lesions.n_black_holes,
            "ellipsoid_centres_mm": [list(c) for c in lesions.ellipsoid_centres_mm],
        },
    }


def _json_path(nifti: Path) -> Path:
    return nifti.with_name(nifti.name.replace(".nii.gz", ".json"))


def _sidecar(contrast: str, session: SessionSpec, kind: str) -> dict:
    acquisition = session.acquisitions[contrast]
    sidecar = {
        "MagneticFieldStrength": acquisition.field_strength_t,
        "MRAcquisitionType": "3D" if acquisition.clean else "2D",
        "SliceThickness": acquisition.slice_thickness_mm,
    }
    if not acquisition.clean:
        sidecar["SpacingBetweenSlices"] = round(
            acquisition.slice_thickness_mm + acquisition.slice_gap_mm, 3)
    if contrast == "ceT1w":
        sidecar["ContrastBolusIngredient"] = "GADOLINIUM"
    sidecar["SkullStripped"] = kind != "raw"
    return sidecar


def _write_description(root: Path, seed: int) -> None:
    generated_by = [{"Name": GENERATOR, "Version": __version__,
                     "Description": f"synthetic data, seed {seed}"}]
    write_json({
        "Name": f"bids_mdpp synthetic MS dataset (seed {seed})",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC-BY-4.0",
        "GeneratedBy": generated_by,
        "ReferencesAndLinks": [
            "Lesjak et al. Neuroinformatics 16:51-63 (2018). doi:10.1007/s12021-017-9348-7",
            "Fonov et al. NeuroImage 54(1):313-327 (2011). doi:10.1016/j.neuroimage.2010.07.033",
        ],
    }, root / "dataset_description.json")
    write_json({
        "Name": "Reference lesion masks of the synthetic subjects",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": generated_by,
    }, root / LESION_DERIVATIVES / "dataset_description.json")
    write_text("Reference lesion masks (1 = lesion) of the synthetic subjects of the parent "
               "dataset, each on the grid of its session's reference image (see the sidecar's "
               "SpatialReference).\n", root / LESION_DERIVATIVES / "README")


def _write_top_level(root: Path, specs: list[SubjectSpec], seed: int,
                     results: dict[str, list[dict]]) -> None:
    rows = "".join(
        f"sub-{s.label}\t{s.kind}\t{len(s.sessions)}\t{s.sessions[0].scene.lesions.load_class}"
        f"\t{results[s.label][0]['lesion_volume_mm3']}\n" for s in specs)
    write_text("participant_id\tsynthesis\tn_sessions\tlesion_load\tlesion_volume_mm3\n" + rows,
               root / "participants.tsv")
    write_json(PARTICIPANTS_JSON, root / "participants.json")
    write_text(README.format(version=__version__, seed=seed, n=len(specs)), root / "README")
    write_text("manifest.json\n", root / ".bidsignore")
