"""Inference speed and agreement: the plain definition against the product's Predictor.

In one process, on one brain-sized 1 mm input (the real ``mslub-cross`` scans beside the
checkout, crudely normalised, or a synthetic 182×218×182 head when they are absent), runs

* the naive reference (:func:`bids_mdpp.inference.predict_reference`: fp32, batch 1, whole
  slices, no cropping), and
* :class:`bids_mdpp.inference.Predictor` with precision fp32, bf16 and auto,

and writes seconds, slices/s, GFLOP/s achieved, peak RSS and the largest difference of each
fused probability map from the naive one to ``benchmarks/results/inference.json``, with the
1-minute load average after each run (other processes on the machine slow every number).

The network is the shipped default model (FC-DenseNet-57 with the dynamic head, K = 5) unless
``--model DIR``; ``--model random`` uses random weights (conv N(0, 0.06), scales 1) — large
enough that the probabilities spread over [0.1, 0.6] and differences show.

The process re-executes itself once with the tuned memory allocator the product uses
(``bids_mdpp.allocator``), unless ``--allocator system``.

Besides fp32, bf16 and auto, it runs an ablation (every slice on the whole brain box instead of
each batch's own window) and the product's path at other batch sizes (peak memory).

Each product variant is timed ``--repeat`` times (median reported, every time kept: this machine's
speed drifts by 10–20 % within minutes), and the product's path is also timed once in a fresh
process (``predictor_auto_first_call``: what one participant's run pays).

Usage: ``python benchmarks/inference.py [--quick] [--model DIR|random] [--threads N] [--warm-up]
[--repeat N]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[1] / "shared" / "data"
RESULTS = HERE / "results" / "inference.json"
FILES = {"T1w": "sub-26_T1w.nii.gz", "FLAIR": "sub-26_FLAIR.nii.gz", "T2w": "sub-26_T2w.nii.gz",
         "ceT1w": "sub-26_ce-gadolinium_T1w.nii.gz"}


def peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory (MB) since the last :func:`peak_rss_reset`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_input(quick: bool) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Normalised-looking volumes (background −1, tissue ≈ −0.5) and a brain mask."""
    anat = SHARED_DATA / "mslub-cross" / "sub-26" / "anat"
    if anat.is_dir():
        import nibabel as nib

        raw = {c: np.asarray(nib.load(anat / f).dataobj, dtype=np.float32) for c, f in FILES.items()}
        brain = np.logical_or.reduce([v > 0 for v in raw.values()])
        volumes = {c: np.where(brain, v / (2 * np.median(v[brain])) - 1, -1).astype(np.float32)
                   for c, v in raw.items()}
        source = f"{anat} (sub-26, 182×218×182, intensity / (2·median of brain) − 1)"
    else:
        shape = (182, 218, 182)
        grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
        brain = sum((g / r) ** 2 for g, r in zip(grid, (0.75, 0.8, 0.7))) < 1
        rng = np.random.default_rng(0)
        volumes = {c: np.where(brain, -0.5 + 0.1 * rng.standard_normal(shape), -1).astype(np.float32)
                   for c in FILES}
        source = "synthetic ellipsoid 182×218×182 (real data absent)"
    if quick:
        centre = [int(np.mean(np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != k)))))
                  for k in range(3)]
        box = tuple(slice(max(0, c - 40), c + 40) for c in centre)
        volumes = {c: np.ascontiguousarray(v[box]) for c, v in volumes.items()}
        brain = np.ascontiguousarray(brain[box])
        source += "; --quick: central 80×80×80 block"
    return volumes, brain, source


