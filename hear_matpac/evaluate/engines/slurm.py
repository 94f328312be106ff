"""`evaluate --engine slurm`: each (model, task) stage as one Slurm job, through submitit.

The driver (the `hear-matpac evaluate` process, on a login node) submits the stages as one job
array, each job asking for one GPU; each job calls `stages.run_stage` on its node, so the
claims, marks, `stage.json` and the final rename are exactly those of a local run, on the
shared file system. The driver waits, gathers each stage's `Outcome`, submits again a job that
ended without a result (node failure, kill; `retries` times), and cancels what is still queued
or running if it is itself interrupted. submitit is an optional extra
(`pip install 'hear-matpac[slurm]'`), imported only here and only when asked for.
Why submitit and not Ray: docs/scale-out.md.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..claims import JOB_ENV
from ...hear_tools.launch import exit_on_sigterm
from ..specs import StagePlan
from ..stages import Outcome, print_now, run_stage
from ..tools import STOP_GRACE_SECONDS
from . import ENGINES, StageSettings  # noqa: F401 (ENGINES: the --engine choices)
from ...io import InputError


CLUSTERS = ("slurm", "local")
INSTALL_HINT = "pip install 'hear-matpac[slurm]'"


@dataclass(frozen=True)
class SlurmOptions:
    """What each stage's job asks Slurm for, and how the driver treats jobs that die.

    `cluster` "local" runs the very same jobs on this machine (submitit's local executor): for
    tests and for trying a set-up before a cluster. `extra` goes to submitit's
    `update_parameters` as it is (e.g. `mem_gb`, `slurm_account`, `slurm_array_parallelism`,
    `slurm_setup`)."""

    partition: str = ""
    gpus_per_stage: int = 1
    cpus_per_stage: int = 8
    time_min: int = 240
    folder: str = ""  # submitit's job files and logs; default OUT/slurm
    retries: int = 1
    extra: Dict[str, Any] = field(default_factory=dict)
    cluster: str = "slurm"
    poll_s: float = 5.0

    def check(self) -> None:
        """`ValueError` for a value Slurm could not take, before anything is written."""
        if self.cluster not in CLUSTERS:
            raise InputError(f"--slurm-cluster must be one of {', '.join(CLUSTERS)}, got {self.cluster!r}")
        for name, value, low in (("--slurm-gpus-per-stage", self.gpus_per_stage, 0),
                                 ("--slurm-cpus-per-stage", self.cpus_per_stage, 1),
                                 ("--slurm-time", self.time_min, 1), ("--slurm-retries", self.retries, 0)):  # fmt: skip
            if not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be a whole number of at least {low}, got {value!r}")
        if self.poll_s <= 0:
            raise InputError(f"poll_s must be positive, got {self.poll_s}")


def parse_extra(items: Sequence[str]) -> Dict[str, Any]:
    """`KEY=VALUE` strings -> submitit parameters; VALUE is read as JSON when it parses
    (`mem_gb=64`, `slurm_setup=["module load cuda"]`), else kept as text."""
    extra: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--slurm-extra {item!r}: expected KEY=VALUE, e.g. mem_gb=64 or slurm_account=mylab")
        try:
            extra[key.strip()] = json.loads(value)
        except ValueError:
            extra[key.strip()] = value
    return extra


def choose_engine(engine: str, given: Mapping[str, Any], extra: Sequence[str],
                  spread: bool = False) -> Tuple[str, Optional[SlurmOptions]]:
    """(`engine`, its `SlurmOptions` or None) from the `--engine` choice, the `--slurm-*` values
    `given` by `SlurmOptions` field (None: not given) and the `--slurm-extra KEY=VALUE` items.
    `InputError` for Slurm options without the slurm engine, and for the slurm engine with the
    local engine's spread over this node (`spread`: `--devices` or `--jobs` given)."""
    given = {k: v for k, v in given.items() if v is not None}
    if engine != "slurm":
        if given or extra:
            raise InputError("the --slurm-* options need --engine slurm")
        return engine, None
    if spread:
        raise InputError("--devices and --jobs spread the stages over this node; with --engine slurm each "
                         "stage asks Slurm for its own GPU (--slurm-gpus-per-stage): drop them")  # fmt: skip
    return engine, SlurmOptions(**given, extra=parse_extra(extra))


def require_submitit() -> Any:
    """The submitit module, or a one-line `ValueError` saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise InputError(f"--engine slurm needs submitit, which is not installed: {INSTALL_HINT}") from None
    return submitit


def check_engine(options: SlurmOptions) -> None:
    """Everything `--engine slurm` needs, checked before anything is written: the options,
    submitit, (for a real cluster) Slurm's `sbatch` and `srun` on this machine, and the
    executor itself with every parameter (`extra` included), built in a scratch folder (submitit's
    local executor makes its folder) and thrown away: `run_stages_submitit` builds its own."""
    options.check()
    require_submitit()
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if options.cluster == "slurm" and missing:
        raise InputError(f"--engine slurm: no {' or '.join(missing)} here; run on a Slurm login node "
                         "(or --slurm-cluster local to run the jobs on this machine)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hear-matpac-slurm-check-") as scratch:
        make_executor(options, Path(scratch))


def make_executor(options: SlurmOptions, folder: Path) -> Any:
    """A submitit executor for one stage per job: 1 task, `gpus_per_stage` GPUs,
    `cpus_per_stage` CPUs, `time_min` minutes, on `partition`, plus `extra`."""
    submitit = require_submitit()
    executor = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster)
    params: Dict[str, Any] = {"name": "hear-matpac", "nodes": 1, "tasks_per_node": 1, "timeout_min": options.time_min,
                              "gpus_per_node": options.gpus_per_stage, "cpus_per_task": options.cpus_per_stage}  # fmt: skip
    if options.partition:
        params["slurm_partition"] = options.partition
    params.update(options.extra)
    try:
        executor.update_parameters(**params)
    except (NameError, AssertionError, TypeError, ValueError) as err:  # submitit's ways of refusing a parameter
        raise InputError(f"--slurm-extra: submitit refused the parameters: {str(err).splitlines()[0]}") from None
    return executor


def stage_job(plan: StagePlan, stage_kwargs: Dict[str, Any], label: str, tag: str) -> Outcome:
    """The function each Slurm job runs, on its node: `stages.run_stage` for one stage.
    `tag` names the stage's submission in its claim, so a retry (or submitit's requeue after a
    preemption) takes over the claim its dead predecessor left at once. SIGTERM (scancel, the
    time limit) ends the stage the way it ends a local run: its tool is stopped, its claim
    released."""
    os.environ[JOB_ENV] = tag
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        _die_with_controller()
    return run_stage(plan, report=print_now, label=label, **stage_kwargs)


def _die_with_controller() -> None:
    """In a job of submitit's local executor: SIGKILL when its controller process dies (the
    driver SIGKILLs a controller that outlives its cancel), so no stage goes on as an orphan;
    its tool then gets SIGTERM (`tools.Tools.run`) and cleans up. A controller already gone
    (its pid, `SUBMITIT_LOCAL_JOB_ID`, no longer the parent) ends the job at once."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if not os.environ.get("SUBMITIT_LOCAL_WITH_SHELL") and str(os.getppid()) != os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
        raise SystemExit(128 + signal.SIGKILL)


