"""Split a corpus's embed jobs across the ranks of a torchrun job, balanced by audio length.

The work of a file grows with its length, so ranks get equal seconds of audio, not equal file
counts: greedy longest-processing-time (longest file first, to the rank with the least audio so
far, ties to the lower rank); a file whose header gives no length counts as `UNKNOWN_SECONDS`,
so that such files spread across the ranks too. Deterministic: the same jobs give the same shards everywhere.
Lengths come from file headers (`audio_seconds`), read by a thread pool since on a network
file system each read is mostly waiting.
"""
from __future__ import annotations

import dataclasses
import heapq
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Sequence, Tuple, TypeVar

from .embed import Job, audio_seconds
from .store import Record

Item = TypeVar("Item")
HEADER_READERS = 16  # header reads in flight at once
UNKNOWN_SECONDS = 1.0  # the weight of a file whose length its header does not give


def measure(jobs: Sequence[Job]) -> List[Job]:
    """`jobs` with `seconds` read from each file's header (0 when unreadable: it fails later)."""
    with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
        seconds = list(pool.map(audio_seconds, [job.item.path for job in jobs]))
    return [dataclasses.replace(job, seconds=s) for job, s in zip(jobs, seconds)]


def longest_first(items: Sequence[Item], cost: Callable[[Item], float]) -> List[Item]:
    """`items` by decreasing `cost`, ties in their given order: list scheduling that starts the
    longest work first keeps the last one to finish short (ranks' shares here, `evaluate`'s
    stages on its slots)."""
    return sorted(items, key=lambda item: -cost(item))


def shard(jobs: Sequence[Job], parts: int) -> List[List[Job]]:
    """`jobs` split into `parts` lists of about equal total `seconds`, each in the input order
    (so a rank reads its files in the order a single process would)."""
    if parts < 1:
        raise ValueError(f"cannot split jobs into {parts} parts")
    weights = [job.seconds if job.seconds > 0 else UNKNOWN_SECONDS for job in jobs]
    order = longest_first(range(len(jobs)), lambda i: weights[i])
    loads = [(0.0, rank) for rank in range(parts)]  # a heap: least audio first, then lowest rank
    chosen: List[List[int]] = [[] for _ in range(parts)]
    for i in order:
        load, rank = heapq.heappop(loads)
        chosen[rank].append(i)
        heapq.heappush(loads, (load + weights[i], rank))
    return [[jobs[i] for i in sorted(indices)] for indices in chosen]


@dataclass
class Share:
    """One rank's part of a run: its jobs, the folder's records of their names (what the rank's
    store needs to rewrite them), and, for rank 0 only, the count of files skipped and the
    (what, problem) failures found while planning. `token`: the job's mark on the output folder
    (`OutputStore.mark_job`)."""

    jobs: List[Job]
    records: Dict[str, Record]
    skipped: int = 0
    failures: List[Tuple[str, str]] = field(default_factory=list)
    token: str = ""


def shares(jobs: Sequence[Job], records: Mapping[str, Record], skipped: int,
           failures: Sequence[Tuple[str, str]], parts: int) -> List[Share]:  # fmt: skip
    """The run's plan as `parts` shares (`shard`); skips and failures counted by the first."""
    result = []
    for part in shard(jobs, parts):
        names = [job.item.name for job in part]
        result.append(Share(part, {n: records[n] for n in names if n in records}))
    result[0].skipped, result[0].failures = skipped, list(failures)
    return result
