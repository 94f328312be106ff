"""Timestamps: exact centres from the STFT geometry, spacing, bound, count; HEAR shapes."""
from __future__ import annotations

import pytest
import torch

import hear_matpac

WINDOW_EDGE = 400 + 607 * 160  # samples giving exactly 608 frames, one full window


def expected_centres_ms(n_samples: int) -> list[float]:
    """Independent of the package: frames, padded columns, centres kept inside the clip."""
    frames = (max(n_samples, 400) - 400) // 160 + 1
    columns = (frames + 15) // 16
    centres = [(2560 * j + 1400) / 16 for j in range(columns) if 2560 * j + 1400 <= n_samples]
    return centres or [min(1400, n_samples) / 16]


EDGE_LENGTHS = [
    1, 2, 399, 400, 401, 1399, 1400, 1401, 2800, 2960, 3959, 3960, 3961, 17120, 31680,
    WINDOW_EDGE - 160, WINDOW_EDGE - 1, WINDOW_EDGE, WINDOW_EDGE + 1, WINDOW_EDGE + 160,
    WINDOW_EDGE + 2560, 2 * 97280 + 400, 2 * 97280 + 1399, 2 * 97280 + 1400,
]


@pytest.mark.parametrize("n_samples", EDGE_LENGTHS)
def test_timestamps_values_count_and_bound(tiny_model, n_samples):
    audio = 0.1 * torch.ones(2, n_samples)
    embeddings, timestamps = hear_matpac.get_timestamp_embeddings(audio, tiny_model)
    expected = expected_centres_ms(n_samples)
    assert timestamps.dtype == torch.float32 and embeddings.dtype == torch.float32
    assert timestamps.shape == (2, len(expected))
    assert embeddings.shape == (2, len(expected), tiny_model.timestamp_embedding_size)
    assert timestamps[0].tolist() == expected and timestamps[1].tolist() == expected
    assert float(timestamps.max()) <= n_samples / 16
    if len(expected) > 1:
        assert set(torch.diff(timestamps[0]).tolist()) == {160.0}


def test_no_rounding_drift_over_an_hour():
    from hear_matpac.timestamps import timestamps_ms

    n_samples = 3600 * 16000
    columns = ((n_samples - 400) // 160 + 1 + 15) // 16
    times = timestamps_ms(n_samples, columns)
    assert times[-1].item() == 160 * (len(times) - 1) + 87.5
    assert torch.equal(times, 160 * torch.arange(len(times), dtype=torch.float32) + 87.5)


def test_198_seconds_drops_the_13th_column(tiny_model):
    embeddings, timestamps = hear_matpac.get_timestamp_embeddings(torch.zeros(1, 31680), tiny_model)
    assert tiny_model.column_features(torch.zeros(1, 31680)).shape[1] == 13
    assert timestamps.shape == (1, 12) and timestamps[0, -1].item() == 1847.5


@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_validator_timestamp_shapes(tiny_model, seconds):
    n = int(round(seconds * 16000))
    audio = torch.rand(2, n) * 2 - 1
    embeddings, timestamps = hear_matpac.get_timestamp_embeddings(audio, tiny_model)
    assert embeddings.shape[:2] == timestamps.shape and timestamps.shape[0] == 2
    assert embeddings.shape[2] == tiny_model.timestamp_embedding_size
    assert timestamps.dtype == embeddings.dtype == torch.float32
    assert float(timestamps.max()) <= seconds * 1000


def test_validator_scene_shape(tiny_model):
    audio = torch.rand(4, int(2.74 * 16000)) * 2 - 1
    scene = hear_matpac.get_scene_embeddings(audio, tiny_model)
    assert scene.shape == (4, tiny_model.scene_embedding_size) and scene.dtype == torch.float32


def test_scene_is_mean_over_all_columns_including_untimestamped(tiny_model):
    audio = torch.rand(1, 31680) * 2 - 1  # 13 columns, 12 with a timestamp
    features = tiny_model.column_features(audio)
    scene = hear_matpac.get_scene_embeddings(audio, tiny_model)
    assert torch.allclose(scene, features.mean(dim=1), atol=1e-6)
    assert not torch.allclose(scene, features[:, :12].mean(dim=1), atol=1e-4)


@pytest.mark.parametrize("hop_ms", [160, 40])
def test_scene_and_timestamps_in_one_call_equal_the_hear_functions(hop_ms, monkeypatch):
    from conftest import TINY_FLAT
    from hear_matpac.api import get_scene_and_timestamp_embeddings

    model = hear_matpac.load_model(str(TINY_FLAT), timestamp_hop_ms=hop_ms)
    audio = torch.rand(2, 31680) * 2 - 1
    scene, embeddings, timestamps = get_scene_and_timestamp_embeddings(audio, model)
    expected_embeddings, expected_timestamps = hear_matpac.get_timestamp_embeddings(audio, model)
    assert torch.equal(scene, hear_matpac.get_scene_embeddings(audio, model))
    assert torch.equal(embeddings, expected_embeddings) and torch.equal(timestamps, expected_timestamps)
    passes = []
    original = model.column_features
    monkeypatch.setattr(model, "column_features", lambda *a, **k: passes.append(a) or original(*a, **k))
    get_scene_and_timestamp_embeddings(audio, model)
    assert len(passes) == (1 if hop_ms == 160 else 2)
