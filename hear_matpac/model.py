"""The HEAR model object: front end + windowed encoder, producing every column's features."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .config import COLUMN_HOP_MS, SAMPLE_RATE
from .encoder import MatpacEncoder
from .frontend import LogMel
from .options import ModelOptions
from .packed_linear import checked_packing, set_weight_packing
from .precision import encoder_autocast, float32_context, store_for_autocast
from .tf32 import tf32_enabled
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
        set_weight_packing(self.encoder, options.cpu_packed_weights)
        self.scene_embedding_size = encoder.config.feature_dim
        self.timestamp_embedding_size = encoder.config.feature_dim

    @property
    def device(self) -> torch.device:
        return self.encoder.cls_token.device

    @torch.no_grad()
    def frame_features(self, audio: Tensor, timestamp_hop_ms: Optional[int] = None) -> Tensor:
        """Every column's features, trailing padded columns included: `(clips, columns, dim)`
        float32, from `(clips, samples)` audio already checked by the API.

        Columns are `timestamp_hop_ms` apart (default: the option; COLUMN_HOP_MS for MATPAC's
        own grid), cut into windows as the `window_seconds` and `window_overlap` options say.
        Only the encoder runs in `options.precision`; at most `options.max_windows` full-length
        windows' worth of frames are encoded at once.
        """
        autocast = encoder_autocast(self.options.precision, self.device)  # checked before any work
        hop_ms = self.options.timestamp_hop_ms if timestamp_hop_ms is None else timestamp_hop_ms
        window_frames = self.options.window_frames(self.encoder.config)
        # TF32 off (the front end always, the encoder unless precision="tf32"), restored after
        with checked_packing(self.encoder), tf32_enabled(self.options.precision == "tf32"):
            with float32_context(audio.device), tf32_enabled(False):
                mel = self.frontend(audio)  # (clips, n_mels, frames)
            plan = plan_windows(
                mel.shape[-1], window_frames, passes=COLUMN_HOP_MS // hop_ms, overlap=self.options.window_overlap
            )
            # max_windows counts full-length windows; shorter ones share the same frame budget
            per_batch = max(1, self.options.max_windows * self.encoder.config.n_frames // window_frames)
            rows = torch.empty(  # every clip's columns, then a spare row (see `stitch`)
                audio.shape[0] * plan.n_columns + 1, self.timestamp_embedding_size,
                dtype=torch.float32, device=audio.device,
            )  # fmt: skip
            for windows, clip, dest in iter_batches(mel, plan, per_batch):
                with autocast:
                    features = self.encoder(windows, self.options.layer)
                stitch(rows, features.float(), clip, dest, plan.n_columns)
        return rows[:-1].view(audio.shape[0], plan.n_columns, -1)

    def forward(self, audio: Tensor) -> Tensor:
        return self.frame_features(audio)
