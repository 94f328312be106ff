"""Sliding temporal windows: plan where windows lie, cut them into micro-batches, stitch back.

A plan is computed once per call from the clip length alone (all clips of a HEAR call have the
same length), so every clip is cut identically and all windows of all clips can share
micro-batches: the only Python loop is over micro-batches, never over clips or windows. The
indices of a call are made on the host and moved to the device once (`index_call`).

Clips of different lengths (`index_packed`) are cut each by its own plan (clips of one length
share it), their log-mel frames laid out block by block of equal length and their output columns
end to end in clip order; windows of one length from every clip still share
micro-batches (all full windows together, tails of equal length together). Windows are never
padded to share a batch: that would change their outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .config import PATCH


@dataclass(frozen=True)
class WindowGroup:
    """Windows of one length.

    `starts`: `(windows,)` first log-mel frame of each window.
    `dest`: `(windows, frames // PATCH)` output column that each window column fills, or -1
    where that column is not used.
    """

    frames: int
    starts: Tensor
    dest: Tensor


@dataclass(frozen=True)
class WindowPlan:
    """How one clip's log-mel is cut: `n_columns` output columns filled by `groups`;
    `padded_frames`: frames the log-mel must have (zero-padded) for every window to lie inside it."""

    n_columns: int
    groups: tuple[WindowGroup, ...]
    padded_frames: int


def padded_columns(n_frames: int) -> int:
    """Columns once the frame axis is zero-padded to a multiple of PATCH."""
    return -(-n_frames // PATCH)


def plan_windows(
    n_frames: int, window_frames: int, passes: int = 1, overlap: float = 0.0
) -> WindowPlan:
    """Where the windows of a clip of `n_frames` log-mel frames lie, and where their columns go.

    Pass k (of `passes`, which divides PATCH) reads the log-mel from frame k * PATCH / passes
    on, i.e. the audio with k * 2560 / passes samples dropped from the front; its column j
    becomes output column j * passes + k, so the passes interleave into one evenly spaced
    grid. A pass whose shifted log-mel is empty contributes nothing. As a shift is less than one
    column, pass k has at most one column fewer than pass 0 and the output columns are exactly
    0 .. n_columns - 1, each filled once.

    Each pass is cut as MATPAC does: padded to whole columns, then consecutive windows of
    `window_frames` frames, the last one shorter. With `overlap` > 0 and more columns than one
    window, windows of full length advance by `window_columns - floor(overlap * window_columns)`
    columns, the last one ending at the last column, and each column is taken from the window
    in which it sits most centrally (ties: the earlier window).
    """
    if window_frames <= 0 or window_frames % PATCH:
        raise ValueError(f"window_frames must be a positive multiple of {PATCH}, got {window_frames}")
    if passes < 1 or PATCH % passes:
        raise ValueError(f"passes must divide {PATCH}, got {passes}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    window_columns = window_frames // PATCH
    shift_frames = PATCH // passes
    pieces: dict[int, list[tuple[Tensor, Tensor]]] = {}  # window frames -> (starts, dest) pieces
    n_columns = padded_frames = 0
    for k in range(passes):
        pass_frames = n_frames - k * shift_frames
        if pass_frames <= 0:
            continue
        columns = padded_columns(pass_frames)
        n_columns += columns
        # every cut ends its last window at the pass's last padded column
        padded_frames = max(padded_frames, columns * PATCH + k * shift_frames)
        for start_columns, dest in _cut_pass(columns, window_columns, overlap):
            starts = start_columns * PATCH + k * shift_frames
            out_dest = torch.where(dest >= 0, dest * passes + k, dest)
            pieces.setdefault(dest.shape[1] * PATCH, []).append((starts, out_dest))
    groups = tuple(
        WindowGroup(frames, torch.cat([s for s, _ in parts]), torch.cat([d for _, d in parts]))
        for frames, parts in pieces.items()
    )
    return WindowPlan(n_columns, groups, padded_frames)


def _cut_pass(columns: int, window_columns: int, overlap: float) -> list[tuple[Tensor, Tensor]]:
    """One pass's windows as `(start column (w,), dest (w, length))` per window length, dest in
    the pass's own columns (-1: not kept)."""
    if overlap == 0.0 or columns <= window_columns:
        n_full, tail_columns = divmod(columns, window_columns)
        cut = []
        if n_full:
            starts = torch.arange(n_full) * window_columns
            cut.append((starts, _contiguous_dest(starts, window_columns)))
        if tail_columns:
            starts = torch.tensor([n_full * window_columns])
            cut.append((starts, _contiguous_dest(starts, tail_columns)))
        return cut
    stride = window_columns - math.floor(overlap * window_columns)
    n_windows = 1 + -(-(columns - window_columns) // stride)
    starts = (torch.arange(n_windows) * stride).clamp(max=columns - window_columns)
    return [(starts, _most_central_dest(starts, window_columns, columns))]


def _contiguous_dest(starts: Tensor, columns: int) -> Tensor:
    """Window columns under each window, from its start column: `(windows, columns)`."""
    return starts[:, None] + torch.arange(columns)


def _most_central_dest(starts: Tensor, window_columns: int, columns: int) -> Tensor:
    """`(windows, window_columns)` dest keeping each column only in the window where it is
    farthest from the window's edges (ties: the earlier window); -1 elsewhere."""
    under = _contiguous_dest(starts, window_columns)  # (w, window_columns) column indices
    position = torch.arange(window_columns)
    off_centre = (2 * position - (window_columns - 1)).abs()  # 0 or 1 at the centre
    key = off_centre * len(starts) + torch.arange(len(starts))[:, None]  # unique per column
    best = torch.full((columns,), torch.iinfo(key.dtype).max).scatter_reduce(
        0, under.flatten(), key.flatten(), reduce="amin"
    )
    return torch.where(key == best[under], under, -1)


@dataclass(frozen=True)
class GroupIndex:
    """One window group's windows for every clip of a call, in order (clip-major), on the
    call's device: built on the host once per call and moved there in one copy, so that no
    micro-batch makes the host wait for the device.

    `clip`, `start`: `(windows,)` the clip and first (padded) frame of each window.
    `src`, `dst`: `(kept,)` each kept window column as `window * columns + column`, and the
    output row it fills (`clip * n_columns + column`); every output row is filled exactly once.
    `kept_before`: on the host, kept columns in windows `[0, i)` for i in 0..windows, so a
    micro-batch of windows `[lo, hi)` owns `src` / `dst` entries `kept_before[lo]:kept_before[hi]`.
    """

    frames: int
    clip: Tensor
    start: Tensor
    src: Tensor
    dst: Tensor
    kept_before: tuple[int, ...]

    @property
    def n_windows(self) -> int:
        return len(self.kept_before) - 1


# A window group's index arrays on the host: frames, [clip, start, src, dst], kept_before.
_HostGroup = tuple[int, list[np.ndarray], tuple[int, ...]]


def index_call(plan: WindowPlan, n_clips: int, device: torch.device) -> list[GroupIndex]:
    """The windows of `n_clips` clips cut as `plan` says, one `GroupIndex` per window length,
    with one host-to-device copy (from pinned memory, not blocking the host, on CUDA)."""
    host: list[_HostGroup] = []
    for group in plan.groups:  # in numpy: host work, never mistaken for device reads
        group_dest = group.dest.numpy()
        per_clip = group_dest.shape[0]
        clip = np.repeat(np.arange(n_clips, dtype=np.int64), per_clip)
        window = np.tile(np.arange(per_clip, dtype=np.int64), n_clips)
        dest = group_dest[window]  # (windows, columns)
        kept = dest >= 0
        src = np.flatnonzero(kept)
        dst = (clip[:, None] * plan.n_columns + dest)[kept]
        kept_before = (0, *np.cumsum(kept.sum(axis=1)).tolist())
        host.append((group.frames, [clip, group.starts.numpy()[window], src, dst], kept_before))
    return _upload_groups(host, device)


def index_packed(plans: Sequence[WindowPlan], frame_offsets: Sequence[int], device: torch.device) -> list[GroupIndex]:
    """The windows of clips of different lengths, clip i cut as `plans[i]` says, one `GroupIndex`
    per window length shared by all clips (longest windows first), with one host-to-device copy.

    The clips' padded log-mels lie along the frame axis of one clip (every `clip` index is 0),
    clip i's from frame `frame_offsets[i]` on (`frames_packed` lays them out), and their columns
    end to end in the output, in clip order: clip i's column j is row
    `sum(n_columns of clips < i) + j`. Host work is per distinct plan, not per clip.
    """
    columns = np.array([plan.n_columns for plan in plans], dtype=np.int64)
    row_offsets = np.cumsum(columns) - columns
    frame_offsets = np.asarray(frame_offsets, dtype=np.int64)
    members: dict[int, list[int]] = {}  # id of a plan -> its clips (equal lengths share a plan)
    for i, plan in enumerate(plans):
        members.setdefault(id(plan), []).append(i)
    pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # frames -> (starts, dest rows)
    for clips in members.values():
        plan, clips = plans[clips[0]], np.asarray(clips)
        for group in plan.groups:
            dest = group.dest.numpy()  # (windows, columns) of one clip
            rows = np.where(dest >= 0, dest + row_offsets[clips, None, None], -1)  # (clips, windows, columns)
            starts = group.starts.numpy() + frame_offsets[clips, None]  # (clips, windows)
            pieces.setdefault(group.frames, []).append((starts.reshape(-1), rows.reshape(-1, dest.shape[1])))
    host: list[_HostGroup] = []
    for frames in sorted(pieces, reverse=True):
        start = np.concatenate([s for s, _ in pieces[frames]]).astype(np.int64)
        dest = np.concatenate([d for _, d in pieces[frames]])  # (windows, frames // PATCH)
        kept = dest >= 0
        kept_before = (0, *np.cumsum(kept.sum(axis=1)).tolist())
        clip = np.zeros(len(start), dtype=np.int64)
        host.append((frames, [clip, start, np.flatnonzero(kept), dest[kept]], kept_before))
    return _upload_groups(host, device)


def _upload_groups(host: list[_HostGroup], device: torch.device) -> list[GroupIndex]:
    """`GroupIndex`es on `device` from their host arrays, moved there in one copy."""
    flat = upload(torch.from_numpy(np.concatenate([a for _, parts, _ in host for a in parts]).astype(np.int64)), device)
    indices, offset = [], 0
    for frames, parts, kept_before in host:
        views = []
        for part in parts:
            views.append(flat[offset : offset + len(part)])
            offset += len(part)
        indices.append(GroupIndex(frames, *views, kept_before))
    return indices


class Transfers:
    """Copies between the host and a device that works asynchronously (CUDA): through pinned host
    memory, without making the host wait, and events that say when they are done. `TRANSFERS` is
    the one in use; tests put another there to drive these paths without a GPU."""

    def asynchronous(self, device: torch.device) -> bool:
        """Whether work and copies on `device` run without the host waiting for them."""
        return device.type == "cuda"

    def to_device(self, host: Tensor, device: torch.device) -> Tensor:
        """`host` on `device` (torch keeps the pinned copy until the copy is done)."""
        return host.pin_memory().to(device, non_blocking=True)

    def to_host(self, tensor: Tensor) -> Tensor:
        """A pinned host tensor that `tensor` is being copied into (the copy queued on the
        current stream of `tensor`'s device)."""
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)

    def event(self, device: torch.device) -> Any:
        """An event recorded on `device`'s current stream, where the work before it was queued."""
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        return event


