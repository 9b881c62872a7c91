"""One evaluation sharded over ranks with torch.distributed (NCCL on GPUs, gloo on CPU).

The ranks come from torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) or from the
tasks of one SLURM job started by submitit (its ``TorchDistributedEnvironment``). A task cuts its samples
into the batches one process would form (``index_batches``), each rank evaluates a contiguous block of them
(``Ranks.share``), and ``Ranks.gather`` hands every rank all the per-batch outputs in the original order.
Every batch is thus computed exactly as in one process, and the code after the gather (metrics,
intervals) is the single-process code. Rank 0 alone writes. See docs/distributed.md.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from clipbench.errors import ClipbenchError

T = TypeVar("T")
TIMEOUT_ENV = "CLIPBENCH_DIST_TIMEOUT_S"  # how long a rank waits for the others at a collective
DEFAULT_TIMEOUT_S = 1800.0
FAILED_KEY = "clipbench/failed/{}"  # a failed rank leaves its one-line error under this key of the rendezvous store


class DistributedError(ClipbenchError):
    """Another rank failed, was killed or stopped answering: the run ends on every rank."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run; the default is the one process of an ordinary run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, units: Sequence[T]) -> list[T]:
        """This rank's contiguous block of ``units``; blocks differ in size by at most one, rank 0 first."""
        per_rank, extra = divmod(len(units), self.world_size)
        start = self.rank * per_rank + min(self.rank, extra)
        return list(units[start : start + per_rank + (self.rank < extra)])

    def share_count(self, n: int) -> int:
        """How many of ``n`` items this rank's share holds (a rank's part of a throughput count)."""
        return len(self.share(range(n)))

    def gather(self, parts: list) -> list:
        """Every rank's ``parts`` (the outputs of its ``share``) concatenated in rank order, on every rank."""
        if not self.distributed:
            return list(parts)
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        collective(lambda: dist.all_gather_object(gathered, list(parts)), self)
        return [part for rank_parts in gathered for part in rank_parts]

    def each(self, value: T) -> list[T]:
        """``value`` of every rank, in rank order."""
        return self.gather([value])

    def all_true(self, flag: bool) -> bool:
        return all(self.each(bool(flag)))

    def from_main(self, value: T) -> T:
        """Rank 0's ``value``, on every rank."""
        return self.each(value)[0]


SINGLE = Ranks()


def index_batches(n: int, batch_size: int) -> list[range]:
    """The index windows one process reads as batches: [0, b), [b, 2b), ..."""
    return [range(start, min(start + batch_size, n)) for start in range(0, n, max(1, batch_size))]


def launched_ranks() -> Ranks:
    """The ranks this process was started as: torchrun's variables, a submitit SLURM job with several
    tasks, else one process."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)  # asked more than once per process
        return Ranks(env.rank, env.world_size, env.local_rank)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(ranks: Ranks, name: str) -> str:
    """``device=auto`` or ``cuda`` on a GPU node means this rank's own GPU, ``cuda:<local rank>``."""
    import torch

    if ranks.distributed and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank}"
    return name


def join(device_name: str) -> Ranks:
    """Join the process group (once per process): NCCL when this rank runs on CUDA, else gloo."""
    ranks = launched_ranks()
    if not ranks.distributed:
        return ranks
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = rank_device(ranks, device_name).startswith("cuda")
        if cuda:
            torch.cuda.set_device(ranks.local_rank)
        seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=seconds),
                                device_id=torch.device("cuda", ranks.local_rank) if cuda else None)
    if dist.get_world_size() != ranks.world_size:
        raise DistributedError(f"the process group has {dist.get_world_size()} ranks, the environment says {ranks.world_size}")
    return ranks


def collective(op: Callable[[], T], ranks: Ranks) -> T:
    """``op()``; when it fails because another rank failed, was killed or timed out: one line saying which."""
    try:
        return op()
    except Exception as exc:  # gloo and NCCL raise RuntimeError subclasses naming their socket or timeout
        raise DistributedError(_peer_failure(ranks, exc)) from None


def _peer_failure(ranks: Ranks, exc: Exception) -> str:
    failed = []
    try:
        store = _store()
        for r in range(ranks.world_size):
            if r != ranks.rank and store.check([FAILED_KEY.format(r)]):
                failed.append(f"rank {r} failed: {store.get(FAILED_KEY.format(r)).decode()}")
    except Exception:  # the store lived in a rank that is gone
        pass
    if failed:
        return "; ".join(failed)
    first = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).splitlines()[0]) if str(exc) else type(exc).__name__  # gloo's source path
    return f"rank {ranks.rank}: another rank was killed or stopped answering ({first[:120]})"


def report_failure(ranks: Ranks, exc: BaseException) -> None:
    """Leave this rank's error for the others and leave the group, so their collectives end now, not at the timeout."""
    if not ranks.distributed:
        return
    import torch.distributed as dist

    line = (str(exc).splitlines() or [""])[0]
    try:
        _store().set(FAILED_KEY.format(ranks.rank), f"{type(exc).__name__}: {line}"[:500])
    except Exception:
        pass
    if dist.is_initialized():
        dist.destroy_process_group()


def leave() -> None:
    """End this process's membership of the group (the run failed on another rank)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _store():
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()
