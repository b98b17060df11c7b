"""Distributed data-parallel training with ``torchrun``, and the single-process case.

Launched by ``torchrun`` (``python -m torch.distributed.run --nproc-per-node N …``), each
process reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from its environment and joins
the process group: ``nccl`` on GPUs (one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on
the CPU.  Without those variables the run is one process and nothing here communicates.

Rank 0 alone preprocesses, writes checkpoints, logs and the model; the others receive what
they need through :func:`broadcast_object` and wait at :func:`barrier`.
:class:`EpochSampler` gives every rank its own shard of each epoch's shuffled items.
"""
from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

#: Rank 0 may preprocess for a long time while the others wait in a collective call.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files (rank 0)."""
        return self.rank == 0


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """True when the environment holds torchrun's ``WORLD_SIZE`` (and ``RANK``)."""
    env = os.environ if environ is None else environ
    return "WORLD_SIZE" in env and "RANK" in env


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun, else describe one process.

    ``device`` is the resolved ``--device``; under torchrun a CUDA device becomes
    ``cuda:LOCAL_RANK`` and the backend ``nccl``, a CPU device uses ``gloo``.
    """
    if not launched_by_torchrun():
        return DistContext(rank=0, world_size=1, local_rank=0, device=device)
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                       initialised=True)


def barrier(ctx: DistContext) -> None:
    """Wait until every process gets here (no-op for one process)."""
    if ctx.initialised:
        import torch.distributed as dist

        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's ``obj`` on every process (picklable objects only)."""
    if not ctx.initialised:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def all_gather_object(obj: object, ctx: DistContext) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` for one process)."""
    if not ctx.initialised:
        return [obj]
    import torch.distributed as dist

    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_mean(value: float, ctx: DistContext) -> float:
    """The mean of ``value`` over all processes."""
    if not ctx.initialised:
        return float(value)
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size


def wrap_model(network: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``DistributedDataParallel(network)`` under torchrun, else ``network`` itself."""
    if not ctx.initialised:
        return network
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids, find_unused_parameters=False)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group cleanly (no-op for one process)."""
    if ctx.initialised:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class EpochSampler(torch.utils.data.Sampler[int]):
    """This rank's share of an epoch's items, shuffled reproducibly for (seed, epoch).

    Like :class:`torch.utils.data.DistributedSampler` (shards ``rank::world_size`` of one
    shuffled order, :meth:`set_epoch`), with a chosen epoch length: ``samples_per_rank``
    items per rank (default: one pass over the items shared between ranks); the order
    repeats fresh permutations when an epoch is longer than the data.
    """

    def __init__(self, n_items: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 samples_per_rank: int | None = None):
        if n_items < 1:
            raise ValueError("EpochSampler needs at least one item")
        self.n_items = n_items
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.samples_per_rank = samples_per_rank or math.ceil(n_items / world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_rank

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch, 0x5A3))
        total = self.samples_per_rank * self.world_size
        order = np.concatenate([rng.permutation(self.n_items)
                                for _ in range(math.ceil(total / self.n_items))])[:total]
        return iter(int(i) for i in order[self.rank::self.world_size])
