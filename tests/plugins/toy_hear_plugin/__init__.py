"""A tiny HEAR plugin for the tests, not hear_matpac: log band energies of 64 ms frames (a
fixed filterbank, nothing trained), so that heareval's predictions can learn something from it.

`load_model()` takes no weights; `load_model(PATH)` reads band gains from a text file (one
number per band), as a plugin with a weights file would. Every call is recorded in
`$TOY_RECORDS/<pid>.json` (what `load_model` received) when that variable is set.

The option `bad` (a model option, so the validator, which passes none, sees a good model) makes
the embeddings wrong on purpose: "nan", "size" (one value fewer than declared), "float64",
"timestamps" (decreasing).
"""
import json
import os
import pathlib
import sys

import numpy as np
import torch

SAMPLE_RATE = 16000
BANDS = 8
WINDOW = 1024
HOP = 400  # 25 ms between timestamps


class ToyModel(torch.nn.Module):
    sample_rate = SAMPLE_RATE
    scene_embedding_size = 2 * BANDS
    timestamp_embedding_size = BANDS

    def __init__(self, gains: np.ndarray, bad: str = "") -> None:
        super().__init__()
        edges = np.geomspace(60.0, 8000.0, BANDS + 1)
        freqs = np.fft.rfftfreq(WINDOW, 1.0 / SAMPLE_RATE)
        bands = (freqs[None, :] >= edges[:-1, None]) & (freqs[None, :] < edges[1:, None])
        self.register_buffer("bands", torch.from_numpy(bands.astype(np.float32)))
        self.register_buffer("gains", torch.as_tensor(gains, dtype=torch.float32).reshape(BANDS))
        self.register_buffer("window", torch.hann_window(WINDOW))
        self.bad = bad


def _record(received: dict) -> None:
    folder = os.environ.get("TOY_RECORDS")
    if folder:
        tool = "validate" if "hearvalidator.validate" in sys.modules else "embed"
        received = {"tool": tool, **received}
        (pathlib.Path(folder) / f"{tool}-{os.getpid()}.json").write_text(json.dumps(received))


def load_model(model_file_path: str = "", **options) -> ToyModel:
    _record({"args": [model_file_path] if model_file_path else [], "options": options})
    gains = np.loadtxt(model_file_path) if model_file_path else np.ones(BANDS)
    return ToyModel(gains, **options)


def _frames(audio: torch.Tensor, model: ToyModel):
    audio = audio.float()
    if audio.shape[1] < WINDOW:
        audio = torch.nn.functional.pad(audio, (0, WINDOW - audio.shape[1]))
    frames = audio.unfold(1, WINDOW, HOP)  # (clips, T, WINDOW)
    power = torch.fft.rfft(frames * model.window, dim=-1).abs() ** 2
    energy = torch.log(power @ model.bands.T + 1e-6) * model.gains
    steps = torch.arange(frames.shape[1], device=audio.device, dtype=torch.float32)
    timestamps = (steps * HOP + WINDOW / 2) * (1000.0 / SAMPLE_RATE)
    return energy, timestamps.expand(audio.shape[0], -1)


def _spoil(embeddings: torch.Tensor, bad: str) -> torch.Tensor:
    if bad == "nan":
        embeddings = embeddings.clone()
        embeddings[..., 0] = float("nan")
    elif bad == "size":
        embeddings = embeddings[..., :-1]
    elif bad == "float64":
        embeddings = embeddings.double()
    return embeddings


def get_timestamp_embeddings(audio: torch.Tensor, model: ToyModel):
    embeddings, timestamps = _frames(audio, model)
    if model.bad == "timestamps":
        timestamps = timestamps.flip(-1)
    return _spoil(embeddings, model.bad), timestamps


def get_scene_embeddings(audio: torch.Tensor, model: ToyModel) -> torch.Tensor:
    embeddings, _ = _frames(audio, model)
    return _spoil(torch.cat([embeddings.mean(1), embeddings.amax(1)], dim=1), model.bad)
