"""The HEAR 2021 API: `load_model`, `get_timestamp_embeddings`, `get_scene_embeddings`; and
`embed_packed`: those embeddings for many clips of different lengths in one call."""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .weights.read import PathLike, load_encoder_weights
from .config import WIN_LENGTH
from .encoder import MatpacEncoder
from .finite_checks import ClipRows, verify_call, verify_packed
from .model import MatpacModel
from .packing import PackedClips, length_blocks
from .io import InputError
from .options import ModelOptions
from .timestamps import n_reported_columns, timestamps_ms
from .weights.locate import resolve_weights_path
from .windows import upload


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """`auto` -> cuda when available, else cpu; otherwise `name` as a torch device, checked
    before a model is loaded. `InputError` (one line, naming `flag`) for a name torch does not
    know, or for CUDA where there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        problem = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"{flag} {name!r} is not a torch device ({problem}); use e.g. cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{flag} {name}: CUDA is not available here; use {flag} cpu")
    return device


def load_model(model_file_path: PathLike = "", *, mmap: bool = False, **options: Any) -> MatpacModel:
    """Load a MATPAC checkpoint as a HEAR model, on CPU, in eval mode.

    `model_file_path`: a `.pt` / `.safetensors` file or a published name; empty: as
    `weights.locate.resolve_weights_path` says. `options`: see `ModelOptions` (`layer`, `max_windows`, `timestamp_hop_ms`,
    `window_overlap`, `window_seconds`, `precision`, `cpu_packed_weights`). The weights are read
    into memory, so the model does not change when the file does; `mmap=True` memory-maps a
    `.safetensors` file instead (see `weights.read.read_checkpoint_digest` for the risk).
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
    model.weights_path, model.weights_sha256, model.ignored_keys = str(path), weights.sha256, weights.ignored_keys
    return model.eval()


def get_timestamp_embeddings(audio: Tensor, model: MatpacModel) -> Tuple[Tensor, Tensor]:
    """Frame embeddings and their centres.

    `audio` `(clips, samples)` float in [-1, 1] at 16 kHz -> embeddings
    `(clips, T, timestamp_embedding_size)` float32 and timestamps `(clips, T)` float32 in ms,
    on `audio`'s device. Column j is centred at 160 j + 87.5 ms; columns centred past the end
    of the clip are left out (a clip shorter than 87.5 ms gets one, at its end). With option
    `timestamp_hop_ms` h, column i is centred at h i + 87.5 ms. `ValueError` names the clips
    whose audio (as float32) or embeddings are not finite.
    """
    x = _model_input(audio, model)
    embeddings, times = _with_timestamps(model.column_features(x), audio, model)
    verify_call(model, x, embeddings)
    return embeddings.to(audio.device), times


def get_scene_embeddings(audio: Tensor, model: MatpacModel) -> Tensor:
    """Clip embeddings: `(clips, samples)` -> `(clips, scene_embedding_size)` float32, the mean
    of the chosen layer's features over all columns (MATPAC's clip embedding), on MATPAC's own
    160 ms grid whatever `timestamp_hop_ms` says. Non-finite audio or embeddings: `ValueError`."""
    x = _model_input(audio, model)
    scene = model.column_features(x, native_grid=True).mean(dim=1)
    verify_call(model, x, scene)
    return scene.to(audio.device)


def get_scene_and_timestamp_embeddings(audio: Tensor, model: MatpacModel) -> Tuple[Tensor, Tensor, Tensor]:
    """`(scene, embeddings, timestamps)`, exactly what the two HEAR functions return, with one
    encoder pass when their column grids coincide (`timestamp_hop_ms` 160, the default)."""
    x = _model_input(audio, model)
    features = model.column_features(x)
    scene = (features if model.options.passes == 1 else model.column_features(x, native_grid=True)).mean(dim=1)
    embeddings, times = _with_timestamps(features, audio, model)
    verify_call(model, x, scene, embeddings)
    return scene.to(audio.device), embeddings.to(audio.device), times


class ClipEmbeddings(NamedTuple):
    """One clip's outputs of `embed_packed`: scene `(scene_embedding_size,)`; with timestamps,
    embeddings `(T, timestamp_embedding_size)` and timestamps `(T,)` in ms, else None."""

    scene: Tensor
    embeddings: Optional[Tensor]
    timestamps: Optional[Tensor]


def embed_packed(audio: Tensor, lengths: Sequence[int], model: MatpacModel,
                 timestamps: bool = False) -> List[ClipEmbeddings]:  # fmt: skip
    """Embed clips of different lengths in one call: `audio` `(samples,)` float holds them end
    to end (`torch.cat(clips)`), clip i `lengths[i]` samples long. Returns, per clip, what
    `get_scene_embeddings` (and with `timestamps`, `get_timestamp_embeddings`) give for that
    clip alone, on `audio`'s device (views of one tensor per output kind).

    Windows of one length from all the clips share encoder micro-batches, so a corpus of mixed
    lengths runs as few encoder calls as one of equal lengths; no window is padded. The audio
    travels to the model's device in one copy (from pinned memory without waiting, on CUDA:
    pin it to overlap) and each output kind comes back in one. `ValueError` names the clips
    (positions in `lengths`) whose audio or embeddings are not finite, with one device read.
    """
    lengths = _check_packed(audio, lengths, model)
    if audio.device.type == "cpu":  # cast first: half the bytes to move
        x = upload(audio.to(torch.float32), model.device)
    else:
        x = audio.to(device=model.device, dtype=torch.float32)
    hop = model.options.hop_samples
    features, columns = model.packed_column_features(x, lengths, native_grid=not timestamps)
    if timestamps and model.options.passes > 1:  # the scene on MATPAC's own grid: a second pass
        native, native_columns = model.packed_column_features(x, lengths, native_grid=True)
    else:
        native, native_columns = features, columns
    scene = _scene_means(native, native_columns, length_blocks(lengths))
    if not timestamps:
        verify_packed(model, x, lengths, scene)
        scene = scene.to(audio.device)
        return [ClipEmbeddings(row, None, None) for row in scene]
    times_of = {n: timestamps_ms(n, c, hop) for n, c in dict(zip(lengths, columns)).items()}  # per length
    reported = [len(times_of[n]) for n in lengths]
    verify_packed(model, x, lengths, scene, ClipRows(features, columns, reported))
    scene, features = scene.to(audio.device), features.to(audio.device)
    all_times = upload(torch.cat([times_of[n] for n in lengths]), audio.device).split(reported)
    offsets = itertools.accumulate(columns[:-1], initial=0)
    return [
        ClipEmbeddings(row, features[o : o + r], t)
        for row, o, r, t in zip(scene, offsets, reported, all_times)
    ]


