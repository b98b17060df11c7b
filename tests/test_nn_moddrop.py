"""Modality drop-out: the draw (uniform k, never all-missing) and the zero-filling."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from bids_mdpp.nn.moddrop import apply_code, draw_drop


@pytest.mark.parametrize("available", [
    (True, True, True, True, True), (True, True, True, False, True), (False, True, False, True, False),
    (False, False, True, False, False),
])
def test_draws_keep_at_least_one_available_contrast_and_k_is_uniform(available):
    rng = np.random.default_rng(1)
    n = sum(available)
    draws = 12_000
    dropped = Counter()
    for _ in range(draws):
        code = draw_drop(available, rng)
        assert len(code) == len(available)
        assert sum(code) >= 1  # never the all-missing code
        assert all(a or not c for a, c in zip(available, code))  # never keeps what is absent
        dropped[n - sum(code)] += 1
    assert set(dropped) == set(range(n))
    for k in range(n):
        assert abs(dropped[k] / draws - 1 / n) < 0.02, dropped


def test_subsets_of_the_same_size_are_equally_likely():
    rng = np.random.default_rng(2)
    singles = Counter()
    for _ in range(9_000):
        code = draw_drop([True, True, True], rng)
        if sum(code) == 1:
            singles[code] += 1
    assert len(singles) == 3
    counts = np.array(list(singles.values()))
    assert counts.min() / counts.max() > 0.85


def test_draws_are_reproducible_from_the_seed():
    first = [draw_drop([1, 1, 0, 1, 1], np.random.default_rng(7)) for _ in range(3)]
    again = [draw_drop([1, 1, 0, 1, 1], np.random.default_rng(7)) for _ in range(3)]
    assert first == again


def test_single_p_keeps_one_available_contrast_that_often_and_uniformly():
    available = (True, False, True, True, True)
    rng = np.random.default_rng(3)
    draws = [draw_drop(available, rng, single_p=1.0) for _ in range(4_000)]
    assert all(sum(code) == 1 for code in draws)
    kept = Counter(code.index(1) for code in draws)
    assert set(kept) == {0, 2, 3, 4}  # never the absent contrast
    assert min(kept.values()) / max(kept.values()) > 0.85
    # single_p = 0.5: half the codes are singles by choice, plus the uniform draw's 1/4 of
    # the other half (k = 3 of 4 dropped) → 0.625.
    rng = np.random.default_rng(4)
    singles = sum(sum(draw_drop(available, rng, single_p=0.5)) == 1 for _ in range(8_000))
    assert abs(singles / 8_000 - 0.625) < 0.025


def test_single_p_zero_draws_the_same_codes_as_the_default():
    first = [draw_drop([1, 1, 1, 0, 1], np.random.default_rng(11)) for _ in range(5)]
    again = [draw_drop([1, 1, 1, 0, 1], np.random.default_rng(11), single_p=0.0) for _ in range(5)]
    assert first == again


@pytest.mark.parametrize("single_p", [-0.1, 1.5])
def test_single_p_outside_zero_one_is_an_error(single_p):
    with pytest.raises(ValueError, match="single_p"):
        draw_drop([True, True], np.random.default_rng(0), single_p=single_p)


def test_no_available_contrast_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        draw_drop([False, False], np.random.default_rng(0))


def test_apply_code_zero_fills_the_dropped_contrasts_of_each_sample():
    x = torch.rand(2, 9, 4, 5) + 1.0
    codes = torch.tensor([[1, 0, 1], [0, 1, 1]])
    out = apply_code(x, codes, slices_per_contrast=3)
    assert torch.all(out[0, 3:6] == 0) and torch.equal(out[0, :3], x[0, :3]) and torch.equal(out[0, 6:], x[0, 6:])
    assert torch.all(out[1, :3] == 0) and torch.equal(out[1, 3:], x[1, 3:])
    assert torch.all(x > 0)  # the input is not modified


def test_apply_code_works_on_arrays_and_with_one_code_for_all():
    x = np.ones((3, 4, 2, 2), dtype=np.float32)
    out = apply_code(x, (0, 1), slices_per_contrast=2)
    assert out.dtype == np.float32
    assert np.all(out[:, :2] == 0) and np.all(out[:, 2:] == 1)


def test_apply_code_rejects_a_code_that_does_not_fit():
    with pytest.raises(ValueError, match="cannot apply codes"):
        apply_code(torch.zeros(2, 9, 4, 4), torch.ones(2, 4), slices_per_contrast=3)
