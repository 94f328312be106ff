"""The shapes a checkpoint is checked against come from the encoder module itself, so the
reader and `MatpacEncoder` cannot drift apart."""
from __future__ import annotations

import pytest
import torch

import hear_matpac
import hear_matpac.encoder as encoder_module
from hear_matpac.config import EncoderConfig
from hear_matpac.weights.read import CheckpointError, expected_shapes, published_layout
from hear_matpac.weights.synthetic import random_state_dict

SMALL = EncoderConfig(embed_dim=128, depth=2, num_heads=2, n_frames=992)  # not the tiny fixture's


def test_expected_shapes_follow_a_change_in_the_encoder(monkeypatch):
    """An encoder built with a wider MLP is what the reader then expects: nothing copied by hand."""
    monkeypatch.setattr(encoder_module, "MLP_RATIO", 2)
    shapes = expected_shapes(SMALL)
    assert shapes["blocks.1.mlp.fc1.weight"] == (256, 128) and shapes["blocks.0.mlp.fc2.weight"] == (128, 256)


def test_expected_shapes_are_those_of_the_encoder_of_that_config():
    built = encoder_module.MatpacEncoder(SMALL)
    assert expected_shapes(SMALL) == {k: tuple(v.shape) for k, v in built.state_dict().items()}


def test_a_checkpoint_of_another_config_loads_and_a_wrong_shape_is_refused_in_one_line(tmp_path):
    state = published_layout(random_state_dict(SMALL))
    good = tmp_path / "small.pt"
    torch.save(state, good)
    model = hear_matpac.load_model(str(good))
    assert (model.encoder.config.embed_dim, model.encoder.config.depth, model.encoder.config.n_frames) == (128, 2, 992)
    bad = dict(state)
    bad["student_encoder.blocks.1.mlp.fc2.weight"] = torch.zeros(128, 511)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        hear_matpac.load_model(str(tmp_path / "bad.pt"))
    message = str(err.value)
    assert "\n" not in message
    assert message.endswith("blocks.1.mlp.fc2.weight has shape (128, 511), expected (128, 512)"), message
