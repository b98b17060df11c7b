"""Distributed helpers: the epoch sampler's shards, the single-process context, rank-0 tasks."""
from __future__ import annotations

import pytest
import torch

from bids_mdpp.errors import NoInputError
from bids_mdpp.training import on_main
from bids_mdpp.training.distributed import (
    EpochSampler,
    all_gather_object,
    all_mean,
    broadcast_object,
    init_distributed,
    launched_by_torchrun,
    wrap_model,
)


def test_ranks_get_disjoint_shards_of_one_shuffled_epoch():
    shards = []
    for rank in range(3):
        sampler = EpochSampler(10, seed=4, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert [len(s) for s in shards] == [4, 4, 4]
    together = [i for s in shards for i in s]
    assert set(together) == set(range(10))  # 12 draws cover all 10 items
    again = EpochSampler(10, seed=4, rank=1, world_size=3)
    again.set_epoch(2)
    assert list(again) == shards[1]
    again.set_epoch(3)
    assert list(again) != shards[1]


def test_a_chosen_epoch_length_repeats_fresh_permutations():
    sampler = EpochSampler(4, seed=0, samples_per_rank=10)
    order = list(sampler)
    assert len(sampler) == 10 and len(order) == 10
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:8]) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        EpochSampler(0)


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert not launched_by_torchrun()
    assert launched_by_torchrun({"WORLD_SIZE": "2", "RANK": "1"})
    ctx = init_distributed(torch.device("cpu"))
    assert ctx.is_main and ctx.world_size == 1 and not ctx.initialised
    network = torch.nn.Linear(2, 2)
    assert wrap_model(network, ctx) is network
    assert broadcast_object({"a": 1}, ctx) == {"a": 1}
    assert all_gather_object(3, ctx) == [3]
    assert all_mean(2.5, ctx) == 2.5


def test_a_rank_zero_task_returns_or_raises_its_own_error():
    ctx = init_distributed(torch.device("cpu"))
    assert on_main(lambda: 42, ctx) == 42

    def fail():
        raise NoInputError("nothing here")

    with pytest.raises(NoInputError, match="nothing here"):
        on_main(fail, ctx)
