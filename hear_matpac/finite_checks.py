"""Checks on one HEAR call's audio and embeddings, reduced on the device and read back once.

Reading a value back from an accelerator makes the host wait for it; a call pays that once, at
its end, whatever the number of clips, checks or micro-batches. Audio is checked as the model
takes it (float32: a float64 1e300 is infinite there), embeddings as they are returned.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .packing import PackedClips, consecutive, sample_blocks
from .windows import device_event, to_host, upload

# Models already warned about audio louder than [-1, 1]: the warning is given once per model.
_WARNED_LOUD: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
_DEFERRED = threading.local()  # .checks: the list `deferred_checks` collects into, this thread


def verify_call(model: nn.Module, audio: Tensor, *outputs: Tensor) -> None:
    """Raise `ValueError` naming the clips whose `audio` `(clips, samples)` (float32, as the
    model took it) or any of `outputs` `(clips, ...)` are not finite; warn once per `model`
    when the audio's peak amplitude is above 1. One read from the device."""
    _verify(model, *_ranges([audio]), outputs)


class ClipRows(NamedTuple):
    """Rows of clips end to end, `values` `(sum of counts, ...)`: clip i owns `counts[i]`
    consecutive rows, the first `kept[i]` of which are returned (and checked)."""

    values: Tensor
    counts: Sequence[int]
    kept: Sequence[int]


def verify_packed(model: nn.Module, audio: Tensor, lengths: Sequence[int],
                  *outputs: Union[Tensor, ClipRows]) -> None:  # fmt: skip
    """`verify_call` for clips of different lengths: `audio` `(samples,)` holds them end to
    end (`lengths`), each of `outputs` is `(clips, ...)` or `ClipRows`. Ops per call, not per
    clip (the audio's per block of clips of one length when there are few, each lying end to
    end); one read."""
    lengths = list(lengths)
    blocks = sample_blocks(lengths)
    few = len(blocks) <= FEW_BLOCKS and all(consecutive(members) for _, members in blocks)
    sizes = [] if few else list(lengths)  # segment lengths: the audio's, then each ClipRows'
    for output in outputs:
        if isinstance(output, ClipRows):  # kept and dropped rows of each clip, alternating
            sizes += [n for k, c in zip(output.kept, output.counts) for n in (k, c - k)]
    sizes_on_device = upload(torch.tensor(sizes, dtype=torch.int64), audio.device) if sizes else None
    if few:  # each block's rows reduced on a view: one pass, no copy (blocks end to end: clip order)
        clips = PackedClips(audio, lengths)
        finite_audio, peak = _ranges([clips.block(members) for _, members in blocks])
        at = 0
    else:  # x * 0: 0 where x is finite, NaN where it is NaN or Inf; a sum of those is NaN iff one is
        summed = torch.segment_reduce(audio * 0, "sum", lengths=sizes_on_device[: len(lengths)], unsafe=True)
        finite_audio, peak = torch.isfinite(summed), _peak(*torch.aminmax(audio))
        at = len(lengths)
    _verify(model, finite_audio, peak, _finite_outputs(outputs, sizes_on_device, at, len(lengths)))


# At most this many blocks of clips of one length (`packing.sample_blocks`), each lying end to end,
# a packed call's audio is checked block by block (two reductions each, on views: no copy);
# otherwise by segments in one go.
FEW_BLOCKS = 4


