"""Non-finite audio or embeddings are refused naming the clips, loud audio is warned about once,
audio in the (n_samples, channels) layout is refused, and all of it costs one device read per call."""
from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest
import soundfile
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hear_matpac
from hear_matpac.api import get_scene_and_timestamp_embeddings
from hear_matpac.files.audio import read_audio

from conftest import TINY_FLAT

API = (hear_matpac.get_scene_embeddings, hear_matpac.get_timestamp_embeddings, get_scene_and_timestamp_embeddings)


@pytest.fixture
def fresh_model() -> hear_matpac.api.MatpacModel:
    """A model of its own, not yet warned about loud audio."""
    return hear_matpac.load_model(str(TINY_FLAT))


@pytest.mark.parametrize("embed", API)
def test_float64_finite_only_before_the_cast_names_the_clip(tiny_model, embed):
    audio = torch.zeros(3, 16000, dtype=torch.float64)
    audio[1, 100] = 1e300  # finite in float64, Inf in float32
    with pytest.raises(ValueError, match=r"audio contains NaN or Inf in clip\(s\) 1 "):
        embed(audio, tiny_model)


@pytest.mark.parametrize("embed", API)
def test_nan_embeddings_from_huge_audio_name_the_clip(tiny_model, embed):
    audio = 0.1 * torch.ones(3, 16000)
    audio[2] *= 1e31  # finite float32 audio whose embeddings overflow to NaN
    assert not torch.isfinite(tiny_model.column_features(audio)[2]).all()
    with pytest.raises(ValueError, match=r"embeddings are NaN or Inf for clip\(s\) 2 .*peak amplitude is 1e\+30"):
        embed(audio, tiny_model)


def test_float_wav_of_huge_samples_is_refused(tiny_model, tmp_path):
    path = tmp_path / "loud.wav"
    soundfile.write(path, np.full(16000, 1e20, dtype=np.float32), 16000, subtype="FLOAT")
    clip = read_audio(path)  # finite: the file itself is readable
    with pytest.raises(ValueError, match=r"embeddings are NaN or Inf for clip\(s\) 0\b"):
        hear_matpac.get_scene_embeddings(clip.samples[None], tiny_model)


def test_audio_above_one_warns_once_per_model(fresh_model):
    int16_like = torch.randint(-20000, 20000, (2, 16000)).float()  # int16 values passed as float
    with pytest.warns(UserWarning, match=r"peak amplitude is 2e\+04, above 1.*32768"):
        scene = hear_matpac.get_scene_embeddings(int16_like, fresh_model)
    assert torch.isfinite(scene).all()  # a warning, not an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hear_matpac.get_timestamp_embeddings(int16_like, fresh_model)  # said once already


def test_audio_within_one_does_not_warn(fresh_model):
    audio = torch.ones(2, 16000)
    audio[1] = -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hear_matpac.get_scene_embeddings(audio, fresh_model)


@pytest.mark.parametrize("shape", [(16000, 2), (400, 8), (48000, 1)])
def test_samples_by_channels_layout_is_refused(tiny_model, shape):
    with pytest.raises(ValueError, match=r"looks like \(n_samples, channels\).*transpose.*mono"):
        hear_matpac.get_scene_embeddings(torch.zeros(shape), tiny_model)


@pytest.mark.parametrize("shape", [(1, 100), (399, 8), (2, 8)])
def test_short_clips_are_still_clips(tiny_model, shape):
    assert hear_matpac.get_scene_embeddings(torch.zeros(shape), tiny_model).shape[0] == shape[0]


@pytest.mark.parametrize("shape", [(0, 16000), (0, 0)])
def test_no_clips_is_a_value_error(tiny_model, shape):
    with pytest.raises(ValueError, match="no sounds"):
        hear_matpac.get_timestamp_embeddings(torch.zeros(shape), tiny_model)


