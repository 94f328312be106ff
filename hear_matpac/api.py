"""The HEAR 2021 API: `load_model`, `get_timestamp_embeddings`, `get_scene_embeddings`."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from .checkpoint import PathLike, load_encoder_weights
from .config import COLUMN_HOP_MS, SAMPLE_RATE
from .encoder import MatpacEncoder
from .model import MatpacModel
from .options import ModelOptions
from .timestamps import n_reported_columns, timestamps_ms
from .weights_locate import resolve_weights_path


def load_model(model_file_path: PathLike = "", *, mmap: bool = False, **options: Any) -> MatpacModel:
    """Load a MATPAC checkpoint as a HEAR model, on CPU, in eval mode.

    `model_file_path`: a `.pt` / `.safetensors` file or a published name; empty: as
    `weights_locate.resolve_weights_path` says. `options`: see `ModelOptions` (`layer`, `max_windows`, `timestamp_hop_ms`,
    `window_overlap`, `window_seconds`, `precision`, `cpu_packed_weights`). The weights are read
    into memory, so the model does not change when the file does; `mmap=True` memory-maps a
    `.safetensors` file instead (see `checkpoint.read_checkpoint_digest` for the risk).
    `model.weights_sha256`: the sha256 of the bytes loaded (None for an unrecorded mapped file).
    """
    path = resolve_weights_path(model_file_path)
    # Ordinary parameters even when called under torch.inference_mode: inference tensors
    # could not be fine-tuned, nor packed for CPU (they keep no version counter).
    with torch.inference_mode(False):
        weights = load_encoder_weights(path, mmap=bool(mmap))
        parsed = ModelOptions.parse(options, weights.config)
        with torch.device("meta"):
            encoder = MatpacEncoder(weights.config)
        state = {k: v.float() for k, v in weights.state_dict.items()}
        encoder.load_state_dict(state, strict=True, assign=True)
        model = MatpacModel(encoder, parsed)
    model.weights_path = str(path)
    model.weights_sha256 = weights.sha256
    model.ignored_keys = weights.ignored_keys
    return model.eval()


def get_timestamp_embeddings(audio: Tensor, model: MatpacModel) -> Tuple[Tensor, Tensor]:
    """Frame embeddings and their centres.

    `audio` `(clips, samples)` float in [-1, 1] at 16 kHz -> embeddings
    `(clips, T, timestamp_embedding_size)` float32 and timestamps `(clips, T)` float32 in ms,
    on `audio`'s device. Column j is centred at 160 j + 87.5 ms; columns centred past the end
    of the clip are left out (a clip shorter than 87.5 ms gets one, at its end). With option
    `timestamp_hop_ms` h, column i is centred at h i + 87.5 ms.
    """
    return _with_timestamps(_frame_features(audio, model), audio, model)


def get_scene_embeddings(audio: Tensor, model: MatpacModel) -> Tensor:
    """Clip embeddings: `(clips, samples)` -> `(clips, scene_embedding_size)` float32, the mean
    of the chosen layer's features over all columns (MATPAC's clip embedding), on MATPAC's own
    160 ms grid whatever `timestamp_hop_ms` says."""
    return _frame_features(audio, model, COLUMN_HOP_MS).mean(dim=1).to(audio.device)


def get_scene_and_timestamp_embeddings(audio: Tensor, model: MatpacModel) -> Tuple[Tensor, Tensor, Tensor]:
    """`(scene, embeddings, timestamps)`, exactly what the two HEAR functions return, with one
    encoder pass when their column grids coincide (`timestamp_hop_ms` 160, the default)."""
    features = _frame_features(audio, model)
    on_scene_grid = model.options.timestamp_hop_ms == COLUMN_HOP_MS
    scene_features = features if on_scene_grid else _frame_features(audio, model, COLUMN_HOP_MS)
    return (scene_features.mean(dim=1).to(audio.device), *_with_timestamps(features, audio, model))


def _with_timestamps(features: Tensor, audio: Tensor, model: MatpacModel) -> Tuple[Tensor, Tensor]:
    """Trim `(clips, columns, dim)` features to the columns centred inside the clip; add their
    centres in ms."""
    n_samples = audio.shape[1]
    hop_samples = model.options.timestamp_hop_ms * SAMPLE_RATE // 1000
    reported = n_reported_columns(n_samples, features.shape[1], hop_samples)
    embeddings = features[:, :reported].contiguous().to(audio.device)
    times = timestamps_ms(n_samples, features.shape[1], hop_samples).to(audio.device)
    return embeddings, times.expand(audio.shape[0], -1).contiguous()


def _frame_features(audio: Tensor, model: MatpacModel, hop_ms: Optional[int] = None) -> Tensor:
    if not isinstance(model, MatpacModel):
        raise TypeError(f"model must come from hear_matpac.load_model(), got {type(model).__name__}")
    check_audio(audio)
    return model.frame_features(audio.to(device=model.device, dtype=torch.float32), hop_ms)


def check_audio(audio: Tensor) -> None:
    """Reject what HEAR audio cannot be, saying what is wrong and what to do."""
    if not isinstance(audio, Tensor):
        raise TypeError(
            f"audio must be a torch.Tensor of shape (n_sounds, n_samples), got {type(audio).__name__}; "
            "convert with torch.as_tensor(audio, dtype=torch.float32)"
        )
    if audio.ndim != 2:
        hint = " (a single clip: use audio.unsqueeze(0))" if audio.ndim == 1 else ""
        raise ValueError(f"audio must be 2-D (n_sounds, n_samples), got shape {tuple(audio.shape)}{hint}")
    if not audio.is_floating_point():
        raise TypeError(
            f"audio must be floating point in [-1, 1], got {audio.dtype}; "
            "scale integer PCM to [-1, 1] first, e.g. audio.float() / 32768 for int16"
        )
    if audio.shape[1] == 0:
        raise ValueError("audio has zero samples; HEAR clips must hold at least one sample")
    finite = torch.isfinite(audio).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise ValueError(f"audio contains NaN or Inf in clip(s) {shown}; clean or drop those clips")
