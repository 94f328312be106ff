"""Memory is bounded by design: micro-batches of at most `max_windows` windows, only the
blocks up to the requested layer run, and `load_model` never initialises random weights."""
from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hear_matpac
from hear_matpac.config import EncoderConfig
from hear_matpac.encoder import MatpacEncoder
from hear_matpac.frontend import n_stft_frames
from hear_matpac.windows import plan_windows
from hear_matpac.weights.locate import TINY_UNTRAINED

WINDOW_SAMPLES = 608 * 160  # one 6.08 s window of the tiny checkpoint


def record_encoder_batches(model) -> list[int]:
    """Windows per encoder call, recorded by a forward pre-hook."""
    sizes: list[int] = []
    model.encoder.register_forward_pre_hook(lambda _module, args: sizes.append(args[0].shape[0]))
    return sizes


def test_micro_batches_never_exceed_max_windows_and_do_not_change_results():
    clips, max_windows = 3, 4
    audio = torch.randn(clips, 7 * WINDOW_SAMPLES + 20000) * 0.1  # 7 full windows and a tail each
    bounded = hear_matpac.load_model(str(TINY_UNTRAINED), max_windows=max_windows)
    sizes = record_encoder_batches(bounded)
    got, _ = hear_matpac.get_timestamp_embeddings(audio, bounded)

    plan = plan_windows(n_stft_frames(audio.shape[1]), bounded.encoder.config.n_frames)
    per_group = [clips * len(group.starts) for group in plan.groups]  # windows of one length
    assert max(per_group) > max_windows  # the bound has something to bound
    assert max(sizes) <= max_windows
    assert sum(sizes) == sum(per_group)  # every window encoded once, no more
    # windows of all clips share micro-batches: no batch per clip or per window
    assert len(sizes) == sum(math.ceil(n / max_windows) for n in per_group)

    whole = hear_matpac.load_model(str(TINY_UNTRAINED), max_windows=64)
    whole_sizes = record_encoder_batches(whole)
    expected, _ = hear_matpac.get_timestamp_embeddings(audio, whole)
    assert whole_sizes == per_group
    assert (got - expected).abs().max() <= 1e-5


def test_only_blocks_up_to_the_requested_layer_run():
    model = hear_matpac.load_model(str(TINY_UNTRAINED), layer=0)
    calls = [0] * len(model.encoder.blocks)
    for i, block in enumerate(model.encoder.blocks):
        block.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    hear_matpac.get_scene_embeddings(torch.randn(2, 16000) * 0.1, model)
    assert calls[0] > 0 and calls[1:] == [0] * (len(calls) - 1)


class RandomFills(TorchDispatchMode):
    """Records the device of every random-fill op (what `nn.init` and `reset_parameters` use)."""

    RANDOM_OPS = {"uniform_", "normal_", "bernoulli_", "random_", "exponential_", "geometric_",
                  "cauchy_", "log_normal_", "randn", "rand", "randint", "randperm"}

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in self.RANDOM_OPS:
            target = out if isinstance(out, torch.Tensor) else args[0]
            self.devices.append(target.device.type)
        return out


def test_load_model_draws_no_random_weights_on_a_real_device():
    with RandomFills() as fills:
        model = hear_matpac.load_model(str(TINY_UNTRAINED))
    assert fills.devices, "expected the meta-device construction to be seen"
    assert set(fills.devices) == {"meta"}, f"random init ran on {sorted(set(fills.devices) - {'meta'})}"
    assert all(p.device.type == "cpu" for p in model.parameters())

    with RandomFills() as control:  # the detector does see a real initialisation
        MatpacEncoder(EncoderConfig(embed_dim=64, depth=1, num_heads=1))
    assert "cpu" in control.devices
