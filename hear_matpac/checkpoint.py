"""Read a MATPAC checkpoint safely, keep the encoder, check it, infer its shape.

Accepted: a flat state dict in the published layout, or a training checkpoint
`{"model": state_dict, ...}`, with `module.` / `model.` prefixes, as a PyTorch `.pt` file or a
`.safetensors` file (memory-mapped). Training-only entries (decoder, teacher / EMA, heads,
optimizer state) are ignored. Nothing is unpickled beyond tensors and plain containers
(`weights_only=True`), nothing is loaded partially, and a file with a recorded sha256
(`integrity.py`) is checked against it on every read.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

from .config import (
    HEAD_DIM,
    MLP_RATIO,
    N_MELS,
    PATCH,
    FREQ_PATCHES,
    EncoderConfig,
)
from .integrity import verify_recorded
from .weights_locate import resolve_weights_path  # noqa: F401  (for cli/embed.py; see weights_locate)

PathLike = Union[str, "os.PathLike[str]"]

ENCODER_PREFIX = "student_encoder."
_STRIPPED_PREFIXES = ("module.", "model.")
_TOP_LEVEL_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias")
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6
_PICKLE_PROTO = b"\x80"  # legacy torch.save: a bare pickle stream


class CheckpointError(ValueError):
    """A checkpoint file that is not a usable MATPAC encoder."""

    def __init__(self, path: PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class EncoderWeights:
    """The encoder's tensors (keys as in `MatpacEncoder`), its shape, and what was ignored."""

    state_dict: dict[str, Tensor]
    config: EncoderConfig
    ignored_keys: tuple[str, ...]


def read_checkpoint(path: PathLike) -> Mapping[str, object]:
    """The raw contents of a checkpoint: a `.safetensors` file (memory-mapped tensors) or a
    `.pt` file (unpickling tensors and plain containers only), after checking its recorded
    sha256 if it has one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such checkpoint file (nor a published checkpoint's name: see `hear-matpac weights list`)"
        )
    verify_recorded(path)
    if is_safetensors(path):
        return _read_safetensors(path)
    with open(path, "rb") as file:
        head = file.read(64)
    if not head.startswith((_ZIP_MAGIC, _PICKLE_PROTO)):
        raise CheckpointError(
            path,
            f"unreadable: not a PyTorch checkpoint (it starts with {head[:24]!r}; "
            "an HTML error page or a partial download?)",
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err), flags=re.IGNORECASE)
        if not found:
            raise CheckpointError(path, f"unreadable or truncated PyTorch file ({_first_line(err)})") from None
        raise CheckpointError(
            path,
            f"holds pickled objects other than tensors (it references {found.group(1)}, possibly "
            "code); refusing to unpickle it. Only plain state dicts of tensors are loaded",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(path, f"unreadable or truncated PyTorch file ({_first_line(err)})") from None
    if not isinstance(raw, Mapping):
        raise CheckpointError(path, f"expected a state dict, found a {type(raw).__name__}")
    return raw


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def is_safetensors(path: PathLike) -> bool:
    """A `.safetensors` name, or contents that start like one (8-byte header length, then `{`);
    a `.pt` file starts with `PK` (zip) or a pickle opcode instead."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    return path.suffix == ".safetensors" or head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_safetensors(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            path, f"unreadable or truncated safetensors file ({_first_line(err)})"
        ) from None


def model_state(raw: Mapping[str, object]) -> Mapping[str, object]:
    """The state dict inside a checkpoint: `raw["model"]` for a training checkpoint, else `raw`."""
    return raw["model"] if isinstance(raw.get("model"), Mapping) else raw  # type: ignore[return-value]


def extract_encoder(raw: Mapping[str, object], path: PathLike) -> EncoderWeights:
    """Find the encoder's tensors in a flat or training checkpoint, check every shape and
    infer the encoder's configuration from them."""
    state = model_state(raw)
    tensors = {}
    ignored = []
    for key, value in state.items():
        name = strip_prefixes(str(key))
        if not isinstance(value, Tensor):
            ignored.append(str(key))
        elif name in _TOP_LEVEL_KEYS:
            tensors[name] = value
        elif name.startswith(ENCODER_PREFIX):
            tensors[name[len(ENCODER_PREFIX):]] = value
        else:
            ignored.append(str(key))
    missing = [k for k in _TOP_LEVEL_KEYS if k not in tensors]
    if missing:
        raise CheckpointError(
            path,
            f"not a MATPAC encoder checkpoint: missing {', '.join(missing)} "
            f"(found {len(tensors)} encoder tensors among {len(state)} entries)",
        )
    config = _infer_config(tensors, path)
    _check_shapes(tensors, config, path)
    return EncoderWeights(tensors, config, tuple(sorted(ignored)))