# Ops that make the host wait for an accelerator: reading a scalar, and anything sized by data.
_READS = {"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "unique", "_unique2"}


class DeviceReads(TorchDispatchMode):
    """Counts ops that would make the host wait for the device, including indexing by a
    boolean mask (its true count sizes the result)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        masked = name in ("index", "index_put_", "index_put") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
        )
        if name in _READS or masked:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("embed", API)
@pytest.mark.parametrize("hop_ms", [160, 40])
def test_one_device_read_per_call_whatever_the_micro_batches(monkeypatch, embed, hop_ms):
    tolist_calls = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: tolist_calls.append(t.shape) or original(t))
    audio = 0.1 * torch.randn(3, 12 * 16000, generator=torch.Generator().manual_seed(0))
    for max_windows in (1, 2, 64):  # 1: dozens of micro-batches; 64: one per window length
        model = hear_matpac.load_model(str(TINY_FLAT), max_windows=max_windows, timestamp_hop_ms=hop_ms)
        tolist_calls.clear()
        with DeviceReads() as reads:
            embed(audio, model)
        assert (dict(reads.ops), len(tolist_calls)) == ({}, 1), max_windows


@pytest.mark.parametrize("embed", API)
def test_index_tensors_reach_the_device_in_one_copy_per_call(monkeypatch, embed):
    """Host-to-device copies (`Tensor.to` with a device) per call do not depend on the number of
    micro-batches or window groups: the window indices travel once, built on the host."""
    from hear_matpac import model as model_module

    moves, index_calls = [], []
    original_to, original_index = torch.Tensor.to, model_module.index_call

    def counting_to(t, *args, **kwargs):
        if "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args):
            moves.append(1)
        return original_to(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    monkeypatch.setattr(model_module, "index_call", lambda *a: index_calls.append(1) or original_index(*a))
    audio = 0.1 * torch.randn(2, 12 * 16000, generator=torch.Generator().manual_seed(1))
    frame_calls = {(API[2], 20): 2}  # the scene on its own 160 ms grid: a second pass
    other_moves = set()
    for max_windows, hop_ms in ((1, 160), (64, 160), (1, 20), (64, 20)):  # 20 ms: 8 passes, more groups
        model = hear_matpac.load_model(str(TINY_FLAT), max_windows=max_windows, timestamp_hop_ms=hop_ms)
        moves.clear(), index_calls.clear()
        embed(audio, model)
        assert len(index_calls) == frame_calls.get((embed, hop_ms), 1)
        other_moves.add(len(moves) - len(index_calls))  # the API's own moves of audio and outputs
    assert len(other_moves) == 1, other_moves


@pytest.mark.parametrize("timestamps, hop_ms", [(False, 160), (True, 160), (True, 40)])
def test_one_device_read_per_packed_call_whatever_the_clips(monkeypatch, timestamps, hop_ms):
    """`embed_packed` of clips of different lengths: one read however many clips and micro-batches."""
    from hear_matpac.api import embed_packed

    tolist_calls = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: tolist_calls.append(t.shape) or original(t))
    generator = torch.Generator().manual_seed(2)
    for n_clips in (1, 7):
        lengths = [300 + 9_000 * i for i in range(n_clips)]  # up to 4 windows of 0.96 s and a tail
        audio = 0.1 * torch.randn(sum(lengths), generator=generator)
        for max_windows in (1, 64):
            model = hear_matpac.load_model(str(TINY_FLAT), max_windows=max_windows, timestamp_hop_ms=hop_ms,
                                           window_seconds=0.96)  # fmt: skip
            tolist_calls.clear()
            with DeviceReads() as reads:
                embed_packed(audio, lengths, model, timestamps=timestamps)
            assert (dict(reads.ops), len(tolist_calls)) == ({}, 1), (n_clips, max_windows)


@pytest.mark.parametrize("timestamps", [False, True])
@pytest.mark.parametrize("few_blocks", [4, 0])
def test_packed_non_finite_audio_and_embeddings_name_their_clips(monkeypatch, tiny_model, timestamps, few_blocks):
    """`embed_packed`'s checks reduce over the whole call (the audio block by block when there
    are few blocks of one length, else by segments; `few_blocks` 0: always by segments): each
    clip is judged by its own samples and rows, clips of one length included."""
    from hear_matpac.api import embed_packed

    monkeypatch.setattr(hear_matpac.finite_checks, "FEW_BLOCKS", few_blocks)

    lengths = [8000, 16000, 8000, 24000, 8000, 16000]
    clips = [0.1 * torch.ones(n) for n in lengths]
    clips[2][-1] = float("nan")  # the last sample of a clip: next to its neighbour's first
    clips[5][0] = float("inf")
    with pytest.raises(ValueError, match=r"audio contains NaN or Inf in clip\(s\) 2, 5 "):
        embed_packed(torch.cat(clips), lengths, tiny_model, timestamps=timestamps)
    # -Inf at both ends of a clip in a block of clips that lie end to end (its audio reduced as
    # one view: a view shifted either way would name a neighbour too)
    end_to_end = [8000, 8000, 8000, 16000]
    clips = [0.1 * torch.ones(n) for n in end_to_end]
    clips[1][0] = clips[1][-1] = float("-inf")
    with pytest.raises(ValueError, match=r"audio contains NaN or Inf in clip\(s\) 1 "):
        embed_packed(torch.cat(clips), end_to_end, tiny_model, timestamps=timestamps)
    clips = [0.1 * torch.ones(n) for n in lengths]
    clips[1] *= 1e31  # finite float32 audio whose embeddings overflow to NaN
    clips[4] *= 1e31
    with pytest.raises(ValueError, match=r"embeddings are NaN or Inf for clip\(s\) 1, 4 "):
        embed_packed(torch.cat(clips), lengths, tiny_model, timestamps=timestamps)


def test_packed_timestamp_rows_are_checked_per_clip_reported_rows_only(monkeypatch):
    """With timestamps on a finer grid, the returned rows of each clip are checked (the scene
    comes from a second pass): a NaN in a returned row names its clip, one in a trailing row
    that is not returned does not."""
    from hear_matpac.api import embed_packed
    from hear_matpac.model import MatpacModel
    from hear_matpac.timestamps import n_reported_columns

    model = hear_matpac.load_model(str(TINY_FLAT), timestamp_hop_ms=40)
    lengths = [16000, 9000, 16000, 9000]
    original = MatpacModel.packed_column_features
    poison: list[int] = []  # rows of the fine grid to make NaN

    def poisoned(self, audio, lengths, native_grid=False):
        out, columns = original(self, audio, lengths, native_grid)
        if not native_grid:
            out[poison] = float("nan")
        return out, columns

    monkeypatch.setattr(MatpacModel, "packed_column_features", poisoned)
    audio = 0.1 * torch.randn(sum(lengths), generator=torch.Generator().manual_seed(4))
    columns = original(model, audio, lengths)[1]
    reported = [n_reported_columns(n, c, model.options.hop_samples) for n, c in zip(lengths, columns)]
    assert reported[3] < columns[3]  # clip 3 has a trailing row that is not returned
    start = [sum(columns[:i]) for i in range(len(lengths))]
    poison[:] = [start[2] + reported[2] - 1, start[3] + columns[3] - 1]  # clip 2's last returned; clip 3's dropped
    with pytest.raises(ValueError, match=r"embeddings are NaN or Inf for clip\(s\) 2 "):
        embed_packed(audio, lengths, model, timestamps=True)
    poison[:] = [start[3] + columns[3] - 1]
    embed_packed(audio, lengths, model, timestamps=True)  # nothing returned is NaN
