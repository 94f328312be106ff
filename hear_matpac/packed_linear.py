"""Linear layers that multiply by a copy of their weight kept in MKL's packed GEMM layout.

MKL's sgemm repacks the weight matrix on every call; for the encoder's short token matrices
(a few hundred rows, K = 768) that repacking is a sizeable share of each GEMM. Packing once and
reusing the packed copy (what torch.compile's freezing does) makes the whole ViT-Base encoder
about 1.1x faster on CPU with the same numbers, for one more copy of the weights in memory.

It is used only for CPU float32 inference: on CUDA, under bf16 autocast or bf16-stored
weights, with autograd, or with a torch built without MKL, the layer is a plain `nn.Linear`.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor, nn

# MKL chooses its packed layout for this many rows; the layout then serves any row count.
# 512 is fast from 31 to 3100 rows for ViT-Base's shapes, where 1024 or more is slow for
# K = 3072 (benchmarks/packed_gemm.py).
PACK_ROWS_HINT = 512


@functools.lru_cache(maxsize=None)
def packing_available() -> bool:
    """Whether this torch has MKL's packed linear ops and they agree with `F.linear` on a
    probe whose row count differs from the packing hint (checked once per process)."""
    if not torch.backends.mkl.is_available() or not hasattr(torch.ops, "mkl"):
        return False
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=gen)
    bias = torch.randn(48, generator=gen)
    x = torch.randn(37, 64, generator=gen)
    try:
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, PACK_ROWS_HINT)
        out = torch.ops.mkl._mkl_linear(x, packed, weight, bias, x.shape[0])
    except (AttributeError, RuntimeError):
        return False
    return bool(torch.allclose(out, nn.functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5))


class PackedLinear(nn.Linear):
    """`nn.Linear` (same parameters, same state-dict keys) that, while `pack` is on, runs CPU
    float32 inference against a packed copy of its weight: `(..., in_features)` ->
    `(..., out_features)`.

    The packed copy is made on first use and made again whenever the weight is replaced or
    changed in place or the thread count changes, and dropped when the layer is moved (`.to()`)
    or copied; it is not a parameter or buffer, so it never appears in a state dict.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs) -> None:
        super().__init__(in_features, out_features, bias, **kwargs)
        self.pack = False
        self._packed: Optional[tuple[tuple[int, int, int], Tensor]] = None

    def forward(self, x: Tensor) -> Tensor:
        if self._weight_packable() and self._call_packable(x):
            rows = x.reshape(-1, self.in_features).contiguous()
            out = torch.ops.mkl._mkl_linear(rows, self._packed_weight(), self.weight, self.bias, rows.shape[0])
            return out.view(*x.shape[:-1], self.out_features)
        return super().forward(x)

    def prepack(self) -> None:
        """Make the packed copy now if CPU float32 calls will use it."""
        if self._weight_packable():
            self._packed_weight()

    def _weight_packable(self) -> bool:
        weight = self.weight
        return (
            self.pack
            and weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and not weight.is_inference()  # no version counter: in-place changes would go unseen
            and packing_available()
        )

    def _call_packable(self, x: Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.numel() > 0
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and not _cpu_autocast_enabled()
        )

    def _packed_weight(self) -> Tensor:
        weight = self.weight
        key = (weight.data_ptr(), weight._version, torch.get_num_threads())
        if self._packed is not None and self._packed[0] == key:
            return self._packed[1]
        self._packed = None  # free the stale copy before making the new one
        with torch.no_grad():
            packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), PACK_ROWS_HINT)
        self._packed = (key, packed)
        return packed

    def _apply(self, *args, **kwargs):
        self._packed = None  # `.to()`, `.cuda()`, `.half()`...: the weight is about to move
        return super()._apply(*args, **kwargs)

    def __getstate__(self) -> dict:
        # MKL's packed data must not be copied to another address: copies and pickles of
        # the layer leave it behind and pack again on first use.
        state = self.__dict__.copy()
        state["_packed"] = None
        return state


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # a torch whose is_autocast_enabled takes no device type
        return torch.is_autocast_cpu_enabled()


def set_weight_packing(module: nn.Module, enabled: bool) -> None:
    """Switch packed CPU float32 GEMMs on or off in every `PackedLinear` under `module`;
    switching off frees the packed copies."""
    for layer in module.modules():
        if isinstance(layer, PackedLinear):
            layer.pack = enabled
            if not enabled:
                layer._packed = None


def prepack_weights(module: nn.Module) -> None:
    """Make the packed copies of every `PackedLinear` under `module` that will use one, all at
    once: packed before a call's activations are allocated, they do not fragment the heap
    that those activations are freed back to."""
    for layer in module.modules():
        if isinstance(layer, PackedLinear):
            layer.prepack()
