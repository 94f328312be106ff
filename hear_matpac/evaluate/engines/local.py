"""All devices of one node: which devices a run uses (`--devices`), the slots on them (`--jobs`
per device), the environment that pins a stage's tools to its slot, and a thread pool that
runs work on free slots.

A stage's HEAR tools are child processes, so a crash or an out-of-memory in one stage stays in
its processes; the pool only hands out slots. It is `concurrent.futures.ThreadPoolExecutor`
with one worker per slot and a FIFO queue of free slots: work is started in the order given
(`longest_first`), so a worker that comes free takes the next-longest item.
"""
from __future__ import annotations

import os
import queue
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from ..specs import StagePlan
from ..stages import Outcome, run_stage
from ..tools import Tools
from . import StageSettings
from ...io import InputError


Item = TypeVar("Item")
Result = TypeVar("Result")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def gpu_count() -> int:
    """GPUs this process sees (`CUDA_VISIBLE_DEVICES` applies); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_devices() -> List[str]:
    """Every visible GPU (`cuda:0`, `cuda:1`, ...), else `cpu`."""
    return [f"cuda:{n}" for n in range(gpu_count())] or ["cpu"]


def check_devices(devices: Sequence[str]) -> List[str]:
    """Device names, checked: each `cpu` or `cuda:N` with N a visible GPU, none twice, at least
    one. `ValueError` (one line) otherwise."""
    names = [str(d).strip() for d in devices]
    if not names or "" in names:
        raise InputError(f"--devices: a list of devices is needed, e.g. cpu or cuda:0,cuda:1 (got {','.join(names)!r})")
    count: Optional[int] = None
    for name in names:
        if name == "cpu":
            continue
        match = re.fullmatch(r"cuda:(\d+)", name)
        if not match:
            hint = " (name each GPU: cuda:0,cuda:1,...)" if name == "cuda" else ""
            raise InputError(f"--devices: {name!r} is not cpu or cuda:N{hint}")
        count = gpu_count() if count is None else count
        if count == 0:
            raise InputError(f"--devices {name}: CUDA is not available here; use --devices cpu")
        if int(match[1]) >= count:
            raise InputError(f"--devices {name}: this machine has {count} visible GPU(s), cuda:0 to cuda:{count - 1}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"--devices: {', '.join(twice)} given twice (use --jobs for several stages per device)")
    return names


def parse_devices(text: str) -> List[str]:
    """`--devices` as typed: comma-separated names, checked (`check_devices`); '' or `auto`:
    `default_devices()`."""
    if text.strip() in ("", "auto"):
        return default_devices()
    return check_devices(text.split(","))


def check_jobs(jobs: int) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"--jobs must be a whole number of at least 1, got {jobs!r}")
    return jobs


@dataclass(frozen=True)
class Slot:
    """Room for one stage at a time on `device`; `env`: the variables its tools' processes get
    on top of this process's environment."""

    device: str
    env: Dict[str, str] = field(default_factory=dict)


def _visible_gpu(index: int) -> str:
    """The `CUDA_VISIBLE_DEVICES` entry of this process's `cuda:index` (this process may itself
    see only some GPUs: `CUDA_VISIBLE_DEVICES=2,3` makes cuda:0 GPU 2)."""
    seen = [s.strip() for s in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if s.strip()]
    return seen[index] if index < len(seen) else str(index)


