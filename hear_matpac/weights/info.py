"""What a checkpoint file holds: format, encoder shape, parameters, ignored keys, head.

Read through the same door as `load_model` (`weights.read.read_checkpoint` +
`extract_encoder`), so what is described is exactly what would be loaded.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from safetensors import safe_open

from .read import (
    CheckpointError,
    PathLike,
    extract_encoder,
    is_safetensors,
    model_state,
    read_checkpoint_digest,
    strip_prefixes,
)
from ..config import EncoderConfig, SAMPLE_RATE, HOP_LENGTH
from .head import HeadWeights, find_head
from .integrity import read_record, record_path
from .registry import REGISTRY, WeightsEntry


@dataclass(frozen=True)
class CheckpointInfo:
    """Everything `hear-matpac info` reports about one file."""

    path: Path
    file_format: str
    size_bytes: int
    sha256: str
    sha256_record: Optional[Path]
    layout: str
    config: EncoderConfig
    n_params: int
    dtypes: tuple[str, ...]
    ignored_keys: tuple[str, ...]
    other_entries: tuple[str, ...]
    head: Optional[HeadWeights]
    head_problem: Optional[str]
    registry: Optional[WeightsEntry]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ignored_groups(self) -> dict[str, int]:
        """Ignored keys counted by their first name component (`decoder`, `teacher_encoder`, ...)."""
        return dict(Counter(strip_prefixes(k).split(".")[0] for k in self.ignored_keys))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (`hear-matpac info --json`)."""
        cfg = self.config
        return {
            "path": str(self.path),
            "format": self.file_format,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "sha256_record": str(self.sha256_record) if self.sha256_record else None,
            "layout": self.layout,
            "config": {
                "embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads,
                "n_freq": cfg.n_freq, "n_frames": cfg.n_frames, "feature_dim": cfg.feature_dim,
            },
            "n_params": self.n_params,
            "dtypes": list(self.dtypes),
            "ignored_keys": list(self.ignored_keys),
            "ignored_groups": self.ignored_groups,
            "other_entries": list(self.other_entries),
            "head": None if self.head is None else {"n_classes": self.head.n_classes, "in_features": self.head.in_features},
            "head_problem": self.head_problem,
            "registry_name": self.registry.name if self.registry else None,
            "metadata": self.metadata,
        }  # fmt: skip


def describe(path: PathLike) -> CheckpointInfo:
    """Read and check `path` (its recorded sha256 included) and say what it holds."""
    path = Path(path)
    raw, digest = read_checkpoint_digest(path)  # FileNotFoundError / CheckpointError / ChecksumError first
    weights = extract_encoder(raw, path)
    head, head_problem = None, None
    try:
        head = find_head(raw, path, weights.config.embed_dim)
    except CheckpointError as err:
        head_problem = str(err)
    state = model_state(raw)
    nested = state is not raw
    layout = "training checkpoint (tensors under 'model')" if nested else "flat state dict"
    other = tuple(sorted(str(k) for k in raw if k != "model")) if nested else ()
    metadata: dict[str, str] = {}
    if is_safetensors(path):
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
    record = record_path(path) if read_record(path) is not None else None
    return CheckpointInfo(
        path=path,
        file_format=_file_format(path),
        size_bytes=path.stat().st_size,
        sha256=str(digest),
        sha256_record=record,
        layout=layout,
        config=weights.config,
        n_params=sum(v.numel() for v in weights.state_dict.values()),
        dtypes=tuple(sorted({str(v.dtype).replace("torch.", "") for v in weights.state_dict.values()})),
        ignored_keys=weights.ignored_keys,
        other_entries=other,
        head=head,
        head_problem=head_problem,
        registry=next((e for e in REGISTRY.values() if e.file == path.name), None),
        metadata=metadata,
    )


def format_info(info: CheckpointInfo) -> str:
    """The human-readable report of `hear-matpac info`."""
    cfg = info.config
    seconds = cfg.n_frames * HOP_LENGTH / SAMPLE_RATE
    lines = [
        f"file:        {info.path} ({info.size_bytes / 1e6:.1f} MB, {info.file_format})",
        f"sha256:      {info.sha256}"
        + (f" (matches {info.sha256_record})" if info.sha256_record else " (no record beside the file)"),
        f"layout:      {info.layout}",
        f"encoder:     ViT, embed_dim {cfg.embed_dim}, depth {cfg.depth}, {cfg.num_heads} heads, "
        f"{cfg.n_freq} mel bins, windows of {cfg.n_frames} frames ({seconds:.2f} s)",
        f"parameters:  {info.n_params:,} in the encoder ({', '.join(info.dtypes)})",
        f"embeddings:  {cfg.feature_dim} per 160 ms column ({cfg.n_freq // 16} x {cfg.embed_dim})",
    ]
    if info.head is not None:
        lines.append(
            f"head:        present: BatchNorm1d (no affine) + Linear({info.head.in_features}, "
            f"{info.head.n_classes}); not used by the HEAR embeddings, kept by `weights export`"
        )
    elif info.head_problem:
        lines.append(f"head:        malformed, ignored: {info.head_problem}")
    else:
        lines.append("head:        none")
    if info.ignored_keys:
        groups = ", ".join(f"{name} ({n})" for name, n in sorted(info.ignored_groups.items()))
        lines.append(f"ignored:     {len(info.ignored_keys)} training-only or non-encoder entries: {groups}")
    else:
        lines.append("ignored:     nothing (the file holds only what is loaded)")
    if info.other_entries:
        lines.append(f"also holds:  {', '.join(info.other_entries)} (not read)")
    if info.registry is not None:
        e = info.registry
        match = "" if e.frames == cfg.n_frames else f"; but it should have {e.frames}-frame windows"
        lines.append(f"registry:    `{e.name}`: {e.model}, {e.kind}{match}")
    for key, value in sorted(info.metadata.items()):
        lines.append(f"metadata:    {key} = {value}")
    return "\n".join(lines)


def _file_format(path: Path) -> str:
    if is_safetensors(path):
        return "safetensors"
    return "PyTorch zip" if zipfile.is_zipfile(path) else "PyTorch legacy (non-zip)"
