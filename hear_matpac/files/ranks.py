"""The processes of a `torchrun` job as one run: which one this is, its device, and the few
messages they exchange (torch.distributed with the gloo backend, on CPU or GPU machines alike).

Outside torchrun (or in a job of one process) there is one rank, `SOLO`, and every exchange is
the identity, so a single process runs the very same code. A user's mistake found on one rank
(`hear_matpac.io.is_user_error`) is raised there and makes the others raise
`OtherRankFailed`, so that it is said once and every rank stops with the same status instead
of waiting for a rank that has gone. Any other exception is a bug: it ends its rank with its
traceback, and the others stop when its connections close.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, TypeVar

import torch

from ..io import InputError, is_user_error

T = TypeVar("T")
# How long a rank waits for the others at an exchange: rank 0 may wait for another run's lock
# on the output folder (hours) while the others wait for its plan. A rank that dies closes its
# connections, which ends the others' wait at once, and torchrun stops a job whose rank failed.
WAIT = timedelta(days=7)


class OtherRankFailed(Exception):
    """Another rank of the job stopped and said why; this one ends quietly, status 2."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in a job: `rank` of `world` processes, `local_rank` on its machine."""

    rank: int
    world: int
    local_rank: int


def torchrun_ranks(env: Mapping[str, str] = os.environ) -> Optional[Ranks]:
    """This process's place in the torchrun job that started it (from the environment torchrun
    sets), or None outside one or in a job of a single process."""
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return Ranks(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise InputError("WORLD_SIZE, RANK and LOCAL_RANK in the environment are not a torchrun job's "
                         f"({', '.join(f'{k}={env.get(k)!r}' for k in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'))}); "
                         "start it with torchrun, or unset them") from None  # fmt: skip


def rank_device(device: torch.device, ranks: Optional[Ranks]) -> torch.device:
    """The device of this rank: `cuda` without an index becomes `cuda:LOCAL_RANK` (one GPU per
    process on each machine), or the only GPU this process sees (one `CUDA_VISIBLE_DEVICES` per
    task, as Slurm's per-task binding sets). An explicit index is refused under torchrun (every
    rank would take that same GPU); `cpu` is kept."""
    if ranks is None or device.type != "cuda":
        return device
    if device.index is not None:
        raise InputError(f"--device {device} under torchrun would put every rank on that one GPU; use --device cuda "
                         "(each rank takes GPU LOCAL_RANK, or the only GPU it sees)")  # fmt: skip
    count = torch.cuda.device_count()
    index = 0 if count == 1 else ranks.local_rank
    if index >= count:
        raise InputError(f"local rank {ranks.local_rank} has no GPU of its own (this process sees {count}); start "
                         "at most that many processes per node, or give each one GPU (CUDA_VISIBLE_DEVICES)")  # fmt: skip
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class RankGroup:
    """The ranks of a job, with the exchanges `embed` needs. `RankGroup(None)` is `SOLO`."""

    def __init__(self, ranks: Optional[Ranks]) -> None:
        self.ranks = ranks
        self.rank = ranks.rank if ranks else 0
        self.world = ranks.world if ranks else 1

    def agree(self, step: Callable[[], T]) -> T:
        """Run `step` on every rank. When it raises a user error on any rank, the lowest such
        rank raises it and the others raise `OtherRankFailed`."""
        if self.world == 1:
            return step()
        try:
            value, problem = step(), None
        except Exception as err:
            if not is_user_error(err):
                raise  # a bug: this rank ends with its traceback
            value, problem = None, err
        failed = self.all_gather(problem is not None)
        if any(failed):
            if problem is not None and self.rank == failed.index(True):
                raise problem
            raise OtherRankFailed()
        return value  # type: ignore[return-value]

    def scatter(self, parts: Optional[Sequence[T]]) -> T:
        """Rank 0's `parts[r]` to rank `r` (the others pass None). When rank 0 calls `abandon`
        instead, the others raise `OtherRankFailed`."""
        if self.world == 1:
            assert parts is not None
            return parts[0]
        received = self._scatter(list(parts) if self.rank == 0 and parts is not None else None)
        if isinstance(received, _Failed):
            raise OtherRankFailed()
        return received

    def abandon(self) -> None:
        """Rank 0, instead of `scatter`, when it failed before it had the parts (it says why)."""
        if self.world > 1:
            self._scatter([_Failed()] * self.world)

    def _scatter(self, parts: Optional[List[Any]]) -> Any:
        received: List[Any] = [None]
        self._exchange(torch.distributed.scatter_object_list, received, parts, src=0)
        return received[0]

    def all_gather(self, value: T) -> List[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        values: List[Any] = [None] * self.world
        self._exchange(torch.distributed.all_gather_object, values, value)
        return values

    def settle(self) -> None:
        """Wait until every rank still running gets here (ranks that have gone are not waited for)."""
        if self.world > 1:
            with contextlib.suppress(RuntimeError):
                torch.distributed.barrier()

    def _exchange(self, collective: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            collective(*args, **kwargs)
        except RuntimeError as err:  # a rank died: its connections closed
            problem = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InputError(f"another rank of this torchrun job stopped ({problem})") from None


SOLO = RankGroup(None)


class _Failed:
    """What rank 0 scatters when it could not plan (it says why itself)."""


@contextlib.contextmanager
def rank_group(ranks: Optional[Ranks]) -> Iterator[RankGroup]:
    """The job's group, its process group (gloo) set up for the block and torn down after;
    `SOLO` without `ranks`."""
    if ranks is None:
        yield SOLO
        return
    torch.distributed.init_process_group("gloo", timeout=WAIT)
    try:
        yield RankGroup(ranks)
    finally:
        torch.distributed.destroy_process_group()
