"""Batches sized by each window group's own length, by free memory on CUDA, and an out-of-memory
error retried in halves without changing any output."""
from __future__ import annotations

import warnings

import pytest
import torch

import hear_matpac
from hear_matpac import batching
from hear_matpac.config import EncoderConfig

from conftest import TINY_FLAT

VIT_BASE = EncoderConfig()
CUDA = torch.device("cuda")  # a device object only: nothing is allocated on it


def encoder_batches(model) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    model.encoder.register_forward_pre_hook(lambda m, args: sizes.append((args[0].shape[0], args[0].shape[-1])))
    return sizes


def test_one_second_clips_share_a_budget_sized_for_their_own_window_length():
    model = hear_matpac.load_model(str(TINY_FLAT))  # default budget: 16 windows of 608 frames
    sizes = encoder_batches(model)
    hear_matpac.get_scene_embeddings(torch.zeros(100, 16000), model)
    # 98 frames: one window of 7 columns (112 frames) per clip; 16 * 608 // 112 = 86 per batch
    assert sizes == [(86, 112), (14, 112)]


def test_cpu_budget_is_max_windows_full_windows():
    assert batching.frame_budget(VIT_BASE, None, "fp32", torch.device("cpu")) == 16 * 608
    assert batching.frame_budget(VIT_BASE, 3, "fp32", torch.device("cpu")) == 3 * 608


def test_cuda_budget_follows_free_memory_under_the_cap(monkeypatch):
    free = {"bytes": 2**30}
    monkeypatch.setattr(batching, "cuda_free_bytes", lambda device: free["bytes"])
    per_window = 6.25 * 2**20  # ViT-Base fp32, 608 frames, as measured on an H200 (issue 24)
    budget = batching.frame_budget(VIT_BASE, None, "fp32", CUDA)
    assert budget == int(0.5 * 2**30 / (per_window / 608))  # half the free memory
    assert budget // 608 == 81  # 512 MiB / 6.25 MiB = 81.9 windows
    assert batching.frame_budget(VIT_BASE, None, "bf16", CUDA) == pytest.approx(128 * 608, abs=1)  # 512 / 4 MiB
    wide = EncoderConfig(embed_dim=1536, num_heads=24)
    assert batching.frame_budget(wide, None, "fp32", CUDA) == pytest.approx(budget / 2, abs=1)
    assert batching.frame_budget(VIT_BASE, 8, "fp32", CUDA) == 8 * 608  # max_windows caps it
    free["bytes"] = 2**40
    assert batching.frame_budget(VIT_BASE, None, "fp32", CUDA) == batching.AUTO_CAP_WINDOWS * 608
    free["bytes"] = 0
    assert batching.frame_budget(VIT_BASE, None, "fp32", CUDA) == 1  # still one window per batch


def inject_oom(monkeypatch, model, most: int) -> list[int]:
    """Make the encoder raise CUDA's out-of-memory error for batches above `most` windows."""
    tried: list[int] = []
    original = model.encoder.forward

    def forward(x, layer):
        tried.append(x.shape[0])
        if x.shape[0] > most:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(x, layer)

    monkeypatch.setattr(model.encoder, "forward", forward)
    return tried


def test_out_of_memory_is_retried_in_halves_with_unchanged_outputs(monkeypatch, clips):
    audio = torch.cat([clips, clips], dim=1).repeat(4, 1)  # 12 clips of 5 s
    expected = hear_matpac.get_timestamp_embeddings(audio, hear_matpac.load_model(str(TINY_FLAT)))
    model = hear_matpac.load_model(str(TINY_FLAT))
    tried = inject_oom(monkeypatch, model, most=3)
    with pytest.warns(UserWarning, match="out of device memory encoding 12 windows.*retrying with 6") as said:
        got = hear_matpac.get_timestamp_embeddings(audio, model)
    assert len([w for w in said if "out of device memory" in str(w.message)]) == 1  # said once
    assert tried[:3] == [12, 6, 3]
    assert torch.equal(got[1], expected[1])
    assert (got[0] - expected[0]).abs().max() <= 1e-5
    assert torch.equal(got[0], hear_matpac.get_timestamp_embeddings(audio, hear_matpac.load_model(str(TINY_FLAT), max_windows=3))[0])
    tried.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        again = hear_matpac.get_timestamp_embeddings(audio, model)
    assert max(tried) == 3  # the learnt budget: no failing batch again
    assert torch.equal(again[0], got[0])


def test_out_of_memory_with_one_window_is_raised(monkeypatch):
    model = hear_matpac.load_model(str(TINY_FLAT))
    inject_oom(monkeypatch, model, most=0)
    with pytest.warns(UserWarning, match="out of device memory"):
        with pytest.raises(torch.cuda.OutOfMemoryError):
            hear_matpac.get_scene_embeddings(torch.zeros(4, 16000), model)
