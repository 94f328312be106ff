"""A stage: one (model, task) pair run under its claim (`run_stage`): embed into a work folder
of its own, check the embeddings, predict, and rename it into `runs/<model>/<task>`; and each
model's hear-validator run (`validate`). Either ends as one `Outcome`. Runs the same wherever it
is called: this process, a pool thread (`engines.local`), a Slurm job (`engines.slurm`).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from ..hear_tools.launch import DECLARED_FILE
from ..io import InputError, write_json
from ..marks import describe_mark, made_for, make_marked, remove_marked, write_mark
from ..reports.results import TaskScore, read_scores
from .claims import claim_token, holds_claim, owner, release_claim, take_claim
from .embedding_check import BadEmbeddings, check_task_embeddings
from .specs import ModelSpec, StagePlan
from .tools import Stage, StageFailed, Tools

GRIDS = ("default", "fast", "faster")


def check_grid(grid: str, grid_points: int) -> None:
    """heareval's grid name and grid points per task, checked before any stage runs."""
    if grid not in GRIDS:
        raise InputError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if grid_points < 1:
        raise InputError(f"grid_points must be at least 1, got {grid_points}")


STAGE_FILE = "stage.json"
VALIDATE = "hear-validator"  # the `task` of a validation's outcome
TOOL = "evaluate"  # the tool named in the ownership marks of the folders `evaluate` makes
RUNS_PURPOSE, WORK_PURPOSE, STAGE_PURPOSE = "runs", "stage work", "stage"


