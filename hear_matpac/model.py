"""The HEAR model object: front end + windowed encoder, producing every column's features."""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .batching import frame_budget, warn_out_of_memory, windows_per_batch
from .config import SAMPLE_RATE
from .encoder import MatpacEncoder
from .frontend import LogMel, n_stft_frames
from .options import ParsedOptions
from .packing import PackedClips, sample_blocks
from .packed_linear import checked_packing, set_weight_packing
from .precision import encoder_autocast, float32_context, store_for_autocast
from .tf32 import tf32_enabled
from .windows import (GroupIndex, WindowPlan, cut_windows, frames_first, frames_packed, index_call, index_packed,
                      plan_windows, stitch)


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
        # a compiled encoder multiplies as Inductor plans it (MKL's packed GEMM does not compile)
        set_weight_packing(self.encoder, options.cpu_packed_weights and not options.compile)
        self.scene_embedding_size = encoder.config.feature_dim
        self.timestamp_embedding_size = encoder.config.feature_dim
        self._learnt_budget: Optional[int] = None  # frames per encoder call after running out of memory
        self._warned_oom = False
        self._warned_device = False
        # options.compile: the encoder's forward through torch.compile (a function, not a
        # submodule: the state dict keeps its keys); compiled at the first call of each shape family
        self._compiled = torch.compile(encoder.forward, dynamic=True) if options.compile else None

    @property
    def device(self) -> torch.device:
        return self.encoder.cls_token.device

    @torch.no_grad()
    def column_features(self, audio: Tensor, native_grid: bool = False) -> Tensor:
        """Every column's features, trailing padded columns included: `(clips, columns, dim)`
        float32, from `(clips, samples)` audio already checked by the API.

        Columns are the `timestamp_hop_ms` option apart (`native_grid`: MATPAC's own 160 ms
        grid, one pass), cut into windows as the `window_seconds` and `window_overlap` options say.
        Only the encoder runs in `options.precision`; each window length is encoded in batches
        sized by `batching.frame_budget`.
        """
        autocast = encoder_autocast(self.options.precision, self.device)  # checked before any work
        passes = 1 if native_grid else self.options.passes
        # TF32 off (the front end always, the encoder unless precision="tf32"), restored after
        with checked_packing(self.encoder), tf32_enabled(self.options.precision == "tf32"):
            with float32_context(audio.device), tf32_enabled(False):
                mel = self.frontend(audio)  # (clips, n_mels, frames)
            plan = plan_windows(
                mel.shape[-1], self.options.window_frames, passes=passes, overlap=self.options.window_overlap
            )
            groups = index_call(plan, audio.shape[0], audio.device)  # one host-to-device copy
            padded = frames_first(mel, plan)
            out = torch.empty(
                audio.shape[0] * plan.n_columns, self.timestamp_embedding_size, dtype=torch.float32, device=audio.device
            )  # fmt: skip
            self._encode_groups(padded, groups, autocast, out)
        return out.view(audio.shape[0], plan.n_columns, -1)

    @torch.no_grad()
    def packed_column_features(
        self, audio: Tensor, lengths: Sequence[int], native_grid: bool = False
    ) -> Tuple[Tensor, List[int]]:
        """`column_features` of clips of different lengths in one go: `audio` `(samples,)` holds
        the clips end to end, clip i `lengths[i]` samples long (checked by the API). Returns
        every clip's columns end to end, `(sum of columns, dim)` float32, and each clip's column
        count.

        Each clip's log-mel and windows are those of a call with that clip alone: clips of one
        length share front-end calls (`packing.BLOCK_SAMPLES` at most each) and one plan, so the ops
        dispatched grow with the distinct lengths and micro-batches, not with the clips; windows
        of one length from all clips share micro-batches (windows are encoded independently, so
        the batch-mates do not change a window's features).
        """
        autocast = encoder_autocast(self.options.precision, self.device)
        passes = 1 if native_grid else self.options.passes
        blocks = sample_blocks(lengths)  # (sample length, its clips): one front-end call each
        clips = PackedClips(audio, lengths)
        plans: dict[int, WindowPlan] = {}  # frames -> plan: clips of one length are cut alike
        for length, _ in blocks:
            frames = n_stft_frames(length)
            if frames not in plans:
                plans[frames] = plan_windows(
                    frames, self.options.window_frames, passes=passes, overlap=self.options.window_overlap
                )
        block_plans = [plans[n_stft_frames(length)] for length, _ in blocks]
        clip_plans: List[WindowPlan] = [block_plans[0]] * len(lengths)
        frame_offsets = [0] * len(lengths)
        offset = 0
        for (_, members), plan in zip(blocks, block_plans):  # the layout frames_packed makes
            for i in members:
                clip_plans[i], frame_offsets[i] = plan, offset
                offset += plan.padded_frames
        with checked_packing(self.encoder), tf32_enabled(self.options.precision == "tf32"):
            with float32_context(audio.device), tf32_enabled(False):
                # (clips_k, n_mels, frames_k) per length: a clip's log-mel is that of a call with it alone
                mels = [self.frontend(clips.block(members)) for _, members in blocks]
            groups = index_packed(clip_plans, frame_offsets, audio.device)  # one host-to-device copy
            padded = frames_packed(mels, block_plans)
            del mels
            columns = [plan.n_columns for plan in clip_plans]
            out = torch.empty(sum(columns), self.timestamp_embedding_size, dtype=torch.float32, device=audio.device)
            self._encode_groups(padded, groups, autocast, out)
        return out, columns

    def _encode_groups(self, padded: Tensor, groups: Sequence[GroupIndex], autocast, out: Tensor) -> None:
        """Encode every window of `groups` into `out`, each group in micro-batches sized by the
        frame budget (a budget lowered by an out-of-memory error holds for the groups after it)."""
        budget = frame_budget(self.encoder.config, self.options.max_windows, self.options.precision, out.device)
        for group in groups:
            cap = budget if self._learnt_budget is None else min(budget, self._learnt_budget)
            self._encode_group(padded, group, windows_per_batch(cap, group.frames), autocast, out)

    def _encode_group(self, padded: Tensor, group: GroupIndex, size: int, autocast, out: Tensor) -> None:
        """Encode `group`'s windows `size` at a time into `out`; a batch that runs out of device
        memory is retried in halves (windows are encoded independently: outputs unchanged)."""
        lo = 0
        while lo < group.n_windows:
            hi = min(lo + size, group.n_windows)
            windows = cut_windows(padded, group, lo, hi).to(self.encoder.cls_token.dtype)  # model.half()
            try:
                with autocast:
                    features = (self._compiled or self.encoder)(windows, self.options.layer)
            except torch.cuda.OutOfMemoryError:
                if hi - lo == 1:
                    raise
                size = (hi - lo) // 2
                self._learnt_budget = size * group.frames
                if not self._warned_oom:
                    self._warned_oom = True
                    warn_out_of_memory(hi - lo, group.frames, size)
                del windows
                continue  # retried outside the handler, so the failed batch's memory is freed
            except RuntimeError as err:
                dtype = self.encoder.cls_token.dtype
                if dtype == torch.float32 or "not implemented for" not in str(err):
                    raise
                raise RuntimeError(
                    f"the encoder's weights are {dtype} (model.half() or .to(dtype)), which this torch cannot "
                    f"run on {padded.device} ({str(err).splitlines()[0]}); keep the model in float32 and load it "
                    "with the precision option instead (precision='bf16', or 'fp16' on CUDA)"
                ) from None
            del windows
            stitch(out, features.float(), group, lo, hi)
            del features  # freed before the next batch is cut
            lo = hi

    def check_audio_device(self, device: torch.device) -> None:
        """Warn once per model when audio on an accelerator is embedded by a model on the CPU."""
        problem = audio_device_problem(device, self.device)
        if problem is not None and not self._warned_device:
            self._warned_device = True
            warnings.warn(problem, UserWarning, stacklevel=4)

    def forward(self, audio: Tensor) -> Tensor:
        return self.column_features(audio)


def audio_device_problem(audio: torch.device, model: torch.device) -> Optional[str]:
    """What to say when audio on an accelerator meets a model on the CPU (it would run there,
    slowly, with copies both ways), else None."""
    if audio.type in ("cpu", "meta") or model.type != "cpu":
        return None
    return (
        f"the audio is on {audio} and the model on the CPU: embedding runs on the CPU (and outputs are "
        f"copied back to {audio}); move the model with model.to({str(audio)!r}). Said once per model."
    )
