"""`hear-matpac embed` under torchrun: the ranks share a corpus (each file embedded once, by
one rank), their outputs equal a single process's, and the folder treats the job as one run.

The jobs run for real (`python -m torch.distributed.run --standalone`, gloo on CPU, two
processes); a rank is killed or paused by a wrapper script that patches `OutputStore.write` in
that rank only, so the product code has no test hooks.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from hear_matpac.cli import main
from hear_matpac.files import store as output_store
from hear_matpac.files.embed import Job
from hear_matpac.files.inputs import InputFile
from hear_matpac.files.ranks import torchrun_ranks
from hear_matpac.files.shard import UNKNOWN_SECONDS, shard
from hear_matpac.files.store import Need, Source
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import write_other_weights

TINY = str(TINY_UNTRAINED)
ROOT = Path(__file__).resolve().parents[1]
LENGTHS = [0.5, 3.0, 1.0, 1.0, 2.5, 0.7, 1.5, 4.0]  # seconds; two of equal length
LIMIT = 90  # seconds for one torchrun job here (it takes a few)


def _corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i, seconds in enumerate(LENGTHS):
        path = root / ("sub" if i % 3 == 0 else "") / f"c{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, (0.2 * rng.standard_normal(round(seconds * 16000))).astype(np.float32), 16000)
    return root


def _names(out: Path) -> dict:
    """Name -> manifest entry of a folder no run holds."""
    lines = (out / "embed-manifest.jsonl").read_text().splitlines()
    return {entry["name"]: entry for entry in map(json.loads, lines)}


def _outputs(out: Path) -> list:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name.endswith((".npy", ".npz")))


def _single(inputs: Path, out: Path, *extra: str) -> int:
    return main(["embed", str(inputs), "--out", str(out), "--weights", TINY, "--device", "cpu", "--quiet", *extra])


def _torchrun(inputs: Path, out: Path, *extra: str, script: str = "", env: dict = {}) -> subprocess.Popen:
    """A two-process job on this machine; `script`: a wrapper to run instead of the CLI module."""
    target = [script] if script else ["-m", "hear_matpac.cli"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *target,
               "embed", str(inputs), "--out", str(out), "--weights", TINY, "--device", "cpu", "--quiet", *extra]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **env)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(job: subprocess.Popen) -> tuple:
    try:
        out, err = job.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        job.kill()
        raise
    return job.returncode, out, err


def _wrapper(tmp_path: Path, patch: str) -> str:
    """A script that patches `OutputStore.write` in rank 1 with `patch` (the body of
    `write(self, outputs)`, `original` the real method) and runs the CLI."""
    body = "\n".join("        " + line for line in patch.strip().splitlines())
    source = f"""import os, signal, sys, time
from pathlib import Path
from hear_matpac.cli import main
from hear_matpac.files.store import OutputStore

if os.environ["RANK"] == "1":
    original, written = OutputStore.write, []

    def write(self, outputs):
{body}

    OutputStore.write = write