def _submit(executor: Any, calls: Sequence[tuple]) -> List[Any]:
    """Submit `calls` (function, *args) as one job array; Slurm refusing them (a partition or
    account it does not know, a request no node can meet) is a one-line `ValueError`."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    try:
        with executor.batch():
            jobs = [executor.submit(*call) for call in calls]
    except (FailedJobError, FailedSubmissionError, OSError) as err:
        raise InputError(f"--engine slurm: submitting the stages failed: {_last_line(str(err))}") from None
    return jobs


def _job_logs(job: Any) -> str:
    return f"{job.paths.stdout}, {job.paths.stderr}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    return next((line for line in reversed(lines) if not line.startswith(("You can check", "or at paths", "- /"))), "")


def run_stages_submitit(plans: Sequence[StagePlan], stage_kwargs: Dict[str, Any], options: SlurmOptions,
                        folder: Path, report: Callable[[str], None] = print_now,
                        labels: Sequence[str] = ()) -> List[Outcome]:  # fmt: skip
    """Run `plans` as one job array (one job per stage) and return their outcomes in order.
    A stage that fails on its node (a HEAR tool exits non-zero) comes back as its own
    `failed` outcome; a job that raised is `failed` with the error and the job's logs; a job
    that ended without any result (node failure, killed) is submitted again up to
    `options.retries` times, then `failed`: the same command, run again, redoes it."""
    if not plans:
        return []
    labels = list(labels) or [f"[{n}/{len(plans)}]" for n in range(1, len(plans) + 1)]
    executor = make_executor(options, folder)
    run_id = f"{os.getpid()}-{time.time_ns()}"
    tags = [f"{run_id}-{n}" for n in range(len(plans))]
    jobs = _submit(executor, [(stage_job, plan, stage_kwargs, label, tag)
                              for plan, label, tag in zip(plans, labels, tags)])  # fmt: skip
    where = f"partition {options.partition}, " if options.partition else ""
    report(time.strftime("%H:%M:%S ") + f"submitted {len(jobs)} stages ({options.cluster} jobs {jobs[0].job_id}"
           f"{' ...' if len(jobs) > 1 else ''}; {where}{options.gpus_per_stage} GPU, {options.cpus_per_stage} CPUs, "
           f"{options.time_min} min each); job logs in {folder}")  # fmt: skip
    outcomes: List[Optional[Outcome]] = [None] * len(plans)
    tries = [1] * len(plans)
    pending = dict(enumerate(jobs))
    try:
        while pending:
            for n, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[n]
                outcome = _collect(job, plans[n], options, tries[n])
                if outcome is None:  # ended without a result: submit it again
                    tries[n] += 1
                    pending[n] = _submit(executor, [(stage_job, plans[n], stage_kwargs, labels[n], tags[n])])[0]
                    report(time.strftime("%H:%M:%S ") + f"{labels[n]} {plans[n].model_folder} / {plans[n].task}: job "
                           f"{job.job_id} ended without a result (state {job.state}); submitted again as job "
                           f"{pending[n].job_id} (try {tries[n]} of {options.retries + 1})")  # fmt: skip
                    continue
                outcomes[n] = outcome
                what = f" in {outcome.seconds:.1f} s" if outcome.status == "ran" else ""
                extra = f": {outcome.message}" if outcome.message else ""
                report(time.strftime("%H:%M:%S ") + f"{labels[n]} {plans[n].model_folder} / {plans[n].task}: "
                       f"{outcome.status}{what} (job {job.job_id}){extra}")  # fmt: skip
            if pending:
                time.sleep(options.poll_s)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): no stage goes on without its driver
        cancel_jobs(list(pending.values()))
        raise
    return [o for o in outcomes if o is not None]


CANCEL_GRACE_S = STOP_GRACE_SECONDS + 15.0  # a stage's own tool gets STOP_GRACE_SECONDS to clean up


def cancel_jobs(jobs: Sequence[Any], grace_s: float = CANCEL_GRACE_S) -> None:
    """Cancel `jobs`. On Slurm, submitit's cancel (scancel: SIGTERM to the stage). submitit's
    local executor would cancel with SIGINT to a job's controller process, which ignores it when
    the driver was started in the background (`cmd &` ignores SIGINT, and so do its children);
    so a local job's controller gets SIGTERM instead, which it forwards to the stage (the stage
    stops its tool and releases its claim, as under scancel), and the driver waits for it to
    end, up to `grace_s`, then SIGKILLs it (its stage process dies with it: `stage_job`)."""
    controllers = []
    for job in jobs:
        process = getattr(job, "_process", None)  # submitit's LocalJob: its controller, a Popen
        if isinstance(process, subprocess.Popen):
            if process.poll() is None:
                process.terminate()
                controllers.append(process)
            continue
        try:
            job.cancel(check=False)
        except Exception:  # noqa: BLE001 - cancelling is best effort on the way out
            pass
    deadline = time.monotonic() + grace_s
    for process in controllers:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _collect(job: Any, plan: StagePlan, options: SlurmOptions, tries: int) -> "Outcome | None":
    """The outcome of a finished job; None when it ended without a result and may be retried."""
    require_submitit()
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        return job.result()
    except FailedJobError as err:  # the stage raised on its node (or hit its time limit)
        return Outcome.of(plan, "failed", log=str(job.paths.stderr),
                       message=f"job {job.job_id} failed: {_last_line(str(err))} (job logs {_job_logs(job)})")  # fmt: skip
    except UncompletedJobError:  # died without a result: node failure, killed
        if tries <= options.retries:
            return None
        return Outcome.of(plan, "failed", log=str(job.paths.stdout),
                       message=f"job {job.job_id} ended without a result (state {job.state}) after {tries} "
                               f"tries; run the same command again to redo it (job logs {_job_logs(job)})")  # fmt: skip


class SlurmEngine:
    """The stages as Slurm jobs (`run_stages_submitit`), one GPU each; job logs in `folder`."""

    def __init__(self, options: SlurmOptions, folder: Path) -> None:
        self.options, self.folder = options, Path(folder)

    def run(self, plans: Sequence[StagePlan], settings: StageSettings, report: Callable[[str], None]) -> List[Outcome]:
        labels = [f"[{n}/{len(plans)}]" for n in range(1, len(plans) + 1)]
        kwargs = {**asdict(settings), "runs": Path(settings.runs).resolve()}
        return run_stages_submitit(plans, kwargs, self.options, self.folder.resolve(), report, labels)
