"""TensorFloat-32 switched on or off for a block, whatever the user set globally, and put back.

On NVIDIA GPUs since Ampere, cuDNN convolutions (and, when asked, cuBLAS matmuls) may round
float32 inputs to TF32's 10-bit mantissa: enough to move MATPAC's features by several 1e-4.
`precision="fp32"` must be exact, so the front end and the encoder run with TF32 off.

torch has two APIs for these switches. Before 2.9: `torch.backends.cudnn.allow_tf32` and
`torch.backends.cuda.matmul.allow_tf32` (the same state as `get_float32_matmul_precision`).
From 2.9 also the `fp32_precision` attributes; where the two disagree the old getters raise,
which breaks whatever reads them (TunableOp, Inductor, a user's hook). So the block switches
through the per-backend old setters, which write both APIs, and never through
`set_float32_matmul_precision`, which would also switch oneDNN's CPU matmul. Afterwards the
user's state, set through either API, comes back exactly, unreadable getters included. One
thread's block at a time: the switches are process-wide.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

_BACKENDS = torch.backends
_LOCK = threading.RLock()  # the switches are process-wide: one thread's block at a time


# (backend, operator, whether TF32 may be switched on there): CUDA's only; oneDNN's CPU
# float32 stays exact so that CPU results never change.
_NEW_SWITCHES = (("cuda", "matmul", True), ("cudnn", "conv", True), ("mkldnn", "matmul", False), ("mkldnn", "conv", False))


def _new_switches() -> list[tuple[str, object, bool]]:
    """`(name, holder, cuda)` for each `fp32_precision` holder of torch >= 2.9; empty on an
    older torch (one without CUDA's and cuDNN's)."""
    found = []
    for backend, op, cuda in _NEW_SWITCHES:
        holder = getattr(getattr(_BACKENDS, backend, None), op, None)
        if holder is not None and hasattr(holder, "fp32_precision"):
            found.append((f"{backend}.{op}.fp32_precision", holder, cuda))
    return found if sum(cuda for _, _, cuda in found) == 2 else []


def uses_new_api() -> bool:
    """Whether this torch has the `fp32_precision` attributes (torch >= 2.9)."""
    return bool(_new_switches())


@contextlib.contextmanager
def tf32_enabled(enabled: bool, *, new_api: bool | None = None) -> Iterator[None]:
    """Run the block with TF32 on (`enabled`) or off for CUDA convolutions and matmuls (and
    oneDNN's float32 kept exact on CPU), then restore every switch as it was, also when the
    block raises. Inside the block the old getters and the new attributes agree, so anything
    that reads either (TunableOp, Inductor, a user's hook) can. The switches are process-wide,
    so the block holds a process-wide lock: a second thread's block waits until the first's
    ends (the same thread may nest blocks). `new_api` forces one API (tests); None: the newest
    this torch has."""
    switches = _new_switches() if new_api is not False else []
    if new_api and not switches:
        raise RuntimeError("this torch has no fp32_precision attributes")
    with _LOCK:
        if switches:
            with _switched_new(enabled):
                yield
            return
        cudnn_saved = _BACKENDS.cudnn.allow_tf32
        matmul_saved = torch.get_float32_matmul_precision()
        try:
            _BACKENDS.cuda.matmul.allow_tf32 = enabled
            _BACKENDS.cudnn.allow_tf32 = enabled
            yield
        finally:
            _BACKENDS.cudnn.allow_tf32 = cudnn_saved
            _BACKENDS.cuda.matmul.allow_tf32 = matmul_saved != "highest"
            if torch.get_float32_matmul_precision() != matmul_saved:  # "medium": the user's own call
                torch.set_float32_matmul_precision(matmul_saved)


def _parents() -> list[object]:
    """The holders whose `fp32_precision` the operators inherit when theirs is "none"."""
    return [_BACKENDS, _BACKENDS.cudnn, _BACKENDS.mkldnn]


def _holders() -> list[object]:
    """Every object with an `fp32_precision` attribute: the parents first, then the operators."""
    found = _parents()
    for backend, op in (("cuda", "matmul"), ("cudnn", "conv"), ("cudnn", "rnn"), ("mkldnn", "matmul"), ("mkldnn", "conv")):
        found.append(getattr(getattr(_BACKENDS, backend, None), op, None))
    return [holder for holder in found if holder is not None and hasattr(holder, "fp32_precision")]


def _old_flag(holder: object) -> bool | None:
    """`holder.allow_tf32`, or None where the user's state makes it unreadable."""
    try:
        return holder.allow_tf32
    except RuntimeError:
        return None


@contextlib.contextmanager
def _switched_new(enabled: bool) -> Iterator[None]:
    """The switch on a torch with `fp32_precision`: the parents' inheritable settings cleared,
    then the per-backend old setters, which write both APIs, cuDNN's operators explicit, and
    oneDNN's exact (`ieee`, which every getter accepts); afterwards the user's own values written back."""
    holders = _holders()
    saved = [holder.fp32_precision for holder in holders]
    # The old flags are state of their own. One the user's state makes unreadable disagrees
    # with its new attribute, so it holds the opposite: put back, it raises again as before.
    old = []
    for flag, operator in ((_BACKENDS.cuda.matmul, _BACKENDS.cuda.matmul), (_BACKENDS.cudnn, _BACKENDS.cudnn.conv)):
        value = _old_flag(flag)
        old.append((flag, operator.fp32_precision != "tf32" if value is None else value))
    try:
        for holder in holders:
            if holder in _parents():
                holder.fp32_precision = "none"  # nothing to inherit
        _BACKENDS.cuda.matmul.allow_tf32 = enabled
        _BACKENDS.cudnn.allow_tf32 = enabled
        for holder in (_BACKENDS.cudnn.conv, getattr(_BACKENDS.cudnn, "rnn", None)):
            if holder is not None:  # explicit: "none" would leave cuDNN to a default
                holder.fp32_precision = "tf32" if enabled else "ieee"
        _BACKENDS.mkldnn.matmul.fp32_precision = "ieee"
        _BACKENDS.mkldnn.conv.fp32_precision = "ieee"
        yield
    finally:
        for flag, value in old:
            flag.allow_tf32 = value
        for holder, value in zip(holders, saved):
            if holder.fp32_precision != value:
                holder.fp32_precision = value


def tf32_state() -> dict[str, object]:
    """The switches as this torch reports them (for tests and the acceptance script)."""
    if uses_new_api():
        return {name: holder.fp32_precision for name, holder, _ in _new_switches()}
    return {"cudnn.allow_tf32": _BACKENDS.cudnn.allow_tf32, "matmul": torch.get_float32_matmul_precision()}
