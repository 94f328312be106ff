"""A clip's embeddings depend neither on its batch-mates nor on the micro-batch size."""
from __future__ import annotations

import pytest
import torch

import hear_matpac

TOLERANCE = 1e-5
LONG = 3 * 97280 + 5000  # three full windows and a tail


@pytest.fixture(scope="module")
def long_clips():
    generator = torch.Generator().manual_seed(7)
    return (0.2 * torch.randn(3, LONG, generator=generator)).clamp(-1, 1)


def test_clip_alone_equals_clip_in_batch(tiny_model, long_clips):
    together, _ = hear_matpac.get_timestamp_embeddings(long_clips, tiny_model)
    for i in range(3):
        alone, _ = hear_matpac.get_timestamp_embeddings(long_clips[i : i + 1], tiny_model)
        assert (together[i] - alone[0]).abs().max() <= TOLERANCE
    reordered, _ = hear_matpac.get_timestamp_embeddings(long_clips.flip(0), tiny_model)
    assert (reordered.flip(0) - together).abs().max() <= TOLERANCE


@pytest.mark.parametrize("max_windows", [1, 2, 5, 1000])
def test_micro_batch_size_does_not_change_results(tiny_model, long_clips, max_windows):
    reference = tiny_model.column_features(long_clips)
    model = hear_matpac.load_model(str(tiny_model.weights_path), max_windows=max_windows)
    assert (model.column_features(long_clips) - reference).abs().max() <= TOLERANCE
    scene = hear_matpac.get_scene_embeddings(long_clips, model)
    assert (scene - reference.mean(dim=1)).abs().max() <= TOLERANCE


def test_windows_are_encoded_independently(tiny_model, long_clips):
    """Columns of the second window equal encoding that window's samples on their own."""
    features = tiny_model.column_features(long_clips[:1])
    # Window 2 starts at frame 608 = sample 97280 and its 608 frames need 97520 samples.
    alone = tiny_model.column_features(long_clips[:1, 97280 : 97280 + 97520])
    assert alone.shape[1] == 38
    assert (features[:, 38:76] - alone).abs().max() <= TOLERANCE


def test_micro_batches_are_bounded(tiny_model, long_clips, monkeypatch):
    model = hear_matpac.load_model(str(tiny_model.weights_path), max_windows=2)
    seen = []
    original = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda x, layer: seen.append(x.shape[::3]) or original(x, layer))
    model.column_features(long_clips)  # 3 clips x (3 full + 1 tail of 2 columns) windows
    assert max(b * frames for b, frames in seen) <= 2 * 608  # two full windows' frames
    assert seen == [(2, 608)] * 4 + [(1, 608), (3, 32)]  # the three tails fit in one batch
