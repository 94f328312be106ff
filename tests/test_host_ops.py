"""Host work of a packed call (`api.embed_packed`, what `embed` uses): the torch ops it dispatches
grow with the distinct clip lengths and the encoder's micro-batches, not with the number of clips.
Each dispatched op is host work (and a kernel launch on an accelerator), so a per-clip op caps the
rate of short clips whatever the device."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hear_matpac
from hear_matpac.api import embed_packed

from conftest import TINY_FLAT

# Lengths in samples: shorter than one STFT window, than one column's centre, one window of
# 0.96 s and a tail, three windows and a tail, exactly two windows.
LENGTHS = (1, 300, 20000, 3 * 15360 + 123, 2 * 15360)
MAX_RATIO = 1.25  # ops of 64 clips over ops of 16 clips drawn from the same lengths


class _CountOps(TorchDispatchMode):
    """Counts the non-view ops dispatched while active (a view launches nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def _ops(model, n_clips: int, timestamps: bool) -> int:
    lengths = [LENGTHS[i % len(LENGTHS)] for i in range(n_clips)]
    generator = torch.Generator().manual_seed(n_clips)
    audio = (0.2 * torch.randn(sum(lengths), generator=generator)).clamp(-1, 1)
    embed_packed(audio, lengths, model, timestamps=timestamps)  # warm: lazy set-up is not per call
    with _CountOps() as count:
        embed_packed(audio, lengths, model, timestamps=timestamps)
    return count.ops


@pytest.mark.parametrize("options", [{}, {"timestamp_hop_ms": 40}])
@pytest.mark.parametrize("timestamps", [False, True])
def test_ops_of_a_packed_call_do_not_grow_with_the_clips(options, timestamps):
    # every window group fits one micro-batch, so 16 and 64 clips make the same encoder calls
    model = hear_matpac.load_model(str(TINY_FLAT), window_seconds=0.96, max_windows=4096, **options)
    few, many = _ops(model, 16, timestamps), _ops(model, 64, timestamps)
    print(f"ops: 16 clips {few}, 64 clips {many}, ratio {many / few:.2f}")
    assert many <= MAX_RATIO * few, f"64 clips dispatch {many} ops, 16 clips {few}: {many / few:.2f}x"