@dataclass
class Outcome:
    """What happened to one stage (or one model's validation): `ran`, `skipped` (complete
    already), `claimed` (another live process holds it; `message` names it), `failed` (with
    its log) or `not run` (its model failed validation); where it ran (`device`) and when
    (`started`, `finished`: Unix time). `scores`: a complete stage's test scores, read from
    its folder when this run found it complete (ran or skipped), else empty. `cost`: what its
    embedding cost when it ran (`stage_cost`), kept in `stage.json`, so a stage found complete
    (skipped) reports the cost measured by the run that made it; empty where unknown."""

    model: str  # the model's folder
    task: str  # the task; VALIDATE for the model's hear-validator run
    status: str
    seconds: float = 0.0
    log: Optional[str] = None
    message: str = ""
    device: str = ""
    started: Optional[float] = None
    finished: Optional[float] = None
    scores: List[TaskScore] = field(default_factory=list)
    plan: Optional[StagePlan] = None  # the stage's plan; None for a validation
    spec: str = ""  # the model's SPEC, for a validation
    cost: Dict[str, Optional[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, plan: StagePlan, status: str, *args, **kwargs) -> "Outcome":
        """The outcome of `plan`'s stage."""
        return cls(plan.model_folder, plan.task, status, *args, plan=plan, **kwargs)

    def record(self) -> Dict[str, object]:
        """What `summary.json` says of it: the plan's fields (a validation: model, stage, spec),
        then the outcome."""
        where = self.plan.as_dict() if self.plan else {"model": self.model, "stage": "validate", "spec": self.spec}
        return {**where, "status": self.status, "seconds": self.seconds, "log": self.log, "message": self.message,
                "device": self.device, "started": self.started, "finished": self.finished,
                **({"cost": self.cost} if self.cost else {})}  # fmt: skip


def stage_done(final: Path, plan: StagePlan, grid: str) -> bool:
    """A stage is complete when its folder holds `stage.json` (written last, just before the
    folder is renamed into place) naming `plan`'s model key, task folder (resolved path) and
    task fingerprint, and `grid`, and the test scores. A task folder moved, replaced or edited
    since (another fingerprint) makes the stage incomplete: it runs again."""
    try:
        record = json.loads((final / STAGE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("model_key") == plan.model_key and record.get("grid") == grid
            and record.get("task_dir") == plan.task_dir and record.get("task_fingerprint") == plan.task_fingerprint
            and (final / "test.predicted-scores.json").is_file())  # fmt: skip


COST_FIELDS = ("embed_seconds", "encode_seconds", "peak_rss_mib")


def stage_cost(embed: Stage, task_embeddings: Path) -> Dict[str, Optional[float]]:
    """What a stage's embedding cost: the embedding runner's wall time (its own process:
    start-up, model load, the task), heareval's own encoding time (`time_elapsed` of the task's
    `profile.embeddings.json`: reading audio and embedding; None where it is missing) and the
    runner's peak resident memory in MiB."""
    try:
        encode: Optional[float] = float(json.loads((Path(task_embeddings) / "profile.embeddings.json").read_text())["time_elapsed"])
    except (OSError, ValueError, TypeError, KeyError):
        encode = None
    finite = encode is not None and math.isfinite(encode)
    return {"embed_seconds": embed.seconds, "encode_seconds": encode if finite else None,
            "peak_rss_mib": embed.peak_rss_mib}  # fmt: skip


def recorded_cost(final: Path) -> Dict[str, Optional[float]]:
    """The cost in a complete stage's `stage.json` (`stage_cost`, as measured when it ran);
    empty for a stage of a version that did not record it."""
    try:
        cost = json.loads((final / STAGE_FILE).read_text()).get("cost")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(cost, dict):
        return {}
    return {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
            for k, v in cost.items() if k in COST_FIELDS}  # fmt: skip


def complete_scores(final: Path, plan: StagePlan, grid: str) -> Optional[List[TaskScore]]:
    """The test scores of the stage in `final` when it is complete for `plan` and `grid`
    (`stage_done`) and they can be read; else None."""
    if not stage_done(final, plan, grid):
        return None
    try:
        return read_scores(final)
    except (OSError, ValueError, TypeError):
        return None


def _holder(claim: Path) -> str:
    """Who holds `claim`, in words: host, pid and scheduler job where it names one."""
    who = owner(claim)
    if not who:
        return "another run"
    job = f" (job {who['job']})" if who.get("job") else ""
    return f"{who.get('host')} pid {who.get('pid')}{job}"


_REPORT_LOCK = threading.Lock()


def _log(report: Callable[[str], None], text: str) -> None:
    """A progress line with the time of day: one line per event, so it reads in a log file
    (one at a time: stages on several slots report from their threads)."""
    with _REPORT_LOCK:
        report(time.strftime("%H:%M:%S ") + text)


def print_now(text: str) -> None:
    """`print`, flushed: progress reaches a redirected log (nohup, Slurm) when it happens."""
    print(text, flush=True)


def validate(model: ModelSpec, folder: Path, tensorflow: str, overwrite: bool, report: Callable[[str], None],
             env: Optional[Mapping[str, str]] = None, tools: Optional[Tools] = None) -> Outcome:  # fmt: skip
    """hear-validator once per model; remembered in `validated.json` (with the model key)."""
    record = folder / "validated.json"
    try:
        done = json.loads(record.read_text()).get("model_key") == model.key
    except (OSError, ValueError, AttributeError):
        done = False
    if done and not overwrite:
        _log(report, f"{model.folder}: hear-validator passed before; skipped")
        return Outcome(model.folder, VALIDATE, "skipped", spec=model.spec)
    log = folder / f"validate.{os.getpid()}.log"
    args = ["validate", model.weights or "", "--module", model.module, "--tensorflow", tensorflow]
    try:
        stage = (tools or Tools()).run("validate", args, log, env, model.python)
    except StageFailed as err:
        _log(report, f"{model.folder}: hear-validator FAILED; its stages are skipped (log {log})")
        return Outcome(model.folder, VALIDATE, "failed", log=str(log), message=str(err).splitlines()[0], spec=model.spec)
    os.replace(log, folder / "validate.log")
    write_json(record, {"model_key": model.key, "spec": model.spec})
    _log(report, f"{model.folder}: hear-validator passed ({stage.seconds:.1f} s)")
    return Outcome(model.folder, VALIDATE, "ran", stage.seconds, str(folder / "validate.log"), spec=model.spec)


def _work_folders(folder: Path, task: str) -> List[Path]:
    """`task`'s work folders in `folder`: `.work-<task>.<token>` (and `.work-<task>` of older runs)."""
    pattern = re.compile(re.escape(f".work-{task}") + r"(\.[0-9a-f]{12})?")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name)) if folder.is_dir() else []


