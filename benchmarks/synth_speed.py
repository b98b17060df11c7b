"""Seconds per synthetic subject and peak memory, with and without hard negatives and load classes.

Each configuration writes ``--n`` subjects (seed ``--seed``, one process, 1 mm scale) in a
fresh Python process of its own, so that the template and region caches are built inside the
measured time, as in a real ``bids_mdpp synth`` run:

- ``plain``: ``--load-mix typical=1 --no-hard-negatives``, which draws and renders exactly
  what the generator made before load classes and hard negatives existed;
- ``default``: the default load mix and hard negatives;
- with ``--before SRC``, ``before``: the package found in the folder ``SRC`` (an older
  checkout's root, put first on ``PYTHONPATH``), with its own defaults.

Writes ``benchmarks/results/synth_speed.json``: per configuration the wall time, seconds per
subject, peak resident memory (MB) of the process, and the 1-minute load average before and
after (the machine is shared).  Usage::

    python benchmarks/synth_speed.py [--n 6] [--seed 1] [--before SRC] [--output JSON]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "synth_speed.json"

#: What the child process runs: write the dataset, report seconds and peak memory as JSON.
CHILD = """
import inspect, json, resource, sys, time
from bids_mdpp.synth.dataset import write_dataset
from bids_mdpp.synth.subject import SynthOptions
out, n, seed, config = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
kwargs = {}
if config == "plain":
    kwargs = {"load_mix": {"typical": 1.0}, "hard_negatives": False}
known = inspect.signature(SynthOptions).parameters
start = time.perf_counter()
manifest = write_dataset(out, n, seed, SynthOptions(**{k: v for k, v in kwargs.items() if k in known}))
seconds = time.perf_counter() - start
sessions = [s for subject in manifest["subjects"].values() for s in subject["sessions"]]
print(json.dumps({
    "seconds": round(seconds, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    "sessions": len(sessions),
    "load_classes": [s.get("lesion_load", "typical") for s in sessions],
    "lesion_volumes_mm3": [s["lesion_volume_mm3"] for s in sessions],
    "module": inspect.getfile(SynthOptions),
}))
"""


def run(config: str, n: int, seed: int, pythonpath: Path | None) -> dict:
    """Time one configuration in a child process."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env.get("PYTHONPATH", "")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        # run from the temporary folder: with -c the working directory comes first on sys.path
        done = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "ds"), str(n),
                               str(seed), config], env=env, cwd=tmp, capture_output=True,
                              text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{config}: the generator failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(config=config, subjects=n,
                  seconds_per_subject=round(result["seconds"] / n, 1),
                  load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6, help="subjects per configuration")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--before", type=Path, default=None,
                        help="root of an older checkout to time as 'before'")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    configs = [("plain", None), ("default", None)]
    if args.before is not None:
        configs.insert(0, ("before", args.before.resolve()))
    results = []
    for config, path in configs:
        results.append(run(config, args.n, args.seed, path))
        print(json.dumps(results[-1]), flush=True)
    report = {"what": "bids_mdpp synth: seconds per subject (1 process, scale 1)",
              "cpu_count": os.cpu_count(), "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
