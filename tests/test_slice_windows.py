"""Batches of slices and their windows: the plan covers every brain slice once and wastes little."""
from __future__ import annotations

import numpy as np
import pytest

from bids_mdpp.slice_windows import bounding_box, plan_batches


def ellipsoid(shape=(40, 48, 44), radii=(0.8, 0.7, 0.75)) -> np.ndarray:
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return sum((g / r) ** 2 for g, r in zip(grid, radii)) < 1


def cost(inside: np.ndarray, runs: list[np.ndarray], margin: int, grid: int, pass_cost: float):
    pixels = 0
    for run in runs:
        rows, cols = bounding_box(inside[run].any(axis=0), margin, grid)
        pixels += len(run) * (rows.stop - rows.start) * (cols.stop - cols.start)
    return pixels + pass_cost * len(runs), pixels


def test_the_plan_covers_every_brain_slice_once_in_runs_of_at_most_the_batch():
    inside = ellipsoid()
    inside[17] = False   # a slice without brain inside the head is skipped
    runs = plan_batches(inside, max_batch=6, margin=2, grid=4)
    flat = np.concatenate(runs)
    assert flat.tolist() == np.flatnonzero(inside.any(axis=(1, 2))).tolist()
    assert all(1 <= len(run) <= 6 for run in runs)


def test_the_plan_costs_no_more_than_fixed_batches_and_wastes_fewer_pixels():
    inside = ellipsoid()
    indices = np.flatnonzero(inside.any(axis=(1, 2)))
    fixed = [indices[i:i + 8] for i in range(0, len(indices), 8)]
    planned = plan_batches(inside, max_batch=8, margin=2, grid=4, pass_cost=300)
    planned_cost, planned_pixels = cost(inside, planned, 2, 4, 300)
    fixed_cost, fixed_pixels = cost(inside, fixed, 2, 4, 300)
    assert planned_cost <= fixed_cost
    assert planned_pixels < fixed_pixels   # the poles of the ellipsoid get their own windows


def test_the_pass_cost_trades_passes_for_pixels():
    inside = ellipsoid()
    n = int(inside.any(axis=(1, 2)).sum())
    single = plan_batches(inside, max_batch=8, margin=2, grid=4, pass_cost=0)
    _, single_pixels = cost(inside, single, 2, 4, 0)
    per_slice = sum(cost(inside, [np.array([i])], 2, 4, 0)[1]
                    for i in np.flatnonzero(inside.any(axis=(1, 2))))
    assert single_pixels == per_slice   # free passes: every slice on its own box
    few = plan_batches(inside, max_batch=8, margin=2, grid=4, pass_cost=1e12)
    assert len(few) == -(-n // 8)       # costly passes: as few as the batch size allows


def test_an_empty_mask_plans_nothing_and_a_bad_batch_size_is_refused():
    assert plan_batches(np.zeros((5, 8, 8), bool), max_batch=4, margin=1, grid=2) == []
    with pytest.raises(ValueError, match="max_batch"):
        plan_batches(ellipsoid(), max_batch=0, margin=1, grid=2)
