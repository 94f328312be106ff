"""The HEAR model object: front end + windowed encoder, producing every column's features."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .config import SAMPLE_RATE
from .encoder import MatpacEncoder
from .frontend import LogMel
from .options import ParsedOptions
from .packed_linear import checked_packing, set_weight_packing
from .precision import encoder_autocast, float32_context, store_for_autocast
from .windows import iter_batches, plan_windows, stitch


class MatpacModel(nn.Module):
    """MATPAC wrapped for HEAR: `(clips, samples)` audio -> `(clips, columns, dim)` features.

    HEAR attributes: `sample_rate`, `scene_embedding_size`, `timestamp_embedding_size`.
    """

    sample_rate: int = SAMPLE_RATE
    weights_path: str = ""  # the checkpoint file loaded (set by `load_model`)
    weights_sha256: Optional[str] = None  # sha256 of the bytes loaded; None for a mapped, unrecorded file
    ignored_keys: Tuple[str, ...] = ()  # checkpoint keys that are not the encoder's (head, optimiser...)

    def __init__(self, encoder: MatpacEncoder, options: ParsedOptions) -> None:
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
    def column_features(self, audio: Tensor, native_grid: bool = False) -> Tensor:
        """Every column's features, trailing padded columns included: `(clips, columns, dim)`
        float32, from `(clips, samples)` audio already checked by the API.

        Columns are the `timestamp_hop_ms` option apart (`native_grid`: MATPAC's own 160 ms
        grid, one pass), cut into windows as the `window_seconds` and `window_overlap` options say.
        Only the encoder runs in `options.precision`; at most `options.max_windows` full-length
        windows' worth of frames are encoded at once.
        """
        autocast = encoder_autocast(self.options.precision, self.device)  # checked before any work
        passes = 1 if native_grid else self.options.passes
        with checked_packing(self.encoder):  # packed copies checked against the weights once per call
            with float32_context(audio.device):
                mel = self.frontend(audio)  # (clips, n_mels, frames)
            plan = plan_windows(
                mel.shape[-1], self.options.window_frames, passes=passes, overlap=self.options.window_overlap
            )
            rows = torch.empty(  # every clip's columns, then a spare row (see `stitch`)
                audio.shape[0] * plan.n_columns + 1, self.timestamp_embedding_size,
                dtype=torch.float32, device=audio.device,
            )  # fmt: skip
            for windows, clip, dest in iter_batches(mel, plan, self.options.windows_per_batch):
                with autocast:
                    features = self.encoder(windows, self.options.layer)
                stitch(rows, features.float(), clip, dest, plan.n_columns)
        return rows[:-1].view(audio.shape[0], plan.n_columns, -1)

    def forward(self, audio: Tensor) -> Tensor:
        return self.column_features(audio)