TRANSFERS = Transfers()


def upload(host: Tensor, device: torch.device) -> Tensor:
    """`host` (a CPU tensor) on `device`: on CUDA through pinned memory without making the host
    wait (a tensor pinned already is not copied again on the host)."""
    if TRANSFERS.asynchronous(device):
        return TRANSFERS.to_device(host, device)
    return host.to(device)


def to_host(tensor: Tensor) -> Tensor:
    """`tensor` on the CPU: as it is there; from CUDA copied into pinned memory without making
    the host wait (complete once a `device_event` recorded after it has passed: the host must
    not read it before; torch keeps its memory until the copy is done, even if it is let go);
    from another device (whose copies this does not track), copied now."""
    if TRANSFERS.asynchronous(tensor.device):
        return TRANSFERS.to_host(tensor)
    return tensor.cpu()


def device_event(device: torch.device) -> Optional[Any]:
    """An event recorded on `device`'s current stream, after the work queued there so far (None
    where nothing runs asynchronously: nothing to wait for)."""
    if not TRANSFERS.asynchronous(device):
        return None
    return TRANSFERS.event(device)


def frames_first(mel: Tensor, plan: WindowPlan) -> Tensor:
    """`mel` `(clips, n_freq, frames)` zero-padded to `plan.padded_frames`, as
    `(clips, frames, n_freq)` for `cut_windows`."""
    pad = plan.padded_frames - mel.shape[-1]
    return torch.nn.functional.pad(mel, (0, max(pad, 0))).transpose(1, 2)


