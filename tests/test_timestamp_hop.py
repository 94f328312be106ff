"""`timestamp_hop_ms`: finer timestamps from shifted passes, checked against shifting the audio."""
import pytest
import torch

from hear_matpac import get_scene_embeddings, get_timestamp_embeddings, load_model
from hear_matpac.weights.locate import TINY_UNTRAINED

TOL = 1e-5
SAMPLES_PER_MS = 16


def tiny(**options):
    return load_model(str(TINY_UNTRAINED), **options)


def clips(n_samples: int, count: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(n_samples)
    return torch.rand(count, n_samples, generator=g) * 1.6 - 0.8


def expected_times_ms(n_samples: int, hop_ms: int) -> list:
    """87.5 + hop i ms for every centre inside the clip; one at the end if none is."""
    end_ms = n_samples / SAMPLES_PER_MS
    times = []
    while 87.5 + hop_ms * len(times) <= end_ms:
        times.append(87.5 + hop_ms * len(times))
    return times or [end_ms]


def edge_lengths(hop_ms: int) -> list:
    """Short clips; a centre of pass 1, pass P-1 and pass 0 landing on the end (+-1 sample);
    and 97680 / 98680 samples, where pass 0 has a second, one-column window that some
    shifted passes lack (98680: the centre of pass 0's 39th column is the last sample)."""
    hop = hop_ms * SAMPLES_PER_MS
    passes = 160 // hop_ms
    lengths = {1, 399, 400, 401, 1399, 1400, 1401, 97680, 98680}
    for i in (1, passes - 1, passes, passes + 1):
        lengths |= {1400 + hop * i - 1, 1400 + hop * i, 1400 + hop * i + 1}
    return sorted(lengths)


@pytest.fixture(scope="module")
def native():
    return tiny()


@pytest.mark.parametrize("n_samples", [8000, 97520, 100000, 212800])
def test_hop_40_keeps_native_columns_at_every_4th_position(native, n_samples):
    audio = clips(n_samples)
    emb160, ts160 = get_timestamp_embeddings(audio, native)
    emb40, ts40 = get_timestamp_embeddings(audio, tiny(timestamp_hop_ms=40))
    assert emb40[:, ::4].shape == emb160.shape
    assert (emb40[:, ::4] - emb160).abs().max() <= TOL
    assert torch.equal(ts40[:, ::4], ts160)


@pytest.mark.parametrize("hop_ms", [80, 40, 20])
def test_shifted_passes_equal_running_the_shifted_audio(native, hop_ms):
    passes = 160 // hop_ms
    model = tiny(timestamp_hop_ms=hop_ms)
    for n in edge_lengths(hop_ms):
        audio = clips(n, count=1)
        emb, ts = get_timestamp_embeddings(audio, model)
        expected = torch.tensor(expected_times_ms(n, hop_ms), dtype=torch.float32)
        assert torch.equal(ts, expected[None]), n
        assert emb.shape == (1, len(expected), model.timestamp_embedding_size)
        diffs = ts[0, 1:] - ts[0, :-1]
        assert torch.all(diffs == hop_ms), n
        for k in range(passes):
            shift = k * hop_ms * SAMPLES_PER_MS
            ours = emb[:, k::passes]
            if k == 0 or n - shift >= 1400:
                reference, _ = get_timestamp_embeddings(audio[:, shift:], native)
                assert ours.shape == reference.shape, (n, k)
                assert (ours - reference).abs().max() <= TOL, (n, k)
            else:  # the shifted audio holds no column centre: nothing is reported from it
                assert ours.shape[1] == 0, (n, k)


@pytest.mark.parametrize("n_samples", [1, 1400, 50000, 212800])
def test_scene_embedding_ignores_the_hop(native, n_samples):
    audio = clips(n_samples)
    assert torch.equal(
        get_scene_embeddings(audio, tiny(timestamp_hop_ms=20)), get_scene_embeddings(audio, native)
    )


def encoder_batch_sizes(model) -> list:
    sizes = []
    model.encoder.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes


def test_shifted_passes_share_micro_batches():
    # 48880 samples: 304 frames; passes shifted by 0/4/8/12 frames all have 19 columns,
    # so all four windows of each clip have one length and go through the encoder together.
    model = tiny(timestamp_hop_ms=40)
    sizes = encoder_batch_sizes(model)
    get_timestamp_embeddings(clips(48880, count=3), model)
    assert sizes == [12]


def test_memory_stays_bounded_by_max_windows():
    audio = clips(212800, count=3)
    bounded = tiny(timestamp_hop_ms=20, window_overlap=0.5, max_windows=3)
    sizes = encoder_batch_sizes(bounded)
    emb, ts = get_timestamp_embeddings(audio, bounded)
    assert max(sizes) <= 3 and sum(sizes) > 3 * 8  # 8 passes x several windows x 3 clips
    wide, wide_ts = get_timestamp_embeddings(audio, tiny(timestamp_hop_ms=20, window_overlap=0.5, max_windows=256))
    assert torch.equal(ts, wide_ts)
    assert (emb - wide).abs().max() <= TOL
