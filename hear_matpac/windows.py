"""Sliding temporal windows: plan where windows lie, cut them into micro-batches, stitch back.

A plan is computed once per call from the clip length alone (all clips of a HEAR call have the
same length), so every clip is cut identically and all windows of all clips can share
micro-batches: the only Python loop is over micro-batches, never over clips or windows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

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


def iter_batches(
    mel: Tensor, plan: WindowPlan, max_windows: int
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Cut `mel` `(clips, n_freq, frames)` into micro-batches of at most `max_windows` windows.

    Yields `(windows (b, 1, n_freq, frames), clip (b,), dest (b, columns))`: the windows, the
    clip each came from and where its columns go. Windows of one group share a batch whatever
    clip they come from.
    """
    n_clips = mel.shape[0]
    pad = plan.padded_frames - mel.shape[-1]
    frames_first = torch.nn.functional.pad(mel, (0, max(pad, 0))).transpose(1, 2)
    for group in plan.groups:
        starts, dest = group.starts.to(mel.device), group.dest.to(mel.device)
        per_clip = len(starts)
        offsets = torch.arange(group.frames, device=mel.device)
        for first in range(0, n_clips * per_clip, max_windows):
            flat = torch.arange(first, min(first + max_windows, n_clips * per_clip), device=mel.device)
            clip, window = flat // per_clip, flat % per_clip
            frames = starts[window, None] + offsets  # (b, frames)
            windows = frames_first[clip[:, None], frames].transpose(1, 2).unsqueeze(1)
            yield windows, clip, dest[window]


def stitch(out: Tensor, features: Tensor, clip: Tensor, dest: Tensor, n_columns: int) -> None:
    """Write one micro-batch's `features` `(b, columns, dim)` into `out` `(clips * n_columns + 1, dim)`:
    the output's `(clips, n_columns)` rows flattened, then a spare row for the window columns
    not kept (dest -1). Indexing by a boolean mask instead would make the host wait for the
    device on every micro-batch (the mask's count sizes the result).
    """
    index = torch.where(dest >= 0, clip[:, None] * n_columns + dest, out.shape[0] - 1)
    out[index] = features.to(out.dtype)
