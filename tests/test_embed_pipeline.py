"""`embed`'s pipeline: clips of different lengths embedded in one call (`api.embed_packed`) give
each clip's own HEAR outputs and share encoder calls; files decoded in worker processes, a file
that cannot be decoded failing alone; outputs written by a background thread whose error ends
the run in one line, leaving no output without its record."""
from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import os
import json
import resource
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import hear_matpac
from hear_matpac.api import embed_packed, get_scene_and_timestamp_embeddings
from hear_matpac.packing import consecutive, length_blocks
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


@pytest.mark.parametrize("timestamps, frontend_samples, arrangement", [
    (False, None, "interleaved"), (True, None, "interleaved"), (True, 50000, "interleaved"),
    (False, None, "grouped"), (True, 50000, "grouped"), (False, None, "grouped, one moved"),
    (True, None, "grouped, one moved")])  # fmt: skip
def test_many_clips_of_repeated_lengths_get_what_each_clip_alone_gets(monkeypatch, timestamps, frontend_samples,
                                                                      arrangement):  # fmt: skip
    # clips of one length share front-end calls and one plan, and their log-mels lie block by
    # block: interleaved lengths check that every clip finds its own frames, rows and timestamps
    # (also with the front end's calls cut small: a block split, a clip longer than the cap).
    # Grouped, the clips of a length lie end to end (their audio and rows are taken as views);
    # one clip moved to the end breaks that for its block alone, and the clip order of the rest.
    if frontend_samples is not None:
        monkeypatch.setattr(hear_matpac.packing, "BLOCK_SAMPLES", frontend_samples)
    model = hear_matpac.load_model(str(TINY_FLAT), window_seconds=0.96, timestamp_hop_ms=40)
    base = _lengths(15360)
    lengths = [base[(7 * i) % len(base)] for i in range(40)]
    if arrangement != "interleaved":
        lengths = [n for n in dict.fromkeys(base) for _ in range(5)]  # (base repeats a length)
        blocks = list(length_blocks(lengths).values())
        assert all(consecutive(members) for members in blocks) and sum(blocks, []) == list(range(len(lengths)))
    if arrangement == "grouped, one moved":
        lengths.append(lengths.pop(lengths.index(base[5])))
    clips = _clips(lengths, seed=3)
    packed = embed_packed(torch.cat(clips), lengths, model, timestamps=timestamps)
    alone = {}
    for i, (clip, got) in enumerate(zip(clips, packed)):
        scene, embeddings, times = alone[i] = get_scene_and_timestamp_embeddings(clip[None], model)
        assert got.scene.shape == scene[0].shape and (got.scene - scene[0]).abs().max() <= BATCH_TOLERANCE
        if timestamps:
            assert got.embeddings.shape == embeddings[0].shape
            assert (got.embeddings - embeddings[0]).abs().max() <= BATCH_TOLERANCE
            assert torch.equal(got.timestamps, times[0])
    # clips of equal length hold different audio: a clip given a batch-mate's rows would show
    first, second = [i for i, n in enumerate(lengths) if n == base[5]][:2]  # three windows and a tail
    assert (alone[first][0] - alone[second][0]).abs().max() > 100 * BATCH_TOLERANCE


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


def test_default_workers_are_the_cores_of_each_device(monkeypatch):
    """Issue 25 item 4: on CUDA, the cores per GPU less one (not at most 2); on CPU one, the
    cores being the encoder's; never more than the chunks; none for one file."""
    monkeypatch.setattr(decode.os, "cpu_count", lambda: 32)
    monkeypatch.setattr(decode.os, "sched_getaffinity", lambda pid: set(range(32)))
    assert decode.default_workers(1, 1, cuda=True, env={}) == 0
    assert decode.default_workers(1000, 63, cuda=True, env={}) == 31
    assert decode.default_workers(1000, 63, cuda=True, env={"LOCAL_WORLD_SIZE": "4"}) == 7  # 8 cores per GPU
    assert decode.default_workers(40, 3, cuda=True, env={"LOCAL_WORLD_SIZE": "4"}) == 3  # 3 chunks
    assert decode.default_workers(1000, 63, cuda=False, env={}) == decode.CPU_WORKERS == 1
    monkeypatch.setattr(decode.os, "sched_getaffinity", lambda pid: set(range(8)))  # bound to its own 8 cores
    assert decode.default_workers(1000, 63, cuda=True, env={"LOCAL_WORLD_SIZE": "4"}) == 7
    monkeypatch.setattr(decode.os, "sched_getaffinity", lambda pid: {0})
    assert decode.default_workers(1000, 63, cuda=True, env={}) == 1


