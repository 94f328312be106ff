"""`hear-matpac embed` and what it is built from: reading audio, naming inputs, atomic writes."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import hear_matpac
from hear_matpac.io import InputTypeError, atomic_write
from hear_matpac.files.audio import AudioFileError, read_audio
from hear_matpac.files import embed as embed_files
from hear_matpac.files import job as embed_job
from hear_matpac.cli import main
from hear_matpac.files.inputs import collect_inputs
from hear_matpac.weights.locate import TINY_UNTRAINED

TINY = str(TINY_UNTRAINED)


def _sine(freq: float, rate: int, seconds: float, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture()
def audio_dir(tmp_path: Path) -> Path:
    """stereo 44.1 kHz wav, 8 kHz flac (in a subfolder), a corrupt wav and an empty wav."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    left, right = _sine(440, 44100, 2.5, 0.6), _sine(1000, 44100, 2.5, 0.2)
    soundfile.write(root / "stereo.wav", np.stack([left, right], axis=1), 44100)
    soundfile.write(root / "sub" / "tone8k.flac", _sine(300, 8000, 3.0, 0.4), 8000)
    (root / "corrupt.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.txt").write_text("not audio; a directory scan skips it")
    return root


def _embed(*args: str) -> int:
    return main(["embed", "--weights", TINY, "--device", "cpu", "--quiet", *args])


