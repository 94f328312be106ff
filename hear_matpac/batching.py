"""How many windows the encoder takes at once: a budget of frames per encoder call.

A micro-batch of a window group holds `budget // group frames` windows (at least one), so short
windows (one-second clips, tails) share a budget sized for full ones. On CPU the budget is
`max_windows` full windows (default `DEFAULT_MAX_WINDOWS`). On CUDA it is sized from the free
memory at the start of the call, with `max_windows` (default `AUTO_CAP_WINDOWS`) as the cap;
an out-of-memory error halves the batch and lowers the model's budget for later calls.

How many files `embed` hands the model in one call is planned by their audio (`plan_chunks`),
not by their count: on CUDA a call holds enough audio to fill the encoder's largest batches
however small the windows-per-batch cap, so per-call costs (planning, the one device read,
launches) are paid per thousands of audio-seconds; on CPU a call holds about one batch budget.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

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
# Files embedded in one call (`plan_chunks`). CUDA: at least CUDA_CHUNK_SECONDS of audio per call
# (about 670 windows of 6.08 s: more than AUTO_CAP_WINDOWS), at most MAX_CHUNK_FILES files (the
# per-file retry after a failed call, decoding granularity). A file whose length is unknown (0)
# counts as 1/UNKNOWN_PER_CHUNK of a chunk: as many per call as before chunks were sized by audio.
CUDA_CHUNK_SECONDS = 4096.0
MAX_CHUNK_FILES = 4096
UNKNOWN_PER_CHUNK = 16


def frame_budget(config: EncoderConfig, max_windows: Optional[int], precision: str, device: torch.device) -> int:
    """Frames of windows to encode at once on `device` (see the module's docstring)."""
    if device.type != "cuda":
        budget = (max_windows or DEFAULT_MAX_WINDOWS) * config.n_frames
    else:
        cap = (max_windows or AUTO_CAP_WINDOWS) * config.n_frames
        per_frame = BYTES_PER_FRAME["half" if precision in _HALF_BYTES else "fp32"] * config.embed_dim / 768
        budget = min(cap, int(MEMORY_SHARE * cuda_free_bytes(device) / per_frame))
    return max(budget, 1)


def plan_chunks(durations: Sequence[float], device_kind: str, budget_seconds: float) -> List[List[int]]:
    """The files (positions in `durations`, seconds each, 0 when unknown) grouped into
    consecutive calls by their audio. `budget_seconds`: the audio of one encoder batch budget
    (`frame_budget` over frames per second). On "cuda" a call holds at least
    `CUDA_CHUNK_SECONDS`, on other devices about `budget_seconds`; a call never holds more than
    `MAX_CHUNK_FILES` files, and a file longer than the target is a call of its own."""
    target = max(float(budget_seconds), CUDA_CHUNK_SECONDS if device_kind == "cuda" else 0.0)
    if not target > 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds!r}")
    chunks: List[List[int]] = []
    current: List[int] = []
    held = 0.0
    for i, seconds in enumerate(durations):
        size = float(seconds) if seconds > 0 else target / UNKNOWN_PER_CHUNK
        if current and (held + size > target or len(current) >= MAX_CHUNK_FILES):
            chunks.append(current)
            current, held = [], 0.0
        current.append(i)
        held += size
    if current:
        chunks.append(current)
    return chunks


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
