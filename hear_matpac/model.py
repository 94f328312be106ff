"""The HEAR model object: front end + windowed encoder, producing every column's features."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import SAMPLE_RATE
from .encoder import MatpacEncoder
from .frontend import LogMel
from .options import ModelOptions
from .precision import encoder_autocast, float32_context, store_for_autocast
from .windows import iter_batches, plan_windows, stitch


class MatpacModel(nn.Module):
    """MATPAC wrapped for HEAR: `(clips, samples)` audio -> `(clips, columns, dim)` features.

    HEAR attributes: `sample_rate`, `scene_embedding_size`, `timestamp_embedding_size`.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(self, encoder: MatpacEncoder, options: ModelOptions) -> None:
        super().__init__()
        self.frontend = LogMel()
        self.encoder = encoder
        self.options = options
        store_for_autocast(self.encoder, options.precision)
        self.scene_embedding_size = encoder.config.feature_dim
        self.timestamp_embedding_size = encoder.config.feature_dim

    @property
    def device(self) -> torch.device:
        return self.encoder.cls_token.device

    @torch.no_grad()
    def frame_features(self, audio: Tensor) -> Tensor:
        """Every column's features, trailing padded columns included: `(clips, columns, dim)`
        float32, from `(clips, samples)` audio already checked by the API. Only the encoder
        runs in `options.precision`; at most `options.max_windows` windows are encoded at once."""
        autocast = encoder_autocast(self.options.precision, self.device)  # checked before any work
        with float32_context(audio.device):
            mel = self.frontend(audio)  # (clips, n_mels, frames)
        plan = plan_windows(mel.shape[-1], self.encoder.config.n_frames)
        out = torch.empty(
            audio.shape[0], plan.n_columns, self.timestamp_embedding_size,
            dtype=torch.float32, device=audio.device,
        )  # fmt: skip
        for windows, clip, dest in iter_batches(mel, plan, self.options.max_windows):
            with autocast:
                features = self.encoder(windows, self.options.layer)
            stitch(out, features.float(), clip, dest)
        return out

    def forward(self, audio: Tensor) -> Tensor:
        return self.frame_features(audio)