def frames_packed(mels: Sequence[Tensor], plans: Sequence[WindowPlan]) -> Tensor:
    """Log-mels `(clips_k, n_freq, frames_k)` of blocks of clips of equal length, each
    zero-padded to its block's plan's `padded_frames`, clip after clip and block after block as
    one clip `(1, sum of padded frames, n_freq)`: the layout `index_packed` indexes (a clip's
    frame offset: the padded frames of the clips before it in this order). Ops per block."""
    n_freq = mels[0].shape[1]
    packed = mels[0].new_empty(n_freq, sum(mel.shape[0] * plan.padded_frames for mel, plan in zip(mels, plans)))
    at = 0
    for mel, plan in zip(mels, plans):  # each log-mel copied once, into its place
        clips, padded, frames = mel.shape[0], plan.padded_frames, mel.shape[-1]  # padded >= frames
        block = packed.narrow(1, at, clips * padded).view(n_freq, clips, padded)
        block.narrow(2, 0, frames).copy_(mel.transpose(0, 1))
        if frames < padded:
            block.narrow(2, frames, padded - frames).zero_()
        at += clips * padded
    return packed.unsqueeze(0).transpose(1, 2)  # a view, as frames_first gives


def cut_windows(frames_first: Tensor, group: GroupIndex, lo: int, hi: int) -> Tensor:
    """Windows `[lo, hi)` of `group` as the encoder takes them: `(hi - lo, 1, n_freq, frames)`."""
    offsets = torch.arange(group.frames, device=frames_first.device)
    frames = group.start[lo:hi, None] + offsets  # (b, frames)
    return frames_first[group.clip[lo:hi, None], frames].transpose(1, 2).unsqueeze(1)


def stitch(out: Tensor, features: Tensor, group: GroupIndex, lo: int, hi: int) -> None:
    """Write the kept columns of windows `[lo, hi)` of `group`, `features` `(hi - lo, columns,
    dim)`, into `out` `(clips * n_columns, dim)`. Integer indices known on the host: indexing
    by a boolean mask instead would make the host wait for the device (its count sizes the
    result)."""
    first, last = group.kept_before[lo], group.kept_before[hi]
    rows = features.flatten(0, 1)
    if last - first < rows.shape[0]:  # some columns dropped (else src is every row, in order)
        rows = rows.index_select(0, group.src[first:last] - lo * features.shape[1])
    out.index_copy_(0, group.dst[first:last], rows.to(out.dtype))
