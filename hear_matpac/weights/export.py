"""Export a checkpoint's encoder (and head) to `.safetensors`: no pickle, memory-mappable.

The tensors keep their dtype and the published key layout (`weights.read.published_layout`,
head keys as in `weights/head.py`), so the file reads back through the same checks as a `.pt` file.
Everything else (decoder, teacher, optimizer state) is left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..version import __version__
from ..io import atomic_path, InputError, MissingFile, unwritable
from .read import PathLike, extract_encoder, published_layout, read_checkpoint, read_checkpoint_digest
from ..config import EncoderConfig
from .head import find_head


@dataclass(frozen=True)
class ExportResult:
    """What was written: `path`, the encoder's shape, tensor and parameter counts, head or not."""

    path: Path
    config: EncoderConfig
    n_tensors: int
    n_params: int
    head: bool

    def describe(self) -> str:
        """One line: the file written, its tensors and the encoder's shape."""
        cfg, head = self.config, ", with the classification head" if self.head else ""
        return (f"wrote {self.path}: {self.n_tensors} tensors, encoder embed_dim {cfg.embed_dim}, depth "
                f"{cfg.depth}, {cfg.n_frames} frames, {self.n_params:,} parameters{head}")


def export_safetensors(
    src: PathLike, out: PathLike, *, include_head: bool = True, overwrite: bool = False
) -> ExportResult:
    """Write `src`'s encoder (and its classification head, if any and `include_head`) to `out`.

    `out` must end in `.safetensors`; an existing `out` is replaced only with `overwrite`. The
    file is written beside `out` under a temporary name, read back and compared tensor by
    tensor, and only then renamed to `out`.
    """
    src, out = Path(src), Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise InputError(f"{out}: the output name must end in .safetensors")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give the output file's name (ending in .safetensors)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another name or pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise MissingFile(f"{out.parent}: no such folder for the output")
    raw, src_sha256 = read_checkpoint_digest(src)
    weights = extract_encoder(raw, src)
    head = find_head(raw, src, weights.config.embed_dim) if include_head else None
    tensors = published_layout(weights.state_dict)
    if head is not None:
        tensors.update(head.state_dict)
    # Own, contiguous storage per tensor: safetensors refuses shared or strided tensors.
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    cfg = weights.config
    metadata = {
        "format": "pt",
        "producer": f"hear-matpac {__version__}",
        "source": src.name,
        "source_sha256": str(src_sha256),
        "embed_dim": str(cfg.embed_dim),
        "depth": str(cfg.depth),
        "frames": str(cfg.n_frames),
        "head": "yes" if head is not None else "no",
    }
    try:
        with atomic_path(out) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
            _check_round_trip(tmp, tensors)
    except OSError as err:
        one_line = unwritable(err, out.parent, "choose a folder you can write to")
        if one_line is None:
            raise
        raise one_line from None
    n_params = sum(v.numel() for v in weights.state_dict.values())
    return ExportResult(out, cfg, len(tensors), n_params, head is not None)


def _check_round_trip(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Read `path` back through the normal reader; every tensor must come back bit for bit."""
    raw = read_checkpoint(path)
    extract_encoder(raw, path)
    if set(raw) != set(tensors):
        raise RuntimeError(f"{path}: export wrote keys {sorted(set(raw) ^ set(tensors))[:5]} wrongly")
    for key, value in tensors.items():
        back = raw[key]
        if back.dtype != value.dtype or not torch.equal(back, value):
            raise RuntimeError(f"{path}: {key} did not read back identically")
