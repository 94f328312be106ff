"""Read a MATPAC checkpoint safely, keep the encoder, check it, infer its shape.

Accepted: a flat state dict in the published layout, or a training checkpoint
`{"model": state_dict, ...}`, with `module.` / `model.` prefixes, as a PyTorch `.pt` file or a
`.safetensors` file (read into memory; memory-mapped only on request). Training-only entries
(decoder, teacher / EMA, heads, optimizer state) are ignored. Nothing is unpickled beyond
tensors and plain containers (`weights_only=True`), nothing is loaded partially, a file with a
recorded sha256 (`weights/integrity.py`) is checked against it on every read, and an encoder with
NaN / Inf values or with two entries for one tensor (after prefix stripping) is refused.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
import zipfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

from ..encoder import MatpacEncoder
from ..io import first_line, InputError, MissingFile
from ..config import (
    HEAD_DIM,
    N_MELS,
    PATCH,
    FREQ_PATCHES,
    EncoderConfig,
)
from .integrity import check_digest, verify_recorded

PathLike = Union[str, "os.PathLike[str]"]

ENCODER_PREFIX = "student_encoder."
_STRIPPED_PREFIXES = ("module.", "model.")
_TOP_LEVEL_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias")
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6
_PICKLE_PROTO = b"\x80"  # legacy torch.save: a bare pickle stream


class CheckpointError(InputError):
    """A checkpoint file that is not a usable MATPAC encoder."""

    def __init__(self, path: PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class EncoderWeights:
    """The encoder's tensors (keys as in `MatpacEncoder`), its shape, and what was ignored."""

    state_dict: dict[str, Tensor]
    config: EncoderConfig
    ignored_keys: tuple[str, ...]
    sha256: Optional[str] = None  # of the bytes read (None: memory-mapped without a record)


def read_checkpoint(path: PathLike, *, mmap: bool = False) -> Mapping[str, object]:
    """The raw contents of a checkpoint, after checking its recorded sha256 if it has one (see
    `read_checkpoint_digest`)."""
    return read_checkpoint_digest(path, mmap=mmap)[0]