# writing --------------------------------------------------------------------------------------

def test_outputs_are_written_off_the_main_thread(tmp_path, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):
        _wav(inp / f"{i}.wav", 3.5 + i, freq=300 + 100 * i)  # with --batch-size 1, a call each (6.08 s a call)
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
    assert sorted(_records(out)) == ["0.wav", "1.wav"]
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


# issue 27 -------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
RUN_LIMIT_S = 300  # a run that has not ended by then waits forever (the defects below hang)


def _cli(*args: str, preexec_fn=None, prefix: tuple = (), python: tuple = ("-m", "hear_matpac.cli")) -> subprocess.CompletedProcess:
    """`hear-matpac embed ARGS` in its own process (session), killed with its decoding workers
    if it has not ended after `RUN_LIMIT_S` (then the test fails: the run hung). `prefix`: a
    command to run it under; `python`: what the interpreter runs."""
    command = [*prefix, sys.executable, *python, "embed", *args, "--weights", str(TINY_FLAT),
               "--device", "cpu", "--quiet"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          preexec_fn=preexec_fn, start_new_session=True) as run:  # fmt: skip
        try:
            out, err = run.communicate(timeout=RUN_LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            out, err = run.communicate()
            pytest.fail(f"embed did not end within {RUN_LIMIT_S} s (it waits for a chunk that never comes): {err[-2000:]}")
    return subprocess.CompletedProcess(command, run.returncode, out, err)


def _file_size_limit(limit: int):
    """A `preexec_fn`: RLIMIT_FSIZE (`ulimit -f`) of `limit` bytes in the child."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return apply


def _assert_each_as_alone(inp: Path, out: Path, names: list[str]) -> None:
    model = hear_matpac.load_model(str(TINY_FLAT))
    for name in names:
        alone = hear_matpac.get_scene_embeddings(decode.read_audio(inp / name).samples[None], model)
        np.testing.assert_allclose(np.load(out / f"{name}.scene.npy"), alone[0].numpy(), atol=BATCH_TOLERANCE)


def _four_ten_second_files(inp: Path) -> list[str]:
    """Four 10 s files: a chunk of them is 2.56 MB of float32 samples."""
    inp.mkdir()
    names = [f"{i}.wav" for i in range(4)]
    for i, name in enumerate(names):
        _wav(inp / name, 10.0, freq=200 + 100 * i)
    return names


def _small_dev_shm_prefix() -> tuple:
    """A command prefix running the rest with a 1 MB /dev/shm in a private mount namespace, or
    a skip saying why it cannot be made here (needs root and `unshare`)."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("no private mount namespace here (needs root and unshare); the injected failure covers it")
    script = 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$@"'
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")
    probe = subprocess.run([*prefix, "sh", "-c", "df -k /dev/shm | tail -1"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.split()[1] != "1024":
        pytest.skip(f"cannot mount a small /dev/shm in a private mount namespace: {probe.stderr.strip()[:200]}")
    return prefix


def test_a_chunk_too_large_for_a_small_dev_shm_is_handed_over_through_the_pipe(tmp_path):
    """Issue 27 item 5, with a real 1 MB /dev/shm (as Docker's 64 MB one for larger chunks):
    the worker could not put the 2.56 MB chunk in shared memory, torch printed the error in the
    worker and dropped the chunk, and the run waited for it forever."""
    prefix = _small_dev_shm_prefix()
    inp, out = tmp_path / "in", tmp_path / "o"
    names = _four_ten_second_files(inp)
    done = _cli(str(inp), "--out", str(out), "--decode-workers", "1", "--batch-size", "4", prefix=prefix)
    assert done.returncode == 0 and "4 embedded, 0 skipped (already there), 0 failed" in done.stdout, done.stderr
    assert "shared memory" not in done.stderr
    _assert_each_as_alone(inp, out, names)


def test_a_chunk_larger_than_ulimit_f_is_handed_over_through_the_pipe(tmp_path):
    """Issue 27 item 5 under `ulimit -f` (1 MB): a shared-memory file of the chunk's size cannot
    be made either."""
    inp, out = tmp_path / "in", tmp_path / "o"
    names = _four_ten_second_files(inp)
    done = _cli(str(inp), "--out", str(out), "--decode-workers", "2", "--batch-size", "4",
                preexec_fn=_file_size_limit(1 << 20))  # fmt: skip
    assert done.returncode == 0 and "4 embedded, 0 skipped (already there), 0 failed" in done.stdout, done.stderr
    _assert_each_as_alone(inp, out, names)


def test_a_chunk_that_shared_memory_refuses_is_handed_over_through_the_pipe(tmp_path):
    """Issue 27 item 5 with an injected failure, wherever the tests run: every shared-memory
    allocation in the decoding workers fails as it does on a full /dev/shm."""
    inp, out = tmp_path / "in", tmp_path / "o"
    names = _four_ten_second_files(inp)
    script = (
        "import sys, torch\n"
        "def full(self, *a, **k):\n"
        "    raise RuntimeError('unable to allocate shared memory(shm) for file </torch_x>: No space left on device (28)')\n"
        "torch.UntypedStorage._share_fd_cpu_ = full\n"
        "torch.UntypedStorage._share_filename_cpu_ = full\n"
        "from hear_matpac.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = _cli(str(inp), "--out", str(out), "--decode-workers", "2", "--batch-size", "2", python=("-c", script))
    assert done.returncode == 0 and "4 embedded, 0 skipped (already there), 0 failed" in done.stdout, done.stderr
    _assert_each_as_alone(inp, out, names)


def _records(out: Path) -> dict[str, bool]:
    """Name -> frames, from the manifest as a run leaves it (last line wins)."""
    records = {}
    for line in (out / "embed-manifest.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("removed"):
            records.pop(entry["name"], None)
        elif not entry.get("writing"):
            records[entry["name"]] = entry["frames"]
    return records


def _output_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                  and not p.name.startswith(("embed-", ".embed")))  # fmt: skip


def test_a_write_error_inside_a_group_names_the_file_and_leaves_every_written_output_recorded(tmp_path, monkeypatch, capsys):
    """Issue 27 item 8, injected: the outputs of a group were all written before any was
    recorded, so an error on the group's second file left the first unrecorded (and the next
    run deleted it); the error (as np.save into an open file gives it) named no file."""
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):
        _wav(inp / f"{i}.wav", 0.5 + 0.25 * i, freq=300 + 100 * i)
    real = outputs.save_scene

    def fails_on_the_second(path, scene):
        if Path(path).name.startswith(".1.wav.scene.npy."):  # its temporary file (store.write renames it)
            raise OSError(errno.EFBIG, "File too large")  # no file name, as a write into a handle
        real(path, scene)

    monkeypatch.setattr(output_store, "save_scene", fails_on_the_second)
    out = tmp_path / "o"
    code = main(["embed", str(inp), "--out", str(out), "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet",
                 "--batch-size", "3", "--decode-workers", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert _records(out) == {"0.wav": False} and _output_files(out) == ["0.wav.scene.npy"]
    assert f"error: {out / '1.wav.scene.npy'}: File too large" in err
    monkeypatch.setattr(output_store, "save_scene", real)
    assert main(["embed", str(inp), "--out", str(out), "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "removed" not in captured.err and "2 embedded, 1 skipped" in captured.out


def test_under_ulimit_f_the_error_names_the_file_and_every_written_output_is_recorded(tmp_path):
    """Issue 27 item 8 under a real `ulimit -f` (256 KB): the frames of the group's last file
    (20 s: 480 KB) cannot be written; the outputs before it, that file's scene included, are
    recorded, and the next run (no limit) adds only the missing frames."""
    inp = tmp_path / "in"
    inp.mkdir()
    for i, seconds in enumerate([0.5, 1.0, 20.0]):
        _wav(inp / f"{i}.wav", seconds, freq=300 + 100 * i)
    out = tmp_path / "o"
    args = (str(inp), "--out", str(out), "--timestamps", "--batch-size", "3", "--decode-workers", "0")
    done = _cli(*args, preexec_fn=_file_size_limit(256 << 10))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert _records(out) == {"0.wav": True, "1.wav": True, "2.wav": False}
    assert _output_files(out) == ["0.wav.frames.npz", "0.wav.scene.npy", "1.wav.frames.npz", "1.wav.scene.npy",
                                  "2.wav.scene.npy"]  # fmt: skip
    assert f"error: {out / '2.wav.frames.npz'}: File too large" in done.stderr
    done = _cli(*args)
    assert done.returncode == 0 and "1 embedded, 2 skipped" in done.stdout and "removed" not in done.stderr
    model = hear_matpac.load_model(str(TINY_FLAT))
    for name in ("0.wav", "1.wav", "2.wav"):
        scene, embeddings, _ = get_scene_and_timestamp_embeddings(decode.read_audio(inp / name).samples[None], model)
        np.testing.assert_allclose(np.load(out / f"{name}.scene.npy"), scene[0].numpy(), atol=BATCH_TOLERANCE)
        with np.load(out / f"{name}.frames.npz") as frames:
            np.testing.assert_allclose(frames["embeddings"], embeddings[0].numpy(), atol=BATCH_TOLERANCE)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_file_name_that_is_not_utf8_is_embedded_and_recorded_losslessly(tmp_path, capsys, workers):
    """Issue 27 item 6: `a\\xff.wav` ended the run (exit 2, nothing embedded), with decoding
    workers and without. Its name goes into the manifest as its bytes in base64 (`name_bytes`,
    `source_bytes`), so the manifest stays strict UTF-8 JSON and the next run skips the file."""
    inp = tmp_path / "in"
    inp.mkdir()
    odd = Path(os.fsdecode(bytes(inp) + b"/a\xff.wav"))
    os.rename(_wav(inp / "written.wav", 0.7, freq=500), odd)
    _wav(inp / "b.wav", 0.4, freq=900)
    out = tmp_path / "o"
    args = ["embed", str(inp), "--out", str(out), "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet",
            "--decode-workers", workers]  # fmt: skip
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0 and "2 embedded, 0 skipped (already there), 0 failed" in captured.out, captured.err
    assert os.path.exists(bytes(out) + b"/a\xff.wav.scene.npy")
    _assert_each_as_alone(inp, out, [os.fsdecode(b"a\xff.wav"), "b.wav"])
    text = (out / "embed-manifest.jsonl").read_bytes().decode("utf-8")  # strict
    entries = [json.loads(line) for line in text.splitlines()]
    for entry in entries:  # no lone surrogate anywhere: every string is valid Unicode
        assert all(v.encode("utf-8") for v in entry.values() if isinstance(v, str))
    odd_entry = next(e for e in entries if "name_bytes" in e)
    assert base64.b64decode(odd_entry["name_bytes"]) == b"a\xff.wav" and odd_entry["name"] == "a\ufffd.wav"
    assert base64.b64decode(odd_entry["source_bytes"]) == bytes(inp) + b"/a\xff.wav"
    assert main(args) == 0
    assert "0 embedded, 2 skipped" in capsys.readouterr().out


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the decoding processes")
def test_decoding_workers_outliving_a_killed_run_do_not_hold_the_folder(tmp_path):
    """Issue 27 item 11: forked decoding workers shared `.embed.lock`'s open file, so after a
    SIGKILL of the run they held the folder's lock until they noticed, and the next run waited."""
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(24):
        _wav(inp / f"{i:02d}.wav", 15.0, rate=44100, freq=200 + 20 * i)  # resampled: slow to decode
    out = tmp_path / "o"
    command = [sys.executable, "-m", "hear_matpac.cli", "embed", str(inp), "--out", str(out), "--weights",
               str(TINY_FLAT), "--device", "cpu", "--quiet", "--decode-workers", "2", "--batch-size", "1"]  # fmt: skip
    run = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    workers: list[int] = []
    try:
        for _ in range(6000):  # until the run has written an output: its workers run by then
            if run.poll() is not None or (out.exists() and any(out.glob("*.scene.npy"))):
                break
            threading.Event().wait(0.02)
        workers = _children(run.pid)
        assert run.poll() is None and len(workers) == 2, "the run ended before it could be killed"
        run.kill()
        run.wait()
        assert all(_alive(w) for w in workers), "the workers ended too soon to tell"
        with open(out / ".embed.lock", "ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while a worker holds it
        for worker in workers:
            assert not any(os.path.realpath(fd).endswith(".embed.lock") for fd in
                           (f"/proc/{worker}/fd/{n}" for n in os.listdir(f"/proc/{worker}/fd")))  # fmt: skip
    finally:
        for pid in [run.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.wait()