def _scene_means(features: Tensor, columns: Sequence[int], blocks: Dict[int, List[int]]) -> Tensor:
    """`(clips, dim)`: each clip's mean over its rows of `features` `(sum of columns, dim)`
    (clip i's `columns[i]` rows end to end, in clip order), taken as the HEAR functions take it,
    `.mean(dim=1)` over `(clips, columns, dim)`: per block of clips of one length (`blocks`:
    length -> clips), their rows as `packing.PackedClips` takes them (a view where the clips are
    consecutive). Ops per block."""
    rows = PackedClips(features, columns)
    order = [i for members in blocks.values() for i in members]
    means = [rows.block(members).mean(dim=1) for members in blocks.values()]
    means = means[0] if len(means) == 1 else torch.cat(means)
    if np.all(np.diff(order) > 0):  # already in clip order
        return means
    back = torch.from_numpy(np.argsort(order, kind="stable").astype(np.int64))
    return means.index_select(0, upload(back, features.device))  # back in clip order (one copy)


def _check_packed(audio: Tensor, lengths: Sequence[int], model: MatpacModel) -> List[int]:
    """`embed_packed`'s input checked (as `check_audio` does for a call): the lengths as ints."""
    if not isinstance(model, MatpacModel):
        raise TypeError(f"model must come from hear_matpac.load_model(), got {type(model).__name__}")
    if not isinstance(audio, Tensor):
        raise TypeError(f"audio must be a torch.Tensor holding the clips end to end, got {type(audio).__name__}")
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D, the clips end to end (torch.cat(clips)), got shape {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise TypeError(f"audio must be floating point in [-1, 1], got {audio.dtype}")
    lengths = [int(n) for n in lengths]
    if not lengths:
        raise ValueError("no clips: lengths is empty; pass at least one clip")
    if min(lengths) < 1:
        raise ValueError(f"every clip must hold at least one sample, got lengths {lengths[:10]}")
    if sum(lengths) != audio.shape[0]:
        raise ValueError(f"the lengths add up to {sum(lengths)} samples and audio holds {audio.shape[0]}")
    model.check_audio_device(audio.device)
    return lengths


def _with_timestamps(features: Tensor, audio: Tensor, model: MatpacModel) -> Tuple[Tensor, Tensor]:
    """Trim `(clips, columns, dim)` features to the columns centred inside the clip (left on
    their device); add their centres in ms, on `audio`'s device."""
    n_samples = audio.shape[1]
    hop_samples = model.options.hop_samples
    reported = n_reported_columns(n_samples, features.shape[1], hop_samples)
    embeddings = features[:, :reported].contiguous()
    times = upload(timestamps_ms(n_samples, features.shape[1], hop_samples), audio.device)
    return embeddings, times.expand(audio.shape[0], -1).contiguous()


def column_features(audio: Tensor, model: MatpacModel, native_grid: bool = False) -> Tensor:
    """Every column's features, trailing padded columns included, `(clips, columns, dim)` on the
    model's device: the encoder's work without timestamps, trimming or the finiteness check
    (for benchmarks and tools that time or inspect that work)."""
    return model.column_features(_model_input(audio, model), native_grid)


def _model_input(audio: Tensor, model: MatpacModel) -> Tensor:
    """`audio` checked (`check_audio`) and converted to float32 on the model's device."""
    if not isinstance(model, MatpacModel):
        raise TypeError(f"model must come from hear_matpac.load_model(), got {type(model).__name__}")
    check_audio(audio)
    model.check_audio_device(audio.device)
    return audio.to(device=model.device, dtype=torch.float32)


def check_audio(audio: Tensor) -> None:
    """Reject what HEAR audio cannot be, saying what is wrong and what to do. (Finiteness is
    checked after the call, on the device: `verify_call`.)"""
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
    n_sounds, n_samples = audio.shape
    if n_sounds == 0:
        raise ValueError(f"audio holds no sounds: shape {tuple(audio.shape)}; pass at least one clip")
    if n_samples == 0:
        raise ValueError("audio has zero samples; HEAR clips must hold at least one sample")
    if n_samples <= _MAX_CHANNELS and n_sounds >= WIN_LENGTH:
        raise ValueError(
            f"audio of shape {tuple(audio.shape)} looks like (n_samples, channels), as soundfile.read "
            "returns, not HEAR's (n_sounds, n_samples): transpose it (audio.T, one clip per channel) "
            "or mix to mono (audio.mean(dim=1).unsqueeze(0))"
        )


# A second dimension this small under a first of at least one STFT window is a channel count.
_MAX_CHANNELS = 8