# A GPU stage's micro-batches change size from call to call; expandable segments let torch's
# allocator grow one segment instead of caching blocks of every size (docs/performance.md).
ALLOC_VARIABLE, EXPANDABLE = "PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"
def make_slots(devices: Sequence[str], jobs: int = 1, cores: Optional[int] = None) -> List[Slot]:
    """`jobs` slots per device (checked names), interleaved (cuda:0, cuda:1, cuda:0, ...) so
    the first stages spread over the devices. Each slot's tools see only its GPU
    (`CUDA_VISIBLE_DEVICES`; empty for `cpu`, so heareval's runners, which take the first GPU
    when there is one, run on the CPU). With several slots, each process gets an equal share of
    the cores as its torch/OpenMP threads (unless this process's environment sets them), so
    `--jobs 2` on 2 cores runs 2 processes of 1 thread, not of 2. A GPU slot's tools get
    `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` unless this process's environment sets it."""
    names = check_devices(devices)
    check_jobs(jobs)
    cores = cores or len(os.sched_getaffinity(0))
    workers = len(names) * jobs
    threads = {}
    if workers > 1:
        threads = {v: str(max(1, cores // workers)) for v in THREAD_VARIABLES if v not in os.environ}
    slots = []
    for _ in range(jobs):
        for name in names:
            gpu = "" if name == "cpu" else _visible_gpu(int(name.split(":")[1]))
            alloc = {} if name == "cpu" or ALLOC_VARIABLE in os.environ else {ALLOC_VARIABLE: EXPANDABLE}
            slots.append(Slot(name, {"CUDA_VISIBLE_DEVICES": gpu, **threads, **alloc}))
    return slots


def run_on_slots(items: Sequence[Item], slots: Sequence[Slot], work: Callable[[Item, Slot], Result],
                 stop: Callable[[], None]) -> List[Result]:  # fmt: skip
    """`work(item, slot)` for every item, each on a free slot, started in the order given;
    the results in that order. `work` reports its own failures as results (a failed stage is
    an outcome, the others go on). An exception out of `work` lets the running items finish,
    starts no more and is raised. Interrupted (Ctrl-C, or SIGTERM raising `SystemExit` in the
    main thread): `stop()` stops the child processes, the running items wind up (releasing
    their claims), no more are started, and the interruption goes on."""
    if not slots:
        raise ValueError("no slot to run on")
    free: "queue.SimpleQueue[Slot]" = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)
    halt = threading.Event()  # set by an error or an interruption: no item starts after it

    def one(item: Item) -> Result:
        if halt.is_set():
            raise _NotStarted
        slot = free.get()
        try:
            return work(item, slot)
        except BaseException:
            halt.set()
            raise
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="hear-matpac-slot") as pool:
        futures = [pool.submit(one, item) for item in items]
        try:  # in short waits: a signal delivered to a worker thread runs its handler here, then
            while not halt.is_set() and wait(futures, timeout=0.25, return_when=FIRST_EXCEPTION).not_done:
                pass
        except BaseException:  # interrupted while waiting
            halt.set()
            stop()
            raise
    errors = [f.exception() for f in futures if not isinstance(f.exception(), _NotStarted)]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return [f.result() for f in futures]


class _NotStarted(Exception):
    """An item left out because an earlier one failed."""


class LocalEngine:
    """The stages on this node's slots, each on the next free one, labelled `[n/N]` in the
    order given; `tools.stop()` when the run is interrupted."""

    def __init__(self, slots: Sequence[Slot], tools: Tools) -> None:
        self.slots, self.tools = list(slots), tools

    def run(self, plans: Sequence[StagePlan], settings: StageSettings, report: Callable[[str], None]) -> List[Outcome]:
        def one(numbered: Tuple[int, StagePlan], slot: Slot) -> Outcome:
            n, plan = numbered
            return on_slot(slot, lambda: run_stage(plan, settings.runs, settings.grid, settings.grid_points,
                                                   settings.tensorflow, settings.keep_logs, settings.overwrite, report,
                                                   f"[{n}/{len(plans)}]", slot.env, self.tools))  # fmt: skip

        return run_on_slots(list(enumerate(plans, 1)), self.slots, one, self.tools.stop)


def on_slot(slot: Slot, step: Callable[[], Outcome]) -> Outcome:
    """`step()`'s outcome, with the slot's device and the wall-clock start and end."""
    started = time.time()
    outcome = step()
    outcome.device, outcome.started, outcome.finished = slot.device, started, time.time()
    return outcome
