"""Preprocessing wall time and peak memory per participant, with quality checks.

Runs :func:`bids_mdpp.workflows.preproc.run_preprocessing` from an empty work directory on

* ``mslub-cross`` sub-26: T1w, ce-T1w, T2w, FLAIR, already skull-stripped, 1 mm;
* ``mslub-long`` sub-01 ses-1 and ses-2: raw T1w, T2w, FLAIR (2D, 3–4 mm slices, skull on)
  — the only raw scans at hand have three contrasts;

each with MultiProc (2 processes, 1 SimpleITK thread each) and with Linear (2 SimpleITK
threads).  It records the wall time, the peak resident memory of the whole process tree
(sampled every 0.1 s from /proc), the time of every node, the 1-minute load average, and
checks: for raw scans the registration error against the database's transforms (mean
displacement over the FLAIR foreground, mm) and the brain-mask volume (ml); for the stripped
case the fraction of non-zero voxels inside the mask brought back to native space.

Writes ``benchmarks/results/preprocessing.json``.  Targets: ≤ 90 s and ≤ 3 GB per
participant on 2 cores.  Usage: ``python benchmarks/preprocessing.py [--quick]`` (``--quick``:
MultiProc only, mslub-long ses-1 and mslub-cross).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[1] / "shared" / "data"
RESULTS = HERE / "results" / "preprocessing.json"


class TreeMemory:
    """Peak resident memory (MB) of this process and all its descendants, sampled."""

    def __init__(self, interval_s: float = 0.1):
        self.interval_s, self.peak_mb = interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(os.getpid()))
            time.sleep(self.interval_s)


def tree_rss_mb(root: int) -> float:
    """Current resident memory (MB) of ``root`` and its descendants."""
    parents, rss = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in tree) / 2**20


def node_seconds(work_dir: Path) -> dict[str, float]:
    """Run time (s) of every node, read from Nipype's result files."""
    from nipype.utils.filemanip import loadpkl

    times = {}
    for path in sorted((work_dir / "preproc_wf").rglob("result_*.pklz")):
        result = loadpkl(path)
        duration = getattr(getattr(result, "runtime", None), "duration", None)
        if duration is not None:
            times[path.parent.relative_to(work_dir / "preproc_wf").as_posix()] = round(duration, 2)
    return times


def cases(quick: bool):
    from bids_mdpp.session import SessionInputs

    cross = SHARED_DATA / "mslub-cross" / "sub-26" / "anat"
    yield "mslub-cross sub-26 (stripped, 4 contrasts)", SessionInputs("26", None, {
        "T1w": cross / "sub-26_T1w.nii.gz", "FLAIR": cross / "sub-26_FLAIR.nii.gz",
        "T2w": cross / "sub-26_T2w.nii.gz", "ceT1w": cross / "sub-26_ce-gadolinium_T1w.nii.gz"})
    for session in ("1",) if quick else ("1", "2"):
        anat = SHARED_DATA / "mslub-long" / "sub-01" / f"ses-{session}" / "anat"
        yield f"mslub-long sub-01 ses-{session} (raw, 3 contrasts)", SessionInputs(
            "01", session, {c: anat / f"sub-01_ses-{session}_{c}.nii.gz"
                            for c in ("T1w", "FLAIR", "T2w")})


def quality(inputs, result) -> dict:
    """Registration error (raw scans with database transforms) or stripped-mask coverage."""
    from bids_mdpp.preproc.bias import foreground_mask
    from bids_mdpp.preproc.register import mean_displacement, read_transform
    from bids_mdpp.preproc.sitkio import RAS_TO_LPS, nib_to_sitk
    from bids_mdpp.workflows.preproc import grid_image, to_native

    grid = grid_image(result)
    brain = np.asarray(grid.dataobj) > 0
    out = {"brain_mask_ml": round(float(brain.sum() * np.prod(grid.header.get_zooms()[:3]) / 1000), 1)}
    reference = nib.load(result.reference_native)
    if inputs.session is None:
        nonzero = np.asarray(reference.dataobj) != 0
        back = np.asarray(to_native(np.asarray(grid.dataobj), result, order=0).dataobj) > 0
        out["nonzero_voxels_kept"] = round(float((back & nonzero).sum() / nonzero.sum()), 5)
        return out
    import SimpleITK as sitk

    foreground = sitk.GetArrayFromImage(foreground_mask(nib_to_sitk(reference))).transpose(2, 1, 0)
    points = nib.affines.apply_affine(reference.affine, np.argwhere(foreground > 0)) @ RAS_TO_LPS.T
    database = (SHARED_DATA / "mslub-long" / "derivatives" / "reference-xfm" / "sub-01"
                / f"ses-{inputs.session}" / "anat")
    for contrast, path in result.xfms.items():
        theirs = read_transform(database / f"sub-01_ses-{inputs.session}_from-{contrast}_to-FLAIR"
                                           f"_mode-image_xfm.txt")
        out[f"registration_error_mm_{contrast}"] = round(
            mean_displacement(read_transform(path), theirs, points), 3)
    return out


def run_case(inputs, plugin: str) -> dict:
    from bids_mdpp.workflows.preproc import run_preprocessing

    threads = 1 if plugin == "MultiProc" else 2
    args = {"n_procs": 2} if plugin == "MultiProc" else None
    with tempfile.TemporaryDirectory(prefix="bids_mdpp_bench_") as tmp:
        work = Path(tmp) / "work"
        with TreeMemory() as memory:
            start = time.perf_counter()
            result = run_preprocessing(inputs, work, grid_mm=1.0, plugin=plugin, plugin_args=args,
                                       omp_nthreads=threads)
            seconds = time.perf_counter() - start
        load = os.getloadavg()[0]
        start = time.perf_counter()
        run_preprocessing(inputs, work, grid_mm=1.0, plugin=plugin, plugin_args=args,
                          omp_nthreads=threads)
        cached = time.perf_counter() - start
        return {"plugin": plugin, "omp_nthreads": threads, "seconds": round(seconds, 1),
                "peak_rss_mb": round(memory.peak_mb), "rerun_cached_seconds": round(cached, 2),
                "load_average_1min": round(load, 2), "grid_shape": list(nib.load(result.brain_mask).shape),
                **quality(inputs, result), "node_seconds": node_seconds(work)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MultiProc only, two cases")
    args = parser.parse_args()
    if not SHARED_DATA.is_dir():
        raise SystemExit(f"{SHARED_DATA} is not available: nothing to measure")
    from nipype import config, logging as nipype_logging

    config.update_config({"logging": {"workflow_level": "WARNING"}})
    nipype_logging.update_logging(config)
    runs = {}
    for label, inputs in cases(args.quick):
        for plugin in ("MultiProc",) if args.quick else ("MultiProc", "Linear"):
            runs[f"{label} / {plugin}"] = run_case(inputs, plugin)
            print(f"{label} / {plugin}: {runs[f'{label} / {plugin}']['seconds']} s, "
                  f"{runs[f'{label} / {plugin}']['peak_rss_mb']} MB", flush=True)
    report = {"targets": {"seconds": 90, "peak_rss_mb": 3072}, "cores": os.cpu_count(),
              "quick": args.quick, "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
