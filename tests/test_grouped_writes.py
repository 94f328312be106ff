"""Issue 25 item 5: a chunk's outputs are made durable together (the fsyncs are per chunk, not
per file), and the write rules hold when a run is killed inside the group: no half-written
output, no record of a file not on disk, no output without its record."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hear_matpac.files import store as output_store
from hear_matpac.files.outputs import output_paths
from hear_matpac.files.store import Need, OutputStore, Source

SETTINGS = {"model_options": {}, "scene_embedding_size": 4}


def _outputs(names: list[str], seed: int) -> list:
    """(name, source, need, scene, (embeddings, timestamps)) for each name, values from `seed`."""
    rng = np.random.default_rng(seed)
    return [(name, Source(f"/audio/{name}", 100 + i, 7), Need(True, True), rng.standard_normal(4).astype(np.float32),
             (rng.standard_normal((3, 4)).astype(np.float32), np.arange(3, dtype=np.float32)))
            for i, name in enumerate(names)]  # fmt: skip


def _syncs_for(tmp_path: Path, monkeypatch, n: int) -> int:
    """fsync and syncfs calls made by writing one chunk of `n` files (scene and frames each)."""
    out = tmp_path / f"o{n}"
    calls = []
    real_fsync = os.fsync

    def counted_fsync(fd):
        calls.append("fsync")
        real_fsync(fd)

    def counted_syncfs(fd):
        calls.append("syncfs")
        return 0 if real_syncfs is None else real_syncfs(fd)

    real_syncfs = getattr(output_store, "_syncfs", None)
    with OutputStore.open(out, SETTINGS, False, lambda line: None) as store:
        monkeypatch.setattr(os, "fsync", counted_fsync)
        monkeypatch.setattr(output_store, "_syncfs", counted_syncfs, raising=False)
        store.write(_outputs([f"sub/{i}.wav" if i % 2 else f"{i}.wav" for i in range(n)], n))
        monkeypatch.undo()
    return len(calls)


def test_the_syncs_of_a_chunk_do_not_grow_with_its_files(tmp_path: Path, monkeypatch) -> None:
    """Before: one fsync per output file (2 per input with frames) plus the journal's; now the
    journal's, one sync of the group and one per folder (here two folders)."""
    few, many = _syncs_for(tmp_path, monkeypatch, 2), _syncs_for(tmp_path, monkeypatch, 32)
    assert many == few <= 4


def test_the_outputs_of_a_chunk_are_written_and_recorded(tmp_path: Path) -> None:
    out = tmp_path / "o"
    chunk = _outputs(["a.wav", "sub/b.wav"], 1)
    with OutputStore.open(out, SETTINGS, False, lambda line: None) as store:
        store.write(chunk)
    with OutputStore.open(out, SETTINGS, False, lambda line: None) as store:
        assert sorted(store.records) == ["a.wav", "sub/b.wav"] and all(r.frames for r in store.records.values())
    _assert_equal_outputs(out, chunk)
    assert (out / "a.wav.scene.npy").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _assert_equal_outputs(out: Path, chunk: list) -> None:
    for name, _, _, scene, (embeddings, timestamps) in chunk:
        paths = output_paths(out, name)
        assert np.array_equal(np.load(paths.scene), scene)
        with np.load(paths.frames) as frames:
            assert np.array_equal(frames["embeddings"], embeddings) and np.array_equal(frames["timestamps"], timestamps)


# The child writes a first chunk, then a second one, and SIGKILLs itself at `point` inside the
# second group: after its temporary files are synced (none renamed), after the first rename, or
# after every rename (none recorded).
_CHILD = r"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from hear_matpac.files import store as output_store
from hear_matpac.files.store import OutputStore
from test_grouped_writes import SETTINGS, _outputs
point = {point!r}
def kill():
    os.kill(os.getpid(), signal.SIGKILL)
with OutputStore.open(Path({out!r}), SETTINGS, False, lambda line: None) as store:
    store.write(_outputs(["a.wav", "b.wav"], 1))
    if point == "synced":
        real_sync = output_store._sync_files
        output_store._sync_files = lambda paths: (real_sync(paths), kill())
    elif point == "renamed-one":
        real_replace = os.replace
        os.replace = lambda a, b: (real_replace(a, b), kill())
    elif point == "renamed-all":
        output_store._sync_folder = lambda folder: kill()
    store.write(_outputs(["b.wav", "c.wav", "sub/d.wav"], 2))
"""


@pytest.mark.parametrize("point", ["synced", "renamed-one", "renamed-all"])
def test_a_run_killed_inside_a_group_leaves_no_half_written_or_unrecorded_output(tmp_path: Path, point: str) -> None:
    out = tmp_path / "o"
    script = _CHILD.format(tests=str(Path(__file__).parent), point=point, out=str(out))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert any(name.endswith(".tmp") for name in left) == (point != "renamed-all")  # killed where it was meant
    reports = []
    with OutputStore.open(out, SETTINGS, False, reports.append) as store:
        records = dict(store.records)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.np[yz]"))
    # b.wav was being rewritten: its old record was dropped first, so its files go with c and d
    assert sorted(records) == ["a.wav"] and files == ["a.wav.frames.npz", "a.wav.scene.npy"], (files, reports)
    assert not list(out.rglob("*.tmp"))
    _assert_equal_outputs(out, _outputs(["a.wav", "b.wav"], 1)[:1])
