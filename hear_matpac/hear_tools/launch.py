"""Run the HEAR team's tools, unmodified, in this process: hear-validator, heareval's
embedding runner and its predictions runner.

Each launcher prepares the process the way the tool needs it and then calls the tool's own
entry point with the arguments it documents:
- validator and embedding runner: `import tensorflow` gives the real TensorFlow or, where it
  is absent, hear_matpac's stand-in (`tensorflow_standin`);
- predictions runner: `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (it reloads its own pickled
  Lightning checkpoints, which torch >= 2.6 refuses by default), and its `logs/` folder (one
  checkpoint per grid point) kept in a temporary or chosen folder, not the working directory;
- embedding runner as `evaluate` runs it (`declared`): the plugin's `load_model` is wrapped so
  that the sizes its model declares are written down for `embedding_check`; the tool itself
  is unchanged.
Call each launcher in a fresh process: the settings above are for that process only.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import sys
import threading
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from ..io import MissingFile
from .tensorflow_standin import select_tensorflow

PLUGIN_MODULE = "hear_matpac"
HINT_INSTALL = "install the HEAR tools first: hear-matpac install-hear-tools"


def announce_tensorflow(choice: str) -> None:
    """Say on stderr which `tensorflow` the HEAR tool will import."""
    if choice == "stand-in":
        print(
            "hear-matpac: `import tensorflow` gives hear_matpac's stand-in for this process "
            "(tf.Module, tf.test.is_gpu_available answered by torch); TensorFlow itself is "
            "not used by a PyTorch plugin.",
            file=sys.stderr,
        )


def _import_tool(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in {"heareval", "hearvalidator"}:
            raise MissingFile(f"{module} is not installed; {HINT_INSTALL}") from err
        raise MissingFile(
            f"{module} needs {err.name!r}, which is not installed; {HINT_INSTALL}"
        ) from err


@contextlib.contextmanager
def _argv(argv: List[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def run_validator(
    weights: str, device: Optional[str] = None, tensorflow: str = "auto", module: str = PLUGIN_MODULE
) -> int:
    """`hear-validator MODULE --model WEIGHTS [--device DEVICE]`; 0 when it says "Looks good!"."""
    announce_tensorflow(select_tensorflow(tensorflow))
    validate = _import_tool("hearvalidator.validate")
    argv = ["hear-validator", module] + (["--model", str(weights)] if str(weights) else [])
    if device:
        argv += ["--device", device]
    with _argv(argv):
        try:
            validate.main()
        except validate.ModelError as err:
            print(f"hear-validator: {module} FAILED: {err}", file=sys.stderr)
            return 1
    return 0


def _click_exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


DECLARED_FILE = "declared.json"  # beside a task's embeddings: the sizes the plugin declares
SIZES = ("scene_embedding_size", "timestamp_embedding_size")


def record_declared(model: object, module: str, path: Path) -> None:
    """Write what `model` (returned by `module.load_model`) declares to `path`, atomically."""
    found = {name: getattr(model, name, None) for name in ("sample_rate", *SIZES)}
    data = {"module": module, **{k: v if isinstance(v, (int, float, str)) else repr(v) for k, v in found.items()}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # before the runner makes it
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)



def _record_declared_sizes(runner, args: Sequence[str], declared: Path) -> None:
    """Have the plugin's `load_model` (as heareval's runner calls it) record what its model
    declares in `declared` (`record_declared`). The runner is left as it is; a
    command line it refuses is left to it to say so."""
    import click

    try:
        module_name = runner.runner.make_context("runner", list(args)).params["module"]
    except (click.exceptions.Exit, click.ClickException):
        return
    module = importlib.import_module(module_name)
    load = getattr(module, "load_model", None)
    if not callable(load):  # the runner says what is missing
        return

    def load_model(*load_args, **options):
        model = load(*load_args, **options)
        record_declared(model, module_name, declared)
        return model

    module.load_model = load_model


def run_embeddings(args: Sequence[str], tensorflow: str = "auto", declared: Optional[str] = None) -> int:
    """`python -m heareval.embeddings.runner ARGS` (e.g. `hear_matpac --model W --tasks-dir T
    --embeddings-dir E`); with `declared`, the sizes the loaded model declares go to that file
    (read by `embedding_check`)."""
    announce_tensorflow(select_tensorflow(tensorflow))
    runner = _import_tool("heareval.embeddings.runner")
    if declared:
        _record_declared_sizes(runner, args, Path(declared))
    try:
        runner.runner.main(args=list(args), prog_name="hear-matpac heareval embed")
    except SystemExit as done:
        return _click_exit_code(done.code)
    return 0


def link_task_dirs(task_dirs: Sequence[str], workdir: Path) -> List[str]:
    """Give each task folder a link `embeddings/<model>/<task>` under `workdir` (the layout
    heareval's own runs use) and return those relative paths, so that the predictions runner,
    working in `workdir`, writes `logs/embeddings/<model>/<task>/...` there."""
    linked = []
    for task_dir in task_dirs:
        target = Path(task_dir).resolve()
        if not target.is_dir():
            raise MissingFile(f"{task_dir} is not a folder of task embeddings")
        base = Path("embeddings") / (target.parent.name or "model")
        for n in range(1, 10_000):
            rel = base.with_name(base.name + (f"-{n}" if n > 1 else "")) / target.name
            link = workdir / rel
            if link.is_symlink() and link.resolve() == target:
                break
            if not os.path.lexists(link):
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(target, target_is_directory=True)
                break
        linked.append(str(rel))
    return linked


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    saved = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(saved)


def exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_predictions(args: Sequence[str], logs_dir: Optional[str] = None) -> int:
    """`python -m heareval.predictions.runner ARGS` (task embedding folders and its options,
    e.g. `--grid faster`), with its checkpoints under `logs_dir` (kept) or a temporary folder
    (deleted afterwards)."""
    os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    runner = _import_tool("heareval.predictions.runner")
    import click

    prog = "hear-matpac heareval predict"
    try:
        ctx = runner.runner.make_context(prog, list(args))
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    if threading.current_thread() is threading.main_thread():  # SIGTERM: remove the temporary folder too
        signal.signal(signal.SIGTERM, exit_on_sigterm)
    workdir = Path(logs_dir) if logs_dir else Path(tempfile.mkdtemp(prefix="hear-matpac-predict-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        ctx.params["task_dirs"] = tuple(link_task_dirs(ctx.params["task_dirs"], workdir.resolve()))
        with ctx, _cwd(workdir):
            runner.runner.invoke(ctx)
    finally:
        if logs_dir:
            print(f"hear-matpac: heareval's logs and checkpoints are in {workdir / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
