"""Packed CPU float32 GEMMs give the plain layer's numbers, follow weight changes, and stay
out of every path they do not apply to (autograd, bf16, copies)."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

import hear_matpac
from conftest import TINY_FLAT
from hear_matpac.packed_linear import PACK_ROWS_HINT, PackedLinear, packing_available

needs_packing = pytest.mark.skipif(not packing_available(), reason="this torch has no MKL packed GEMM")


def packed_layers(model) -> list:
    return [m for m in model.modules() if isinstance(m, PackedLinear)]


def test_packing_is_available_wherever_torch_has_mkl():
    # A torch upgrade that dropped the ops would otherwise only show as a slowdown.
    if torch.backends.mkl.is_available():
        assert packing_available()


@needs_packing
@pytest.mark.parametrize("rows", [1, 37, PACK_ROWS_HINT, PACK_ROWS_HINT + 259, 3000])
def test_any_row_count_matches_linear(rows):
    gen = torch.Generator().manual_seed(rows)
    layer = PackedLinear(96, 80)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(80, 96, generator=gen))
        layer.bias.copy_(torch.randn(80, generator=gen))
    layer.pack = True
    x = torch.randn(rows, 96, generator=gen)
    with torch.no_grad():
        out = layer(x.view(1, rows, 96))
        assert layer._packed is not None  # the packed path ran
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert out.shape == (1, rows, 80)
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-5)


@needs_packing
def test_model_features_equal_the_unpacked_model(clips):
    packed = hear_matpac.load_model(str(TINY_FLAT))
    plain = hear_matpac.load_model(str(TINY_FLAT), cpu_packed_weights=False)
    got, expected = packed.column_features(clips), plain.column_features(clips)
    assert all(layer._packed is not None for layer in packed_layers(packed))
    assert all(layer._packed is None for layer in packed_layers(plain))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@needs_packing
def test_weights_changed_after_packing_are_used(clips):
    packed = hear_matpac.load_model(str(TINY_FLAT))
    plain = hear_matpac.load_model(str(TINY_FLAT), cpu_packed_weights=False)
    packed.column_features(clips)  # packs the original weights
    for model in (packed, plain):
        with torch.no_grad():
            model.encoder.blocks[0].mlp.fc1.weight.mul_(3.0)  # in place
        model.encoder.blocks[1].attn.qkv.weight = torch.nn.Parameter(
            model.encoder.blocks[1].attn.qkv.weight.detach() * -1
        )  # replaced
    torch.testing.assert_close(packed.column_features(clips), plain.column_features(clips), rtol=0, atol=1e-5)


@needs_packing
def test_copies_and_pickles_pack_again(clips):
    model = hear_matpac.load_model(str(TINY_FLAT))
    expected = model.column_features(clips)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert all(layer._packed is None for layer in packed_layers(clone))
        torch.testing.assert_close(clone.column_features(clips), expected, rtol=0, atol=0)


def test_autograd_and_bf16_use_the_plain_layer(clips):
    model = hear_matpac.load_model(str(TINY_FLAT))
    layer = model.encoder.blocks[0].mlp.fc1
    x = torch.randn(5, layer.in_features, requires_grad=True)
    layer(x).sum().backward()  # the packed op has no derivative: this must take the plain path
    assert x.grad is not None and layer._packed is None
    bf16 = hear_matpac.load_model(str(TINY_FLAT), precision="bf16")
    bf16.column_features(clips)
    assert all(layer._packed is None for layer in packed_layers(bf16))


@needs_packing
def test_switching_off_frees_the_packed_copies(clips):
    model = hear_matpac.load_model(str(TINY_FLAT))
    model.column_features(clips)
    hear_matpac.packed_linear.set_weight_packing(model.encoder, False)
    assert all(layer._packed is None and not layer.pack for layer in packed_layers(model))


@needs_packing
def test_a_model_loaded_under_inference_mode_is_packed(clips):
    with torch.inference_mode():
        model = hear_matpac.load_model(str(TINY_FLAT))
        model.column_features(clips)
    assert not any(p.is_inference() for p in model.parameters())
    assert all(layer._packed is not None for layer in packed_layers(model))


@needs_packing
def test_cpu_autocast_around_a_packed_layer_still_applies():
    layer = PackedLinear(64, 32)
    layer.pack = True
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(10, 64))
    assert out.dtype == torch.bfloat16 and layer._packed is None


@needs_packing
def test_non_contiguous_input_matches_linear():
    layer = PackedLinear(64, 32)
    layer.pack = True
    x = torch.randn(64, 50).t()  # (50, 64), column-major
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    assert layer._packed is not None


def _scale_every_weight(model, write) -> None:
    for p in model.encoder.parameters():
        write(p)


@needs_packing
@pytest.mark.parametrize(
    "write",
    [
        lambda p: p.data.mul_(0.5),  # EMA/MoCo-style update: no version bump
        lambda p: p.detach().numpy().__imul__(0.5),  # through a numpy view of the storage
    ],
    ids=["data", "numpy"],
)
def test_writes_that_bypass_the_version_counter_are_used(clips, write):
    packed = hear_matpac.load_model(str(TINY_FLAT))
    plain = hear_matpac.load_model(str(TINY_FLAT), cpu_packed_weights=False)
    packed.column_features(clips)  # packs the original weights
    versions = [p._version for p in packed.parameters()]
    for model in (packed, plain):
        _scale_every_weight(model, write)
    assert [p._version for p in packed.parameters()] == versions  # the version counter saw nothing
    torch.testing.assert_close(packed.column_features(clips), plain.column_features(clips), rtol=0, atol=1e-5)


@needs_packing
def test_a_single_changed_value_is_seen_by_a_lone_layer():
    layer = PackedLinear(64, 32)
    layer.pack = True
    x = torch.randn(20, 64)
    with torch.no_grad():
        layer(x)
        layer.weight.data[7, 3] += 1.0  # one value, no version bump
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@needs_packing
def test_refresh_and_load_state_dict_drop_the_packed_copies(clips):
    model = hear_matpac.load_model(str(TINY_FLAT))
    plain = hear_matpac.load_model(str(TINY_FLAT), cpu_packed_weights=False)
    model.column_features(clips)
    for m in (model, plain):  # swap two values within a row: the one write the fingerprint may miss
        w = m.encoder.blocks[0].mlp.fc1.weight.data
        w[0, [0, 2]] = w[0, [2, 0]].clone()
    hear_matpac.packed_linear.refresh_packed_weights(model.encoder)
    assert all(layer._packed is None for layer in packed_layers(model))
    torch.testing.assert_close(model.column_features(clips), plain.column_features(clips), rtol=0, atol=1e-5)
    model.load_state_dict(plain.state_dict())
    assert all(layer._packed is None for layer in packed_layers(model))


@needs_packing
def test_weights_are_checked_once_per_call_whatever_the_micro_batches(monkeypatch, clips):
    checks = []
    original = hear_matpac.packed_linear._fingerprint
    monkeypatch.setattr(hear_matpac.packed_linear, "_fingerprint", lambda w: checks.append(1) or original(w))
    for max_windows in (1, 64):
        model = hear_matpac.load_model(str(TINY_FLAT), max_windows=max_windows)
        checks.clear()
        model.column_features(clips)
        assert len(checks) == len(packed_layers(model)), max_windows
