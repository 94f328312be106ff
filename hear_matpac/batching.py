"""How many windows the encoder takes at once: a budget of frames per encoder call.

A micro-batch of a window group holds `budget // group frames` windows (at least one), so short
windows (one-second clips, tails) share a budget sized for full ones. On CPU the budget is
`max_windows` full windows (default `DEFAULT_MAX_WINDOWS`). On CUDA it is sized from the free
memory at the start of the call, with `max_windows` (default `AUTO_CAP_WINDOWS`) as the cap;
an out-of-memory error halves the batch and lowers the model's budget for later calls.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from .config import EncoderConfig

DEFAULT_MAX_WINDOWS = 16  # CPU: ViT-Base, 608 frames: about 6 MB of live activations per window
AUTO_CAP_WINDOWS = 512  # CUDA without max_windows: more windows per call gain nothing measurable
# Peak memory per window frame of a ViT-Base encoder (embed_dim 768, 608-frame windows), as
# measured on an H200 (torch 2.14.1+cu130; issue 24): 6.25 MiB per window in float32, 4 MiB
# under bf16/fp16 autocast (more than half of float32's: autocast keeps some operations in
# float32). MEMORY_SHARE: the share of the free memory a micro-batch may take.
BYTES_PER_FRAME = {"fp32": 6.25 * 2**20 / 608, "half": 4 * 2**20 / 608}
MEMORY_SHARE = 0.5
_HALF_BYTES = ("bf16", "fp16")


def frame_budget(config: EncoderConfig, max_windows: Optional[int], precision: str, device: torch.device) -> int:
    """Frames of windows to encode at once on `device` (see the module's docstring)."""
    if device.type != "cuda":
        budget = (max_windows or DEFAULT_MAX_WINDOWS) * config.n_frames
    else:
        cap = (max_windows or AUTO_CAP_WINDOWS) * config.n_frames
        per_frame = BYTES_PER_FRAME["half" if precision in _HALF_BYTES else "fp32"] * config.embed_dim / 768
        budget = min(cap, int(MEMORY_SHARE * cuda_free_bytes(device) / per_frame))
    return max(budget, 1)


def cuda_free_bytes(device: torch.device) -> int:
    """Memory this process could still allocate on `device`: the driver's free memory plus
    what torch's caching allocator holds unused, within `set_per_process_memory_fraction`."""
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    available = free + torch.cuda.memory_reserved(device) - allocated
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    if get_fraction is not None:
        available = min(available, int(get_fraction(device) * total) - allocated)
    return max(available, 0)


def windows_per_batch(budget: int, frames: int) -> int:
    """Windows of `frames` frames that fit a budget of `budget` frames (at least one)."""
    return max(1, budget // frames)


def warn_out_of_memory(windows: int, frames: int, retry: int) -> None:
    """Say (once per model: the caller keeps track) that a batch did not fit and is retried."""
    warnings.warn(
        f"out of device memory encoding {windows} windows of {frames} frames at once; retrying with "
        f"{retry} (outputs are unchanged, on CUDA within float tolerance; later calls of this model stay at or below that). Set the "
        "max_windows option lower to avoid the retry. Said once per model.",
        UserWarning,
        stacklevel=4,
    )
