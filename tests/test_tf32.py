"""precision="fp32" runs the front end and the encoder with TF32 off whatever the user set,
precision="tf32" lets the encoder use it, and the user's switches come back as they were."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import hear_matpac
from hear_matpac.tf32 import tf32_enabled, tf32_state, uses_new_api

from conftest import TINY_FLAT

NEW_API = pytest.mark.skipif(not uses_new_api(), reason="torch < 2.9 has no fp32_precision attributes")
CUDA_SWITCHES = ("cuda.matmul.fp32_precision", "cudnn.conv.fp32_precision")


@pytest.fixture
def user_tf32():
    """The user asked for TF32 everywhere through the new API; put back afterwards."""
    before = {name: holder.fp32_precision for name, holder in _holders()}
    torch.backends.fp32_precision = "tf32"
    for _, holder in _holders():
        holder.fp32_precision = "tf32"
    yield tf32_state()
    torch.backends.fp32_precision = "none"
    for name, holder in _holders():
        holder.fp32_precision = before[name]


def _holders():
    b = torch.backends
    return [("cuda.matmul.fp32_precision", b.cuda.matmul), ("cudnn.conv.fp32_precision", b.cudnn.conv),
            ("mkldnn.matmul.fp32_precision", b.mkldnn.matmul), ("mkldnn.conv.fp32_precision", b.mkldnn.conv)]  # fmt: skip


def _record(model) -> dict[str, list]:
    seen: dict[str, list] = {"frontend": [], "encoder": []}
    model.frontend.register_forward_pre_hook(lambda m, a: seen["frontend"].append(tf32_state()))
    model.encoder.patch_embed.register_forward_pre_hook(lambda m, a: seen["encoder"].append(tf32_state()))
    return seen


@NEW_API
def test_fp32_turns_tf32_off_inside_and_restores_the_users_switches(user_tf32):
    assert all(v == "tf32" for v in user_tf32.values())
    model = hear_matpac.load_model(str(TINY_FLAT), max_windows=1)
    seen = _record(model)
    hear_matpac.get_scene_embeddings(torch.zeros(2, 20 * 16000), model)
    assert len(seen["encoder"]) > 1  # several micro-batches, each checked
    for state in seen["frontend"] + seen["encoder"]:
        assert set(state.values()) == {"ieee"}, state
    assert tf32_state() == user_tf32


@NEW_API
def test_tf32_precision_lets_only_the_encoder_use_tf32_on_cuda(user_tf32):
    torch.backends.cuda.matmul.fp32_precision = "ieee"  # the user's choice differs from the option's
    before = tf32_state()
    model = hear_matpac.load_model(str(TINY_FLAT), precision="tf32")
    seen = _record(model)
    hear_matpac.get_scene_embeddings(torch.zeros(1, 16000), model)
    assert set(seen["frontend"][0].values()) == {"ieee"}
    encoder = seen["encoder"][0]
    assert [encoder[k] for k in CUDA_SWITCHES] == ["tf32", "tf32"]
    assert {v for k, v in encoder.items() if k not in CUDA_SWITCHES} == {"ieee"}  # CPU stays exact
    assert tf32_state() == before


@NEW_API
def test_switches_are_restored_when_the_encoder_raises(user_tf32):
    model = hear_matpac.load_model(str(TINY_FLAT))

    def fail(module, args):
        assert set(tf32_state().values()) == {"ieee"}
        raise RuntimeError("boom")

    model.encoder.blocks[0].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        hear_matpac.get_scene_embeddings(torch.zeros(1, 16000), model)
    assert tf32_state() == user_tf32


def test_tf32_precision_on_cpu_gives_the_fp32_numbers(clips):
    fp32 = hear_matpac.load_model(str(TINY_FLAT))
    tf32 = hear_matpac.load_model(str(TINY_FLAT), precision="tf32")
    assert torch.equal(hear_matpac.get_scene_embeddings(clips, fp32), hear_matpac.get_scene_embeddings(clips, tf32))


_LEGACY = textwrap.dedent(
    """
    import torch, hear_matpac
    from hear_matpac import tf32
    from hear_matpac.weights.locate import TINY_UNTRAINED
    tf32._new_switches = lambda: []  # as on torch < 2.9
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True  # "high"; set_float32_matmul_precision would also set this torch's oneDNN
    model = hear_matpac.load_model(str(TINY_UNTRAINED))
    seen = []
    legacy = lambda: (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                      torch.get_float32_matmul_precision())
    model.encoder.patch_embed.register_forward_pre_hook(lambda m, a: seen.append(legacy()))
    hear_matpac.get_scene_embeddings(torch.zeros(1, 16000), model)
    assert seen == [(False, False, "highest")], seen
    assert legacy() == (True, True, "high"), legacy()
    def fail(m, a):
        raise RuntimeError("boom")
    model.encoder.blocks[0].register_forward_pre_hook(fail)
    try:
        hear_matpac.get_scene_embeddings(torch.zeros(1, 16000), model)
    except RuntimeError:
        pass
    assert legacy() == (True, True, "high"), legacy()
    print("ok")
    """
)


def test_old_flags_are_used_and_restored_where_the_new_api_is_missing():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _LEGACY], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@NEW_API
def test_forcing_the_new_api_where_it_exists_matches_the_default():
    with tf32_enabled(False, new_api=True):
        inside = tf32_state()
    assert set(inside.values()) == {"ieee"}
