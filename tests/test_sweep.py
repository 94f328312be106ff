"""`hear-matpac sweep`: heareval's runners once per window length, with a table and a plot.

The end-to-end test (marked `slow`, ~40 s) needs `hear-matpac install-hear-tools`; it skips
where the tools are missing, except under CI (`CI` set), where it fails instead.
"""
from __future__ import annotations

import csv
import json
import math

import pytest

from hear_matpac.cli import main
from hear_matpac.reports.sweep import SweepRow, write_outputs
from hear_matpac.reports.results import TaskScore
from hear_matpac.weights.locate import TINY_UNTRAINED
from conftest import hear_matpac_cli, need, ok


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "'abc' is not a number"),
        ("0.96,", "'' is not a number"),
        ("0.5", "multiple of 0.16"),
        ("0.96,-0.16", "multiple of 0.16"),
        ("12.16", "longer than this checkpoint's window"),
        ("0.96,1.92,0.96", "given twice"),
    ],
)
def test_bad_window_seconds_is_a_one_line_error(value, message, tmp_path, capsys):
    code = main(["sweep", "--window-seconds", value, "--weights", str(TINY_UNTRAINED), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("hear-matpac sweep: error: --window-seconds") and message in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_sweep_writes_a_row_per_window_length_with_finite_scores(tmp_path):
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    out = tmp_path / "sweep"
    argv = ("sweep", "--window-seconds", "0.96,6.08", "--weights", str(TINY_UNTRAINED), "--tasks",
            "synth_scene_multiclass", "--grid", "faster", "--grid-points", "1", "--out", str(out),
            "--tensorflow", "stand-in")  # fmt: skip
    result = ok(hear_matpac_cli(*argv, cwd=tmp_path))
    assert "TINY UNTRAINED" in result.stderr
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["window_seconds"] for r in rows] == ["0.96", "6.08"]
    for r in rows:
        assert math.isfinite(float(r["synth_scene_multiclass top1_acc"]))
        assert float(r["audio-s per s"]) > 0 and float(r["peak RSS MiB"]) > 100
    md = (out / "sweep.md").read_text().splitlines()
    assert len(md) == 4 and md[2].startswith("| 0.96 |") and md[3].startswith("| 6.08 |")
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "sweep.json").read_text())
    assert [s["options"] for s in summary] == [{"window_seconds": 0.96}, {"window_seconds": 6.08}]
    assert all(s["audio_seconds"] == pytest.approx(27.0) for s in summary)  # 15 + 6 + 6 clips of 1 s
    # each window length is its own model in evaluate's layout (issue 26), with the option in its stage's log
    folders = sorted((out / "sweep" / "runs").glob("*/synth_scene_multiclass/stage.json"))
    assert len(folders) == 2
    options = sorted(json.loads(json.loads(p.read_text())["options_json"])["window_seconds"] for p in folders)
    assert options == [0.96, 6.08]
    assert all(math.isfinite(s["value"]) for row in summary for s in row["scores"])
    table = (out / "sweep.md").read_text()
    again = ok(hear_matpac_cli(*argv, cwd=tmp_path))  # resumes: nothing runs again, the same table
    assert "stages: 2 skipped; hear-validator: 2 skipped" in again.stdout
    assert (out / "sweep.md").read_text() == table


def test_csv_has_numbers_only_with_fold_std_in_its_own_column(tmp_path):
    def score(task, metric, value, std=None):
        return TaskScore("m", tmp_path, task, metric, value, std, 1 if std is None else 3, tmp_path)

    rows = [
        SweepRow("6.08", {}, 3.0, 0.5, 27.0, 700.0, (score("pitch", "top1_acc", 0.8333333333333334, 0.16666666666666666),
                                                      score("scene", "mAP", 0.5))),
        SweepRow("0.96", {}, 3.0, 0.25, 27.0, 700.0, (score("pitch", "top1_acc", 0.6666666666666666, 0.0),)),
    ]  # fmt: skip
    write_outputs(rows, tmp_path, setting_header="window_seconds", plot=False)
    with open(tmp_path / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert float(table[0]["pitch top1_acc"]) == 0.8333333333333334  # full precision
    assert float(table[0]["pitch top1_acc std"]) == 0.16666666666666666
    assert table[1]["scene mAP"] == "" and "scene mAP std" not in table[0]  # one test split: no std column
    assert "0.8333 ± 0.1667" in (tmp_path / "sweep.md").read_text()  # people still read mean ± std


def test_window_seconds_are_checked_from_shapes_without_reading_the_weights(monkeypatch):
    """Checking a float must not read (and hash) the whole checkpoint: only its shapes."""
    from hear_matpac.evaluate import sweep
    from hear_matpac.weights import read

    def no_full_read(*args, **kwargs):
        raise AssertionError("the whole checkpoint was read to check --window-seconds")

    monkeypatch.setattr(read, "read_checkpoint_digest", no_full_read)
    assert sweep.parse_window_seconds("0.96,6.08", TINY_UNTRAINED) == [0.96, 6.08]
    with pytest.raises(ValueError, match="longer than this checkpoint's window"):
        sweep.parse_window_seconds("12.16", TINY_UNTRAINED)


def test_audio_seconds_count_only_the_16khz_audio_heareval_embeds(tmp_path):
    """Issue 16, point 6: hear-preprocess also writes other sample rates beside 16000/."""
    import numpy as np
    import soundfile as sf

    from hear_matpac.evaluate.task_folders import task_audio_seconds as audio_seconds

    for rate, seconds in ((16000, 2.0), (48000, 2.0), (22050, 2.0)):
        (tmp_path / str(rate) / "test").mkdir(parents=True)
        sf.write(tmp_path / str(rate) / "test" / "a.wav", np.zeros(int(rate * seconds)), rate)
    assert audio_seconds(tmp_path) == pytest.approx(2.0)
