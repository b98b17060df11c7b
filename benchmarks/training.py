"""Training speed: slices/s and peak memory per mode, and the naive loop against the product's.

Each measurement runs in its own process (so that peak memory and the allocator setting are
its own) on the same synthetic data made here: random smooth volumes with blob lesions,
cached as the training pipeline caches real sessions.  Measured:

* every mode on the product's path — precision ``auto`` (bf16 autocast where the CPU has it),
  the tuned allocator of :mod:`bids_mdpp.allocator`, batch 16, 128 × 128 crops;
* the naive loop — the same ``moddrop++`` step in fp32, glibc's default allocator, batch 16,
  no DataLoader workers;
* the product's path with one DataLoader worker.

The machine may be shared: each result records the 1-minute load average after it (above
the number of threads, other processes slowed it down).

Usage: ``python benchmarks/training.py [--quick] [--out benchmarks/results/training.json]``.
``--quick`` uses the small network, 64 × 64 crops and fewer steps.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONTRASTS = ("T1w", "FLAIR", "T2w", "PDw", "ceT1w")
MODES = ("moddrop", "moddrop+", "moddrop++", "independent")


def make_caches(root: Path, n_subjects: int, shape: tuple[int, int, int], seed: int = 0) -> None:
    """Synthetic subjects: smooth random volumes in a spherical brain with blob lesions."""
    from scipy import ndimage

    from bids_mdpp.training.slabs import write_subject_cache

    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.asarray(shape, np.float32)[:, None, None, None] - 1) / 2
    for s in range(n_subjects):
        brain = np.sqrt((((grid - centre) / (0.45 * centre.max())) ** 2).sum(0)) < 1
        lesion = np.zeros(shape, bool)
        for _ in range(12):
            point = rng.uniform(0.3, 0.7, 3) * np.asarray(shape)
            lesion |= np.sqrt(((grid - point[:, None, None, None]) ** 2).sum(0)) < rng.uniform(2, 5)
        lesion &= brain
        volumes = {}
        for k, contrast in enumerate(CONTRASTS):
            texture = ndimage.gaussian_filter(rng.standard_normal(shape), 2) * 0.5
            v = np.where(brain, -0.5 + 0.1 * texture, -1.0)
            v[lesion] += (-0.2, 0.8, 0.6, 0.3, 0.4)[k]
            volumes[contrast] = v.astype(np.float32)
        write_subject_cache(root / f"sub-{s}", key=f"sub-{s}", subject=str(s), volumes=volumes,
                            label=lesion, brain=brain, contrasts=CONTRASTS)


def worker(spec: dict) -> dict:
    """Time ``spec["steps"]`` training steps after ``spec["warmup"]`` (run in a subprocess)."""
    import torch

    from bids_mdpp.training import NETWORK_SIZES, TrainingConfig
    from bids_mdpp.training.distributed import init_distributed
    from bids_mdpp.training.slabs import open_subject_cache
    from bids_mdpp.training.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    root = Path(spec["caches"])
    caches = [open_subject_cache(p) for p in sorted(root.glob("sub-*"))]
    contrasts = ("T1w", "FLAIR") if spec["mode"] == "independent" else CONTRASTS
    steps = spec["warmup"] + spec["steps"]
    config = TrainingConfig(
        bids_dir=root, output_dir=root / "out", labels_dir=root, contrasts=contrasts,
        mode=spec["mode"], epochs=1, batch_size=spec["batch_size"], crop=spec["crop"],
        steps_per_epoch=steps, precision=spec["precision"], num_workers=spec["workers"],
        network=NETWORK_SIZES[spec["network"]], seed=0,
    )
    trainer = Trainer(config, contrasts, caches, [], ctx=init_distributed(torch.device("cpu")))
    trainer.model.train()
    times = []
    start = time.perf_counter()
    for batch in trainer.loader:  # loading time counts: it is part of the loop
        trainer.train_step(batch)
        now = time.perf_counter()
        times.append(now - start)
        start = now
    measured = times[spec["warmup"]:]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "mode": spec["mode"], "precision_used": trainer.precision,
        "allocator": os.environ.get("BIDS_MDPP_ALLOCATOR", "glibc default"),
        "workers": spec["workers"], "batch_size": spec["batch_size"], "crop": spec["crop"],
        "network": spec["network"], "steps_timed": len(measured),
        "seconds_per_step": float(np.median(measured)),
        "slices_per_s": spec["batch_size"] / float(np.median(measured)),
        "peak_rss_mb": round(own, 1), "peak_rss_worker_mb": round(children, 1),
        "load_average_1min_after": os.getloadavg()[0],
    }


def run_worker(spec: dict, env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small network, fewer steps")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "training.json")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    from bids_mdpp.allocator import MARKER, tuned_environment

    base = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_CONF", MARKER)}
    naive_env = {**base, MARKER: "system"}
    product_env = tuned_environment(base) or dict(base)
    common = {"batch_size": 16, "threads": args.threads,
              "crop": 64 if args.quick else 128, "network": "small" if args.quick else "default",
              "warmup": 1, "steps": 2 if args.quick else 3}
    results: dict = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
                    "load_average_at_start": os.getloadavg()},
        "settings": {**common, "quick": args.quick, "data": "3 synthetic subjects, 5 contrasts"},
    }
    with tempfile.TemporaryDirectory(prefix="bids_mdpp_bench_") as tmp:
        make_caches(Path(tmp), 3, (64, 72, 64) if args.quick else (112, 128, 112))
        product = {}
        for mode in MODES:
            spec = {**common, "mode": mode, "precision": "auto", "workers": 0, "caches": tmp}
            product[mode] = run_worker(spec, product_env)
            print(f"{mode:12s} product: {product[mode]['slices_per_s']:.2f} slices/s, "
                  f"{product[mode]['peak_rss_mb']:.0f} MB", flush=True)
        spec = {**common, "mode": "moddrop++", "precision": "auto", "workers": 1, "caches": tmp}
        with_worker = run_worker(spec, product_env)
        spec = {**common, "mode": "moddrop++", "precision": "fp32", "workers": 0, "caches": tmp}
        naive = run_worker(spec, naive_env)
        print(f"moddrop++    naive:   {naive['slices_per_s']:.2f} slices/s, "
              f"{naive['peak_rss_mb']:.0f} MB", flush=True)
    results["product_per_mode"] = product
    results["product_moddrop++_one_worker"] = with_worker
    results["naive_moddrop++"] = naive
    results["speedup_product_vs_naive_moddrop++"] = (
        product["moddrop++"]["slices_per_s"] / naive["slices_per_s"])
    results["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"speed-up {results['speedup_product_vs_naive_moddrop++']:.1f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
