"""Random-weight checkpoints of a given shape in the published layout: what benchmarks use to
measure the plugin's cost (time, memory) without the download. Their embeddings mean nothing."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from torch import Tensor

from ..io import atomic_write
from ..config import EncoderConfig
from .read import PathLike, expected_shapes, published_layout

# The published MATPAC encoder's shape: embed_dim 768, 12 blocks of 12 heads, 608-frame windows.
VIT_BASE = EncoderConfig(embed_dim=768, depth=12, num_heads=12, n_frames=608)


def random_state_dict(config: EncoderConfig = VIT_BASE, seed: int = 0) -> Dict[str, Tensor]:
    """Encoder tensors (keys as in `MatpacEncoder`): weights N(0, 0.02), biases 0, norm scales 1."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("bias"):
            state[name] = torch.zeros(shape)
        elif "norm" in name:
            state[name] = torch.ones(shape)
        else:
            state[name] = torch.randn(shape, generator=gen) * 0.02
    return state


def write_random_checkpoint(path: PathLike, config: EncoderConfig = VIT_BASE, seed: int = 0) -> Path:
    """Write a random encoder of `config`'s shape to `path` (a `.pt` flat state dict, published
    key layout, written atomically) and return the path, ready for `load_model`."""
    with atomic_write(path) as handle:
        torch.save(published_layout(random_state_dict(config, seed)), handle)
    return Path(path)
