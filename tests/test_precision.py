"""The `precision` option: bf16 / fp16 autocast for the encoder only, float32 in and out."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import hear_matpac
from hear_matpac.api import column_features
from hear_matpac.precision import check_precision_device, encoder_autocast
from hear_matpac.weights.locate import TINY_UNTRAINED

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("tiny_len*.npz"))
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def load(**options) -> hear_matpac.api.MatpacModel:
    return hear_matpac.load_model(str(TINY_UNTRAINED), **options)


@pytest.fixture(scope="module")
def fixtures() -> list[dict[str, np.ndarray]]:
    return [dict(np.load(path)) for path in FIXTURES]


def columnwise_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_bf16_matches_fp32_and_the_reference_on_every_fixture(fixtures, layer):
    fp32, bf16 = load(layer=layer), load(layer=layer, precision="bf16")
    for case in fixtures:
        audio = torch.from_numpy(case["audio"])
        reference = torch.from_numpy(case["layers"][:, layer])
        ours = column_features(audio, fp32)[:, : reference.shape[1]]
        low = column_features(audio, bf16)[:, : reference.shape[1]]
        assert low.dtype == torch.float32
        assert (ours - reference).abs().max() <= 1e-4  # fp32 stays exact
        assert columnwise_cosine(low, ours).min() >= 0.999
        assert columnwise_cosine(low, reference).min() >= 0.999
        assert not torch.equal(low, ours)  # bf16 really ran


def test_bf16_outputs_are_float32_through_the_api():
    audio = torch.randn(2, 16000) * 0.1
    model = load(precision="bf16")
    embeddings, timestamps = hear_matpac.get_timestamp_embeddings(audio, model)
    scene = hear_matpac.get_scene_embeddings(audio, model)
    assert embeddings.dtype == timestamps.dtype == scene.dtype == torch.float32


def test_stored_low_precision_weights_give_exactly_what_autocast_gives():
    """Storing linear/conv weights in bf16 is only a cache of autocast's own casts."""
    fp32, bf16 = load(), load(precision="bf16")
    mel = torch.randn(3, 1, 80, 608)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = fp32.encoder(mel, 2)
        got = bf16.encoder(mel, 2)
    assert torch.equal(got, expected)
    assert bf16.encoder.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert bf16.encoder.patch_embed.proj.weight.dtype == torch.bfloat16
    assert bf16.encoder.blocks[0].norm1.weight.dtype == torch.float32
    assert bf16.encoder.pos_embed.dtype == bf16.encoder.cls_token.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in fp32.parameters())


def test_fp32_stays_float32_under_a_callers_autocast():
    audio = torch.randn(1, 40000) * 0.1
    model = load()
    plain = column_features(audio, model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = column_features(audio, model)
    assert torch.equal(inside, plain)


def test_fp16_on_cpu_is_a_clear_error():
    model = load(precision="fp16")  # loads on CPU so that it can be moved to CUDA
    with pytest.raises(ValueError, match=r"fp16.*CUDA.*model\.to\('cuda'\).*bf16"):
        hear_matpac.get_timestamp_embeddings(torch.zeros(1, 16000), model)
    with pytest.raises(ValueError, match="fp16"):
        hear_matpac.get_scene_embeddings(torch.zeros(1, 16000), model)


@pytest.mark.parametrize("value, error", [("fp8", ValueError), ("FP32", ValueError), ("", ValueError),
                                          (16, TypeError), (None, TypeError), (torch.bfloat16, TypeError)])
def test_bad_precision_values_are_refused_at_load(value, error):
    with pytest.raises(error, match="precision"):
        load(precision=value)


def test_low_precision_on_other_devices_is_refused():
    with pytest.raises(ValueError, match="cpu or cuda"):
        check_precision_device("bf16", torch.device("meta"))
    check_precision_device("fp32", torch.device("meta"))  # fp32 runs anywhere
    with pytest.raises(ValueError, match="fp16"):
        encoder_autocast("fp16", torch.device("cpu"))


def test_precision_is_a_listed_option_with_fp32_default():
    assert load().options.precision == "fp32"
    with pytest.raises(TypeError, match="precision"):
        load(precison="bf16")  # the unknown-option message lists the valid ones


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_precisions_match_fp32_and_return_float32_on_the_device(fixtures, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("GPU without native bf16")
    cpu = load()
    model = load(precision=precision).to("cuda")
    audio = torch.from_numpy(fixtures[-1]["audio"])
    expected = column_features(audio, cpu)
    embeddings, _ = hear_matpac.get_timestamp_embeddings(audio.cuda(), model)
    got = column_features(audio.cuda(), model)
    assert embeddings.device.type == "cuda" and embeddings.dtype == torch.float32
    assert columnwise_cosine(got.cpu(), expected).min() >= 0.999


def test_bf16_on_cpu_is_finite_for_windows_one_patch_wide():
    # oneDNN's bf16 convolution read past a one-patch-wide window (a 1 s clip in 0.96 s
    # windows leaves a 16-frame tail) and gave NaN or 1e37 for most fresh models in a fresh
    # process (what lay beyond the input decided), so this runs in one.
    script = textwrap.dedent("""
        import torch, hear_matpac
        from hear_matpac.reports.demo import synthetic_clip
        from hear_matpac.weights.locate import TINY_UNTRAINED
        torch.set_num_threads(1)
        audio = synthetic_clip(1.0)
        from hear_matpac.api import get_scene_and_timestamp_embeddings
        runs = [get_scene_and_timestamp_embeddings(audio, hear_matpac.load_model(
            str(TINY_UNTRAINED), precision="bf16", window_seconds=0.96))[1] for _ in range(6)]
        reference = hear_matpac.get_timestamp_embeddings(
            audio, hear_matpac.load_model(str(TINY_UNTRAINED), window_seconds=0.96))[0]
        print(min(torch.nn.functional.cosine_similarity(r, reference, dim=-1).min().item() for r in runs))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) > 0.99


def test_patch_embedding_runs_in_float32_on_cpu_under_bf16():
    model = load(precision="bf16")
    calls = []
    original = torch.nn.functional.conv2d

    def spy(x, weight, *rest, **kw):
        calls.append((x.dtype, weight.dtype))
        return original(x, weight, *rest, **kw)

    torch.nn.functional.conv2d = spy
    try:
        hear_matpac.get_scene_embeddings(torch.zeros(1, 16000), model)
    finally:
        torch.nn.functional.conv2d = original
    assert calls and all(c == (torch.float32, torch.float32) for c in calls)
    assert model.encoder.patch_embed.proj.weight.dtype == torch.bfloat16  # stored in bf16 still