def flops_per_slice(network, shape: tuple[int, int], channels: int) -> float:
    """FLOPs of one forward pass on one slice of ``shape`` (counted by torch).

    Counted on the network's defining modules (the transposed convolutions as such, not their
    faster but larger sub-pixel form): the count is the work the definition needs, whatever
    path computes it.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bids_mdpp.nn.fast_eval import defining_modules

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), defining_modules():
        network(torch.zeros(1, channels, *shape), torch.ones(1, network.config.n_contrasts))
    return float(counter.get_total_flops())


def work(network, shape: tuple[int, ...], slices_per_axis: list[int]) -> tuple[int, float]:
    """(slices, FLOPs) of predicting ``slices_per_axis[a]`` slices of a ``shape`` block per axis."""
    total = 0.0
    for axis, count in enumerate(slices_per_axis):
        plane = tuple(n for a, n in enumerate(shape) if a != axis)
        total += count * flops_per_slice(network, plane, network.config.in_channels)
    return sum(slices_per_axis), total


def fast_path_work(predictor, network, brain: np.ndarray) -> tuple[int, float]:
    """Slices and FLOPs the Predictor runs: every batch on its own window (bf16 probe excluded)."""
    from bids_mdpp.inference import bounding_box

    box = bounding_box(brain, predictor.crop_margin, predictor.pooling_grid)
    inside = brain[box]
    flops: dict[tuple[int, int], float] = {}
    slices, total = 0, 0.0
    for axis in range(3):
        moved = np.moveaxis(inside, axis, 0)
        for indices in predictor._batches(inside, axis, inside.shape[axis]):
            window = predictor._window(moved, indices, moved.shape[1:])
            plane = tuple(w.stop - w.start for w in window)
            if plane not in flops:
                flops[plane] = flops_per_slice(network, plane, network.config.in_channels)
            slices += len(indices)
            total += len(indices) * flops[plane]
    return slices, total


class WholeBoxPredictor:
    """The Predictor as it was before per-batch windows: every slice on the whole brain box."""

    def __new__(cls, *args, **kwargs):
        from bids_mdpp.inference import Predictor

        predictor = Predictor(*args, **kwargs)
        predictor._window = lambda inside, indices, plane: (slice(0, plane[0]), slice(0, plane[1]))
        return predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="an 80³ block instead of the whole head")
    parser.add_argument("--model", default="default",
                        help="a model directory, 'default' (the shipped model) or 'random' weights")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--more-batch-sizes", type=int, nargs="*", default=[4, 8],
                        help="also run the product's path (auto) with these smaller batch sizes")
    parser.add_argument("--warm-up", action="store_true",
                        help="predict once before each timed run (steady-state numbers)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs of each product variant (the median is reported)")
    parser.add_argument("--first-call-only", action="store_true",
                        help="(internal) time one predict in this fresh process and print JSON")
    parser.add_argument("--allocator", choices=["tuned", "system"], default="tuned")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    if args.allocator == "tuned":
        from bids_mdpp.allocator import reexec_with_tuned_allocator

        reexec_with_tuned_allocator(sys.argv[1:], program=[sys.argv[0]])

    import torch

    from bids_mdpp.inference import Predictor, bf16_supported, predict_reference
    from bids_mdpp.model import LoadedModel, ModelCard, load_model
    from bids_mdpp.nn import build_network, torch_threads

    if args.model != "random":
        from bids_mdpp.model import default_model_dir

        args.model = default_model_dir() if args.model == "default" else Path(args.model)
        loaded = load_model(args.model)
        weights = f"{args.model} (sha256 {loaded.sha256[:12]})"
    else:
        torch.manual_seed(0)
        network = build_network()
        network.reset_parameters(std=0.06)
        with torch.no_grad():
            network.first_conv.controller.bias.fill_(1.0)
        card = ModelCard(name="random", version="0", contrasts=("T1w", "FLAIR", "T2w", "PDw", "ceT1w"),
                         mode="moddrop++", network=network.config.to_dict())
        loaded = LoadedModel(network=network.eval(), card=card, directory=Path("."), sha256="")
        weights = "random: conv N(0, 0.06), biases 0, dynamic scales 1"
    volumes, brain, source = load_input(args.quick)
    if args.first_call_only:
        predictor = Predictor(loaded, device="cpu", batch_size=args.batch_size, precision="auto",
                              num_threads=args.threads)
        start = time.perf_counter()
        predictor.predict(volumes, brain)
        print(json.dumps({"seconds": round(time.perf_counter() - start, 2),
                          "peak_rss_mb": round(peak_rss_mb()), "batch_size": args.batch_size,
                          "precision_used": predictor.precision_used,
                          "load_average_1min": os.getloadavg()[0]}))
        return
    print(f"input: {source}; weights: {weights}", flush=True)

    results: dict = {
        "input": source, "shape": list(brain.shape), "brain_voxels": int(brain.sum()),
        "weights": weights, "threads": args.threads, "batch_size": args.batch_size,
        "warm_up": args.warm_up,
        "allocator": os.environ.get("BIDS_MDPP_ALLOCATOR", "system"),
        "bf16_native": bf16_supported(torch.device("cpu")),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "quick": args.quick, "cores": os.cpu_count(), "runs": {},
    }
    # the first call in a fresh process: what one participant's run pays (oneDNN compiles its
    # primitives for each new slice shape, and the allocator's memory is touched for the first
    # time); run first, while this process is still small (beside this process's 4 GB, one
    # measurement took 19.9 s against 11.1-12.0 s alone)
    command = [sys.executable, sys.argv[0], "--first-call-only", "--model", str(args.model),
               "--threads", str(args.threads), "--batch-size", str(args.batch_size),
               "--allocator", args.allocator] + (["--quick"] if args.quick else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    results["runs"]["predictor_auto_first_call"] = json.loads(done.stdout.strip().splitlines()[-1])
    print("predictor_auto_first_call", results["runs"]["predictor_auto_first_call"], flush=True)
    predictor = Predictor(loaded, device="cpu", precision="fp32")
    stack, code = predictor.stack(volumes)
    peak_rss_reset()
    start = time.perf_counter()
    with torch_threads(args.threads):
        naive = predict_reference(loaded.network, stack, code)
    seconds = time.perf_counter() - start
    slices, flops = work(loaded.network, brain.shape, list(brain.shape))
    results["runs"]["naive"] = {
        "seconds": round(seconds, 2), "slices": slices, "slices_per_s": round(slices / seconds, 2),
        "gflop_per_s": round(flops / seconds / 1e9, 1), "peak_rss_mb": round(peak_rss_mb()),
        "load_average_1min": os.getloadavg()[0],
    }
    print("naive", results["runs"]["naive"], flush=True)

    maps = {}
    # from the least memory to the most: each run's high-water mark is then its own (the
    # allocator keeps what an earlier run freed)
    variants = [(f"predictor_auto_batch{b}", Predictor, "auto", b)
                for b in sorted(args.more_batch_sizes) if b < args.batch_size]
    variants += [(f"predictor_{p}", Predictor, p, args.batch_size) for p in ("bf16", "auto")]
    variants.append(("predictor_bf16_whole_box", WholeBoxPredictor, "bf16", args.batch_size))
    variants.append(("predictor_fp32", Predictor, "fp32", args.batch_size))
    for name, factory, precision, batch_size in variants:
        predictor = factory(loaded, device="cpu", batch_size=batch_size, precision=precision,
                            num_threads=args.threads)
        if args.warm_up:
            predictor.predict(volumes, brain)
        peak_rss_reset()
        times = []
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            maps[name] = predictor.predict(volumes, brain)
            times.append(round(time.perf_counter() - start, 2))
        seconds = float(np.median(times))
        slices, flops = fast_path_work(predictor, loaded.network, brain)
        results["runs"][name] = {
            "seconds": round(seconds, 2), "seconds_each": times,
            "slices": slices, "slices_per_s": round(slices / seconds, 2),
            "gflop_per_s": round(flops / seconds / 1e9, 1), "gflop": round(flops / 1e9, 1),
            "peak_rss_mb": round(peak_rss_mb()), "batch_size": batch_size,
            "precision_used": predictor.precision_used, "load_average_1min": os.getloadavg()[0],
        }
        print(name, results["runs"][name], flush=True)



    for name, fused in maps.items():
        run = results["runs"][name]
        run["speedup_vs_naive"] = round(results["runs"]["naive"]["seconds"] / run["seconds"], 1)
        run["max_abs_diff_vs_naive_in_brain"] = float(np.abs(fused - naive)[brain].max())
        run["mean_abs_diff_vs_naive_in_brain"] = float(np.abs(fused - naive)[brain].mean())
        run["voxels_flipped_at_0.5"] = int(((fused >= 0.5) != (naive >= 0.5))[brain].sum())
    results["bf16_vs_fp32_max_abs_diff"] = float(
        np.abs(maps["predictor_bf16"] - maps["predictor_fp32"])[brain].max())
    results["naive_probability_range_in_brain"] = [float(naive[brain].min()), float(naive[brain].max())]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
