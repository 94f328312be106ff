"""Numeric precision of the encoder: float32 (exact, TF32 off), TF32 on CUDA, or autocast to
bfloat16 / float16.

Only the encoder runs under autocast or TF32; the log-mel front end stays float32 (its log and
normalisation are sensitive) and features are returned as float32 whatever the precision.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch
from torch import nn

from .io import InputError, InputTypeError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"
_AUTOCAST_DTYPES: dict[str, Optional[torch.dtype]] = {
    "fp32": None,
    "tf32": None,  # float32 tensors; CUDA's matmuls and convolutions may round to TF32
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_precision_name(precision: object) -> str:
    """`precision` if it names a known precision, else a `TypeError` / `ValueError`."""
    if not isinstance(precision, str):
        raise InputTypeError(f"option precision must be a string, one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r} is not supported: use one of {', '.join(PRECISIONS)}")
    return precision


def check_precision_device(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run, before any work is done."""
    if precision in ("fp32", "tf32"):
        return
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"precision={precision!r} runs on cpu or cuda only, the model is on {device}; use precision='fp32'")
    if precision == "fp16" and device.type == "cpu":
        raise InputError(
            "precision='fp16' needs a CUDA device and the model is on cpu: move it with model.to('cuda'), "
            "or use precision='bf16' (or 'fp32') on CPU"
        )
    if precision == "bf16" and device.type == "cuda" and not cuda_bf16_native(device):
        raise InputError(f"precision='bf16' is not supported natively by {torch.cuda.get_device_name(device)}; use 'fp16' or 'fp32'")


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether the CUDA `device` itself (not the current device) computes bf16 natively:
    compute capability 8.0 (Ampere) or later; ROCm devices all do."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def store_for_autocast(encoder: nn.Module, precision: str) -> None:
    """Store the weights and biases of `encoder`'s linear and convolution layers in the
    precision's dtype, in place, once.

    Autocast casts exactly these tensors to that dtype before every such op, and under
    `torch.inference_mode` it does not cache the casts: storing them cast gives the same
    numbers without re-casting all weights for every micro-batch, and halves their memory.
    LayerNorm, positional and class-token parameters stay float32.
    """
    dtype = _AUTOCAST_DTYPES[check_precision_name(precision)]
    if dtype is None:
        return
    for module in encoder.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            for name, param in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(param.detach().to(dtype), requires_grad=param.requires_grad))


def encoder_autocast(precision: str, device: torch.device) -> ContextManager[object]:
    """The context to run the encoder in: autocast off for fp32 and tf32 (float32 even under a
    caller's autocast), else `torch.autocast` to the precision's dtype on `device` (checked first with
    `check_precision_device`). Reusable, not reentrant."""
    check_precision_device(precision, device)
    dtype = _AUTOCAST_DTYPES[precision]
    if dtype is None:
        return float32_context(device)
    return torch.autocast(device_type=device.type, dtype=dtype)


def float32_context(device: torch.device) -> ContextManager[object]:
    """Autocast switched off on `device`, so that work inside stays float32 even when the
    caller runs under autocast."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
