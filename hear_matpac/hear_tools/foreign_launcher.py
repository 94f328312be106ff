"""The HEAR tools' embedding side in another environment: run as a script by that
environment's interpreter (`PYTHON foreign_launcher.py probe|validate|embed ...`).

`evaluate --python MODULE=PATH` runs a model's hear-validator and heareval embedding runner
with PATH, an interpreter whose environment holds the plugin and what those two tools import
(heareval, hearvalidator, torch, numpy, soundfile, click, tqdm, intervaltree, python-slugify),
but neither hear_matpac nor, necessarily, TensorFlow. So this file is self-contained: it
imports only the standard library and the HEAR tools, runs on Python 3.8 and later, and brings
its own TensorFlow stand-in (the same two attributes as `tensorflow_standin`).

  probe MODULE                                   one JSON line: the interpreter, its Python
                                                 version and packages; exit 3 (with "error")
                                                 when MODULE or a HEAR tool cannot be imported
  validate WEIGHTS [--module M] [--device D] [--tensorflow MODE]   (WEIGHTS '' for none)
  embed [--tensorflow MODE] [--declared FILE] ARGS...   heareval.embeddings.runner ARGS
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import signal
import sys
import types

USAGE = __doc__.split("\n\n")[-1].rstrip('"\n')
PROBE_FAILED = 3
TOOLS = ("heareval", "hearvalidator")
STANDIN_FLAG = "__hear_matpac_standin__"


# --- the TensorFlow stand-in (what heareval and hear-validator touch with a PyTorch plugin) ---

class Module:
    """Stand-in for `tf.Module`: no object is ever one."""


def is_gpu_available(cuda_only=False, min_cuda_compute_capability=None):
    """Whether torch sees a CUDA GPU (of at least `min_cuda_compute_capability`, if given)."""
    import torch

    if not torch.cuda.is_available():
        return False
    if min_cuda_compute_capability is None:
        return True
    wanted = tuple(min_cuda_compute_capability)
    return any(torch.cuda.get_device_capability(i) >= wanted for i in range(torch.cuda.device_count()))


def _missing(name):
    raise AttributeError(
        "tensorflow.%s is not in the TensorFlow stand-in, which only covers what heareval and "
        "hear-validator use with a PyTorch model (Module, test.is_gpu_available); install "
        "TensorFlow in this environment for anything else" % name
    )


def make_standin():
    """A fresh `tensorflow` stand-in module with `Module` and `test.is_gpu_available`."""
    tf = types.ModuleType("tensorflow", "TensorFlow stand-in of hear-matpac's foreign launcher")
    tf.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None, origin="stand-in")
    tf.__version__ = "0+standin"
    tf.Module = Module
    test = types.ModuleType("tensorflow.test")
    test.is_gpu_available = is_gpu_available
    test.__getattr__ = lambda name: _missing("test." + name)
    tf.test = test
    tf.__getattr__ = _missing
    setattr(tf, STANDIN_FLAG, True)
    return tf


def _tensorflow_problem():
    """None when the real TensorFlow imports here, else why not (one line); what a failed
    import left in `sys.modules` is removed."""
    try:
        importlib.import_module("tensorflow")
    except Exception as err:  # noqa: BLE001 - a broken install fails in many ways
        for name in [n for n in sys.modules if n == "tensorflow" or n.startswith("tensorflow.")]:
            del sys.modules[name]
        return _one_line(err)
    return None


def _cpu_only_tensorflow_with_gpu():
    import importlib.metadata

    try:
        importlib.metadata.distribution("tensorflow-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    import torch

    return torch.cuda.is_available()


def select_tensorflow(mode):
    """Make `import tensorflow` give the real one or the stand-in, as `tensorflow_standin`
    does: `auto` the real one where it is installed and imports (not tensorflow-cpu beside a
    GPU), else the stand-in; `real` or `stand-in` as named. Returns what it chose."""
    if mode not in ("auto", "real", "stand-in"):
        raise SystemExit("--tensorflow must be auto, real or stand-in, got %r" % mode)
    installed = importlib.util.find_spec("tensorflow") is not None
    if mode == "real" or (mode == "auto" and installed and not _cpu_only_tensorflow_with_gpu()):
        problem = _tensorflow_problem() if installed else "it is not installed"
        if problem is None:
            return "real"
        if mode == "real":
            raise SystemExit("TensorFlow cannot be used here (%s); use --tensorflow stand-in" % problem)
        print("foreign launcher: TensorFlow fails to import (%s); using the stand-in" % problem, file=sys.stderr)
    sys.modules["tensorflow"] = make_standin()
    print("foreign launcher: `import tensorflow` gives the stand-in in this process", file=sys.stderr)
    return "stand-in"


# --- the tools ---------------------------------------------------------------------------------

def _one_line(err):
    text = str(err).strip().splitlines()
    return "%s: %s" % (type(err).__name__, text[0]) if text else type(err).__name__


def _packages():
    import importlib.metadata

    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in found:  # the first on sys.path is the one imported
            found[name] = dist.version
    return found


def probe(module):
    """Print one JSON line saying what this interpreter is and whether it can run `module`
    with the HEAR tools; exit status 0, or PROBE_FAILED with the reason in "error"."""
    report = {"python": sys.executable, "version": platform.python_version(), "error": None}
    try:
        for tool in TOOLS:
            if importlib.util.find_spec(tool) is None:
                raise ModuleNotFoundError("No module named %r (the HEAR tools are not installed here)" % tool)
        with contextlib.redirect_stdout(sys.stderr):  # whatever the plugin prints stays off stdout
            importlib.import_module(module)
        report["packages"] = _packages()
    except BaseException as err:  # noqa: BLE001 - SystemExit in a plugin's import too
        report["error"] = _one_line(err)
    print(json.dumps(report, sort_keys=True))
    return PROBE_FAILED if report["error"] else 0


def _exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def validate(weights, module, device, tensorflow):
    """`hear-validator MODULE [--model WEIGHTS] [--device D]`; 0 when it says "Looks good!"."""
    select_tensorflow(tensorflow)
    from hearvalidator import validate as tool

    argv = ["hear-validator", module] + (["--model", weights] if weights else [])
    if device:
        argv += ["--device", device]
    sys.argv = argv
    try:
        tool.main()
    except tool.ModelError as err:
        print("hear-validator: %s FAILED: %s" % (module, err), file=sys.stderr)
        return 1
    return 0


SIZES = ("sample_rate", "scene_embedding_size", "timestamp_embedding_size")


def record_declared(module_name, path):
    """Wrap `module_name.load_model` so the model it returns writes what it declares (sample
    rate and embedding sizes) to `path`, atomically: read by hear_matpac's embedding check
    (`embedding_check.read_declared`), which this file cannot import."""
    import importlib

    module = importlib.import_module(module_name)
    load = getattr(module, "load_model", None)
    if not callable(load):  # the runner says what is missing
        return

    def load_model(*load_args, **options):
        model = load(*load_args, **options)
        found = dict((name, getattr(model, name, None)) for name in SIZES)
        data = dict((k, v if isinstance(v, (int, float, str)) else repr(v)) for k, v in found.items())
        data["module"] = module_name
        folder = os.path.dirname(path)
        if folder and not os.path.isdir(folder):
            os.makedirs(folder)
        tmp = "%s.tmp-%d" % (path, os.getpid())
        with open(tmp, "w") as out:
            out.write(json.dumps(data))
        os.replace(tmp, path)
        return model

    module.load_model = load_model


def embed(args, tensorflow, declared=None):
    """`python -m heareval.embeddings.runner ARGS`; with `declared`, the sizes the loaded model
    declares go to that file."""
    select_tensorflow(tensorflow)
    from heareval.embeddings import runner

    if declared and args and not args[0].startswith("-"):
        record_declared(args[0], declared)

    try:
        runner.runner.main(args=list(args), prog_name="heareval embed")
    except SystemExit as done:
        return _exit_code(done.code)
    return 0


def _take(args, flag, default):
    if flag in args:
        at = args.index(flag)
        if at + 1 >= len(args):
            raise SystemExit("foreign launcher: %s needs a value\n%s" % (flag, USAGE))
        value = args[at + 1]
        del args[at : at + 2]
        return value
    return default


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("probe", "validate", "embed"):
        print("usage: PYTHON foreign_launcher.py\n" + USAGE, file=sys.stderr)
        return 2
    tool = args.pop(0)
    if tool == "probe":
        if len(args) != 1:
            print("usage: PYTHON foreign_launcher.py\n" + USAGE, file=sys.stderr)
            return 2
        return probe(args[0])
    tensorflow = _take(args, "--tensorflow", "auto") or "auto"
    if tool == "embed":
        return embed(args, tensorflow, _take(args, "--declared", None))
    device = _take(args, "--device", None)
    module = _take(args, "--module", "hear_matpac") or "hear_matpac"
    if len(args) != 1:
        print("usage: PYTHON foreign_launcher.py\n" + USAGE, file=sys.stderr)
        return 2
    return validate(args[0], module, device, tensorflow)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # hear_tools' files are not modules here
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
