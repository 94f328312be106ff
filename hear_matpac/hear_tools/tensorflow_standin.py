"""A minimal stand-in for the `tensorflow` module, registered for one process only.

heareval's embedding runner and hear-validator do `import tensorflow as tf` at the top and,
for a PyTorch plugin, touch exactly two things: `tf.Module` (an `isinstance` check that must
say "not a TensorFlow model") and `tf.test.is_gpu_available(...)` (the embedding runner
refuses to start when torch sees a GPU and this answers False). The stand-in provides those
two, answering the GPU question from torch, and fails loudly on anything else.
"""
from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import sys
import types
from typing import Optional, Tuple

import torch

from ..io import InputError

MODES = ("auto", "real", "stand-in")
STANDIN_FLAG = "__hear_matpac_standin__"


class Module:
    """Stand-in for `tf.Module`: no object is ever one, so a torch model is never taken for a
    TensorFlow model."""


def is_gpu_available(
    cuda_only: bool = False, min_cuda_compute_capability: Optional[Tuple[int, int]] = None
) -> bool:
    """Whether torch sees a CUDA GPU (of at least `min_cuda_compute_capability`, if given):
    the question heareval asks TensorFlow, answered for the framework that actually runs."""
    if not torch.cuda.is_available():
        return False
    if min_cuda_compute_capability is None:
        return True
    wanted = tuple(min_cuda_compute_capability)
    return any(
        torch.cuda.get_device_capability(i) >= wanted for i in range(torch.cuda.device_count())
    )


def _missing(name: str):
    raise AttributeError(
        f"tensorflow.{name} is not in hear_matpac's TensorFlow stand-in, which only covers what "
        "heareval and hear-validator use with a PyTorch model (Module, test.is_gpu_available). "
        "Install TensorFlow (pip install tensorflow-cpu) for anything else."
    )


def make_standin() -> types.ModuleType:
    """A fresh `tensorflow` stand-in module with `Module` and `test.is_gpu_available`."""
    tf = types.ModuleType("tensorflow", __doc__)
    tf.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None, origin="hear_matpac stand-in")
    tf.__version__ = "0+hear_matpac.standin"
    tf.Module = Module
    test = types.ModuleType("tensorflow.test", "Stand-in for tf.test: only is_gpu_available.")
    test.is_gpu_available = is_gpu_available
    test.__getattr__ = lambda name: _missing(f"test.{name}")
    tf.test = test
    tf.__getattr__ = _missing
    setattr(tf, STANDIN_FLAG, True)
    return tf


def tensorflow_installed() -> bool:
    """Whether a real TensorFlow can be imported here (without importing it)."""
    loaded = sys.modules.get("tensorflow")
    if loaded is not None:
        return not getattr(loaded, STANDIN_FLAG, False)
    return importlib.util.find_spec("tensorflow") is not None


def _import_problem() -> Optional[str]:
    """None when the real TensorFlow imports here, else why not, in one line (what it left in
    `sys.modules` removed, so that the stand-in can take its place)."""
    if "tensorflow" in sys.modules:
        return None
    try:
        importlib.import_module("tensorflow")
    except Exception as err:  # noqa: BLE001 - a broken install fails in many ways
        for name in [n for n in sys.modules if n == "tensorflow" or n.startswith("tensorflow.")]:
            del sys.modules[name]
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return None


def _cpu_only_tensorflow() -> bool:
    try:
        importlib.metadata.distribution("tensorflow-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def select_tensorflow(mode: str = "auto") -> str:
    """Make `import tensorflow` in this process give the real one or the stand-in.

    `auto`: the real TensorFlow where it is installed and imports, except `tensorflow-cpu` on
    a machine where torch sees a GPU (it would fail heareval's GPU check); the stand-in
    otherwise, saying so on stderr when an installed one fails to import. `real`: the real
    one, or `ValueError` if it is not installed or fails to import. `stand-in`: always the
    stand-in. Returns `"real"` or `"stand-in"`. Call before heareval or hear-validator is
    imported.
    """
    if mode not in MODES:
        raise InputError(f"TensorFlow mode must be one of {', '.join(MODES)}, got {mode!r}")
    installed = tensorflow_installed()
    if mode == "real" or (mode == "auto" and installed):
        if not installed:
            raise InputError(
                "TensorFlow is not installed, so it cannot be used: install it "
                "(pip install tensorflow-cpu) or use the stand-in (--tensorflow stand-in)"
            )
        if not (mode == "auto" and torch.cuda.is_available() and _cpu_only_tensorflow()):
            problem = _import_problem()
            if problem is None:
                return "real"
            if mode == "real":
                raise InputError(f"TensorFlow is installed but fails to import ({problem}); "
                                 "repair it, or use --tensorflow stand-in")  # fmt: skip
            print(f"hear-matpac: TensorFlow is installed but fails to import ({problem}); using "
                  "hear_matpac's stand-in instead (--tensorflow stand-in skips the attempt)", file=sys.stderr)  # fmt: skip
    loaded = sys.modules.get("tensorflow")
    if loaded is not None and not getattr(loaded, STANDIN_FLAG, False):
        raise InputError(
            "the real TensorFlow is already imported in this process, so the stand-in cannot "
            "replace it: run the HEAR tool in a fresh process"
        )
    if loaded is None:
        sys.modules["tensorflow"] = make_standin()
    return "stand-in"