def _ranges(blocks: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
    """`(rows,)` bool, whether each row of `blocks` `(rows_k, samples_k)` is finite (rows block
    after block), and the peak amplitude of all (NaN or Inf where a row is not finite)."""
    low = [block.amin(dim=1) for block in blocks]  # (torch.aminmax by rows is slower)
    high = [block.amax(dim=1) for block in blocks]
    low, high = (torch.cat(part) if len(part) > 1 else part[0] for part in (low, high))
    return torch.isfinite(low) & torch.isfinite(high), _peak(low.min(), high.max())  # as _finite_rows


def _peak(low: Tensor, high: Tensor) -> Tensor:
    return torch.maximum(-low, high)


def _finite_outputs(outputs: Sequence[Union[Tensor, ClipRows]], sizes: Optional[Tensor], at: int,
                    n_clips: int) -> list[Tensor]:  # fmt: skip
    """`(clips,)` bool per output of `verify_packed`: `sizes[at:]` each `ClipRows`' alternating
    segment lengths, on the device."""
    finite = []
    for output in outputs:
        if not isinstance(output, ClipRows):
            finite.append(output)
            continue
        rows_bad = (~_finite_rows(output.values)).float()  # (rows,)
        segments = sizes[at : at + 2 * n_clips]
        at += 2 * n_clips
        bad = torch.segment_reduce(rows_bad, "sum", lengths=segments, unsafe=True)[0::2]
        finite.append(bad == 0)
    return finite


def _verify(model: nn.Module, finite_audio: Tensor, peak: Tensor, outputs: Sequence[Tensor]) -> None:
    """`finite_audio` `(clips,)` bool; `peak` the audio's peak amplitude. `outputs`: `(clips, ...)`
    values, or `(clips,)` bool already reduced (finite per clip)."""
    finite_out = torch.stack([_finite_clips(o) for o in outputs]).all(dim=0)
    summary = torch.cat([finite_audio.float(), finite_out.float(), peak.view(1)])
    check = PendingCheck(model, summary, finite_audio.shape[0])
    deferred = getattr(_DEFERRED, "checks", None)
    if deferred is None:
        check.result(stacklevel=6)  # the warning points at the caller of the HEAR function
    else:
        deferred.append(check)


class PendingCheck:
    """A call's check with its one device read still to come: the summary is copied to the host
    without waiting (into pinned memory, an event recorded, on CUDA); `result()` waits for it and
    raises or warns as the call would have."""

    def __init__(self, model: nn.Module, summary: Tensor, n_clips: int) -> None:
        self.model, self.n_clips = model, n_clips
        self.summary = to_host(summary)
        self.event = device_event(summary.device)  # the summary's device, not the current one

    def result(self, stacklevel: int = 3) -> None:
        """Wait for the summary (the call's only device read) and judge it."""
        if self.event is not None:
            self.event.synchronize()
        _judge(self.model, self.summary.tolist(), self.n_clips, stacklevel)


@contextlib.contextmanager
def deferred_checks() -> Iterator[List[PendingCheck]]:
    """Within the block (this thread), a call does not read its check back: it appends a
    `PendingCheck` to the list yielded, so the caller can queue more work on the device before
    it waits (`files/embed.py`: chunk N is read back after chunk N+1 is queued)."""
    before = getattr(_DEFERRED, "checks", None)
    _DEFERRED.checks = checks = []
    try:
        yield checks
    finally:
        _DEFERRED.checks = before


def _judge(model: nn.Module, values: List[float], n_clips: int, stacklevel: int) -> None:
    bad_audio = [i for i, ok in enumerate(values[:n_clips]) if not ok]
    if bad_audio:
        raise ValueError(
            f"audio contains NaN or Inf in clip(s) {_listed(bad_audio)} (checked as float32, the "
            "model's input type: beyond +-3.4e38 is Inf); clean or drop those clips"
        )
    peak = values[-1]
    bad_out = [i for i, ok in enumerate(values[n_clips : 2 * n_clips]) if not ok]
    if bad_out:
        raise ValueError(
            f"embeddings are NaN or Inf for clip(s) {_listed(bad_out)} although the audio is finite; "
            f"the audio's peak amplitude is {peak:.3g}: scale the audio to [-1, 1]"
        )
    if peak > 1.0 and model not in _WARNED_LOUD:
        _WARNED_LOUD.add(model)
        warnings.warn(
            f"audio peak amplitude is {peak:.3g}, above 1: HEAR audio is float in [-1, 1]; "
            "scale integer PCM values first (int16: / 32768). Said once per model.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _finite_clips(output: Tensor) -> Tensor:
    """`(clips,)` bool: whether each clip's part of `output` `(clips, ...)` is finite (a bool
    `(clips,)` is that already)."""
    if output.dtype == torch.bool and output.ndim == 1:
        return output
    return _finite_rows(output)


def _finite_rows(values: Tensor) -> Tensor:
    """`(rows,)` bool: whether each row of `values` `(rows, ...)` is finite. A row's least and
    greatest values are finite iff all are (NaN propagates through both): two reductions that
    read the values once each, where `isfinite(...).all()` writes a mask first."""
    flat = values.flatten(1)
    return torch.isfinite(flat.amin(dim=1)) & torch.isfinite(flat.amax(dim=1))


def _listed(clips: list[int]) -> str:
    return ", ".join(map(str, clips[:10])) + (f" ... ({len(clips)} clips)" if len(clips) > 10 else "")
