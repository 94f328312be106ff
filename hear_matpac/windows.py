"""Sliding temporal windows: plan where windows lie, cut them into micro-batches, stitch back.

A plan is computed once per call from the clip length alone (all clips of a HEAR call have the
same length), so every clip is cut identically and all windows of all clips can share
micro-batches: the only Python loop is over micro-batches, never over clips or windows.
"""
from __future__ import annotations

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
    """How one clip's log-mel is cut: `n_columns` output columns filled by `groups`."""

    n_columns: int
    groups: tuple[WindowGroup, ...]

    @property
    def padded_frames(self) -> int:
        """Frames the log-mel must have (zero-padded) for every window to lie inside it."""
        return max(int(g.starts.max()) + g.frames for g in self.groups)


def padded_columns(n_frames: int) -> int:
    """Columns once the frame axis is zero-padded to a multiple of PATCH."""
    return -(-n_frames // PATCH)


def plan_windows(n_frames: int, window_frames: int) -> WindowPlan:
    """MATPAC's cut: pad to whole columns, then consecutive windows of `window_frames`
    frames; the last one is shorter when the padded length is not a multiple of it."""
    if window_frames <= 0 or window_frames % PATCH:
        raise ValueError(f"window_frames must be a positive multiple of {PATCH}, got {window_frames}")
    n_columns = padded_columns(n_frames)
    window_columns = window_frames // PATCH
    n_full, tail_columns = divmod(n_columns, window_columns)
    groups = []
    if n_full:
        starts = torch.arange(n_full) * window_frames
        groups.append(WindowGroup(window_frames, starts, _contiguous_dest(starts, window_columns)))
    if tail_columns:
        starts = torch.tensor([n_full * window_frames])
        groups.append(WindowGroup(tail_columns * PATCH, starts, _contiguous_dest(starts, tail_columns)))
    return WindowPlan(n_columns, tuple(groups))


def _contiguous_dest(starts: Tensor, columns: int) -> Tensor:
    """Each window's columns go to the output columns under it: `(windows, columns)`."""
    return starts[:, None] // PATCH + torch.arange(columns)


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


def stitch(out: Tensor, features: Tensor, clip: Tensor, dest: Tensor) -> None:
    """Write one micro-batch's `features` `(b, columns, dim)` into `out` `(clips, n_columns, dim)`."""
    keep = dest >= 0
    rows = clip[:, None].expand_as(dest)
    out[rows[keep], dest[keep]] = features[keep].to(out.dtype)
