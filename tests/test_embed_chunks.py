"""`embed`'s calls: files grouped by their audio, not their count (`batching.plan_chunks`, a pure
function of the lengths, the device kind and the batch budget), and each call read back only
after the next one is queued, an error found at the read failing only that call's files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import hear_matpac
from hear_matpac import batching
from hear_matpac.batching import CUDA_CHUNK_SECONDS, MAX_CHUNK_FILES, plan_chunks
from hear_matpac.cli import main
from hear_matpac.encoder import MatpacEncoder
from hear_matpac.files import embed as embed_files

from conftest import TINY_FLAT

CPU_BUDGET = 16 * 6.08  # the default CPU budget: 16 windows of 6.08 s


def _sizes(chunks: list[list[int]]) -> list[int]:
    return [len(c) for c in chunks]


def test_chunks_are_consecutive_and_cover_every_file_once():
    durations = [0.5, 30.0, 0.0, 200.0, 1.0] * 40
    for kind, budget in (("cpu", CPU_BUDGET), ("cuda", CPU_BUDGET), ("cpu", 6.08)):
        chunks = plan_chunks(durations, kind, budget)
        assert [i for chunk in chunks for i in chunk] == list(range(len(durations)))


def test_on_cuda_a_call_holds_thousands_of_audio_seconds_whatever_the_windows_cap():
    one_second = [1.0] * 10000
    chunks = plan_chunks(one_second, "cuda", 6.08)  # --batch-size 1: one window per encoder pass
    assert chunks == plan_chunks(one_second, "cuda", CPU_BUDGET)  # independent of the cap
    assert _sizes(chunks) == [4096, 4096, 1808]  # 4096 s a call
    ten_seconds = [10.0] * 1000
    assert _sizes(plan_chunks(ten_seconds, "cuda", 6.08)) == [409, 409, 182]  # 4090 s a call
    assert CUDA_CHUNK_SECONDS >= batching.AUTO_CAP_WINDOWS * 6.08  # fills the largest automatic batch
    budget = 2 * CUDA_CHUNK_SECONDS  # a larger budget (max_windows above the cap) is filled too
    assert _sizes(plan_chunks(ten_seconds, "cuda", budget)) == [819, 181]


def test_on_cpu_a_call_holds_about_one_batch_budget_of_audio():
    assert _sizes(plan_chunks([1.0] * 300, "cpu", CPU_BUDGET)) == [97, 97, 97, 9]
    assert _sizes(plan_chunks([10.0] * 30, "cpu", CPU_BUDGET)) == [9, 9, 9, 3]
    assert _sizes(plan_chunks([5.0, 2.0, 3.0, 5.0], "cpu", 6.08)) == [1, 2, 1]


def test_long_unknown_and_tiny_files():
    assert plan_chunks([1000.0, 1.0, 1.0, 5000.0, 1.0], "cpu", CPU_BUDGET) == [[0], [1, 2], [3], [4]]
    assert _sizes(plan_chunks([0.0] * 40, "cpu", CPU_BUDGET)) == [16, 16, 8]  # length unknown
    assert _sizes(plan_chunks([0.0] * 40, "cuda", CPU_BUDGET)) == [16, 16, 8]
    assert _sizes(plan_chunks([0.001] * 10000, "cuda", CPU_BUDGET)) == [MAX_CHUNK_FILES, MAX_CHUNK_FILES, 1808]
    assert plan_chunks([], "cuda", CPU_BUDGET) == []
    with pytest.raises(ValueError, match="budget_seconds must be positive"):
        plan_chunks([1.0], "cpu", 0)


# the pipeline ---------------------------------------------------------------------------------

def _wav(path: Path, seconds: float, freq: float) -> Path:
    t = np.arange(round(16000 * seconds)) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    return path


def _logged(monkeypatch) -> list[tuple[str, tuple[str, ...]]]:
    """('queue', files) at each embedding call, ('read', files) when a call's outputs are
    handed to the writer (read back), in order."""
    log: list[tuple[str, tuple[str, ...]]] = []
    real_embed, real_submit = embed_files.embed_packed, embed_files.BackgroundWriter.submit

    def embed_packed(audio, lengths, model, timestamps=False):
        log.append(("queue", tuple(f"{n / 16000:g}" for n in lengths)))
        return real_embed(audio, lengths, model, timestamps=timestamps)

    def submit(self, write, group, outputs):
        log.append(("read", tuple(f"{len(clip) / 16000:g}" for _, clip in group)))
        return real_submit(self, write, group, outputs)

    monkeypatch.setattr(embed_files, "embed_packed", embed_packed)
    monkeypatch.setattr(embed_files.BackgroundWriter, "submit", submit)
    return log


def _embed(inp: Path, out: Path, *extra: str) -> int:
    return main(["embed", str(inp), "--out", str(out), "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet",
                 "--decode-workers", "0", *extra])  # fmt: skip


def test_twenty_short_files_are_one_call_on_cpu(tmp_path, monkeypatch):
    """16 files a call was the old rule; 20 s of audio is within one CPU batch budget."""
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(20):
        _wav(inp / f"{i:02d}.wav", 1.0, 200 + 10 * i)
    log = _logged(monkeypatch)
    assert _embed(inp, tmp_path / "o") == 0
    assert [kind for kind, _ in log] == ["queue", "read"] and len(log[0][1]) == 20


def test_a_call_is_read_back_after_the_next_one_is_queued(tmp_path, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    for i, seconds in enumerate((5.0, 4.0, 3.0, 2.0)):  # with --batch-size 1 (6.08 s): 3 calls
        _wav(inp / f"{i}.wav", seconds, 300 + 100 * i)
    log = _logged(monkeypatch)
    assert _embed(inp, tmp_path / "o", "--batch-size", "1", "--timestamps") == 0
    assert log == [("queue", ("5",)), ("queue", ("4",)), ("read", ("5",)), ("queue", ("3", "2")),
                   ("read", ("4",)), ("read", ("3", "2"))]  # fmt: skip
    model = hear_matpac.load_model(str(TINY_FLAT))
    for i in range(4):  # each read back into its own file
        audio = torch.from_numpy(soundfile.read(inp / f"{i}.wav", dtype="float32")[0])[None]
        scene, emb, ts = hear_matpac.api.get_scene_and_timestamp_embeddings(audio, model)
        assert np.abs(np.load(tmp_path / "o" / f"{i}.wav.scene.npy") - scene[0].numpy()).max() <= 1e-5
        frames = np.load(tmp_path / "o" / f"{i}.wav.frames.npz")
        assert np.abs(frames["embeddings"] - emb[0].numpy()).max() <= 1e-5
        assert np.array_equal(frames["timestamps"], ts[0].numpy())


def test_an_error_found_at_a_late_read_fails_only_that_calls_file(tmp_path, monkeypatch, capsys):
    """Chunks [a], [b, c], [d]: b's windows (2 s: 208 frames) come out NaN, found when [b, c] is
    read back, after [d] is queued; b and c are then tried alone, and only b fails."""
    inp = tmp_path / "in"
    inp.mkdir()
    for name, seconds in (("a", 5.0), ("b", 2.0), ("c", 3.0), ("d", 5.0)):
        _wav(inp / f"{name}.wav", seconds, 440)
    real_forward = MatpacEncoder.forward

    def forward(self, mel, layer):
        features = real_forward(self, mel, layer)
        return torch.full_like(features, float("nan")) if mel.shape[-1] == 208 else features

    monkeypatch.setattr(MatpacEncoder, "forward", forward)
    log = _logged(monkeypatch)
    assert _embed(inp, tmp_path / "o", "--batch-size", "1") == 1
    assert log == [("queue", ("5",)), ("queue", ("2", "3")), ("read", ("5",)), ("queue", ("5",)),
                   ("queue", ("2",)), ("queue", ("3",)), ("read", ("3",)), ("read", ("5",))]  # fmt: skip
    captured = capsys.readouterr()
    assert "3 embedded, 0 skipped (already there), 1 failed" in captured.out
    assert captured.err.count("failed:") == 1 and "b.wav: embeddings are NaN or Inf" in captured.err
    assert sorted(p.name for p in (tmp_path / "o").glob("*.npy")) == ["a.wav.scene.npy", "c.wav.scene.npy",
                                                                      "d.wav.scene.npy"]  # fmt: skip


def test_a_call_is_decoded_in_pieces_that_never_straddle_calls():
    seconds = [1.0] * 1000 + [100.0] * 3 + [0.0] * 4
    calls = plan_chunks(seconds, "cuda", CPU_BUDGET)
    pieces, call_of = embed_files.decode_pieces(calls, seconds)
    assert [i for piece in pieces for i in piece] == list(range(len(seconds)))
    for piece, number in zip(pieces, call_of):
        assert set(piece) <= set(calls[number])
        assert sum(seconds[i] or embed_files.DECODE_SECONDS / 16 for i in piece) <= embed_files.DECODE_SECONDS
    assert len(calls) == 1 and len(pieces) > 5  # one call, decoded by several workers at once


def test_pieces_decoded_apart_are_embedded_in_one_call(tmp_path, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(6):
        _wav(inp / f"{i}.wav", 1.0, 200 + 50 * i)
    pieces = []
    real = embed_files.decoded_chunks
    monkeypatch.setattr(embed_files, "decoded_chunks", lambda sources, chunks, *a: pieces.append(chunks) or real(sources, chunks, *a))
    monkeypatch.setattr(embed_files, "DECODE_SECONDS", 2.0)
    log = _logged(monkeypatch)
    assert _embed(inp, tmp_path / "o") == 0
    assert pieces == [[[0, 1], [2, 3], [4, 5]]]
    assert log == [("queue", ("1",) * 6), ("read", ("1",) * 6)]


def test_a_deferred_check_reads_and_raises_only_when_asked():
    """`finite_checks.deferred_checks`: the call returns without its check's read; the check
    raises as the call would have when its result is asked for (`embed`'s late read)."""
    from hear_matpac.api import embed_packed
    from hear_matpac.finite_checks import deferred_checks

    model = hear_matpac.load_model(str(TINY_FLAT))
    audio = torch.zeros(16000 + 8000)
    audio[20000] = float("nan")
    with deferred_checks() as checks:
        results = embed_packed(audio, [16000, 8000], model)
    assert len(results) == 2 and len(checks) == 1
    with pytest.raises(ValueError, match=r"audio contains NaN or Inf in clip\(s\) 1"):
        checks[0].result()
    with pytest.raises(ValueError, match=r"clip\(s\) 1"):  # outside the block: at once, as before
        embed_packed(audio, [16000, 8000], model)