def published_layout(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Encoder tensors (keys as in `MatpacEncoder`) keyed as in the published checkpoints:
    `cls_token`, `pos_embed`, `patch_embed.*` at the top, the rest under `student_encoder.`;
    what `extract_encoder` reads back unchanged."""
    return {(k if k in _TOP_LEVEL_KEYS else ENCODER_PREFIX + k): v for k, v in state_dict.items()}


def load_encoder_weights(path: PathLike) -> EncoderWeights:
    """Read and check the encoder of the checkpoint at `path`."""
    return extract_encoder(read_checkpoint(path), path)


def strip_prefixes(key: str) -> str:
    """`key` without its leading `module.` / `model.` prefixes (DDP and wrapper modules)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def _infer_config(tensors: Mapping[str, Tensor], path: PathLike) -> EncoderConfig:
    cls = tensors["cls_token"]
    if cls.ndim != 3 or cls.shape[:2] != (1, 1):
        raise CheckpointError(path, f"cls_token has shape {tuple(cls.shape)}, expected (1, 1, dim)")
    embed_dim = cls.shape[2]
    if embed_dim % HEAD_DIM:
        raise CheckpointError(path, f"embed_dim {embed_dim} is not a multiple of {HEAD_DIM}")
    pos = tensors["pos_embed"]
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != embed_dim:
        raise CheckpointError(path, f"pos_embed has shape {tuple(pos.shape)}, expected (1, 1 + 5 * columns, {embed_dim})")
    patches = pos.shape[1] - 1
    if patches <= 0 or patches % FREQ_PATCHES:
        raise CheckpointError(
            path, f"pos_embed has {pos.shape[1]} entries: not 1 + {FREQ_PATCHES} x columns for {N_MELS} mel bins"
        )
    blocks = {int(m.group(1)) for k in tensors if (m := _BLOCK_KEY.fullmatch(k))}
    depth = len(blocks)
    if depth == 0 or blocks != set(range(depth)):
        raise CheckpointError(path, f"encoder blocks must be numbered 0..depth-1, found {sorted(blocks)}")
    return EncoderConfig(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=embed_dim // HEAD_DIM,
        n_freq=N_MELS,
        n_frames=patches // FREQ_PATCHES * PATCH,
    )


def expected_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of an encoder of this shape, with its shape."""
    d, hidden = config.embed_dim, config.embed_dim * MLP_RATIO
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 1 + FREQ_PATCHES * config.max_columns, d),
        "patch_embed.proj.weight": (d, 1, PATCH, PATCH),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
    }
    per_block = {
        "norm1.weight": (d,), "norm1.bias": (d,),
        "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
        "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
        "norm2.weight": (d,), "norm2.bias": (d,),
        "mlp.fc1.weight": (hidden, d), "mlp.fc1.bias": (hidden,),
        "mlp.fc2.weight": (d, hidden), "mlp.fc2.bias": (d,),
    }  # fmt: skip
    for i in range(config.depth):
        shapes.update({f"blocks.{i}.{k}": v for k, v in per_block.items()})
    return shapes


def _check_shapes(tensors: Mapping[str, Tensor], config: EncoderConfig, path: PathLike) -> None:
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(path, f"encoder tensors missing: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(path, f"unexpected encoder tensors: {', '.join(unexpected[:8])}")
    for key, shape in expected.items():
        tensor = tensors[key]
        if tuple(tensor.shape) != shape:
            raise CheckpointError(path, f"{key} has shape {tuple(tensor.shape)}, expected {shape}")
        if not tensor.is_floating_point():
            raise CheckpointError(path, f"{key} has dtype {tensor.dtype}, expected floating point")
