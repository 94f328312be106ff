"""Linear layers that multiply by a copy of their weight kept in MKL's packed GEMM layout.

MKL's sgemm repacks the weight matrix on every call; for the encoder's short token matrices
(a few hundred rows, K = 768) that repacking is a sizeable share of each GEMM. Packing once and
reusing the packed copy (what torch.compile's freezing does) makes the whole ViT-Base encoder
faster on CPU with the same numbers (docs/performance.md), for one more copy of the weights in memory.

It is used only for CPU float32 inference: on CUDA, under bf16 autocast or bf16-stored
weights, with autograd, or with a torch built without MKL, the layer is a plain `nn.Linear`.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator, NamedTuple, Optional

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

    The packed copy is never used without being checked against the weight first: inside a
    `checked_packing(module)` block, once when the block begins (and on every call for the
    weight's identity, version and the thread count); elsewhere, fully on every call.
    It is made again unless the weight is the same tensor, at the same version, under the same
    thread count, with the same fingerprint (each row's wrapping sum of its 64-bit words) as
    when it was packed: so writes that bypass the version counter (through `.data` or a numpy
    view) are seen too. The one kind of write the fingerprint misses is one that keeps every
    row's sum, such as swapping values within a row: call `refresh_packed_weights` after it.
    The copy is dropped by `.to()`, `load_state_dict` and copies of the layer; it is not a
    parameter or buffer, so it never appears in a state dict.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs) -> None:
        super().__init__(in_features, out_features, bias, **kwargs)
        self.pack = False
        self._packed: Optional[_Packed] = None
        self._checked_blocks = 0  # open `checked_packing` blocks that checked `_packed`

    def forward(self, x: Tensor) -> Tensor:
        if self._weight_packable() and self._call_packable(x):
            packed = self._packed
            if not (self._checked_blocks and packed is not None and packed.key == self._key()):
                packed = self._checked_copy()
            rows = x.reshape(-1, self.in_features).contiguous()
            out = torch.ops.mkl._mkl_linear(rows, packed.weight, self.weight, self.bias, rows.shape[0])
            return out.view(*x.shape[:-1], self.out_features)
        return super().forward(x)

    def _weight_packable(self) -> bool:
        weight = self.weight
        return (
            self.pack
            and weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and not weight.is_inference()  # no version counter
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

    def _checked_copy(self) -> "_Packed":
        """The packed copy, made again unless it still matches the weight."""
        weight = self.weight.detach()
        key = self._key()
        fingerprint = _fingerprint(weight)
        if self._packed is not None and self._packed.key == key and torch.equal(self._packed.fingerprint, fingerprint):
            return self._packed
        self._packed = None  # free the stale copy before making the new one
        with torch.no_grad():
            packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, PACK_ROWS_HINT)
        self._packed = _Packed(key, fingerprint, packed)
        return self._packed

    def _key(self) -> tuple[int, int, int]:
        return (self.weight.data_ptr(), self.weight._version, torch.get_num_threads())

    def _apply(self, *args, **kwargs):
        self._packed = None  # `.to()`, `.cuda()`, `.half()`...: the weight is about to move
        return super()._apply(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:
        # MKL's packed data must not be copied to another address: copies and pickles of
        # the layer leave it behind and pack again on first use.
        state = self.__dict__.copy()
        state["_packed"] = None
        state["_checked_blocks"] = 0
        return state


class _Packed(NamedTuple):
    key: tuple[int, int, int]  # weight's data pointer, version, thread count when packed
    fingerprint: Tensor
    weight: Tensor  # MKL's packed layout


def _fingerprint(weight: Tensor) -> Tensor:
    """Each row's sum of the weight's bits as 64-bit words (wrapping; 32-bit words when the
    rows cannot be viewed as 64-bit): any change to one word changes its row's sum."""
    try:
        return weight.view(torch.int64).sum(dim=-1)
    except RuntimeError:
        return weight.contiguous().view(torch.int32).sum(dim=-1)


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # a torch whose is_autocast_enabled takes no device type
        return torch.is_autocast_cpu_enabled()


def set_weight_packing(module: nn.Module, enabled: bool) -> None:
    """Switch packed CPU float32 GEMMs on or off in every `PackedLinear` under `module`;
    switching off frees the packed copies."""
    for layer in _packed_layers(module):
        layer.pack = enabled
        if not enabled:
            layer._packed = None


def refresh_packed_weights(module: nn.Module) -> None:
    """Drop the packed copies under `module`; they are made again from the weights on next use."""
    for layer in _packed_layers(module):
        layer._packed = None


@contextlib.contextmanager
def checked_packing(module: nn.Module) -> Iterator[None]:
    """Check (and make, where missing or stale) the packed copies under `module` once, as the
    block begins, and let the block's calls use them without checking again.

    Making them all at once, before a call's activations are allocated, also keeps them from
    fragmenting the heap those activations are freed back to. The weights must not change
    inside the block.
    """
    layers = [layer for layer in _packed_layers(module) if layer._weight_packable()]
    for layer in layers:
        layer._checked_copy()
        layer._checked_blocks += 1
    try:
        yield
    finally:
        for layer in layers:
            layer._checked_blocks -= 1


def _packed_layers(module: nn.Module) -> Iterator[PackedLinear]:
    return (layer for layer in module.modules() if isinstance(layer, PackedLinear))
