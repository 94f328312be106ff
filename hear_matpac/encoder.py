"""MATPAC's ViT encoder: patch embedding, cut positional table, pre-norm transformer blocks.

Parameter names follow the published checkpoint (after its `student_encoder.` prefix is
removed), so a checkpoint loads with `strict=True` and no renaming.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .config import FREQ_PATCHES, LAYER_NORM_EPS, MLP_RATIO, PATCH, EncoderConfig
from .packed_linear import PackedLinear


class PatchEmbed(nn.Module):
    """`(batch, 1, n_freq, frames)` log-mel -> `(batch, FREQ_PATCHES * columns, dim)` tokens,
    frequency-major (token index = f * columns + j)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: Tensor) -> Tensor:
        low = _cpu_low_precision(x, self.proj.weight)
        if low is None:
            return self.proj(x).flatten(2).transpose(1, 2)
        # oneDNN's bf16 convolution on CPU can read past an input one patch wide and return
        # garbage (NaN, 1e37). The same numbers, safely: operands rounded to the low precision
        # as autocast would, products summed in float32, the result rounded back.
        bias = self.proj.bias
        with torch.autocast("cpu", enabled=False):
            y = nn.functional.conv2d(
                x.to(low).float(), self.proj.weight.to(low).float(),
                None if bias is None else bias.to(low).float(), stride=self.proj.stride,
            )  # fmt: skip
        return y.to(low).flatten(2).transpose(1, 2)


def _cpu_low_precision(x: Tensor, weight: Tensor) -> Optional[torch.dtype]:
    """The low precision a CPU convolution of `x` would run in (weights stored in it, or
    CPU autocast), or None for float32 or another device."""
    if x.device.type != "cpu":
        return None
    if weight.dtype != torch.float32:
        return weight.dtype
    try:  # torch >= 2.4 names the device; the older, CPU-only names are deprecated since
        enabled, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except (TypeError, AttributeError):
        enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return dtype if enabled and dtype != torch.float32 else None


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection: `(batch, tokens, dim)` in and out."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = PackedLinear(dim, dim * 3)
        self.proj = PackedLinear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, tokens, head_dim)
        x = nn.functional.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer perceptron with exact GELU: `(batch, tokens, dim)` in and out."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = PackedLinear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = PackedLinear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: `(batch, tokens, dim)` in and out."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, dim * MLP_RATIO)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MatpacEncoder(nn.Module):
    """MATPAC's ViT, returning one layer's frame features.

    `forward(mel, layer)`: `(batch, 1, n_freq, frames)` with `frames` a multiple of 16 and at
    most `config.n_frames` -> `(batch, frames // 16, FREQ_PATCHES * dim)`: for each column,
    its frequency tokens concatenated (f-major). Only blocks up to `layer` run; the final
    LayerNorm applies to the last block's output only, as in MATPAC.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + FREQ_PATCHES * config.max_columns, d))
        self.patch_embed = PatchEmbed(d)
        self.blocks = nn.ModuleList(Block(d, config.num_heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)

    def forward(self, mel: Tensor, layer: int) -> Tensor:
        columns = mel.shape[-1] // PATCH
        x = self.patch_embed(mel)
        pos = self.pos_embed[:, 1:].reshape(1, FREQ_PATCHES, self.config.max_columns, -1)
        x = x + pos[:, :, :columns].reshape(1, FREQ_PATCHES * columns, -1)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks[: layer + 1]:
            x = block(x)
        if layer == self.config.depth - 1:
            x = self.norm(x)
        tokens = x[:, 1:].reshape(x.shape[0], FREQ_PATCHES, columns, -1)  # (b, f, t, d)
        return tokens.transpose(1, 2).flatten(2)  # (b, t, f * d)
