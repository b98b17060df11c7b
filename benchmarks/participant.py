"""A whole participant, as a user runs it: the README demo's command, timed stage by stage.

Runs ``bids_mdpp SAMPLE OUT participant`` (the console script, so the tuned allocator and every
product default apply) on the bundled sample participant (mslub-cross sub-26: T1w, ce-T1w, T2w,
FLAIR at 1 mm) with the shipped model, in a fresh output and work directory, and writes
``benchmarks/results/participant.json``: wall seconds, the peak RSS of the largest process
(``ru_maxrss`` of the children), the seconds of each stage read from the run's log (validation
and discovery, preprocessing, inference, outputs on the native grid, report) and the 1-minute
load average.

Usage: ``python benchmarks/participant.py [--nprocs N] [--omp-nthreads N] [--repeat 2]``
(without ``--omp-nthreads`` the product's default applies).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "bids_mdpp" / "data" / "sample"
RESULTS = HERE / "results" / "participant.json"
#: Log messages that open each stage (the first message of the stage that follows closes it).
STAGES = (("start", "bids_mdpp "), ("preprocessing", ": preprocessing "),
          ("inference", ": segmenting "), ("intensity_model", ": segmented in "),
          ("outputs", ": writing outputs"), ("report", ": outputs written in "),
          ("end", "Finished: "))
LABELS = {"start": "validation_discovery_model", "preprocessing": "preprocessing",
          "inference": "inference", "intensity_model": "intensity_model",
          "outputs": "outputs_native_grid_masks_tables", "report": "report_and_rest"}


def stage_seconds(log: Path) -> dict[str, float]:
    """Seconds between the messages of :data:`STAGES` in a run's log file."""
    times: dict[str, dt.datetime] = {}
    for line in log.read_text().splitlines():
        for name, marker in STAGES:
            if name not in times and marker in line:
                times[name] = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    names = [name for name, _ in STAGES if name in times]
    return {LABELS[a]: round((times[b] - times[a]).total_seconds(), 2)
            for a, b in zip(names, names[1:])}


PEAK_OF_CHILDREN = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def run_once(args, scratch: Path) -> dict:
    out, work = scratch / "out", scratch / "work"
    command = [str(Path(sys.executable).with_name("bids_mdpp")), str(args.sample), str(out),
               "participant", "-w", str(work), "--nprocs", str(args.nprocs)]
    if args.omp_nthreads:
        command += ["--omp-nthreads", str(args.omp_nthreads)]
    if not Path(command[0]).exists():
        command[:1] = [sys.executable, "-m", "bids_mdpp"]
    start = time.perf_counter()
    # a fresh parent per run, so that ru_maxrss of its children is this run's alone
    measured = subprocess.run([sys.executable, "-c", PEAK_OF_CHILDREN, *command], check=True,
                              capture_output=True, text=True)
    seconds = time.perf_counter() - start
    logs = sorted((out / "logs").glob("*.log"))
    run = {"seconds": round(seconds, 1),
           "peak_rss_mb": round(int(measured.stdout.split()[-1]) / 1024),
           "stages": stage_seconds(logs[-1]) if logs else {},
           "load_average_1min": round(os.getloadavg()[0], 2)}
    shutil.rmtree(out)
    shutil.rmtree(work)
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--nprocs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--omp-nthreads", type=int, help="default: the product's default")
    parser.add_argument("--repeat", type=int, default=1, help="independent runs (fresh directories)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bids_mdpp-bench-") as scratch:
            runs.append(run_once(args, Path(scratch)))
            print(json.dumps(runs[-1]), flush=True)
    import torch

    from bids_mdpp import __version__

    result = {"sample": str(args.sample), "nprocs": args.nprocs, "omp_nthreads": args.omp_nthreads,
              "cores": len(os.sched_getaffinity(0)), "bids_mdpp": __version__,
              "torch": torch.__version__, "targets": {"seconds": 60, "peak_rss_mb": 4096},
              "runs": runs}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
