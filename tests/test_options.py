"""Options are checked up front with clear errors; the layer option picks the layer."""
from __future__ import annotations

import pytest
import torch

import hear_matpac
from conftest import TINY_FLAT


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"layers": 2}, TypeError, r"unknown option\(s\) layers; valid options: compile, cpu_packed_weights, layer, max_windows"),
        ({"layer": 3}, ValueError, r"layer=3 is out of range .* depth 3: use 0..2"),
        ({"layer": -4}, ValueError, "out of range"),
        ({"layer": "last"}, TypeError, "layer must be an integer"),
        ({"layer": True}, TypeError, "layer must be an integer"),
        ({"max_windows": 0}, ValueError, "max_windows must be at least 1"),
        ({"max_windows": 2.5}, TypeError, "max_windows must be an integer"),
        ({"cpu_packed_weights": "yes"}, TypeError, "option cpu_packed_weights must be true or false"),
    ],
)
def test_bad_options(options, error, message):
    with pytest.raises(error, match=message):
        hear_matpac.load_model(str(TINY_FLAT), **options)


def test_negative_layer_counts_from_the_end(clips):
    last = hear_matpac.load_model(str(TINY_FLAT), layer=-1)
    explicit = hear_matpac.load_model(str(TINY_FLAT), layer=2)
    first = hear_matpac.load_model(str(TINY_FLAT), layer=-3)
    assert last.options.layer == 2 and first.options.layer == 0
    assert torch.equal(last.column_features(clips), explicit.column_features(clips))
    assert not torch.allclose(first.column_features(clips), explicit.column_features(clips))


def test_only_blocks_up_to_the_layer_run(monkeypatch, clips):
    model = hear_matpac.load_model(str(TINY_FLAT), layer=0)
    calls = []
    for i, block in enumerate(model.encoder.blocks):
        monkeypatch.setattr(block, "forward", lambda x, i=i, f=block.forward: calls.append(i) or f(x))
    model.column_features(clips)
    assert set(calls) == {0}


@pytest.mark.parametrize("hop_ms, passes, hop_samples", [(160, 1, 2560), (80, 2, 1280), (40, 4, 640), (20, 8, 320)])
def test_parsed_options_carry_their_derived_settings(hop_ms, passes, hop_samples):
    """One home per option: `parse` derives what the model and the API read."""
    from hear_matpac.config import EncoderConfig
    from hear_matpac.batching import frame_budget, windows_per_batch
    from hear_matpac.options import ModelOptions

    config = EncoderConfig(embed_dim=64, depth=3, num_heads=1, n_freq=80, n_frames=608)
    parsed = ModelOptions.parse({"timestamp_hop_ms": hop_ms, "window_seconds": 1.92, "max_windows": 4}, config)
    assert (parsed.passes, parsed.hop_samples) == (passes, hop_samples)
    assert parsed.window_frames == 192 and parsed.window_seconds == 1.92
    # the batch is derived per call (device, window group) from the parsed max_windows
    budget = frame_budget(config, parsed.max_windows, parsed.precision, torch.device("cpu"))
    assert windows_per_batch(budget, parsed.window_frames) == 4 * 608 // 192  # 4 full windows' frames
    assert ModelOptions.parse({}, config).window_frames == 608  # no unparsed None past parse
