"""The library entry points the thin CLI calls (issue 26: `cli/` parses, makes one library
call and prints): each does its work without argparse, and says a user's mistake as a
`UserError`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from hear_matpac.api import resolve_device
from hear_matpac.evaluate.engines.slurm import SlurmOptions, choose_engine
from hear_matpac.evaluate.run import RunResult
from hear_matpac.evaluate.specs import models_from_flags
from hear_matpac.evaluate.stages import Outcome
from hear_matpac.files.job import Totals, embed_job
from hear_matpac.io import InputError, is_user_error
from hear_matpac.options import ModelOptions, option_flags, options_from_json
from hear_matpac.reports.demo import MAX_SECONDS, demo, passes_said, synthetic_clip
from hear_matpac.weights.download import FetchResult
from hear_matpac.weights.locate import local_copies
from hear_matpac.weights.registry import REGISTRY
from conftest import TINY_FLAT


def test_resolve_device_names_the_flag_it_was_given(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(InputError, match=r"^device 'nonsense' is not a torch device \("):
        resolve_device("nonsense", flag="device")
    with pytest.raises(InputError, match=r"^--device cuda:1: CUDA is not available here; use --device cpu$"):
        resolve_device("cuda:1")


def test_options_from_json_takes_an_object_only():
    assert options_from_json('{"layer": 2, "precision": "bf16"}') == {"layer": 2, "precision": "bf16"}
    with pytest.raises(InputError, match=r"^OPTIONS must be a JSON object, got '\[1\]'$"):
        options_from_json("[1]", "OPTIONS")
    with pytest.raises(InputError, match="^--model-options must be a JSON object: "):
        options_from_json('{"layer": ')


def test_option_flags_word_the_help_as_flags():
    flags = {f.name: f for f in option_flags(exclude=("window_seconds",))}
    assert list(flags) == [n for n in ModelOptions.__dataclass_fields__ if n != "window_seconds"]
    assert flags["timestamp_hop_ms"].flag == "--timestamp-hop-ms" and flags["timestamp_hop_ms"].metavar == "MS"
    assert (flags["layer"].kind, flags["max_windows"].kind, flags["window_overlap"].kind) == (int, int, float)
    assert flags["precision"].kind is str and flags["compile"].kind is bool
    assert "--no-cpu-packed-weights saves that memory" in flags["cpu_packed_weights"].help
    assert "Not given (default): 16 on CPU" in flags["max_windows"].help
    assert not any("None" in f.help or "False" in f.help or "True" in f.help for f in flags.values())


def test_choose_engine_checks_the_slurm_options_against_the_engine():
    assert choose_engine("local", {"partition": None}, []) == ("local", None)
    with pytest.raises(InputError, match="need --engine slurm"):
        choose_engine("local", {"partition": "gpu"}, [])
    with pytest.raises(InputError, match="need --engine slurm"):
        choose_engine("local", {}, ["mem_gb=64"])
    with pytest.raises(InputError, match="drop them"):
        choose_engine("slurm", {}, [], spread=True)
    engine, options = choose_engine("slurm", {"partition": "gpu", "time_min": None, "retries": 3}, ["mem_gb=64"])
    assert engine == "slurm"
    assert options == SlurmOptions(partition="gpu", retries=3, extra={"mem_gb": 64})


def test_models_from_flags_without_specs_is_the_one_default_model():
    (model,) = models_from_flags([], "", [], str(TINY_FLAT), {"layer": 1})
    assert (model.module, model.weights, model.options) == ("hear_matpac", str(TINY_FLAT), {"layer": 1})
    assert model.describe() == f"model {model.folder}: hear_matpac {TINY_FLAT} " + '{"layer": 1}'
    with pytest.raises(InputError, match="describe the one default model"):
        models_from_flags([f"hear_matpac:{TINY_FLAT}"], "", [], "", {"layer": 1})


def test_models_from_flags_reads_the_models_file_after_the_specs(tmp_path):
    listed = tmp_path / "models.txt"
    listed.write_text(f"# two layers\nhear_matpac:{TINY_FLAT}:{{\"layer\": 0}}\n\n")
    models = models_from_flags([f"hear_matpac:{TINY_FLAT}"], str(listed), [], "", {})
    assert [m.options for m in models] == [{}, {"layer": 0}]
    listed.write_text("--python hearbaseline=/no/such/python\n")
    with pytest.raises(InputError, match="no --model uses module hearbaseline"):
        models_from_flags([f"hear_matpac:{TINY_FLAT}"], str(listed), [], "", {})


def test_run_result_problems_name_each_failed_and_claimed_stage(tmp_path):
    outcomes = [Outcome("m", "a", "ran"), Outcome("m", "b", "failed", log="b.log", message="exit 1"),
                Outcome("m", "c", "claimed", message="held by pid 7")]  # fmt: skip
    lines = RunResult([], outcomes, [], tmp_path).problems()
    assert lines == ["m / b failed: exit 1 (log b.log)",
                     "m / c left undone: held by pid 7; no score for it in this run "
                     "(run the same command again once that run has finished)"]  # fmt: skip


def test_local_copies_lists_every_published_checkpoint(no_weights_found, monkeypatch):
    folder = no_weights_found / "mine"
    folder.mkdir()
    monkeypatch.setenv("HEAR_MATPAC_WEIGHTS_DIR", str(folder))
    first = next(iter(REGISTRY.values()))
    (folder / first.file).write_bytes(b"not read here")
    lines = local_copies().splitlines()
    assert lines[0].split() == ["name", "model", "frames", "kind", "local", "copy"]
    rows = {line.split()[0]: line for line in lines[1:len(REGISTRY) + 1]}
    assert set(rows) == set(REGISTRY)
    assert rows[first.name].endswith(str(folder / first.file))
    assert all(row.endswith(" -") for name, row in rows.items() if name != first.name)
    assert lines[-1] == "fetch one with: hear-matpac weights fetch NAME [--dir DIR]"


def test_fetch_result_says_whether_it_downloaded_and_recorded():
    fetched = FetchResult(Path("w/x.pt"), "ab" * 32, downloaded=True, recorded=True).describe("x")
    assert fetched == f"downloaded x to w/x.pt\nsha256 {'ab' * 32}: recorded now (trust on first use)"
    found = FetchResult(Path("w/x.pt"), "cd", downloaded=False, recorded=False).describe("x")
    assert found == "x is already at w/x.pt; not fetched again\nsha256 cd: matches the record"


def test_embed_job_in_one_process_returns_the_totals_and_raises_a_mistake(tmp_path):
    audio = tmp_path / "in"
    audio.mkdir()
    soundfile.write(audio / "a.wav", (0.1 * np.sin(np.arange(16000) / 5.0)).astype(np.float32), 16000)
    totals = embed_job([str(audio)], tmp_path / "out", str(TINY_FLAT), device="cpu")
    assert totals == Totals(embedded=1, skipped=0, failed=0)
    assert np.load(tmp_path / "out" / "a.wav.scene.npy").shape[-1] > 0
    assert embed_job([str(audio)], tmp_path / "out", str(TINY_FLAT), device="cpu") == Totals(0, 1, 0)
    with pytest.raises(InputError, match="^device 'nonsense' is not a torch device"):  # the keyword, not a flag
        embed_job([str(audio)], tmp_path / "out", str(TINY_FLAT), device="nonsense")
    with pytest.raises(Exception) as raised:
        embed_job([str(tmp_path / "nothing-here")], tmp_path / "out2", str(TINY_FLAT), device="cpu")
    assert is_user_error(raised.value)


def test_demo_embeds_the_synthetic_clip_and_describes_it():
    lines = demo(str(TINY_FLAT), 2.0, "cpu", {"timestamp_hop_ms": 80})
    assert [line.split(":")[0] for line in lines] == ["weights", "encoder", "windows", "audio", "timestamps", "scene", "time"]
    assert lines[0] == f"weights:     {TINY_FLAT}" and "timestamp hop 80 ms" in lines[2]
    assert lines[3] == "audio:       32000 samples (2.000 s)"
    assert lines[-1].endswith(f"embeddings, {passes_said(2)})")
    with pytest.raises(InputError, match=r"^--seconds must be a number of seconds in \(0, 3600\], got nan$"):
        demo(str(TINY_FLAT), float("nan"), "cpu", {})
    with pytest.raises(InputError):
        demo(str(TINY_FLAT), MAX_SECONDS * 2, "cpu", {})


def test_synthetic_clip_is_deterministic_and_passes_are_counted_in_words():
    clip = synthetic_clip(0.5)
    assert clip.shape == (1, 8000) and clip.dtype == torch.float32 and torch.equal(clip, synthetic_clip(0.5))
    assert 0.4 < clip.abs().max().item() < 0.6
    assert passes_said(1) == "one encoder pass"
    assert passes_said(4) == "5 encoder passes: 4 for the timestamps, 1 for the scene"


def test_run_report_writes_the_summary_and_says_what_it_holds(tmp_path):
    from hear_matpac.evaluate.run import report
    from hear_matpac.reports.results import read_scores

    task = tmp_path / "runs" / "m" / "t"
    task.mkdir(parents=True)
    (task / "task_metadata.json").write_text(json.dumps({"task_name": "t", "evaluation": ["top1_acc"], "splits": ["test"]}))
    (task / "test.predicted-scores.json").write_text(json.dumps({"test": {"test_score": 0.5, "test_top1_acc": 0.5}}))
    empty = report(RunResult([], [Outcome("m", "t", "failed")], [], task), tmp_path / "a", "faster", 1, chart=False)
    assert empty.splitlines() == ["", "stages: none; hear-validator: 1 failed", "",
                                  f"wrote {tmp_path / 'a' / 'summary.json'}, {tmp_path / 'a' / 'comparison.md'}"]  # fmt: skip
    text = report(RunResult([], [Outcome("m", "t", "ran")], read_scores(task), task), tmp_path / "b", "fast", 1, chart=False)
    assert "\ntest scores (heareval, grid fast, 1 grid point)\n" in text and "0.5" in text
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["scores"][0]["value"] == 0.5


def test_totals_describe_counts_and_names_the_folder():
    assert Totals(2, 1, 0).describe("out") == "2 embedded, 1 skipped (already there), 0 failed; outputs in out"
