"""Benchmark of bids_mdpp synth: time per full-size subject (all 5 contrasts) per kind,
and tissue ratios of synthetic clean subjects vs the real mslub-cross patient. Writes JSON."""
import dataclasses, json, os, sys, tempfile, time
from pathlib import Path
import nibabel as nib, numpy as np
from scipy import ndimage
from bids_mdpp.contrasts import CONTRASTS
from bids_mdpp.synth.acquisition import draw_acquisition_params
from bids_mdpp.synth.contrasts import draw_contrast_params
from bids_mdpp.synth.dataset import _write_session
from bids_mdpp.synth.ratios import intensity_ratios
from bids_mdpp.synth.subject import SynthOptions, draw_subject, render_session

def all_contrasts(spec, seed):
    rng = np.random.default_rng(seed)
    s = spec.sessions[0]
    clean = spec.kind == "clean"
    s = dataclasses.replace(s, contrasts=CONTRASTS,
        contrast_params={c: draw_contrast_params(c, rng) for c in CONTRASTS},
        acquisitions={c: draw_acquisition_params(rng, clean, 3.0) for c in CONTRASTS})
    return dataclasses.replace(spec, sessions=(s,))

out = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()}}
n_rep = int(sys.argv[2]) if len(sys.argv) > 2 else 2
t0 = time.time(); c0 = time.process_time()
from bids_mdpp.synth.anatomy import load_template
from bids_mdpp.synth.lesions import lesion_sites
from bids_mdpp.synth.head import hull_distance
T = load_template(1.0); lesion_sites(T); hull_distance(T)
out["warm_up_s"] = {"wall": round(time.time() - t0, 2), "cpu": round(time.process_time() - c0, 2)}
timing = {}
with tempfile.TemporaryDirectory() as tmp:
    for kind, opts in [("clean", SynthOptions(clean_fraction=1, sessions_fraction=0)),
                       ("raw", SynthOptions(clean_fraction=0, skull_fraction=1, sessions_fraction=0)),
                       ("raw-stripped", SynthOptions(clean_fraction=0, skull_fraction=0, sessions_fraction=0))]:
        rows = []
        for i in range(n_rep):
            spec = all_contrasts(draw_subject(i, 100, opts), i)
            t = time.time(); c = time.process_time()
            rendered = render_session(spec, spec.sessions[0])
            t_render = time.time() - t
            _write_session(Path(tmp), spec, spec.sessions[0], rendered)
            rows.append({"wall": round(time.time() - t, 2), "cpu": round(time.process_time() - c, 2),
                         "render_wall": round(t_render, 2)})
        timing[kind] = rows
out["seconds_per_subject_5_contrasts"] = timing
# ratios
base = Path("/work/shared/data/mslub-cross")
les = np.asanyarray(nib.load(base / "derivatives/manual/sub-26/anat/sub-26_label-lesion_mask.nii.gz").dataobj) > 0
names = {"T1w": "T1w", "ceT1w": "ce-gadolinium_T1w", "T2w": "T2w", "FLAIR": "FLAIR"}
imgs = {c: nib.load(base / f"sub-26/anat/sub-26_{n}.nii.gz").get_fdata() for c, n in names.items()}
brain = ndimage.binary_erosion(ndimage.binary_fill_holes(imgs["T1w"] > 5), iterations=2)
out["ratios_real_sub-26"] = intensity_ratios(imgs, imgs["T1w"], brain, les)
n_ratio = int(sys.argv[3]) if len(sys.argv) > 3 else 10
rows = {c: [] for c in CONTRASTS}
opts = SynthOptions(clean_fraction=1, sessions_fraction=0)
for i in range(n_ratio):
    spec = all_contrasts(draw_subject(i, 200, opts), 1000 + i)
    r = render_session(spec, spec.sessions[0])
    ims = {c: np.asanyarray(im.dataobj).astype(float) for c, im in r.images.items()}
    lesion = np.asanyarray(r.mask.dataobj) > 0
    b = ndimage.binary_erosion(ims["T1w"] > 0, iterations=2)
    for c, v in intensity_ratios(ims, ims["T1w"], b, lesion).items():
        rows[c].append(v)
out["ratios_synthetic_clean"] = {c: {k: {"median": round(float(np.median([x[k] for x in v])), 3),
                                         "p5": round(float(np.percentile([x[k] for x in v], 5)), 3),
                                         "p95": round(float(np.percentile([x[k] for x in v], 95)), 3)}
                                     for k in v[0]} for c, v in rows.items()}
out["n_ratio_subjects"] = n_ratio
out["machine"]["load_after"] = os.getloadavg()
Path(sys.argv[1]).write_text(json.dumps(out, indent=2))
print(json.dumps(out, indent=1))
