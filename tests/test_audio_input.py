"""Bad audio is refused with a clear error; good audio of any float dtype and size works."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hear_matpac


def test_numpy_array_is_a_type_error(tiny_model):
    with pytest.raises(TypeError, match="torch.Tensor"):
        hear_matpac.get_scene_embeddings(np.zeros((1, 16000), dtype=np.float32), tiny_model)


@pytest.mark.parametrize("shape", [(16000,), (1, 1, 16000)])
def test_wrong_rank_is_a_value_error(tiny_model, shape):
    with pytest.raises(ValueError, match="2-D") as info:
        hear_matpac.get_timestamp_embeddings(torch.zeros(shape), tiny_model)
    if len(shape) == 1:
        assert "unsqueeze(0)" in str(info.value)


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.bool])
def test_integer_audio_is_a_type_error(tiny_model, dtype):
    with pytest.raises(TypeError, match=r"\[-1, 1\]"):
        hear_matpac.get_scene_embeddings(torch.zeros(1, 16000, dtype=dtype), tiny_model)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_audio_names_the_clip(tiny_model, bad):
    audio = torch.zeros(3, 16000)
    audio[2, 100] = bad
    with pytest.raises(ValueError, match=r"clip\(s\) 2\b"):
        hear_matpac.get_timestamp_embeddings(audio, tiny_model)


def test_zero_samples_is_a_value_error(tiny_model):
    with pytest.raises(ValueError, match="zero samples"):
        hear_matpac.get_scene_embeddings(torch.zeros(2, 0), tiny_model)


def test_wrong_model_is_a_type_error():
    with pytest.raises(TypeError, match="load_model"):
        hear_matpac.get_scene_embeddings(torch.zeros(1, 16000), torch.nn.Linear(2, 2))


def test_float64_and_float16_audio_give_float32(tiny_model, clips):
    reference = hear_matpac.get_scene_embeddings(clips, tiny_model)
    for dtype in (torch.float64, torch.float16):
        scene = hear_matpac.get_scene_embeddings(clips.to(dtype), tiny_model)
        assert scene.dtype == torch.float32 and scene.device == clips.device
    assert torch.equal(hear_matpac.get_scene_embeddings(clips.double(), tiny_model), reference)


@pytest.mark.parametrize("n_samples", [1, 17, 399])
def test_shorter_than_one_stft_window_is_zero_padded(tiny_model, n_samples):
    audio = 0.5 * torch.ones(1, n_samples)
    padded = torch.nn.functional.pad(audio, (0, 400 - n_samples))
    embeddings, timestamps = hear_matpac.get_timestamp_embeddings(audio, tiny_model)
    assert torch.equal(embeddings, tiny_model.column_features(padded)[:, :1])
    assert timestamps.tolist() == [[n_samples / 16]]


def test_model_attributes(tiny_model):
    assert tiny_model.sample_rate == 16000 and isinstance(tiny_model.sample_rate, int)
    assert tiny_model.scene_embedding_size == tiny_model.timestamp_embedding_size == 5 * 192
    assert isinstance(tiny_model, torch.nn.Module) and not tiny_model.training


def test_outputs_are_ordinary_tensors(tiny_model, clips):
    """Callers may modify outputs in place (no inference-mode tensors leak out)."""
    embeddings, timestamps = hear_matpac.get_timestamp_embeddings(clips[:, :31680], tiny_model)
    assert embeddings.shape[1] < tiny_model.column_features(clips[:, :31680]).shape[1]
    embeddings[0, 0] = 0.0
    timestamps += 1.0
    assert not embeddings.requires_grad and embeddings.is_contiguous()
