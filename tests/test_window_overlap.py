"""`window_overlap`: overlapping windows, each column kept from its most central window."""
import pytest
import torch

from hear_matpac import get_scene_embeddings, get_timestamp_embeddings, load_model
from hear_matpac.windows import padded_columns, plan_windows
from hear_matpac.weights.locate import TINY_UNTRAINED

TOL = 1e-5
COLUMN_SAMPLES = 2560
STFT_EXTRA = 240  # a column's 16 STFT frames span 2560 + 240 samples


def tiny(**options):
    return load_model(str(TINY_UNTRAINED), **options)


def clips(n_samples: int, count: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(n_samples + 7)
    return torch.rand(count, n_samples, generator=g) * 1.6 - 0.8


@pytest.mark.parametrize(
    "n_samples, options",
    [
        (1, {}),
        (8000, {}),
        (97520, {}),  # exactly 38 columns: one full 6.08 s window
        (97679, {}),  # 608 frames, the most one window holds
        (25840, {"window_seconds": 1.6}),  # exactly one 1.6 s window
    ],
)
def test_audio_within_one_window_is_unchanged(n_samples, options):
    audio = clips(n_samples)
    plain, overlapped = tiny(**options), tiny(window_overlap=0.5, **options)
    for a, b in zip(get_timestamp_embeddings(audio, plain), get_timestamp_embeddings(audio, overlapped)):
        assert torch.equal(a, b)
    assert torch.equal(get_scene_embeddings(audio, plain), get_scene_embeddings(audio, overlapped))


@pytest.mark.parametrize("window_frames", [16, 160, 608])
@pytest.mark.parametrize("passes", [1, 4])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
def test_plan_fills_every_column_once_from_its_most_central_window(window_frames, passes, overlap):
    window_columns = window_frames // 16
    for n_frames in (1, 15, 16, 17, window_frames, window_frames + 1, 3 * window_frames + 5, 2000):
        plan = plan_windows(n_frames, window_frames, passes=passes, overlap=overlap)
        kept = torch.cat([g.dest[g.dest >= 0] for g in plan.groups])
        assert torch.equal(kept.sort().values, torch.arange(plan.n_columns)), (n_frames, passes, overlap)
        for k in range(passes):
            shift = k * 16 // passes
            if n_frames - shift <= 0:
                continue
            columns = padded_columns(n_frames - shift)
            # every window of this pass lies inside the pass's own zero-padded log-mel
            windows = [
                (int(start), dest)
                for g in plan.groups
                for start, dest in zip(g.starts, g.dest)
                if int(start) % 16 == shift  # shifts are distinct and below 16 frames
            ]
            for start, dest in windows:
                assert shift <= start and start + 16 * len(dest) <= shift + 16 * columns
            if overlap == 0.0 or columns <= window_columns:
                continue
            assert all(len(dest) == window_columns for _, dest in windows)
            for start, dest in windows:
                first = (start - shift) // 16
                for p, out in enumerate(dest.tolist()):
                    if out < 0:
                        continue
                    column = first + p
                    edge = min(p, window_columns - 1 - p)
                    best = max(
                        min(column - (s - shift) // 16, (s - shift) // 16 + window_columns - 1 - column)
                        for s, d in windows
                        if 0 <= column - (s - shift) // 16 < window_columns
                    )
                    assert edge == best, (n_frames, k, column)


def most_central_windows(n_columns: int, window_columns: int, stride: int) -> list:
    """Start column of the window each column is taken from, by brute force."""
    starts = sorted({min(w * stride, n_columns - window_columns) for w in range(n_columns)})
    chosen = []
    for c in range(n_columns):
        inside = [t for t in starts if t <= c < t + window_columns]
        chosen.append(max(inside, key=lambda t: (min(c - t, t + window_columns - 1 - c), -t)))
    return chosen


def encode_pieces(audio: torch.Tensor, chosen: list, window_columns: int, model) -> torch.Tensor:
    """Column c encoded on its own waveform piece: the samples that give exactly the frames of
    the window starting at column chosen[c] (cut at the clip's end)."""
    cache = {}
    columns = []
    for c, t in enumerate(chosen):
        if t not in cache:
            piece = audio[:, COLUMN_SAMPLES * t : COLUMN_SAMPLES * (t + window_columns) + STFT_EXTRA]
            cache[t] = model.column_features(piece)
        columns.append(cache[t][:, c - t])
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("window_seconds, overlap, stride", [(6.08, 0.5, 19), (1.6, 0.5, 5), (1.6, 0.3, 7)])
def test_long_audio_columns_come_from_their_most_central_window(window_seconds, overlap, stride):
    n = 320000  # 20 s: 1998 frames, 125 columns
    audio = clips(n)
    native = tiny()
    model = tiny(window_overlap=overlap, window_seconds=window_seconds)
    window_columns = round(window_seconds / 0.16)
    chosen = most_central_windows(125, window_columns, stride)
    # away from the clip's own edges, no column sits at a window's edge
    assert all(0 < c - t < window_columns - 1 for c, t in enumerate(chosen) if 0 < c < 124)
    expected = encode_pieces(audio, chosen, window_columns, native)
    features = model.column_features(audio)
    assert features.shape == expected.shape
    assert (features - expected).abs().max() <= TOL
    emb, ts = get_timestamp_embeddings(audio, model)
    assert torch.equal(ts, get_timestamp_embeddings(audio, native)[1])
    assert (emb - expected[:, : emb.shape[1]]).abs().max() <= TOL
    # the scene embedding is the mean over the same overlap-selected columns
    assert (get_scene_embeddings(audio, model) - expected.mean(dim=1)).abs().max() <= TOL


def test_overlap_with_finer_hop_equals_overlap_on_shifted_audio():
    audio = clips(250000)
    overlapped = tiny(window_overlap=0.5)
    emb, ts = get_timestamp_embeddings(audio, tiny(window_overlap=0.5, timestamp_hop_ms=40))
    for k in range(4):
        reference, _ = get_timestamp_embeddings(audio[:, 640 * k :], overlapped)
        assert emb[:, k::4].shape == reference.shape
        assert (emb[:, k::4] - reference).abs().max() <= TOL
