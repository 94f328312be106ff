"""`embed`'s pipeline: clips of different lengths embedded in one call (`api.embed_packed`) give
each clip's own HEAR outputs and share encoder calls; files decoded in worker processes, a file
that cannot be decoded failing alone; outputs written by a background thread whose error ends
the run in one line, leaving no output without its record."""
from __future__ import annotations

import errno
import os
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import hear_matpac
from hear_matpac.api import embed_packed, get_scene_and_timestamp_embeddings
from hear_matpac.cli import main
from hear_matpac.files import decode, outputs
from hear_matpac.files import store as output_store
from hear_matpac.files.audio import Clip
from hear_matpac.files.embed import BackgroundWriter, audio_seconds
from hear_matpac.files.store import Source

from conftest import TINY_FLAT

BATCH_TOLERANCE = 1e-5  # as tests/test_batching.py: a window's outputs whatever shares its batch


def _lengths(window: int) -> list[int]:
    """Clip lengths for windows of `window` samples' hop: shorter than one STFT window, than one
    column's centre, than one window; a window and a tail (twice: another clip has an equal
    tail), three windows and a tail, exactly one window."""
    return [1, 300, 1000, window // 4, window + 5000, 3 * window + 123, window + 5000, window + 240]


def _clips(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [(0.2 * torch.randn(n, generator=generator)).clamp(-1, 1) for n in lengths]


@pytest.mark.parametrize("options", [{}, {"window_seconds": 0.96, "timestamp_hop_ms": 40},
                                     {"window_seconds": 0.96, "window_overlap": 0.5, "max_windows": 2}])  # fmt: skip
@pytest.mark.parametrize("timestamps", [False, True])
def test_packed_clips_get_what_each_clip_alone_gets(options, timestamps):
    model = hear_matpac.load_model(str(TINY_FLAT), **options)
    lengths = _lengths(round(options.get("window_seconds", 6.08) * 16000))
    clips = _clips(lengths)
    packed = embed_packed(torch.cat(clips), lengths, model, timestamps=timestamps)
    assert len(packed) == len(clips)
    # Within the batch-invariance bound, not bit for bit: the row count of a GEMM (front end's
    # mel projection, encoder) changes with what shares the call, and on some CPUs (an AMD EPYC;
    # not MKL on the Intel dev machine, where these were equal) that moves a sum by about 1e-6,
    # as it does for the API's own batch of clips. A window misplaced or cut is off by far more.
    for clip, got in zip(clips, packed):
        scene, embeddings, times = get_scene_and_timestamp_embeddings(clip[None], model)
        pairs = [(got.scene, scene[0])] + ([(got.embeddings, embeddings[0])] if timestamps else [])
        for a, b in pairs:
            assert a.shape == b.shape and (a - b).abs().max() <= BATCH_TOLERANCE
        if timestamps:
            assert torch.equal(got.timestamps, times[0])
        else:
            assert got.embeddings is None and got.timestamps is None


def test_windows_of_equal_length_from_clips_of_different_lengths_share_encoder_calls():
    model = hear_matpac.load_model(str(TINY_FLAT), max_windows=16, window_seconds=0.96)  # 96 frames
    window = 96 * 160
    seen = []
    hook = model.encoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[::3])))
    try:
        lengths = [window + 5000, 3 * window + 5000, 2 * window]  # 1+3+2 full windows; two equal tails
        embed_packed(torch.cat(_clips(lengths)), lengths, model)
        packed = list(seen)
        seen.clear()
        for clip in _clips(lengths):
            hear_matpac.get_scene_embeddings(clip[None], model)
    finally:
        hook.remove()
    tail = (5000 // 2560 + 1) * 16  # frames of the tail window: whole columns
    assert packed == [(6, 96), (2, tail)]  # all full windows in one call, the equal tails in another
    assert len(seen) == 5  # one clip per call: 3 calls of full windows, 2 of tails


def test_packed_call_checks_its_input():
    model = hear_matpac.load_model(str(TINY_FLAT))
    with pytest.raises(ValueError, match="add up to 5 samples and audio holds 4"):
        embed_packed(torch.zeros(4), [2, 3], model)
    with pytest.raises(ValueError, match="at least one sample"):
        embed_packed(torch.zeros(4), [4, 0], model)
    with pytest.raises(ValueError, match="1-D"):
        embed_packed(torch.zeros(2, 4), [4, 4], model)
    with pytest.raises(TypeError, match="floating point"):
        embed_packed(torch.zeros(4, dtype=torch.int16), [4], model)


def test_packed_non_finite_audio_names_the_clip():
    model = hear_matpac.load_model(str(TINY_FLAT))
    clips = _clips([16000, 8000, 24000])
    clips[2][5] = float("nan")
    with pytest.raises(ValueError, match=r"audio contains NaN or Inf in clip\(s\) 2 "):
        embed_packed(torch.cat(clips), [16000, 8000, 24000], model, timestamps=True)


# decoding -------------------------------------------------------------------------------------

def _wav(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> Path:
    t = np.arange(round(rate * seconds)) / rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def test_a_file_that_cannot_be_decoded_in_a_worker_fails_alone(tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    _wav(inp / "a.wav", 1.3)
    (inp / "b.wav").write_bytes(b"RIFF....WAVEjunk")
    _wav(inp / "c.wav", 7.0, rate=44100)
    out = tmp_path / "o"
    code = main(["embed", str(inp), "--out", str(out), "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet",
                 "--decode-workers", "2", "--batch-size", "2"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "2 embedded, 0 skipped (already there), 1 failed" in captured.out
    assert captured.err.count("failed:") == 1 and "b.wav: not decodable as audio" in captured.err
    model = hear_matpac.load_model(str(TINY_FLAT))
    for name in ("a.wav", "c.wav"):
        alone = hear_matpac.get_scene_embeddings(decode.read_audio(inp / name).samples[None], model)
        assert np.array_equal(np.load(out / f"{name}.scene.npy"), alone[0].numpy())


def test_workers_decode_in_order_with_one_torch_thread_each(tmp_path, monkeypatch):
    paths = [_wav(tmp_path / f"{i}.wav", 0.1 * (i + 1)) for i in range(5)]
    paths.insert(2, tmp_path / "gone.wav")
    # what each worker reports instead of audio: its torch threads (forked workers see the patch)
    monkeypatch.setattr(decode, "read_audio", lambda path: Clip(
        torch.full((1 + int(Path(path).stem),), float(torch.get_num_threads())), 16000, 1) if Path(path).exists()
        else (_ for _ in ()).throw(FileNotFoundError(f"{path}: no such file")))  # fmt: skip
    sources = [Source.of(p) if p.exists() else Source(str(p), 44, 1) for p in paths]
    chunks = list(decode.decoded_chunks(sources, 4, workers=2, pin_memory=False))
    assert [c.indices for c in chunks] == [[0, 1, 3], [4, 5]]
    assert [c.lengths for c in chunks] == [[1, 2, 3], [4, 5]]
    assert [i for i, _ in chunks[0].failed] == [2] and "No such file" in chunks[0].failed[0][1]
    assert all(torch.all(c.audio == 1) for c in chunks)  # one thread per worker


def test_a_file_is_decoded_only_while_it_is_the_one_listed(tmp_path):
    """Read from the recorded absolute path, and only with the recorded size and mtime: a file
    changed since the run listed it, or another file there (a torchrun rank on another
    machine), fails; a named pipe fails at once instead of blocking the run."""
    same = _wav(tmp_path / "same.wav", 0.2)
    grown = _wav(tmp_path / "grown.wav", 0.2)
    listed = Source.of(grown)
    _wav(grown, 0.3)
    touched = _wav(tmp_path / "touched.wav", 0.2)
    before = Source.of(touched)
    os.utime(touched, ns=(before.mtime_ns, before.mtime_ns + 1))
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    sources = [Source.of(same), listed, before, Source(str(fifo), 0, os.stat(fifo).st_mtime_ns)]
    chunk, = decode.decoded_chunks(sources, 4, workers=0, pin_memory=False)
    assert chunk.indices == [0] and chunk.lengths == [3200]
    assert [i for i, _ in chunk.failed] == [1, 2, 3]
    assert all("changed since this run listed it" in problem for _, problem in chunk.failed[:2])
    assert chunk.failed[2][1] == "not a regular file"
    assert audio_seconds(fifo) == 0.0 and audio_seconds(same) == pytest.approx(0.2)


def test_default_workers():
    assert decode.default_workers(1) == 0
    assert 1 <= decode.default_workers(50) <= decode.MAX_DEFAULT_WORKERS


# writing --------------------------------------------------------------------------------------

def test_outputs_are_written_off_the_main_thread(tmp_path, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):
        _wav(inp / f"{i}.wav", 0.5 + i, freq=300 + 100 * i)
    threads = []
    real = output_store.OutputStore.write
    monkeypatch.setattr(output_store.OutputStore, "write",
                        lambda self, items: threads.append(threading.current_thread()) or real(self, items))  # fmt: skip
    assert main(["embed", str(inp), "--out", str(tmp_path / "o"), "--weights", str(TINY_FLAT), "--device", "cpu",
                 "--quiet", "--batch-size", "1"]) == 0  # fmt: skip
    assert len(threads) == 3 and threading.main_thread() not in threads


def test_a_write_error_ends_the_run_in_one_line_leaving_no_unrecorded_output(tmp_path, monkeypatch, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(6):
        _wav(inp / f"{i}.wav", 0.5 + 0.25 * i, freq=300 + 100 * i)
    written = []
    real = outputs.save_scene

    def fills_up(path, scene):
        if len(written) == 2:  # the disk is full from the third output on
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, scene)
        written.append(path)

    monkeypatch.setattr(output_store, "save_scene", fills_up)
    out = tmp_path / "o"
    code = main(["embed", str(inp), "--out", str(out), "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet",
                 "--batch-size", "1"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and "No space left on device" in captured.err
    assert len(written) == 2  # the writes queued after the failed one were not tried
    recorded = [json.loads(line)["name"] for line in (out / "embed-manifest.jsonl").read_text().splitlines()]
    assert sorted(recorded) == ["0.wav", "1.wav"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(("embed-", ".embed"))) == [
        "0.wav.scene.npy", "1.wav.scene.npy"]  # no temporary file, no output without a record
    monkeypatch.setattr(output_store, "save_scene", real)
    assert main(["embed", str(inp), "--out", str(out), "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet"]) == 0
    assert "4 embedded, 2 skipped" in capsys.readouterr().out


def test_background_writer_raises_the_first_error_and_skips_later_writes():
    done = []

    def write(i):
        if i == 1:
            raise OSError(errno.EROFS, "Read-only file system")
        done.append(i)

    with pytest.raises(OSError, match="Read-only"):
        with BackgroundWriter(depth=2) as writer:
            for i in range(5):
                writer.submit(write, i)
    assert done == [0]


def test_a_decoding_process_that_dies_ends_the_run_in_one_line(tmp_path, monkeypatch, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):
        _wav(inp / f"{i}.wav", 0.5)
    monkeypatch.setattr(decode, "read_audio", lambda path: os._exit(1))  # as a crash in libsndfile would
    code = main(["embed", str(inp), "--out", str(tmp_path / "o"), "--weights", str(TINY_FLAT), "--device", "cpu",
                 "--quiet", "--decode-workers", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "a decoding process died" in err and "--decode-workers 0" in err
