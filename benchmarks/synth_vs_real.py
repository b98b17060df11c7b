"""Intensities of normal bright anatomy and lesions on real scans, as the model sees them.

For every session (``mslub-cross`` sub-26 with its consensus lesion mask; the two raw
sessions of ``mslub-long`` sub-01, which have no lesion mask; optionally every session of a
synthetic dataset with ``--synthetic DIR``):

1. the participant level's own preprocessing (:func:`bids_mdpp.workflows.preproc.run_preprocessing`,
   cached in ``--work``): N4, co-registration to FLAIR, 1 mm grid, brain mask, white-matter
   peak normalisation;
2. tissue classes from the normalised T1w (:func:`bids_mdpp.synth.ratios.split_tissues`,
   lesions left out) and an affine fit of the generator's own template (nilearn's MNI152
   2009a, :func:`bids_mdpp.preproc.templatefit.fit_brain_to_template`) that carries the
   template's lateral ventricles over; the subject's lateral ventricles are its CSF inside
   them (dilated by 3 mm);
3. the hard-negative regions of :func:`bids_mdpp.synth.regions.find_regions`, computed on the
   subject's grid with template coordinates, and the measurement masks of
   :func:`bids_mdpp.synth.ratios.measurement_masks` (lesions, dilated by a voxel, left out of
   all but their own);
4. per contrast and mask the 10th, 25th, 50th, 75th and 90th percentiles of the normalised
   intensity divided by the white-matter median (WM = 1).

Writes ``benchmarks/results/synth_vs_real.json`` (``sessions``: every number; ``real_range``:
per contrast and mask the lowest and highest median over the real sessions, masks of at
least :data:`MIN_VOXELS` voxels; the same for ``--synthetic`` sessions) and prints a Markdown
table of the medians.  Usage::

    python benchmarks/synth_vs_real.py [--work DIR] [--synthetic DIR] [--output JSON]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[1] / "shared" / "data"
RESULTS = HERE / "results" / "synth_vs_real.json"
#: The subject's lateral ventricles: its CSF within this distance of the template's (voxels).
VENTRICLE_DILATION_VOXELS = 3
#: A lateral ventricle component holds at least this much CSF (mm³).
MIN_VENTRICLE_MM3 = 500.0
#: Masks with fewer voxels are left out of the ranges and the table (too few to describe).
MIN_VOXELS = 100
#: Masks and contrasts of the printed table.
TABLE_MASKS = ("GM_cortex", "GM_deep", "GM_cingulate", "GM_insula", "CSF_lateral", "caps",
               "bands", "septum", "choroid", "CSF_inflow", "lesion")


def real_sessions() -> list[tuple[object, Path | None, str]]:
    """``(SessionInputs, lesion mask or None, dataset)`` of the real scans at hand."""
    from bids_mdpp.session import SessionInputs

    cross = SHARED_DATA / "mslub-cross"
    anat = cross / "sub-26" / "anat"
    out = [(SessionInputs("26", None, {
        "T1w": anat / "sub-26_T1w.nii.gz", "ceT1w": anat / "sub-26_ce-gadolinium_T1w.nii.gz",
        "T2w": anat / "sub-26_T2w.nii.gz", "FLAIR": anat / "sub-26_FLAIR.nii.gz"}),
        cross / "derivatives/manual/sub-26/anat/sub-26_label-lesion_mask.nii.gz", "mslub-cross")]
    for session in ("1", "2"):
        folder = SHARED_DATA / "mslub-long" / "sub-01" / f"ses-{session}" / "anat"
        out.append((SessionInputs("01", session, {
            c: folder / f"sub-01_ses-{session}_{c}.nii.gz" for c in ("T1w", "T2w", "FLAIR")}),
            None, "mslub-long"))
    return out


def synthetic_sessions(root: Path) -> list[tuple[object, Path | None, str]]:
    """Every session with a T1w of a dataset written by ``bids_mdpp synth``."""
    from bids_mdpp.session import SessionInputs

    manifest = json.loads((root / "manifest.json").read_text())
    out = []
    for label, subject in manifest["subjects"].items():
        for session in subject["sessions"]:
            if "T1w" not in session["files"]:
                continue
            files = {c: root / f for c, f in session["files"].items()}
            out.append((SessionInputs(label, session["session"], files), root / session["mask"],
                        f"synthetic ({subject['spec']['kind']})"))
    return out


def measure(inputs, lesion_path: Path | None, work: Path) -> dict:
    """Preprocess one session and measure its regions (see the module docstring)."""
    import SimpleITK as sitk

    from bids_mdpp.preproc.grid import resample_to_target
    from bids_mdpp.preproc.register import affine_matrix
    from bids_mdpp.preproc.templatefit import fit_brain_to_template
    from bids_mdpp.synth.anatomy import load_template
    from bids_mdpp.synth.geometry import Grid, resample, to_sitk
    from bids_mdpp.synth.ratios import measurement_masks, region_statistics, split_tissues
    from bids_mdpp.synth.regions import find_regions, template_regions
    from bids_mdpp.templates import nilearn_files
    from bids_mdpp.workflows.preproc import run_preprocessing

    start = time.perf_counter()
    result = run_preprocessing(inputs, work / inputs.key)
    grid_img = nib.load(str(result.brain_mask))
    brain = np.asarray(grid_img.dataobj) > 0
    images = {c: (np.asarray(nib.load(str(p)).dataobj, np.float32) + 1.0) * 2.0
              for c, p in result.images.items()}
    lesion = None
    if lesion_path is not None:
        native = nib.load(str(lesion_path))
        lesion = np.asarray(resample_to_target(np.asarray(native.dataobj) > 0, native, grid_img,
                                               order=0).dataobj) > 0
    t1 = images["T1w"]
    tissues = split_tissues(t1, brain, lesion)
    csf_level, gm_level = (float(np.median(t1[tissues[k]])) for k in ("CSF", "GM"))
    csf = brain & (t1 < (csf_level + gm_level) / 2)
    wm = brain & ~csf & ~tissues["GM"]
    t1_tpl, mask_tpl = nilearn_files(1, work / "template")
    reference = nib.load(str(result.images[result.reference]))
    to_subject = fit_brain_to_template(reference, grid_img, t1_tpl, mask_tpl, name=inputs.key)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    to_template = flip @ np.linalg.inv(affine_matrix(to_subject)) @ flip  # RAS, subject → template
    template = load_template(1.0)
    grid = Grid(tuple(brain.shape), grid_img.affine)
    lateral_tpl = template_regions(template).lateral.astype(np.float32)
    warped = resample(to_sitk(lateral_tpl, template.grid), grid, to_subject.GetInverse()) > 0.3
    lateral = csf & ndimage.binary_dilation(warped, iterations=VENTRICLE_DILATION_VOXELS)
    labels, n = ndimage.label(lateral)
    if n:
        sizes = ndimage.sum_labels(np.ones(labels.shape), labels, np.arange(1, n + 1))
        keep = np.arange(1, n + 1)[sizes * float(np.prod(grid.zooms)) >= MIN_VENTRICLE_MM3]
        lateral = np.isin(labels, keep)
    regions = find_regions(tissues["GM"].astype(np.float32), wm.astype(np.float32),
                           csf.astype(np.float32), brain.astype(np.float32), lateral, grid,
                           to_template)
    masks = measurement_masks(regions, tissues, t1, lesion)
    voxel_ml = float(np.prod(grid.zooms)) / 1000.0
    return {
        "session": inputs.key,
        "contrasts": list(result.images),
        "template_scale": round(float(abs(np.linalg.det(to_template[:3, :3]))) ** (-1 / 3), 3),
        "volumes_ml": {name: round(float(m.sum()) * voxel_ml, 2) for name, m in masks.items()},
        "lateral_ventricles_ml": round(float(lateral.sum()) * voxel_ml, 2),
        "statistics": region_statistics(images, masks),
        "seconds": round(time.perf_counter() - start, 1),
    }


def real_range(sessions: list[dict]) -> dict:
    """Per contrast and mask: the lowest and highest median over ``sessions`` (masks of at
    least :data:`MIN_VOXELS` voxels)."""
    out: dict = {}
    for session in sessions:
        for contrast, masks in session["statistics"].items():
            for name, entry in masks.items():
                if entry["n"] < MIN_VOXELS:
                    continue
                lo, hi = out.setdefault(contrast, {}).get(name, (np.inf, -np.inf))
                out[contrast][name] = (min(lo, entry["p50"]), max(hi, entry["p50"]))
    return {c: {k: [round(v[0], 3), round(v[1], 3)] for k, v in m.items()} for c, m in out.items()}


def markdown(sessions: list[dict]) -> str:
    """One row per session and contrast: the median of every mask (WM = 1; – for fewer than
    :data:`MIN_VOXELS` voxels)."""
    lines = ["| session | contrast | " + " | ".join(TABLE_MASKS) + " |",
             "|---|---|" + "---|" * len(TABLE_MASKS)]
    for session in sessions:
        for contrast, masks in session["statistics"].items():
            cells = [f"{masks[m]['p50']:.2f}" if masks.get(m, {}).get("n", 0) >= MIN_VOXELS
                     else "–" for m in TABLE_MASKS]
            lines.append(f"| {session['session']} | {contrast} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None,
                        help="preprocessing cache (default: a temporary folder)")
    parser.add_argument("--synthetic", type=Path, default=None,
                        help="also measure every session with a T1w of this synthetic dataset")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="synth_vs_real_"))
    real = [dict(measure(i, m, work), dataset=d) for i, m, d in real_sessions()]
    synthetic = []
    if args.synthetic is not None:
        synthetic = [dict(measure(i, m, work / "synthetic"), dataset=d)
                     for i, m, d in synthetic_sessions(args.synthetic)]
    report = {
        "what": "normalised intensity / WM median per region (benchmarks/synth_vs_real.py)",
        "sessions": real,
        "real_range": real_range(real),
        "synthetic_sessions": synthetic,
        "synthetic_range": real_range(synthetic) if synthetic else {},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(real + synthetic))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
