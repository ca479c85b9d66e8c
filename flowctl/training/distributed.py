"""torch.distributed glue: process-group setup from torchrun's environment, DDP wrapping,
reductions and the resumable sampler. Single-process runs use the same code with world 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, Sampler

_GROUPS_CREATED = 0  # process groups created by setup() in this process


@dataclass
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``; ``created`` if we made the group."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    created: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """World size announced by torchrun (``WORLD_SIZE``), 1 if absent."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup(device_type: str) -> DistContext:
    """Join (or create) the default process group if launched with WORLD_SIZE > 1.

    Uses NCCL for CUDA and Gloo otherwise, with torchrun's ``env://`` rendezvous.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_world_size(), dist.get_rank(),
                           int(os.environ.get("LOCAL_RANK", "0")), created=False)
    if env_world_size() <= 1 or not dist.is_available():
        return DistContext()
    global _GROUPS_CREATED
    backend = "nccl" if device_type == "cuda" else "gloo"
    # Rendezvous through torchrun's env:// store, under a fresh key prefix per group we create:
    # a second train() in the same process (after teardown destroyed the first group) must not
    # read the stale addresses the first group left in the store.
    store, rank, world = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"flowctl_training_{_GROUPS_CREATED}", store)
    _GROUPS_CREATED += 1
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
    return DistContext(dist.get_world_size(), dist.get_rank(),
                       int(os.environ.get("LOCAL_RANK", "0")), created=True)


def teardown(ctx: DistContext) -> None:
    """Barrier, then destroy the process group if :func:`setup` created it."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        if ctx.created:
            dist.destroy_process_group()


def _reduce_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: list[float], ctx: DistContext, op: str = "sum") -> list[float]:
    """Reduce a short list of floats over ranks (``op`` in sum | max); identity if world 1."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Collect one picklable object from every rank (list indexed by rank)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


class LossModule(torch.nn.Module):
    """``forward(*batch) = loss_fn(model, batch)``, so DDP sees the whole loss computation.

    Wrapping this (rather than the model) in DDP lets ``loss_fn`` call any method of the model
    (e.g. ``log_prob``) while gradients are still all-reduced.
    """

    def __init__(self, model: torch.nn.Module,
                 loss_fn: Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model, tuple(batch))


def wrap(model: torch.nn.Module, loss_fn: Callable[..., torch.Tensor], ctx: DistContext,
         device: torch.device) -> torch.nn.Module:
    """A module whose ``forward(*batch)`` returns the loss; DDP-wrapped when distributed."""
    module = LossModule(model, loss_fn)
    if not ctx.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose epoch order is a function of (seed, epoch) and which can skip
    the first ``start`` samples of its shard (to resume inside an epoch).

    The permutation comes from a generator seeded with ``seed * 1000003 + epoch``. With
    ``world_size == 1`` it is a plain deterministic shuffle (no process group needed).
    """

    def __init__(self, dataset: Dataset, *, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                         seed=seed * 1000003, drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first ``start`` samples of this shard."""
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order, without padding (for validation)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
