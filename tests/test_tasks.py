"""The synthetic HEAR task suite: format, labels that match the audio, determinism, and
all-or-nothing writing. Checks read the files back, not the generator's internals."""
from __future__ import annotations

import os

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hear_matpac.hear_tools import tasks as tasks_module
from hear_matpac.hear_tools.tasks import PITCH_RANGES_HZ, suite, write_suite

SR = 16000
EVENT_KEYS = {"label", "start", "end"}


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("suite") / "tasks"
    write_suite(out, seed=0)
    return out


def load_task(task_dir: Path):
    meta = json.loads((task_dir / "task_metadata.json").read_text())
    with open(task_dir / "labelvocabulary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    splits = {s: json.loads((task_dir / f"{s}.json").read_text()) for s in meta["splits"]}
    return meta, rows, splits


def test_suite_has_one_task_per_kind(suite_dir):
    kinds = set()
    for task_dir in suite_dir.iterdir():
        meta, _, _ = load_task(task_dir)
        kinds.add((meta["embedding_type"], meta["prediction_type"], meta["split_mode"]))
    assert sorted(p.name for p in suite_dir.iterdir()) == sorted(s.name for s in suite())
    assert ("scene", "multiclass", "trainvaltest") in kinds
    assert ("scene", "multilabel", "trainvaltest") in kinds
    assert ("event", "multilabel", "trainvaltest") in kinds
    assert ("scene", "multiclass", "new_split_kfold") in kinds


def test_metadata_vocabulary_and_audio_are_consistent(suite_dir):
    for task_dir in suite_dir.iterdir():
        meta, rows, splits = load_task(task_dir)
        assert meta["task_name"] == task_dir.name
        assert meta["embedding_type"] in {"scene", "event"}
        assert meta["prediction_type"] in {"multiclass", "multilabel"}
        if meta["split_mode"] == "trainvaltest":
            assert meta["splits"] == ["train", "valid", "test"]
        else:
            assert meta["split_mode"] == "new_split_kfold"
            assert meta["nfolds"] == len(meta["splits"]) == 3
            assert meta["splits"] == ["fold00", "fold01", "fold02"]
        assert isinstance(meta["evaluation"], list) and meta["evaluation"]
        assert [int(r["idx"]) for r in rows] == list(range(len(rows)))
        vocab = {r["label"] for r in rows}
        assert len(vocab) == len(rows)
        names = [name for split in splits.values() for name in split]
        assert len(names) == len(set(names)), "file names must be unique across splits"
        expected_samples = round(meta["sample_duration"] * SR)
        for split, labels in splits.items():
            audio_dir = task_dir / "16000" / split
            assert sorted(p.name for p in audio_dir.iterdir()) == sorted(labels)
            for name, label in labels.items():
                info = sf.info(audio_dir / name)
                assert (info.samplerate, info.channels, info.frames) == (SR, 1, expected_samples)
                assert info.subtype == "PCM_16"
                if meta["embedding_type"] == "scene":
                    assert set(label) <= vocab
                    if meta["prediction_type"] == "multiclass":
                        assert len(label) == 1
                else:
                    assert all(set(e) == EVENT_KEYS and e["label"] in vocab for e in label)
                    assert all(0 <= e["start"] < e["end"] <= 1000 * meta["sample_duration"] for e in label)


def test_every_label_is_present_and_absent_in_every_split(suite_dir):
    """So that every score (mAP, d', AUC, accuracy) is defined on every split."""
    for task_dir in suite_dir.iterdir():
        meta, rows, splits = load_task(task_dir)
        vocab = {r["label"] for r in rows}
        for split, labels in splits.items():
            clip_labels = [
                {e["label"] for e in lab} if meta["embedding_type"] == "event" else set(lab)
                for lab in labels.values()
            ]
            for label in vocab:
                assert any(label in c for c in clip_labels), (task_dir.name, split, label)
                assert any(label not in c for c in clip_labels), (task_dir.name, split, label)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def test_event_onsets_and_offsets_match_the_audio(suite_dir):
    """Quiet (room noise only) in the 30 ms before each onset and after each offset, loud in
    the 30 ms after the onset."""
    task_dir = suite_dir / "synth_events"
    _, _, splits = load_task(task_dir)
    win = 30 * SR // 1000
    for split, labels in splits.items():
        for name, events in labels.items():
            audio, _ = sf.read(task_dir / "16000" / split / name)
            for e in events:
                on, off = round(e["start"] * SR / 1000), round(e["end"] * SR / 1000)
                before, after = rms(audio[on - win : on]), rms(audio[on : on + win])
                assert after > 10 * before, (name, e)
                if off + win <= len(audio):
                    assert rms(audio[off : off + win]) < 0.1 * after, (name, e)


def test_pitch_labels_match_the_fundamental(suite_dir):
    """The lowest strong spectral peak lies in the labelled pitch range."""
    task_dir = suite_dir / "synth_pitch_3fold"
    _, _, splits = load_task(task_dir)
    for split, labels in splits.items():
        for name, (label,) in labels.items():
            audio, _ = sf.read(task_dir / "16000" / split / name)
            spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
            freqs = np.fft.rfftfreq(len(audio), 1 / SR)
            # the fundamental: the lowest strong peak (partial k has at most 1/k of the top)
            f0 = freqs[np.argmax(spectrum > 0.25 * spectrum.max())]
            lo, hi = PITCH_RANGES_HZ[label]
            assert lo * 0.97 <= f0 <= hi * 1.03, (name, label, f0)


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_audio(suite_dir, tmp_path):
    write_suite(tmp_path / "again", seed=0)
    write_suite(tmp_path / "other", seed=1, tasks=["synth_scene_multiclass"])
    assert digest(tmp_path / "again") == digest(suite_dir)
    a = sf.read(suite_dir / "synth_scene_multiclass/16000/train/train-000.wav")[0]
    b = sf.read(tmp_path / "other/synth_scene_multiclass/16000/train/train-000.wav")[0]
    assert not np.array_equal(a, b)
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["synth_scene_multiclass"]


def test_scale_multiplies_clips(tmp_path):
    out = write_suite(tmp_path / "big", scale=2, tasks=["synth_pitch_3fold"])[0]
    _, _, splits = load_task(out)
    base = dict(zip(suite()[3].splits, suite()[3].clips_per_split))
    assert {s: len(v) for s, v in splits.items()} == {s: 2 * n for s, n in base.items()}


def test_refuses_bad_requests_and_existing_folders(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        write_suite(tmp_path / "a", tasks=["nope"])
    with pytest.raises(ValueError, match="scale"):
        write_suite(tmp_path / "a", scale=0)
    (tmp_path / "exists").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        write_suite(tmp_path / "exists")
    write_suite(tmp_path / "exists", tasks=["synth_scene_multiclass"], overwrite=True)
    assert [p.name for p in (tmp_path / "exists").iterdir()] == ["synth_scene_multiclass"]


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def failing(spec, task_dir, seed, scale=1):
        calls.append(spec.name)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        task_dir.mkdir(parents=True)

    monkeypatch.setattr(tasks_module, "write_task", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_suite(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_never_removes_what_hear_matpac_did_not_make(tmp_path):
    """Issue 16, point 5: a folder holding a user's file is refused even with overwrite."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="did not make"):
        write_suite(out, tasks=["synth_pitch_3fold"], overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_later_run_keeps_what_another_run_finished_meanwhile(tmp_path, monkeypatch):
    """Two runs at once: the second to finish must not delete the first one's folder."""
    out = tmp_path / "tasks"
    real = tasks_module.write_task

    def racing(spec, task_dir, seed, scale=1):
        if not out.exists():  # another run finishes first, while this one writes
            monkeypatch.setattr(tasks_module, "write_task", real)
            write_suite(out, seed=7, tasks=["synth_pitch_3fold"])
        real(spec, task_dir, seed, scale)

    monkeypatch.setattr(tasks_module, "write_task", racing)
    with pytest.raises(FileExistsError, match="another run"):
        write_suite(out, tasks=["synth_pitch_3fold"])
    assert tasks_module.suite_matches(out, tasks=["synth_pitch_3fold"], seed=7)
    assert [p.name for p in tmp_path.iterdir()] == ["tasks"]


def test_partials_of_killed_runs_are_cleaned(tmp_path):
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".tasks.partial-{socket.gethostname()}-{dead.pid}-abc"
    stale.mkdir()
    live = tmp_path / f".tasks.partial-{socket.gethostname()}-{os.getpid()}-def"
    live.mkdir()
    write_suite(tmp_path / "tasks", tasks=["synth_pitch_3fold"])
    assert not stale.exists() and live.exists()
