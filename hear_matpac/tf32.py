"""TensorFloat-32 switched on or off for a block, whatever the user set globally, and put back.

On NVIDIA GPUs since Ampere, cuDNN convolutions (and, when asked, cuBLAS matmuls) may round
float32 inputs to TF32's 10-bit mantissa: enough to move MATPAC's features by several 1e-4.
`precision="fp32"` must be exact, so the front end and the encoder run with TF32 off.

torch has two APIs for these switches. Before 2.9: `torch.backends.cudnn.allow_tf32` and
`torch.set_float32_matmul_precision`. From 2.9: the `fp32_precision` attributes
(`torch.backends.cuda.matmul`, `torch.backends.cudnn.conv`, and oneDNN's on CPU), which hold
the whole state; once a user has set one of them, reading an old flag can raise. Where the new
attributes exist only they are read and written, so the user's state, set through either API,
comes back exactly as it was.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_BACKENDS = torch.backends


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
    block raises. `new_api` forces one API (tests); None: the newest this torch has. The
    switches are process-wide: not for threads running models concurrently."""
    switches = _new_switches() if new_api is not False else []
    if new_api and not switches:
        raise RuntimeError("this torch has no fp32_precision attributes")
    if switches:
        saved = [holder.fp32_precision for _, holder, _ in switches]
        try:
            for _, holder, cuda in switches:
                holder.fp32_precision = "tf32" if (enabled and cuda) else "ieee"
            yield
        finally:
            for (_, holder, _), value in zip(switches, saved):
                holder.fp32_precision = value
        return
    cudnn_saved = _BACKENDS.cudnn.allow_tf32
    matmul_saved = torch.get_float32_matmul_precision()
    try:
        _BACKENDS.cudnn.allow_tf32 = enabled
        torch.set_float32_matmul_precision("high" if enabled else "highest")
        yield
    finally:
        torch.set_float32_matmul_precision(matmul_saved)
        _BACKENDS.cudnn.allow_tf32 = cudnn_saved


def tf32_state() -> dict[str, object]:
    """The switches as this torch reports them (for tests and the acceptance script)."""
    if uses_new_api():
        return {name: holder.fp32_precision for name, holder, _ in _new_switches()}
    return {"cudnn.allow_tf32": _BACKENDS.cudnn.allow_tf32, "matmul": torch.get_float32_matmul_precision()}
