"""Per-stage claims, so that many processes (and hosts) can share one
`--out` and no two of them run the same stage.

A claim is a file made with `O_CREAT | O_EXCL` (atomic on local and NFSv3+ file systems)
holding `{"host", "pid", "token", "job"}`: `token` is new for every claim taken, `job` names
the scheduler job that runs the stage (`JOB_ENV`, set by `engines/slurm.py`; empty otherwise). While a
process holds a claim, a heartbeat thread refreshes the file's modification time every quarter
of the lease. A claim is taken over when its owner is gone:

- same host and no process with that pid (the fast path of one machine), or
- the same scheduler job (`job`): a retry or requeue of the job that took it, so that one ended, or
- its lease ran out: not refreshed for `LEASE_S` seconds (by the file server's clock, compared
  with this host's: keep the hosts' clocks in step well within the lease). That covers a node
  that died or lost the shared file system, from any host.

A holder that lost its claim (its lease ran out while it was stalled, and another process took
the stage) finds out through the token: `holds_claim` is False, and the stage discards its work
rather than putting it in place (`stages.run_stage`).

Ownership marks (which tool made a folder, and for what) are `hear_matpac.marks`.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from ..marks import owner_gone

LEASE_S = 600.0  # a claim not refreshed for this long is stale: taken over from any host
JOB_ENV = "HEAR_MATPAC_CLAIM_JOB"  # the scheduler job running this process's stages, if any

clock: Callable[[], float] = time.time  # what a lease's age is measured by (tests inject one)
_held: Dict[str, Tuple[str, threading.Event]] = {}  # claim path -> (its token, heartbeat stop)
_lock = threading.Lock()


def owner(claim: Path) -> Optional[dict]:
    """The claim's `{"host", "pid", "token", "job"}`, or None when it is absent or unreadable
    (being written)."""
    try:
        data = json.loads(Path(claim).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lease_expired(claim: Path, lease_s: float = LEASE_S) -> bool:
    """True when `claim` was last refreshed more than `lease_s` seconds ago."""
    try:
        return clock() - os.stat(claim).st_mtime > lease_s
    except FileNotFoundError:
        return False


def _same_job(data: Optional[dict]) -> bool:
    job = os.environ.get(JOB_ENV, "")
    return bool(job) and bool(data) and data.get("job") == job


def _token(claim: Path) -> Optional[str]:
    with _lock:
        held = _held.get(str(claim))
    return held[0] if held else None


def holds_claim(claim: Path) -> bool:
    """True when this process took `claim` and nobody has taken it over since."""
    token = _token(Path(claim))
    data = owner(claim)
    return token is not None and bool(data) and data.get("token") == token


def claim_token(claim: Path) -> str:
    """The token of `claim` as this process took it (names its work folder); '' if not held."""
    return _token(Path(claim)) or ""


def _heartbeat(claim: Path, token: str, stop: threading.Event, every_s: float) -> None:
    """Refresh `claim`'s modification time until stopped or until it is no longer ours."""
    while not stop.wait(every_s):
        data = owner(claim)
        if not data or data.get("token") != token:
            return
        try:
            os.utime(claim)
        except OSError:  # gone, or the file system is away: the lease may run out
            pass


def take_claim(claim: Path, lease_s: float = LEASE_S) -> bool:
    """Take `claim` (a file path); True when this process holds it now, with a heartbeat
    keeping its lease. A claim whose owner is gone (dead pid on this host, the same scheduler
    job, or a lease not refreshed for `lease_s` seconds) is taken over; one held by a live
    owner is left alone."""
    claim = Path(claim)
    if holds_claim(claim):
        return True
    token = uuid.uuid4().hex
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                       "job": os.environ.get(JOB_ENV, "")}).encode()  # fmt: skip
    for _ in range(3):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            data = owner(claim)
            if not (owner_gone(data) or _same_job(data) or lease_expired(claim, lease_s)):
                return False
            try:  # owner gone: remove its claim and try again (only one remover wins the next O_EXCL)
                os.unlink(claim)
            except FileNotFoundError:
                pass
            continue
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
        stop = threading.Event()
        with _lock:
            _held[str(claim)] = (token, stop)
        beat = threading.Thread(target=_heartbeat, args=(claim, token, stop, max(lease_s / 4, 0.01)),
                                name=f"claim {claim.name}", daemon=True)  # fmt: skip
        beat.start()
        return True
    return False


def release_claim(claim: Path) -> None:
    """Stop refreshing `claim` and remove it if this process still holds it."""
    claim = Path(claim)
    mine = holds_claim(claim)
    with _lock:
        held = _held.pop(str(claim), None)
    if held:
        held[1].set()
    if mine:
        try:
            os.unlink(claim)
        except FileNotFoundError:
            pass
