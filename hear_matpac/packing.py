"""Clips of different lengths end to end in one tensor, the layout of `api.embed_packed`: the
blocks of clips of one length, and each block as one `(clips, samples)` tensor (a view where its
clips lie end to end). Host work here is per block, never per clip on the device."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

# Samples per block of `sample_blocks`: bounds the transient memory of what is made per block
# (the front end's STFT output and power spectrum take several times the audio's bytes).
BLOCK_SAMPLES = 1 << 24


def length_blocks(lengths: Sequence[int]) -> Dict[int, List[int]]:
    """The clips of each sample length: `{length: [positions in lengths]}`, lengths in order of
    first appearance."""
    blocks: Dict[int, List[int]] = {}
    for i, length in enumerate(lengths):
        blocks.setdefault(length, []).append(i)
    return blocks


def sample_blocks(lengths: Sequence[int]) -> List[Tuple[int, List[int]]]:
    """`(length, clips)`: the `length_blocks` cut into blocks of at most `BLOCK_SAMPLES` samples
    (a clip longer than that is a block of its own)."""
    cap = BLOCK_SAMPLES
    return [
        (length, members[at : at + max(1, cap // length)])
        for length, members in length_blocks(lengths).items()
        for at in range(0, len(members), max(1, cap // length))
    ]


def consecutive(members: Sequence[int]) -> bool:
    """Whether `members` (increasing positions) are consecutive clips, lying end to end."""
    return members[-1] - members[0] == len(members) - 1


def clip_starts(lengths: Sequence[int]) -> np.ndarray:
    """Each clip's first sample (or row) in the packed tensor."""
    return np.cumsum(lengths) - np.asarray(lengths)


class PackedClips:
    """Clips end to end along the first axis of `audio` `(samples, ...)`, clip i `lengths[i]`
    samples (or rows) long, taken block by block (`block`)."""

    def __init__(self, audio: Tensor, lengths: Sequence[int]) -> None:
        self.audio, self.lengths = audio, list(lengths)
        self.starts = clip_starts(self.lengths)
        self._clips: Optional[Tuple[Tensor, ...]] = None  # every clip as a view, made once if needed

    def block(self, members: Sequence[int]) -> Tensor:
        """`(len(members), length, ...)`: the clips `members`, all of one length; a view where
        they lie end to end, else gathered (one stack; the clips' views are made once a call)."""
        length = self.lengths[members[0]]
        if consecutive(members):
            first = int(self.starts[members[0]])
            rows = self.audio[first : first + len(members) * length]
            return rows.view(len(members), length, *self.audio.shape[1:])
        if self._clips is None:
            self._clips = self.audio.split(self.lengths)
        return torch.stack([self._clips[i] for i in members])
