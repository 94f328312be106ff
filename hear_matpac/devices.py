"""A `--device` argument as a torch device, checked before any work is done."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; otherwise `name` as a torch device.

    `ValueError` (one line) for a name torch does not know, or for CUDA where there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        problem = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"--device {name!r} is not a torch device ({problem}); use e.g. cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device