def read_checkpoint_digest(path: PathLike, *, mmap: bool = False) -> tuple[Mapping[str, object], Optional[str]]:
    """`(raw contents, sha256)` of the checkpoint at `path`: a `.pt` file (unpickling tensors and
    plain containers only) or a `.safetensors` file.

    The file is read into memory once; that one read is hashed, checked against the file's
    record (`weights/integrity.py`) and parsed, so what is returned is exactly what was checked, and it
    owns its memory: changing or truncating the file later does not change it. `mmap=True`
    memory-maps a `.safetensors` file instead (no private copy, faster from a warm cache): the
    file is hashed first when it has a record (sha256 None when not), and the tensors stay tied
    to the file, so rewriting it changes them and truncating it kills the process (SIGBUS)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(
            f"{path}: no such checkpoint file (nor a published checkpoint's name: see `hear-matpac weights list`)"
        )
    if mmap and is_safetensors(path):
        return _read_safetensors_mapped(path), verify_recorded(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(path, f"unreadable ({err.strerror or type(err).__name__})") from None
    digest = hashlib.sha256(data).hexdigest()
    check_digest(path, digest)
    if not _looks_safetensors(path, data[:9]):
        return _parse_pt(data, path), digest
    tensors = _parse_safetensors(data, path)
    del data  # the file's bytes: not needed once parsed
    for key in list(tensors):  # memory of their own (writable), each view's bytes freed in turn
        tensors[key] = tensors[key].clone()
    return tensors, digest


def _parse_pt(data: bytes, path: Path) -> Mapping[str, object]:
    if not data.startswith((_ZIP_MAGIC, _PICKLE_PROTO)):
        raise CheckpointError(
            path,
            f"unreadable: not a PyTorch checkpoint (it starts with {data[:24]!r}; "
            "an HTML error page or a partial download?)",
        )
    try:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err), flags=re.IGNORECASE)
        if not found:
            raise CheckpointError(path, f"unreadable or truncated PyTorch file ({first_line(err)})") from None
        raise CheckpointError(
            path,
            f"holds pickled objects other than tensors (it references {found.group(1)}, possibly "
            "code); refusing to unpickle it. Only plain state dicts of tensors are loaded",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(path, f"unreadable or truncated PyTorch file ({first_line(err)})") from None
    if not isinstance(raw, Mapping):
        raise CheckpointError(path, f"expected a state dict, found a {type(raw).__name__}")
    return raw


def is_safetensors(path: PathLike) -> bool:
    """A `.safetensors` name, or contents that start like one (8-byte header length, then `{`);
    a `.pt` file starts with `PK` (zip) or a pickle opcode instead."""
    path = Path(path)
    with open(path, "rb") as f:
        return _looks_safetensors(path, f.read(9))


def _looks_safetensors(path: Path, head: bytes) -> bool:
    return path.suffix == ".safetensors" or head[8:9] == b"{"


def _parse_safetensors(data: bytes, path: Path) -> dict[str, Tensor]:
    """Read-only views of per-tensor copies of `data`'s bytes (the caller clones them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # frombuffer over read-only bytes
            return load_safetensors_bytes(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(path, f"unreadable or truncated safetensors file ({first_line(err)})") from None


def _read_safetensors_mapped(path: Path) -> dict[str, Tensor]:
    try:
        return load_safetensors(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            path, f"unreadable or truncated safetensors file ({first_line(err)})"
        ) from None


def model_state(raw: Mapping[str, object]) -> Mapping[str, object]:
    """The state dict inside a checkpoint: `raw["model"]` for a training checkpoint, else `raw`."""
    return raw["model"] if isinstance(raw.get("model"), Mapping) else raw  # type: ignore[return-value]


def extract_encoder(raw: Mapping[str, object], path: PathLike) -> EncoderWeights:
    """Find the encoder's tensors in a flat or training checkpoint, check every shape and
    infer the encoder's configuration from them."""
    state = model_state(raw)
    if state is not raw:
        beside = sorted(str(k) for k, v in raw.items() if isinstance(v, Tensor) and _encoder_name(str(k)))
        if beside:
            raise CheckpointError(
                path,
                f"ambiguous: encoder tensors both under 'model' and at the top level ({', '.join(beside[:4])}"
                f"{' ...' if len(beside) > 4 else ''}); keep one copy",
            )
    tensors: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    ignored = []
    for key, value in state.items():
        name = _encoder_name(str(key)) if isinstance(value, Tensor) else None
        if name is None:
            ignored.append(str(key))
            continue
        if name in source:
            raise CheckpointError(
                path, f"ambiguous: {source[name]!r} and {str(key)!r} are both the encoder's {name}; keep one"
            )
        tensors[name], source[name] = value, str(key)
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


def _encoder_name(key: str) -> Optional[str]:
    """The encoder tensor a checkpoint key names (keys as in `MatpacEncoder`), or None."""
    name = strip_prefixes(key)
    if name in _TOP_LEVEL_KEYS:
        return name
    return name[len(ENCODER_PREFIX):] if name.startswith(ENCODER_PREFIX) else None


def published_layout(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Encoder tensors (keys as in `MatpacEncoder`) keyed as in the published checkpoints:
    `cls_token`, `pos_embed`, `patch_embed.*` at the top, the rest under `student_encoder.`;
    what `extract_encoder` reads back unchanged."""
    return {(k if k in _TOP_LEVEL_KEYS else ENCODER_PREFIX + k): v for k, v in state_dict.items()}


def load_encoder_weights(path: PathLike, *, mmap: bool = False) -> EncoderWeights:
    """Read and check the encoder of the checkpoint at `path` (`mmap`: see `read_checkpoint_digest`)."""
    raw, digest = read_checkpoint_digest(path, mmap=mmap)
    return dataclasses.replace(extract_encoder(raw, path), sha256=digest)


def read_config(path: PathLike) -> EncoderConfig:
    """The encoder configuration of the checkpoint at `path`, from its tensors' shapes: for
    checking options up front without reading or hashing the weights (`load_encoder_weights`
    does both when they are used). Where the shapes cannot be had cheaply (an old-format `.pt`),
    or the file is bad, this is `load_encoder_weights(path).config` and its errors."""
    path = Path(path)
    try:
        if is_safetensors(path):
            with safe_open(str(path), framework="pt") as handle:
                raw = {k: torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in handle.keys()}
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return extract_encoder(raw, path).config
    except Exception:  # noqa: BLE001 - the full reader gives the one precise error
        return load_encoder_weights(path).config


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
    """Every tensor of an encoder of this shape, with its shape, in the model's order: read off
    `MatpacEncoder(config)` itself, built on the meta device (no memory, no initialisation), so
    the reader checks exactly what the encoder will load."""
    with torch.device("meta"):
        built = MatpacEncoder(config)
    return {name: tuple(tensor.shape) for name, tensor in built.state_dict().items()}


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
    for key in expected:  # in the model's order, so the first bad tensor is named
        if not bool(torch.isfinite(tensors[key]).all()):
            bad = int((~torch.isfinite(tensors[key])).sum())
            raise CheckpointError(
                path, f"{key} holds {bad} NaN or infinite value(s); the checkpoint is corrupt or diverged"
            )