def run_stage(plan: StagePlan, runs: Path, grid: str, grid_points: int, tensorflow: str, keep_logs: bool,
              overwrite: bool, report: Callable[[str], None], label: str,
              env: Optional[Mapping[str, str]] = None, tools: Optional[Tools] = None) -> Outcome:  # fmt: skip
    """One (model, task) stage under its claim: embed into a marked work folder of its own
    (`.work-<task>.<claim token>`), predict, write `stage.json`, and, if it still holds the
    claim, rename the task folder into `runs/<model>/<task>`: that rename is the one step that
    makes a stage complete. Runs the same wherever it is called (this process, a pool thread, a
    Slurm job: `engines.slurm.stage_job`). `env`: its tools' extra environment; `tools`: the run's
    tool processes (`tools.Tools`; a new set when None)."""
    folder = runs / plan.model_folder
    final = folder / plan.task
    info = plan.as_dict()
    key = f"{grid}:{grid_points}"
    tools = tools or Tools()
    done = None if overwrite else complete_scores(final, plan, key)
    if done is not None:
        _log(report, f"{label} {plan.model_folder} / {plan.task}: complete; skipped")
        return Outcome.of(plan, "skipped", log=str(final / "embed.log"), scores=done, cost=recorded_cost(final))
    claim = folder / f"{plan.task}.claim"
    if not take_claim(claim):
        who = _holder(claim)
        _log(report, f"{label} {plan.model_folder} / {plan.task}: claimed by {who}; left to it")
        return Outcome.of(plan, "claimed", message=f"claimed by {who}")
    try:
        done = None if overwrite else complete_scores(final, plan, key)  # finished by the claim's last owner
        if done is not None:
            _log(report, f"{label} {plan.model_folder} / {plan.task}: complete; skipped")
            return Outcome.of(plan, "skipped", log=str(final / "embed.log"), scores=done,
                              cost=recorded_cost(final))
        for earlier in _work_folders(folder, plan.task):  # left by earlier holders of the claim
            if not remove_marked(earlier, TOOL, WORK_PURPOSE, legacy=True):
                raise InputError(f"{earlier} is in the way and {describe_mark(earlier)}, not by evaluate "
                                 "as a stage's work folder; move it")  # fmt: skip
        if os.path.lexists(final) and not made_for(final, TOOL, STAGE_PURPOSE, legacy=True):  # before any work
            raise InputError(f"{final} is in the way and {describe_mark(final)}, not by evaluate as a "
                             "stage's result; move it")  # fmt: skip
        work = make_marked(folder / f".work-{plan.task}.{claim_token(claim)[:12]}", TOOL, WORK_PURPOSE)
        if os.path.lexists(final):
            _log(report, f"{label} {plan.model_folder} / {plan.task}: replacing the earlier result in {final}")
        (work / "tasks").mkdir()
        (work / "tasks" / plan.task).symlink_to(plan.task_dir, target_is_directory=True)
        start = time.perf_counter()
        _log(report, f"{label} {plan.model_folder} / {plan.task}: embedding")
        try:
            embed, embedded = tools.embed(Path(plan.weights) if plan.weights else None, work / "tasks",
                                      work / "embeddings", plan.options_json, tensorflow, work / "embed.log",
                                      plan.module, env, python=plan.python)  # fmt: skip
            if len(embedded) != 1:
                raise StageFailed(f"the embeddings runner wrote {len(embedded)} task folders, not 1; log {work / 'embed.log'}")
            check_task_embeddings(embedded[0], work / "embeddings" / DECLARED_FILE)
            logs_dir = work / "predict-logs"
            tools.predict(embedded, grid, grid_points, work / "predict.log", logs_dir, env)
        except (StageFailed, BadEmbeddings) as err:
            seconds = time.perf_counter() - start
            log = next((str(p) for p in (work / "predict.log", work / "embed.log") if p.is_file()), str(work))
            _log(report, f"{label} {plan.model_folder} / {plan.task}: FAILED after {seconds:.1f} s (log {log})")
            return Outcome.of(plan, "failed", seconds, log, str(err).splitlines()[0])
        result = embedded[0]
        cost = stage_cost(embed, result)
        for name in ("embed.log", "predict.log"):
            os.replace(work / name, result / name)
        if keep_logs:  # without the links to the task folder (`launch.link_task_dirs`)
            shutil.rmtree(logs_dir / "embeddings", ignore_errors=True)
            os.replace(logs_dir, result / "heareval-logs")
        write_mark(result, TOOL, STAGE_PURPOSE)
        seconds = time.perf_counter() - start
        write_json(result / STAGE_FILE, {**info, "grid": key, "seconds": seconds, "cost": cost})
        if not holds_claim(claim):  # its lease ran out and another process took the stage over
            remove_marked(work, TOOL, WORK_PURPOSE)
            who = _holder(claim)
            _log(report, f"{label} {plan.model_folder} / {plan.task}: its claim was taken over by {who} while it "
                         "ran; result discarded, left to the new holder")  # fmt: skip
            return Outcome.of(plan, "claimed", seconds, message=f"claim taken over by {who} while it ran; result discarded")
        if os.path.lexists(final):
            if not remove_marked(final, TOOL, STAGE_PURPOSE, legacy=True):
                raise InputError(f"{final} is in the way and {describe_mark(final)}, not by evaluate as a "
                                 "stage's result; move it")  # fmt: skip
        os.rename(result, final)
        remove_marked(work, TOOL, WORK_PURPOSE)
        try:
            scores = read_scores(final)  # still under its claim: nobody else writes there
        except (OSError, ValueError, TypeError) as err:
            _log(report, f"{label} {plan.model_folder} / {plan.task}: FAILED: its scores cannot be read ({err})")
            return Outcome.of(plan, "failed", seconds, str(final / "predict.log"), f"its scores cannot be read: {err}")
        _log(report, f"{label} {plan.model_folder} / {plan.task}: done in {seconds:.1f} s")
        return Outcome.of(plan, "ran", seconds, str(final / "predict.log"), scores=scores, cost=cost)
    finally:
        release_claim(claim)