sys.exit(main(sys.argv[1:]))
"""
    path = tmp_path / "wrapped_embed.py"
    path.write_text(source)
    return str(path)


def _job(name: str, seconds: float) -> Job:
    return Job(InputFile(Path(name), name), Source(name, 1, 1), Need(True, False), seconds)


def test_shards_balance_audio_and_keep_each_file_once_in_order() -> None:
    jobs = [_job(f"f{i}", s) for i, s in enumerate([9.0, 1.0, 1.0, 1.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0])]
    parts = shard(jobs, 2)
    assert sorted(j.item.name for p in parts for j in p) == sorted(j.item.name for j in jobs)
    for part in parts:  # each in input order
        assert [jobs.index(j) for j in part] == sorted(jobs.index(j) for j in part)
    loads = [sum(j.seconds or UNKNOWN_SECONDS for j in p) for p in parts]
    assert loads == [12.0, 12.0]  # LPT: 9+1+1+1 against 4+4+four unknown lengths (1 s each)
    assert parts == shard(list(jobs), 2)
    assert [len(p) for p in shard(jobs[:1], 3)] == [1, 0, 0]


def test_torchrun_environment_is_read_or_refused() -> None:
    assert torchrun_ranks({}) is None and torchrun_ranks({"WORLD_SIZE": "1", "RANK": "0"}) is None
    ranks = torchrun_ranks({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (ranks.rank, ranks.world, ranks.local_rank) == (3, 4, 1)
    with pytest.raises(ValueError, match="not a torchrun job's"):
        torchrun_ranks({"WORLD_SIZE": "2"})


def test_two_ranks_equal_one_process_and_embed_each_file_once(tmp_path: Path, capsys) -> None:
    inputs = _corpus(tmp_path / "in")
    (inputs / "broken.wav").write_bytes(b"RIFF not really")
    single, ranks = tmp_path / "single", tmp_path / "ranks"
    assert _single(inputs, single, "--timestamps") == 1
    assert "8 embedded, 0 skipped (already there), 1 failed" in capsys.readouterr().out
    code, out, err = _finish(_torchrun(inputs, ranks, "--timestamps"))
    assert code != 0, (out, err)  # a failed file: status 1 on every rank, so torchrun fails
    assert out.count("embedded,") == 1 and "8 embedded, 0 skipped (already there), 1 failed" in out, (out, err)
    assert err.count("failed: ") == 1 and "broken.wav" in err
    assert "exitcode  : 1" in err and "exitcode  : 2" not in err, err
    assert _outputs(ranks) == _outputs(single) and len(_outputs(single)) == 16
    assert _names(ranks) == _names(single)  # same names, sources, frames
    assert not list(ranks.glob("embed-manifest.rank*.jsonl"))  # folded by rank 0
    for name in _names(single):
        np.testing.assert_allclose(np.load(ranks / f"{name}.scene.npy"), np.load(single / f"{name}.scene.npy"), atol=1e-5)
        with np.load(ranks / f"{name}.frames.npz") as got, np.load(single / f"{name}.frames.npz") as want:
            np.testing.assert_allclose(got["embeddings"], want["embeddings"], atol=1e-5)
            np.testing.assert_array_equal(got["timestamps"], want["timestamps"])
    (inputs / "broken.wav").unlink()
    code, out, err = _finish(_torchrun(inputs, ranks, "--timestamps"))
    assert code == 0 and out.strip().splitlines()[-1].startswith("0 embedded, 8 skipped (already there), 0 failed"), (out, err)


def test_a_killed_rank_leaves_its_files_to_the_next_run(tmp_path: Path, capsys) -> None:
    inputs = _corpus(tmp_path / "in")
    out = tmp_path / "out"
    kill = """
for output in list(outputs):  # two files written and recorded, then killed
    if len(written) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, [output])
    written.append(output[0])
"""
    code, stdout, err = _finish(_torchrun(inputs, out, "--batch-size", "1", script=_wrapper(tmp_path, kill)))
    assert code != 0 and "embedded," not in stdout, (stdout, err)
    journal = out / output_store.rank_journal(1)
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    recorded_by_rank1 = [entry["name"] for entry in entries if not entry.get("writing")]  # records, not intents
    assert len(recorded_by_rank1) == 2
    kept = {name: (out / f"{name}.scene.npy").stat().st_mtime_ns for name in recorded_by_rank1}
    assert _single(inputs, out) == 0
    assert kept == {name: (out / f"{name}.scene.npy").stat().st_mtime_ns for name in recorded_by_rank1}
    summary = capsys.readouterr().out
    done_before = len(LENGTHS) - int(summary.split(" embedded")[0])
    assert 2 <= done_before < len(LENGTHS), summary  # rank 1's two files (and rank 0's) were kept
    assert f"{done_before} skipped" in summary
    assert not journal.exists() and sorted(_names(out)) == sorted(p.relative_to(inputs).as_posix() for p in inputs.rglob("*.wav"))
    reference = tmp_path / "reference"
    assert _single(inputs, reference) == 0
    for name in _names(reference):
        np.testing.assert_allclose(np.load(out / f"{name}.scene.npy"), np.load(reference / f"{name}.scene.npy"), atol=1e-5)


def test_a_single_run_waits_for_the_whole_job(tmp_path: Path) -> None:
    inputs = _corpus(tmp_path / "in")
    out, go, paused = tmp_path / "out", tmp_path / "go", tmp_path / "paused"
    pause = f"""
Path({str(paused)!r}).touch()  # rank 1 stops before its first write until the test says go
while not Path({str(go)!r}).exists():
    time.sleep(0.05)
