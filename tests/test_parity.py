"""Every layer of every fixture against the published MATPAC code's outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hear_matpac
from conftest import CASES, LENGTHS, TINY_FAIRSEQ, TINY_FLAT, reference

TOLERANCE = 1e-4
DEPTH = 3


@pytest.fixture(scope="module", params=[TINY_FLAT, TINY_FAIRSEQ], ids=["flat", "fairseq"])
def models_by_layer(request):
    return [hear_matpac.load_model(str(request.param), layer=layer) for layer in range(DEPTH)]


@pytest.mark.parametrize("n_samples", LENGTHS)
def test_every_layer_matches_reference(models_by_layer, n_samples):
    ref = reference(n_samples)
    audio = torch.from_numpy(ref["audio"])
    for layer, model in enumerate(models_by_layer):
        ours = model.column_features(audio).numpy()
        assert ours.shape == ref["layers"][:, layer].shape
        diff = np.abs(ours - ref["layers"][:, layer]).max()
        assert diff <= TOLERANCE, f"layer {layer}, {n_samples} samples: max abs diff {diff}"


@pytest.mark.parametrize("n_samples", LENGTHS)
def test_default_model_gives_last_layer_and_clip_embedding(tiny_model, n_samples):
    ref = reference(n_samples)
    audio = torch.from_numpy(ref["audio"])
    embeddings, _ = hear_matpac.get_timestamp_embeddings(audio, tiny_model)
    reported = embeddings.shape[1]
    assert np.abs(embeddings.numpy() - ref["last_layer"][:, :reported]).max() <= TOLERANCE
    scene = hear_matpac.get_scene_embeddings(audio, tiny_model)
    expected_scene = ref["last_layer"].mean(axis=1)  # MATPAC's clip embedding: all columns
    assert np.abs(scene.numpy() - expected_scene).max() <= TOLERANCE


def test_fixture_column_counts_agree_with_cases(tiny_model):
    for case in CASES.values():
        audio = torch.zeros(1, case["n_samples"])
        assert tiny_model.column_features(audio).shape == (1, case["frames_T"], case["dim"])
