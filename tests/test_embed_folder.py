"""`hear-matpac embed`'s output folder: one set of settings, each output from its recorded
source, whatever sequence of runs (concurrent, killed, with --overwrite) made it."""
from __future__ import annotations

import errno
import hashlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import hear_matpac
from hear_matpac.files import decode
from hear_matpac.files import embed as embed_files
from hear_matpac.files import store as output_store
from hear_matpac.files import progress
from hear_matpac.files.audio import read_audio
from hear_matpac.cli import main
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import write_other_weights

TINY = str(TINY_UNTRAINED)
ROOT = Path(__file__).resolve().parents[1]


def _tone(path: Path, freq: float, seconds: float = 1.0, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(rate * seconds)) / rate
    soundfile.write(path, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def _embed(*args: str, weights: str = TINY) -> int:
    return main(["embed", "--weights", weights, "--device", "cpu", "--quiet", *args])


def _outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name.endswith((".npy", ".npz")))


def _assert_consistent(out: Path, weights: str = "") -> dict:
    """Every output file is recorded, and equals what the recorded settings give for the
    recorded source (computed here, independently of the CLI). `weights`: a file holding the
    recorded weights, when the recorded path no longer does."""
    info = json.loads((out / "embed-info.json").read_text())
    weights = weights or info["weights"]
    assert hashlib.sha256(Path(weights).read_bytes()).hexdigest() == info["weights_sha256"]
    manifest = out / "embed-manifest.jsonl"
    records = {}
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            entry = json.loads(line)
            records[entry["name"]] = entry
    expected_files = sorted([f"{n}.scene.npy" for n in records] + [f"{n}.frames.npz" for n, r in records.items() if r["frames"]])
    assert _outputs(out) == expected_files
    options = dict(info["model_options"])
    model = hear_matpac.load_model(weights, **options)
    for name, entry in records.items():
        source = Path(entry["source"])
        assert (source.stat().st_size, source.stat().st_mtime_ns) == (entry["size"], entry["mtime_ns"])
        audio = read_audio(source).samples.unsqueeze(0)
        scene, emb, ts = hear_matpac.api.get_scene_and_timestamp_embeddings(audio, model)
        np.testing.assert_allclose(np.load(out / f"{name}.scene.npy"), scene[0].numpy(), atol=1e-5)
        if entry["frames"]:
            with np.load(out / f"{name}.frames.npz") as frames:
                np.testing.assert_allclose(frames["embeddings"], emb[0].numpy(), atol=1e-5)
    return records


# 1 -------------------------------------------------------------------------------------------