original(self, outputs)
"""
    job = _torchrun(inputs, out, script=_wrapper(tmp_path, pause))
    deadline = time.monotonic() + LIMIT
    while not paused.exists():
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    single = subprocess.Popen([sys.executable, "-m", "hear_matpac.cli", "embed", str(inputs), "--out", str(out),
                               "--weights", TINY, "--device", "cpu", "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert "waiting for another embed run" in single.stderr.readline()
        assert single.poll() is None
    finally:
        go.touch()
    code, stdout, err = _finish(job)
    assert code == 0 and "8 embedded, 0 skipped" in stdout, (stdout, err)
    assert single.wait(timeout=LIMIT) == 0 and "0 embedded, 8 skipped" in single.stdout.read()


def test_a_run_waits_for_ranks_that_outlive_their_rank_0(tmp_path: Path) -> None:
    inputs = _corpus(tmp_path / "in")
    out = tmp_path / "out"
    assert _single(inputs, out) == 0
    with open(out / output_store.RANKS_LOCK_FILE, "ab") as straggler:  # as a rank of a job does
        fcntl.flock(straggler.fileno(), fcntl.LOCK_SH)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        run = subprocess.Popen([sys.executable, "-m", "hear_matpac.cli", "embed", str(inputs), "--out", str(out),
                                "--weights", TINY, "--device", "cpu", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        assert "waiting for the ranks of an earlier torchrun job" in run.stderr.readline()
        assert run.poll() is None
    assert run.wait(timeout=LIMIT) == 0 and "0 embedded, 8 skipped" in run.stdout.read()


def _ranks_by_hand(inputs: Path, out: Path, *extra: str, cwds: tuple = (None, None)) -> list:
    """The two processes of a job started as torchrun starts them, to see each one's status and
    output (torchrun stops the others at the first exit, and mixes their output); `cwds`: each
    one's working directory, as for ranks on two machines."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "hear_matpac.cli", "embed", str(inputs), "--out", str(out),
               "--weights", TINY, "--device", "cpu", "--quiet", *extra]  # fmt: skip
    return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwds[rank],
                             env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
                                      MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)))
            for rank in range(2)]  # fmt: skip


def test_an_error_on_rank_0_stops_every_rank_with_one_line(tmp_path: Path) -> None:
    inputs = _corpus(tmp_path / "in")
    out = tmp_path / "out"
    assert _single(inputs, out) == 0
    for extra, problem in [(["--layer", "0"], "holds embeddings made with other settings"),
                           (["--weights", str(tmp_path / "none.pt")], "none.pt")]:  # fmt: skip
        results = [_finish(rank) for rank in _ranks_by_hand(inputs, out, *extra)]
        assert [code for code, _, _ in results] == [2, 2], results
        rank0, rank1 = results
        assert len(rank0[2].strip().splitlines()) == 1 and problem in rank0[2], rank0
        assert rank1[2] == "" and rank0[1] == rank1[1] == "", results
    assert _names(out) and not list(out.glob("embed-manifest.rank*"))


def test_journals_left_by_killed_ranks_are_folded_before_cleaning(tmp_path: Path, capsys) -> None:
    inputs = _corpus(tmp_path / "in")
    out = tmp_path / "out"
    assert _single(inputs, out) == 0
    manifest = out / "embed-manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:5]) + "\n")  # three records only in ranks' journals:
    (out / output_store.rank_journal(12)).write_text(lines[5] + "\n" + '{"name": "c5.wav", "fra')  # torn by a kill
    (out / output_store.rank_journal(3)).write_text(lines[6] + "\n" + lines[7] + "\n")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    capsys.readouterr()
    assert _single(inputs, out) == 0
    captured = capsys.readouterr()
    assert "0 embedded, 8 skipped" in captured.out and "removed" not in captured.err
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert manifest.read_text().splitlines() == lines and not list(out.glob("embed-manifest.rank*"))


def _nodes(tmp_path: Path) -> tuple:
    """Two working directories, as on two machines, each with its own `in/` of 4 clips of the
    same lengths but other audio."""
    nodes = tmp_path / "nodeA", tmp_path / "nodeB"
    for seed, node in enumerate(nodes):
        rng = np.random.default_rng(seed)
        (node / "in").mkdir(parents=True)
        for i in range(4):
            audio = 0.2 * rng.standard_normal(round((1 + 0.3 * i) * 16000))
            soundfile.write(node / "in" / f"f{i}.wav", audio.astype(np.float32), 16000)
    return nodes