def _expected(path: Path, **options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    model = hear_matpac.load_model(TINY, **options)
    audio = read_audio(path).samples.unsqueeze(0)
    emb, ts = hear_matpac.get_timestamp_embeddings(audio, model)
    return hear_matpac.get_scene_embeddings(audio, model)[0].numpy(), emb[0].numpy(), ts[0].numpy()


def test_mixed_inputs_one_call(audio_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _embed(str(audio_dir), "--out", str(out), "--timestamps") == 1  # two files failed
    captured = capsys.readouterr()
    assert "corrupt.wav: not decodable as audio by libsndfile" in captured.err
    assert "empty.wav: empty file (0 bytes)" in captured.err
    assert "2 embedded, 0 skipped (already there), 2 failed" in captured.out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        ".embed.lock", "embed-info.json", "embed-manifest.jsonl",
        "stereo.wav.frames.npz", "stereo.wav.scene.npy",
        "sub/tone8k.flac.frames.npz", "sub/tone8k.flac.scene.npy",
    ]  # fmt: skip
    for name, source in [("stereo.wav", audio_dir / "stereo.wav"), ("sub/tone8k.flac", audio_dir / "sub" / "tone8k.flac")]:
        scene, emb, ts = _expected(source)
        got = np.load(out / f"{name}.scene.npy")
        assert got.dtype == np.float32 and got.shape == (960,)
        np.testing.assert_allclose(got, scene, atol=1e-5)
        with np.load(out / f"{name}.frames.npz") as frames:
            assert frames["embeddings"].dtype == np.float32 and frames["timestamps"].dtype == np.float32
            np.testing.assert_allclose(frames["embeddings"], emb, atol=1e-5)
            np.testing.assert_array_equal(frames["timestamps"], ts)
    # 2.5 s at 44.1 kHz -> 40000 samples at 16 kHz; centres 2560 j + 1400 <= 40000 for j = 0..15.
    assert np.load(out / "stereo.wav.frames.npz")["timestamps"].shape == (16,)
    info = json.loads((out / "embed-info.json").read_text())
    assert info["model_options"] == {"layer": 2, "precision": "fp32", "timestamp_hop_ms": 160,
                                     "window_overlap": 0.0, "window_seconds": 6.08}  # fmt: skip
    assert info["weights"] == str(Path(TINY).resolve())
    assert info["weights_sha256"] == hashlib.sha256(Path(TINY).read_bytes()).hexdigest()


def test_rerun_skips_and_overwrite_recomputes(audio_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    good = [str(audio_dir / "stereo.wav"), str(audio_dir / "sub" / "tone8k.flac")]
    assert _embed(*good, "--out", str(out)) == 0
    scene = out / "stereo.wav.scene.npy"
    os.utime(scene, (1_000_000, 1_000_000))
    capsys.readouterr()
    assert _embed(*good, "--out", str(out)) == 0
    assert "0 embedded, 2 skipped" in capsys.readouterr().out
    assert scene.stat().st_mtime == 1_000_000
    # Asking for frames as well computes only the missing frames files.
    assert _embed(*good, "--out", str(out), "--timestamps") == 0
    assert "2 embedded, 0 skipped" in capsys.readouterr().out
    assert scene.stat().st_mtime == 1_000_000 and (out / "stereo.wav.frames.npz").is_file()
    assert _embed(*good, "--out", str(out), "--overwrite") == 0
    assert "2 embedded, 0 skipped" in capsys.readouterr().out
    assert scene.stat().st_mtime != 1_000_000
    assert not [p for p in out.rglob("*.tmp")]


def test_other_settings_refused_in_same_out(audio_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    wav = str(audio_dir / "stereo.wav")
    assert _embed(wav, "--out", str(out)) == 0
    before = np.load(out / "stereo.wav.scene.npy")
    capsys.readouterr()
    assert _embed(wav, "--out", str(out), "--layer", "0") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds embeddings made with other settings" in err
    assert _embed(wav, "--out", str(out), "--layer", "-1") == 0  # same layer as the default, named otherwise
    assert _embed(wav, "--out", str(out), "--layer", "0", "--overwrite") == 0
    after = np.load(out / "stereo.wav.scene.npy")
    np.testing.assert_allclose(after, _expected(audio_dir / "stereo.wav", layer=0)[0], atol=1e-5)
    assert not np.allclose(after, before, atol=1e-3)


def test_batch_size_embeds_files_of_any_length_together_without_changing_results(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i, freq in enumerate([200, 500, 900]):
        soundfile.write(src / f"same{i}.wav", _sine(freq, 16000, 7.0, 0.5), 16000)  # 2 windows each
    soundfile.write(src / "other.wav", _sine(300, 16000, 1.0, 0.5), 16000)
    calls = []
    real = embed_files.embed_packed
    monkeypatch.setattr(embed_files, "embed_packed", lambda audio, lengths, model, **kw: calls.append(
        (sorted(lengths), model.options.max_windows)) or real(audio, lengths, model, **kw))  # fmt: skip
    assert _embed(str(src), "--out", str(tmp_path / "b1"), "--batch-size", "1") == 0
    assert sorted(calls) == sorted([([112000], 1)] * 3 + [([16000], 1)])
    calls.clear()
    assert _embed(str(src), "--out", str(tmp_path / "b4"), "--batch-size", "4") == 0
    assert calls == [([16000, 112000, 112000, 112000], 4)]
    for name in ["same0", "same1", "same2", "other"]:
        np.testing.assert_allclose(
            np.load(tmp_path / "b4" / f"{name}.wav.scene.npy"), np.load(tmp_path / "b1" / f"{name}.wav.scene.npy"), atol=1e-5
        )  # fmt: skip


def test_model_options_pass_through_only_when_given(audio_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    seen = []

    def fake_load_model(path, **options):
        seen.append(options)
        raise InputTypeError("unknown option(s) precision; valid options: layer, max_windows")  # as options.py does

    monkeypatch.setattr(embed_job, "load_model", fake_load_model)
    wav = str(audio_dir / "stereo.wav")
    assert _embed(wav, "--out", str(tmp_path / "o")) == 2
    assert _embed(wav, "--out", str(tmp_path / "o"), "--timestamp-hop-ms", "25", "--precision", "bf16",
                  "--layer", "1", "--batch-size", "3") == 2  # fmt: skip
    assert seen == [{}, {"max_windows": 3, "layer": 1, "timestamp_hop_ms": 25.0, "precision": "bf16"}]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "hear-matpac embed: error: unknown option(s) precision; valid options: layer, max_windows"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "7"], "layer=7 is out of range for an encoder of depth 3"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--device", "nonsense"], "--device 'nonsense' is not a torch device"),
    ],
)
def test_usage_errors_are_one_line(audio_dir: Path, tmp_path: Path, capsys, extra, message) -> None:
    assert _embed(str(audio_dir / "stereo.wav"), "--out", str(tmp_path / "o"), *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hear-matpac embed: error: ") and message in err


def test_missing_weights_and_no_inputs_are_one_line(audio_dir: Path, tmp_path: Path, capsys) -> None:
    wav = str(audio_dir / "stereo.wav")
    assert main(["embed", wav, "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "nope.pt")]) == 2
    assert main(["embed", str(tmp_path / "missing*.wav"), "--out", str(tmp_path / "o"), "--weights", TINY]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "nope.pt: no such checkpoint file" in err[0]
    assert "no audio files to embed" in err[1] and "no file matches this pattern" in err[1]


def test_collect_inputs_names_mirror_arguments(tmp_path: Path) -> None:
    for rel in ["a/x.wav", "a/deep/y.flac", "a/.hidden.wav", "a/readme.md", "b/x.wav", "b/z.ogg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    os.mkfifo(tmp_path / "pipe.wav")  # reading it would block
    files, bad = collect_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "*.wav"), str(tmp_path / "a" / "x.wav"),
                                 str(tmp_path / "nothing"), str(tmp_path / "pipe.wav")])  # fmt: skip
    assert [f.name for f in files] == ["a/x.wav", "a/deep/y.flac", "b/x.wav"]  # a folder's files, then its subfolders
    assert [(b.argument, b.problem) for b in bad] == [(str(tmp_path / "nothing"), "no such file or directory"),
                                                      (str(tmp_path / "pipe.wav"), "not a regular file or a folder")]  # fmt: skip
    files, _ = collect_inputs([str(tmp_path / "a")])
    assert [f.name for f in files] == ["x.wav", "deep/y.flac"]
    files, _ = collect_inputs([str(tmp_path / "a" / "readme.md")])  # named explicitly: tried anyway
    assert [f.name for f in files] == ["readme.md"]
    files, _ = collect_inputs([str(tmp_path / "**" / "x.wav")])
    assert [f.name for f in files] == ["a/x.wav", "b/x.wav"]


def test_missing_argument_is_a_failure_and_others_go_on(audio_dir: Path, tmp_path: Path, capsys) -> None:
    assert _embed(str(audio_dir / "stereo.wav"), str(tmp_path / "gone.wav"), "--out", str(tmp_path / "o")) == 1
    captured = capsys.readouterr()
    assert "gone.wav: no such file or directory" in captured.err
    assert "1 embedded, 0 skipped (already there), 1 failed" in captured.out


def test_read_audio_mixes_to_mono_and_resamples(tmp_path: Path) -> None:
    left, right = _sine(1000, 44100, 1.0, 0.6), _sine(1000, 44100, 1.0, 0.2)
    soundfile.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    clip = read_audio(tmp_path / "s.wav")
    assert (clip.source_rate, clip.source_channels, clip.samples.dtype) == (44100, 2, torch.float32)
    assert clip.samples.shape == (16000,)
    expected = _sine(1000, 16000, 1.0, 0.4)  # the channel mean, sampled at 16 kHz directly
    np.testing.assert_allclose(clip.samples[200:-200].numpy(), expected[200:-200], atol=2e-3)

    soundfile.write(tmp_path / "m.flac", _sine(300, 8000, 0.5, 0.4), 8000)
    clip = read_audio(tmp_path / "m.flac")
    assert clip.samples.shape == (8000,) and clip.source_channels == 1
    np.testing.assert_allclose(clip.samples[200:-200].numpy(), _sine(300, 16000, 0.5, 0.4)[200:-200], atol=2e-3)


def test_read_audio_rejects_with_reasons(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "nothing.wav", np.zeros((0, 2), np.float32), 16000)
    bad = np.zeros(100, np.float32)
    bad[5] = math.nan
    soundfile.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    (tmp_path / "truncated.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    with pytest.raises(AudioFileError, match="holds no audio samples"):
        read_audio(tmp_path / "nothing.wav")
    with pytest.raises(AudioFileError, match="NaN or Inf"):
        read_audio(tmp_path / "nan.wav")
    with pytest.raises(AudioFileError, match="not decodable as audio"):
        read_audio(tmp_path / "truncated.wav")
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "absent.wav")


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "f.npy"
    with atomic_write(target) as handle:
        handle.write(b"first")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.npy"]


def test_help_lists_every_subcommand_and_option(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in ["demo", "embed", "compare"]:
        assert f"    {command} " in text
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = capsys.readouterr().out
    for flag in ["--out", "--weights", "--timestamps", "--layer", "--timestamp-hop-ms", "--precision",
                 "--device", "--batch-size", "--overwrite", "--quiet", "exit status"]:  # fmt: skip
        assert flag in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_cuda_requested_without_cuda_is_one_line(audio_dir: Path, tmp_path: Path, capsys) -> None:
    assert _embed(str(audio_dir / "stereo.wav"), "--out", str(tmp_path / "o"), "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert err == "hear-matpac embed: error: --device cuda: CUDA is not available here; use --device cpu\n"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["embed"], "hear-matpac embed: error: the following arguments are required: PATH, --out (see hear-matpac embed --help)"),
        (["embed", "a.wav", "--out", "o", "--batch-size", "x"], "hear-matpac embed: error: argument --batch-size: invalid int value: 'x' (see hear-matpac embed --help)"),
        ([], "hear-matpac: error: the following arguments are required: COMMAND (see hear-matpac --help)"),
        (["embed", "a.wav", "--out", "o", "--bogus", "4"],
         "hear-matpac embed: error: unrecognized arguments: --bogus 4 (see hear-matpac embed --help)"),
    ],
)
def test_argparse_errors_are_one_line_too(capsys, argv, line) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def test_every_load_model_option_is_a_flag_of_embed(audio_dir: Path, tmp_path: Path) -> None:
    """README: every load_model option is a flag of `embed`; --max-windows is one (it bounds
    memory and changes no number beyond float tolerance)."""
    wav = str(audio_dir / "stereo.wav")
    assert _embed(wav, "--out", str(tmp_path / "w1"), "--max-windows", "1") == 0
    assert _embed(wav, "--out", str(tmp_path / "w16"), "--max-windows", "16") == 0
    np.testing.assert_allclose(np.load(tmp_path / "w1" / "stereo.wav.scene.npy"),
                               np.load(tmp_path / "w16" / "stereo.wav.scene.npy"), atol=1e-5)  # fmt: skip


def test_embed_files_from_python_without_argparse(audio_dir: Path, tmp_path: Path, capsys) -> None:
    """The library entry the CLI calls: a folder embedded from Python, then skipped as up to date;
    the outputs are the CLI's."""
    from hear_matpac.files.job import Totals, embed_files

    done = embed_files([audio_dir], tmp_path / "lib", TINY, device="cpu")  # a corrupt and an empty file fail
    names = sorted(p.relative_to(tmp_path / "lib").as_posix() for p in (tmp_path / "lib").rglob("*.scene.npy"))
    assert names == ["stereo.wav.scene.npy", "sub/tone8k.flac.scene.npy"]
    assert done == Totals(embedded=2, skipped=0, failed=2)
    assert embed_files([audio_dir], tmp_path / "lib", TINY, device="cpu") == Totals(embedded=0, skipped=2, failed=2)
    assert _embed(str(audio_dir), "--out", str(tmp_path / "cli")) == 1
    for name in names:
        np.testing.assert_array_equal(np.load(tmp_path / "lib" / name), np.load(tmp_path / "cli" / name))
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        embed_files([audio_dir], tmp_path / "x", TINY, batch_size=0)