def test_other_source_with_the_same_name_is_refused_not_skipped(tmp_path: Path, capsys) -> None:
    train = _tone(tmp_path / "ds" / "train" / "clip1.wav", 300)
    test = _tone(tmp_path / "ds" / "test" / "clip1.wav", 2000)
    out = tmp_path / "emb"
    assert _embed(str(tmp_path / "ds" / "train"), "--out", str(out)) == 0
    capsys.readouterr()
    assert _embed(str(tmp_path / "ds" / "test"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(train) in err and str(test) in err
    assert _assert_consistent(out)["clip1.wav"]["source"] == str(train)
    # --overwrite replaces it; the record follows.
    assert _embed(str(tmp_path / "ds" / "test"), "--out", str(out), "--overwrite") == 0
    assert _assert_consistent(out)["clip1.wav"]["source"] == str(test)


def test_a_changed_source_is_recomputed_not_skipped(tmp_path: Path, capsys) -> None:
    wav = _tone(tmp_path / "in" / "a.wav", 300)
    out = tmp_path / "emb"
    assert _embed(str(wav), "--out", str(out), "--timestamps") == 0
    _tone(wav, 2500)  # same path and length, other audio
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    capsys.readouterr()
    assert _embed(str(wav), "--out", str(out)) == 0  # frames not asked for: recomputed all the same
    assert "1 embedded, 0 skipped" in capsys.readouterr().out
    assert _assert_consistent(out)["a.wav"]["frames"] is True


# 2 -------------------------------------------------------------------------------------------

def test_overwrite_of_a_subset_with_new_settings_never_mixes(tmp_path: Path, capsys) -> None:
    inp = tmp_path / "inp"
    for i, freq in enumerate([300, 700, 1500]):
        _tone(inp / f"f{i}.wav", freq)
    out = tmp_path / "X"
    assert _embed(str(inp), "--out", str(out), "--timestamps") == 0
    assert _embed(str(inp / "f0.wav"), "--layer", "0", "--overwrite", "--out", str(out)) == 0
    assert "removed the 6 output file(s) of the old ones" in capsys.readouterr().err
    assert _outputs(out) == ["f0.wav.scene.npy"]
    assert _embed(str(inp), "--layer", "0", "--out", str(out)) == 0  # f1, f2 embedded anew, not skipped
    assert "2 embedded, 1 skipped" in capsys.readouterr().out
    records = _assert_consistent(out)
    assert sorted(records) == ["f0.wav", "f1.wav", "f2.wav"]
    assert json.loads((out / "embed-info.json").read_text())["model_options"]["layer"] == 0


def test_frames_added_later_come_from_the_same_settings(tmp_path: Path, capsys) -> None:
    wav = _tone(tmp_path / "a.wav", 440)
    out = tmp_path / "o"
    assert _embed(str(wav), "--out", str(out)) == 0
    assert _embed(str(wav), "--out", str(out), "--timestamps", "--layer", "0") == 2  # would mix
    assert _embed(str(wav), "--out", str(out), "--timestamps") == 0
    assert _assert_consistent(out)["a.wav"]["frames"] is True


# 3 -------------------------------------------------------------------------------------------

def _start(out: Path, inputs: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "hear_matpac.cli", "embed", str(inputs), "--out", str(out),
               "--weights", TINY, "--device", "cpu", "--quiet", *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_concurrent_runs_into_one_folder_leave_it_consistent(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    for i in range(6):
        _tone(inputs / f"c{i}.wav", 200 + 150 * i, 0.5)
    out = tmp_path / "r"
    out.mkdir()
    with open(out / ".embed.lock", "ab") as held:  # hold the folder so that both runs start while it is busy
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        runs = [_start(out, inputs), _start(out, inputs, "--layer", "0")]
        for run in runs:  # each says it waits, then blocks
            assert "waiting for another embed run" in run.stderr.readline()
    results = [(run.wait(timeout=120), run.stdout.read(), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results  # the first to get the folder embeds; the other is refused
    refused = next(err for code, _, err in results if code == 2)
    assert "holds embeddings made with other settings" in refused
    assert len(_assert_consistent(out)) == 6


# 4 -------------------------------------------------------------------------------------------

def test_weights_are_identified_by_content(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "w" / "a.pt", tmp_path / "w2" / "b.pt"
    a.parent.mkdir()
    b.parent.mkdir()
    shutil.copyfile(TINY, a)
    shutil.copyfile(TINY, b)
    first, second = _tone(tmp_path / "in" / "x.wav", 300), _tone(tmp_path / "in" / "y.wav", 900)
    out = tmp_path / "o"
    assert _embed(str(first), "--out", str(out), weights=str(a)) == 0
    assert _embed(str(second), "--out", str(out), weights=str(b)) == 0  # a byte-identical copy: the same
    write_other_weights(a)  # replaced at the same path
    capsys.readouterr()
    assert _embed(str(tmp_path / "in"), "--out", str(out), weights=str(a)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_sha256" in err
    assert len(_assert_consistent(out, weights=str(b))) == 2


# 5 -------------------------------------------------------------------------------------------

def test_fp16_on_cpu_is_refused_before_any_decoding(tmp_path: Path, monkeypatch, capsys) -> None:
    wav = _tone(tmp_path / "a.wav", 440)
    monkeypatch.setattr(decode, "read_audio", lambda path: pytest.fail("decoded a file"))
    assert _embed(str(wav), "--out", str(tmp_path / "o"), "--precision", "fp16") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda" in err
    assert not (tmp_path / "o").exists()


def test_a_folder_without_outputs_takes_any_settings(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "in" / "broken.wav"
    broken.parent.mkdir()
    broken.write_bytes(b"RIFF....WAVEjunk")
    out = tmp_path / "o"
    assert _embed(str(broken), "--out", str(out)) == 1  # every file failed
    good = _tone(tmp_path / "in" / "good.wav", 440)
    assert _embed(str(good), "--out", str(out), "--precision", "bf16") == 0
    assert json.loads((out / "embed-info.json").read_text())["model_options"]["precision"] == "bf16"


def test_defaults_given_explicitly_are_the_same_settings(tmp_path: Path, capsys) -> None:
    wav = _tone(tmp_path / "a.wav", 440)
    out = tmp_path / "o"
    assert _embed(str(wav), "--out", str(out)) == 0
    capsys.readouterr()
    assert _embed(str(wav), "--out", str(out), "--timestamp-hop-ms", "160", "--precision", "fp32", "--layer", "-1") == 0
    assert "0 embedded, 1 skipped" in capsys.readouterr().out


# 6 (embed's side) -----------------------------------------------------------------------------

def test_non_finite_results_are_failures_and_nothing_is_written(tmp_path: Path, monkeypatch, capsys) -> None:
    inp = tmp_path / "in"
    _tone(inp / "good.wav", 440)
    huge = np.full(16000, 1e20, np.float32)
    soundfile.write(inp / "huge.wav", huge, 16000, subtype="FLOAT")  # finite samples, NaN embeddings
    _tone(inp / "refused.wav", 900)
    real = embed_files.embed_packed

    out = tmp_path / "o"
    assert _embed(str(inp), "--out", str(out)) == 1
    captured = capsys.readouterr()
    assert "huge.wav: embeddings are NaN or Inf for clip(s) 0 although the audio is finite" in captured.err
    assert "1 failed" in captured.out and not (out / "huge.wav.scene.npy").exists()
    # A ValueError of the API for one clip of a group: that file fails, the others are written.
    refused = inp / "refused.wav"
    first_sample = float(read_audio(refused).samples[1])
    monkeypatch.setattr(embed_files, "embed_packed", lambda audio, lengths, model, **kw: (
        (_ for _ in ()).throw(ValueError("clips 0 are not finite")) if any(
            abs(float(clip[1]) - first_sample) < 1e-7 for clip in audio.split(lengths)) else real(audio, lengths, model, **kw)))  # fmt: skip
    shutil.rmtree(out)
    assert _embed(str(inp), "--out", str(out)) == 1
    captured = capsys.readouterr()
    assert "refused.wav: clips 0 are not finite" in captured.err
    assert _outputs(out) == ["good.wav.scene.npy"]
    assert list(_assert_consistent(out)) == ["good.wav"]


# 8 and leftovers --------------------------------------------------------------------------------

def test_leftovers_of_a_killed_run_are_cleaned(tmp_path: Path, capsys) -> None:
    inp = tmp_path / "in"
    _tone(inp / "a.wav", 300)
    _tone(inp / "sub" / "b.wav", 800)
    out = tmp_path / "o"
    assert _embed(str(inp), "--out", str(out)) == 0
    temps = [out / ".a.wav.scene.npy.k1l2m3n4.tmp", out / "sub" / ".b.wav.frames.npz.abcd_123.tmp",
             out / ".embed-info.json.zz99zz99.tmp"]  # fmt: skip
    for temp in temps:
        temp.write_bytes(b"half")
    keep = out / ".notes.abcdefgh.tmp"  # not one of embed's
    keep.write_bytes(b"mine")
    shutil.copyfile(out / "a.wav.scene.npy", out / "sub" / "b.wav.frames.npz")  # written, never recorded
    with open(out / "embed-manifest.jsonl", "a") as manifest:
        manifest.write('{"name": "sub/b.wav", "writing": true}\n')  # as a run does before it writes
        manifest.write('{"name": "sub/b.wav", "frames": tr')  # a line cut short by a kill
    capsys.readouterr()
    assert _embed(str(inp), "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "removed 3 temporary file(s)" in captured.err
    assert "removed 1 output file(s) that an interrupted run wrote but did not record" in captured.err
    assert "0 embedded, 2 skipped" in captured.out
    assert not any(t.exists() for t in temps) and keep.exists()
    assert len(_assert_consistent(out)) == 2


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and mtime."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_a_nested_output_folder_is_neither_cleaned_nor_written_into(tmp_path: Path, capsys) -> None:
    """Issue 27 item 2: `embed a --out n1`, `embed b --out n1/b_emb`, `embed a --out n1` deleted
    n1/b_emb's outputs as unrecorded; a nested run's temporary files went too, and so did a
    starting run's (its folder holds only `.embed.lock` so far)."""
    a, b = _tone(tmp_path / "in_a" / "a.wav", 300), _tone(tmp_path / "in_b" / "b.wav", 900)
    n1 = tmp_path / "n1"
    assert _embed(str(a), "--out", str(n1)) == 0
    assert _embed(str(b), "--out", str(n1 / "b_emb"), "--timestamps") == 0
    (n1 / "b_emb" / ".b.wav.scene.npy.abcd1234.tmp").write_bytes(b"being written by the nested run")
    starting = n1 / "starting"
    starting.mkdir()
    (starting / ".embed.lock").touch()
    (starting / ".c.wav.scene.npy.abcd1234.tmp").write_bytes(b"being written")
    nested = {name: _state(n1 / name) for name in ("b_emb", "starting")}
    capsys.readouterr()
    assert _embed(str(a), "--out", str(n1)) == 0
    captured = capsys.readouterr()
    assert "removed" not in captured.err and "0 embedded, 1 skipped" in captured.out
    assert {name: _state(n1 / name) for name in nested} == nested
    # New settings with --overwrite delete the folder's own outputs, not the nested folders'.
    assert _embed(str(a), "--out", str(n1), "--layer", "0", "--overwrite") == 0
    assert "removed the 1 output file(s) of the old ones" in capsys.readouterr().err
    assert {name: _state(n1 / name) for name in nested} == nested
    assert len(_assert_consistent(n1 / "b_emb")) == 1
    # An input whose outputs would land in the nested folder is refused, before anything is written.
    _tone(tmp_path / "src" / "b_emb" / "x.wav", 500)
    for extra in ([], ["--overwrite"]):
        assert _embed(str(tmp_path / "src"), "--out", str(n1), "--layer", "0", *extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"would be written inside {n1 / 'b_emb'}, another embed output folder" in err
    assert {name: _state(n1 / name) for name in nested} == nested


def test_outputs_the_manifest_does_not_record_are_refused_not_deleted(tmp_path: Path, capsys) -> None:
    """Issue 27 item 2: after `rm E/embed-manifest.jsonl` the next run with the same settings
    deleted every output. Now it stops in one line, deletes nothing, and names the ways out;
    --overwrite then starts over."""
    inp = tmp_path / "in"
    for i, freq in enumerate([300, 700, 1500]):
        _tone(inp / f"f{i}.wav", freq)
    out = tmp_path / "E"
    assert _embed(str(inp), "--out", str(out), "--timestamps") == 0
    (out / "embed-manifest.jsonl").unlink()
    before = _state(out)
    capsys.readouterr()
    assert _embed(str(inp), "--out", str(out), "--timestamps") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds 6 output file(s) that embed-manifest.jsonl does not record" in err
    assert "embed-manifest.jsonl is missing" in err and "--overwrite" in err
    assert _state(out) == before
    assert _embed(str(inp), "--out", str(out), "--timestamps", "--overwrite") == 0
    captured = capsys.readouterr()
    assert "--overwrite: removed 6 output file(s) that embed-manifest.jsonl did not record" in captured.err
    assert "3 embedded" in captured.out and len(_assert_consistent(out)) == 3
    # A file put there by hand, beside a manifest: the same.
    shutil.copyfile(out / "f0.wav.scene.npy", out / "mine.scene.npy")
    before = _state(out)
    assert _embed(str(inp), "--out", str(out), "--timestamps") == 2
    assert f"such as {out / 'mine.scene.npy'}" in capsys.readouterr().err
    assert _state(out) == before


@pytest.mark.parametrize("content", ["[]", "{not json", '"text"', '{"model_options": []}'])
def test_malformed_embed_info_is_one_line(tmp_path: Path, capsys, content: str) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "embed-info.json").write_text(content)
    assert _embed(str(_tone(tmp_path / "a.wav", 440)), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out / "embed-info.json") in err and "not an embed-info record" in err


@pytest.mark.parametrize("first", ['[1, 2]', '{"name": "a.wav", "source": "/a.wav", "size": 1e400, "mtime_ns": 1, "frames": false}'])
def test_malformed_manifest_line_is_one_line(tmp_path: Path, capsys, first: str) -> None:
    wav = _tone(tmp_path / "a.wav", 440)
    out = tmp_path / "o"
    assert _embed(str(wav), "--out", str(out)) == 0
    (out / "embed-manifest.jsonl").write_text(first + '\n{"name": "a.wav"}\n')
    capsys.readouterr()
    assert _embed(str(wav), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out / 'embed-manifest.jsonl'}:1: not a manifest line" in err


def test_a_linked_folder_inside_out_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """Outputs behind a symbolic link to a folder would be neither seen nor cleaned (a run could
    claim new settings beside them): the run stops before it writes anything."""
    inputs = tmp_path / "in"
    _tone(inputs / "sub" / "x.wav", 440)
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "o"
    assert _embed(str(inputs), "--out", str(elsewhere), "--layer", "2") == 0
    out.mkdir()
    (out / "sub").symlink_to(elsewhere / "sub", target_is_directory=True)
    stamp = (elsewhere / "sub" / "x.wav.scene.npy").stat().st_mtime_ns
    capsys.readouterr()
    assert _embed(str(inputs), "--out", str(out), "--layer", "0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out / 'sub'} is a symbolic link to a folder inside the output folder" in err
    assert (elsewhere / "sub" / "x.wav.scene.npy").stat().st_mtime_ns == stamp
    assert not (out / "embed-info.json").exists()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_that_cannot_be_a_folder_is_one_line(tmp_path: Path, capsys, where: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = afile if where == "file" else afile / "sub"
    assert _embed(str(_tone(tmp_path / "a.wav", 440)), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hear-matpac embed: error: ") and str(afile) in err


def test_disk_full_while_writing_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(output_store, "_write_json", full)
    out = tmp_path / "o"
    assert _embed(str(_tone(tmp_path / "a.wav", 440)), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err == f"hear-matpac embed: error: {out / 'embed-info.json'}: No space left on device\n"


def test_read_only_out_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    real_open = open

    def read_only(path, *args, **kwargs):  # as on a read-only mount, where root is refused too
        if str(path).endswith(".embed.lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only)
    out = tmp_path / "o"
    assert _embed(str(_tone(tmp_path / "a.wav", 440)), "--out", str(out)) == 2
    assert capsys.readouterr().err == f"hear-matpac embed: error: {out / '.embed.lock'}: Read-only file system\n"


def test_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(f"'{sys.executable}' -m hear_matpac.cli info '{TINY}' | head -1", shell=True,
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.stdout.count("\n") == 1 and done.stderr == ""


def test_progress_off_a_terminal_is_plain_lines_in_audio_seconds(tmp_path: Path, monkeypatch, capsys) -> None:
    inp = tmp_path / "in"
    _tone(inp / "a.wav", 300, 5.2)  # with --batch-size 1, a call each (6.08 s of audio a call)
    _tone(inp / "b.wav", 600, 1.3, rate=8000)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 1e9)  # no ticker line: only the one at the end
    assert main(["embed", str(inp), "--out", str(tmp_path / "o"), "--weights", TINY, "--device", "cpu",
                 "--batch-size", "1"]) == 0  # fmt: skip
    lines = capsys.readouterr().err.splitlines()  # capsys's stderr is not a terminal
    assert lines == ["hear-matpac embed: 6.5 of 6.5 s of audio (100%), 2 of 2 files"]  # the ticker: test_progress.py