def test_ranks_in_other_working_directories_read_the_files_rank_0_listed(tmp_path: Path) -> None:
    """Relative inputs name other files on each machine: rank 0's (absolute paths, sizes and
    times) are the ones embedded and recorded, by every rank (another file at such a path
    fails: test_embed_pipeline's test_a_file_is_decoded_only_while_it_is_the_one_listed)."""
    nodes = _nodes(tmp_path)
    out = tmp_path / "out"
    results = [_finish(rank) for rank in _ranks_by_hand(Path("in"), out, cwds=nodes)]
    assert [code for code, _, _ in results] == [0, 0], results
    assert "4 embedded, 0 skipped (already there), 0 failed" in results[0][1]
    reference = tmp_path / "reference"
    assert _single(nodes[0] / "in", reference) == 0
    assert sorted(_names(out)) == [f"f{i}.wav" for i in range(4)]
    for name, entry in _names(out).items():
        assert entry["source"] == str(nodes[0] / "in" / name)
        np.testing.assert_allclose(np.load(out / f"{name}.scene.npy"), np.load(reference / f"{name}.scene.npy"), atol=1e-5)


def test_a_rank_whose_out_or_weights_are_not_rank_0s_stops_the_job_in_one_line(tmp_path: Path) -> None:
    nodes = _nodes(tmp_path)
    (nodes[1] / "out").mkdir()  # a relative --out finds another folder on rank 1's machine
    results = [_finish(rank) for rank in _ranks_by_hand(tmp_path / "nodeA" / "in", Path("out"), cwds=nodes)]
    assert [code for code, _, _ in results] == [2, 2], results
    assert results[0][2] == "" and len(results[1][2].strip().splitlines()) == 1, results
    assert "is not the folder rank 0 writes to" in results[1][2] and "absolute path" in results[1][2]
    assert not list((nodes[1] / "out").iterdir()) and not _outputs(nodes[0] / "out")
    # other weights behind the same relative --weights on rank 1's machine
    shutil.copyfile(TINY, nodes[0] / "w.pt")
    write_other_weights(nodes[1] / "w.pt")
    out = tmp_path / "out"
    results = [_finish(rank) for rank in _ranks_by_hand(tmp_path / "nodeA" / "in", out, "--weights", "w.pt", cwds=nodes)]
    assert [code for code, _, _ in results] == [2, 2], results
    assert results[0][2] == "" and len(results[1][2].strip().splitlines()) == 1, results
    assert "rank 1 would embed with other settings than rank 0 (weights_sha256:" in results[1][2]
    assert not out.exists() or not _outputs(out)


def test_a_rank_that_joins_after_another_run_took_the_folder_stops(tmp_path: Path) -> None:
    """Rank 0 killed after sending the shares, a single run opens the folder: a rank of the job
    that joins only now must not write beside that run."""
    out, settings, said = tmp_path / "out", {"weights_sha256": "0" * 64}, []
    with output_store.OutputStore.open(out, settings, False, report=said.append) as store:
        token = store.mark_job()  # rank 0 of the job
    with output_store.OutputStore.join(out, 1, {}, token):  # the job's token: joined
        pass
    with output_store.OutputStore.open(out, settings, False, report=said.append):  # the next run
        with pytest.raises(FileNotFoundError, match="is not the folder rank 0 writes to"):
            with output_store.OutputStore.join(out, 1, {}, token):
                pass
    assert said == []



@pytest.mark.parametrize("extra, problem", [(["--device", "nosuchdevice"], "--device 'nosuchdevice' is not a torch device"),
                                            (["--model-options", "[1]"], "--model-options must be a JSON object"),
                                            (["--batch-size", "0"], "--batch-size must be at least 1")])  # fmt: skip
def test_a_bad_device_or_model_options_is_said_once_by_rank_0(tmp_path: Path, extra: list, problem: str) -> None:
    """Every rank finds the mistake; rank 0 says it in one line, the others exit 2 silently."""
    inputs = _corpus(tmp_path / "in")
    code, out, err = _finish(_torchrun(inputs, tmp_path / "out", *extra))  # a later --device wins
    assert code != 0 and err.count("hear-matpac embed: error:") == 1 and problem in err, (code, out, err)
    results = [_finish(rank) for rank in _ranks_by_hand(inputs, tmp_path / "out", *extra)]
    assert [code for code, _, _ in results] == [2, 2], results
    rank0, rank1 = results
    assert len(rank0[2].strip().splitlines()) == 1 and problem in rank0[2], rank0
    assert rank1[2] == "" and rank0[1] == rank1[1] == "", results
