"""`window_seconds` (temporal support) and the validation of the window / timestamp options."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hear_matpac import get_scene_embeddings, get_timestamp_embeddings, load_model
from hear_matpac.config import EncoderConfig
from hear_matpac.options import ModelOptions
from hear_matpac.weights.locate import TINY_UNTRAINED

TOL = 1e-5
FIXTURES = Path(__file__).parent / "fixtures"


def tiny(**options):
    return load_model(str(TINY_UNTRAINED), **options)


def clips(n_samples: int, count: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(n_samples + 11)
    return torch.rand(count, n_samples, generator=g) * 1.6 - 0.8


@pytest.fixture(scope="module")
def native():
    return tiny()


@pytest.mark.parametrize("n_samples", [1, 8000, 97520, 97680, 212800])
def test_maximum_window_equals_the_default_bit_for_bit(native, n_samples):
    audio = clips(n_samples)
    longest = tiny(window_seconds=6.08)
    assert longest.options.window_seconds == native.options.window_seconds == 6.08
    for a, b in zip(get_timestamp_embeddings(audio, native), get_timestamp_embeddings(audio, longest)):
        assert torch.equal(a, b)
    assert torch.equal(get_scene_embeddings(audio, native), get_scene_embeddings(audio, longest))


def test_1_6_s_windows_equal_the_two_waveform_pieces_encoded_alone(native):
    audio = clips(51200)  # 3.2 s: 318 frames, 20 columns, two windows of 160 frames
    emb, ts = get_timestamp_embeddings(audio, tiny(window_seconds=1.6))
    first, _ = get_timestamp_embeddings(audio[:, :25840], native)  # frames 0..159
    second, _ = get_timestamp_embeddings(audio[:, 25600:], native)  # frames 160..317
    expected = torch.cat([first, second], dim=1)
    assert emb.shape == expected.shape == (2, 20, native.timestamp_embedding_size)
    assert (emb - expected).abs().max() <= TOL
    assert torch.equal(ts, get_timestamp_embeddings(audio, native)[1])
    scene = get_scene_embeddings(audio, tiny(window_seconds=1.6))
    assert (scene - expected.mean(dim=1)).abs().max() <= TOL


@pytest.mark.parametrize("window_seconds", [0.16, 0.96, 3.04, 4])
def test_every_window_length_matches_its_pieces(native, window_seconds):
    n = 60000  # 373 frames, 24 columns: a short last window for every length here
    audio = clips(n, count=1)
    columns = round(window_seconds / 0.16)
    features = tiny(window_seconds=window_seconds).column_features(audio)
    pieces = [
        native.column_features(audio[:, 2560 * t : 2560 * (t + columns) + 240]) for t in range(0, 24, columns)
    ]
    expected = torch.cat(pieces, dim=1)
    assert features.shape == expected.shape == (1, 24, native.timestamp_embedding_size)
    assert (features - expected).abs().max() <= TOL


def test_992_frame_checkpoints_allow_up_to_9_92_s():
    config = EncoderConfig(embed_dim=192, depth=3, num_heads=3, n_frames=992)
    assert ModelOptions.parse({}, config).window_seconds == 9.92
    assert ModelOptions.parse({"window_seconds": 9.92}, config).window_frames == 992
    with pytest.raises(ValueError, match="9.92"):
        ModelOptions.parse({"window_seconds": 10.08}, config)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"window_seconds": 1.0}, ValueError, "multiple of 0.16"),
        ({"window_seconds": 0}, ValueError, "positive multiple"),
        ({"window_seconds": -0.16}, ValueError, "positive multiple"),
        ({"window_seconds": 6.24}, ValueError, "at most 6.08"),
        ({"window_seconds": math.nan}, ValueError, "finite"),
        ({"window_seconds": "1.6"}, TypeError, "must be a number"),
        ({"window_seconds": True}, TypeError, "must be a number"),
        ({"timestamp_hop_ms": 30}, ValueError, "160, 80, 40, 20"),
        ({"timestamp_hop_ms": 10}, ValueError, "160, 80, 40, 20"),
        ({"timestamp_hop_ms": "40"}, TypeError, "must be a number"),
        ({"window_overlap": 1.0}, ValueError, r"\[0, 1\)"),
        ({"window_overlap": -0.1}, ValueError, r"\[0, 1\)"),
        ({"window_overlap": math.inf}, ValueError, "finite"),
        ({"window_overlap": None}, TypeError, "must be a number"),
    ],
)
def test_bad_option_values_are_refused_clearly(options, error, message):
    with pytest.raises(error, match=message):
        tiny(**options)


def test_option_values_are_normalised():
    model = tiny(timestamp_hop_ms=40.0, window_overlap=1 / 2, window_seconds=0.96)
    assert model.options.timestamp_hop_ms == 40 and isinstance(model.options.timestamp_hop_ms, int)
    assert model.options.window_overlap == 0.5
    assert model.options.window_frames == 96


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("tiny_len*.npz")), ids=lambda p: p.stem)
def test_new_options_at_their_defaults_reproduce_the_reference(fixture):
    data = np.load(fixture)
    audio = torch.from_numpy(data["audio"])
    for layer in range(data["layers"].shape[1]):
        model = tiny(layer=layer, timestamp_hop_ms=160, window_overlap=0, window_seconds=6.08)
        reference = torch.from_numpy(data["layers"][:, layer])
        assert (model.column_features(audio) - reference).abs().max() <= 1e-4


def test_short_windows_share_the_frame_budget_of_max_windows():
    audio = clips(160000)  # 10 s: 63 columns, 21 windows of 0.48 s (3 columns) per clip
    model = tiny(window_seconds=0.48, max_windows=1)
    sizes = []
    model.encoder.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape)))
    emb, _ = get_timestamp_embeddings(audio, model)
    assert max(b * frames for b, _, _, frames in sizes) <= 608  # one full window's frames
    assert sizes[0][0] == 608 // 48
    wide, _ = get_timestamp_embeddings(audio, tiny(window_seconds=0.48, max_windows=64))
    assert (emb - wide).abs().max() <= TOL
