"""The CUDA-only branches of the overlap of `embed` (`windows.upload` / `to_host` / `device_event`,
`finite_checks.PendingCheck`, `files/embed.py`'s late read-back and retry) driven on the CPU
through `windows.TRANSFERS`, replaced by `FakeCuda`: CUDA's stream order with no GPU. A copy to
the host is only queued; its buffer holds NaN (garbage) until an event recorded after it is
synchronized, and reading it before (`numpy`, `tolist`) is recorded as a violation. So these
tests see what the host reads and when it waits, where a real GPU would only sometimes give a
wrong number."""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import soundfile
import torch
from torch import Tensor

import hear_matpac
from hear_matpac import windows
from hear_matpac.api import embed_packed
from hear_matpac.cli import main
from hear_matpac.encoder import MatpacEncoder
from hear_matpac.files import embed as embed_files
from hear_matpac.finite_checks import deferred_checks

from conftest import TINY_FLAT


class FakeEvent:
    def __init__(self, cuda: "FakeCuda", upto: int) -> None:
        self.cuda, self.upto = cuda, upto

    def synchronize(self) -> None:
        self.cuda.wait(self.upto)


class FakeCuda(windows.Transfers):
    """The CPU as an asynchronous device: copies to the host complete at the synchronize of an
    event recorded after them, in queue order. `log`: ('queue', call) from the test's wrapper of
    `embed_packed`, ('wait', calls whose copies that synchronize completed) when one had work."""

    def __init__(self) -> None:
        self.queue: list[tuple[Tensor, Tensor, int]] = []  # (host buffer, source, call)
        self.done = 0
        self.pending: set[int] = set()  # storage addresses of buffers not yet complete
        self.violations: list[str] = []
        self.log: list[tuple[str, Any]] = []
        self.call = -1
        self.uploaded: list[weakref.ref] = []

    def asynchronous(self, device: torch.device) -> bool:
        return device.type == "cpu"

    def to_device(self, host: Tensor, device: torch.device) -> Tensor:
        on_device = host.clone()
        self.uploaded.append(weakref.ref(on_device))
        return on_device

    def to_host(self, tensor: Tensor) -> Tensor:
        host = torch.empty_like(tensor)
        host.fill_(float("nan") if host.is_floating_point() else 7)
        # the source as it is now: on a stream, later work on its memory comes after the copy
        self.queue.append((host, tensor.clone(), self.call))
        self.pending.add(host.untyped_storage().data_ptr())
        return host

    def event(self, device: torch.device) -> Any:
        return FakeEvent(self, len(self.queue))

    def wait(self, upto: int) -> None:
        if upto <= self.done:
            return  # passed already: no wait
        calls = []
        for host, source, call in self.queue[self.done:upto]:
            host.copy_(source)
            self.pending.discard(host.untyped_storage().data_ptr())
            calls.append(call)
        self.done = upto
        self.log.append(("wait", tuple(sorted(set(calls)))))

    def check_read(self, tensor: Tensor, how: str) -> None:
        if tensor.untyped_storage().data_ptr() in self.pending:
            self.violations.append(f"{how} of {tuple(tensor.shape)} before its event's synchronize")


@pytest.fixture
def cuda(monkeypatch) -> FakeCuda:
    fake = FakeCuda()
    monkeypatch.setattr(windows, "TRANSFERS", fake)
    numpy, tolist = torch.Tensor.numpy, torch.Tensor.tolist

    def guarded_numpy(self: Tensor, *args: Any, **kwargs: Any) -> np.ndarray:
        fake.check_read(self, "numpy")
        return numpy(self, *args, **kwargs)

    def guarded_tolist(self: Tensor) -> Any:
        fake.check_read(self, "tolist")
        return tolist(self)

    monkeypatch.setattr(torch.Tensor, "numpy", guarded_numpy)
    monkeypatch.setattr(torch.Tensor, "tolist", guarded_tolist)
    return fake


# the check of one call ----------------------------------------------------------------------------

def test_a_deferred_check_waits_for_its_event_before_reading_its_summary(cuda):
    model = hear_matpac.load_model(str(TINY_FLAT))
    audio = torch.zeros(16000 + 8000)
    audio[20000] = float("nan")
    with deferred_checks() as checks:
        embed_packed(audio, [16000, 8000], model)
    check, = checks
    assert cuda.log == [] and cuda.pending, "the call waited for its check"
    with pytest.raises(ValueError, match=r"audio contains NaN or Inf in clip\(s\) 1\b"):
        check.result()
    assert cuda.log == [("wait", (-1,))] and cuda.violations == []


def test_an_undeferred_check_waits_and_judges_at_once(cuda):
    model = hear_matpac.load_model(str(TINY_FLAT))
    audio = torch.zeros(2, 16000)
    audio[0, 5] = float("inf")
    with pytest.raises(ValueError, match=r"audio contains NaN or Inf in clip\(s\) 0\b"):
        hear_matpac.get_scene_embeddings(audio, model)
    scene = hear_matpac.get_scene_embeddings(torch.zeros(2, 16000), model)  # finite: no error
    assert torch.isfinite(scene).all() and cuda.violations == []
    assert cuda.log == [("wait", (-1,)), ("wait", (-1,))]  # one wait a call


# embed's calls ------------------------------------------------------------------------------------

def _wav(path: Path, seconds: float, freq: float) -> None:
    t = np.arange(round(16000 * seconds)) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


def _corpus(root: Path) -> Path:
    """Calls [a], [b, c], [d] with --batch-size 1; [b, c] decoded in two pieces (DECODE_SECONDS)."""
    root.mkdir()
    for name, seconds in (("a", 5.0), ("b", 2.0), ("c", 3.0), ("d", 5.0)):
        _wav(root / f"{name}.wav", seconds, 300 + 40 * ord(name))
    return root


def _embed(inputs: Path, out: Path) -> int:
    return main(["embed", str(inputs), "--out", str(out), "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet",
                 "--decode-workers", "0", "--batch-size", "1", "--timestamps"])  # fmt: skip


def _outputs(out: Path) -> dict[str, np.ndarray]:
    arrays = {p.name: np.load(p) for p in out.glob("*.npy")}
    for path in out.glob("*.npz"):
        with np.load(path) as frames:
            arrays.update({f"{path.name}:{key}": frames[key] for key in frames.files})
    return arrays


def _count_calls(monkeypatch, cuda: FakeCuda) -> None:
    """Log each call of `embed_packed` as ('queue', its number) and tag the copies it makes."""
    real = embed_files.embed_packed

    def counted(audio, lengths, model, timestamps=False):
        cuda.call += 1
        cuda.log.append(("queue", cuda.call))
        return real(audio, lengths, model, timestamps=timestamps)

    monkeypatch.setattr(embed_files, "embed_packed", counted)


def test_calls_read_one_late_after_one_wait_each_with_the_cpu_paths_outputs(tmp_path, monkeypatch, cuda):
    inputs = _corpus(tmp_path / "in")
    monkeypatch.setattr(embed_files, "DECODE_SECONDS", 2.5)
    monkeypatch.setattr(windows, "TRANSFERS", windows.Transfers())  # the CPU path first
    assert _embed(inputs, tmp_path / "cpu") == 0
    monkeypatch.setattr(windows, "TRANSFERS", cuda)
    _count_calls(monkeypatch, cuda)
    assert _embed(inputs, tmp_path / "cuda") == 0
    assert cuda.violations == []
    # call N's one wait comes after call N + 1 is queued, and completes all of call N's copies
    assert cuda.log == [("queue", 0), ("queue", 1), ("wait", (0,)), ("queue", 2), ("wait", (1,)), ("wait", (2,))]
    assert cuda.done == len(cuda.queue)
    expected, got = _outputs(tmp_path / "cpu"), _outputs(tmp_path / "cuda")
    assert sorted(got) == sorted(expected) and len(got) == 12  # 4 scenes, 4 x (embeddings, timestamps)
    for name, array in expected.items():
        assert np.array_equal(got[name], array), name


def test_a_late_check_error_fails_only_its_calls_file(tmp_path, monkeypatch, capsys, cuda):
    """b's windows (2 s: 208 frames) come out NaN: found at [b, c]'s read, after [d] is queued;
    b and c are tried alone, only b fails; d, queued before, is read back as it was."""
    inputs = _corpus(tmp_path / "in")
    monkeypatch.setattr(embed_files, "DECODE_SECONDS", 2.5)
    real_forward = MatpacEncoder.forward

    def forward(self, mel, layer):
        features = real_forward(self, mel, layer)
        return torch.full_like(features, float("nan")) if mel.shape[-1] == 208 else features

    monkeypatch.setattr(MatpacEncoder, "forward", forward)
    _count_calls(monkeypatch, cuda)
    assert _embed(inputs, tmp_path / "o") == 1
    assert cuda.violations == []
    # one stream: b's retry waits for d's copies too (queued before), so d's read does not wait
    assert cuda.log == [("queue", 0), ("queue", 1), ("wait", (0,)), ("queue", 2), ("wait", (1,)),
                        ("queue", 3), ("wait", (2, 3)), ("queue", 4), ("wait", (4,))]  # fmt: skip
    captured = capsys.readouterr()
    assert "3 embedded, 0 skipped (already there), 1 failed" in captured.out
    assert captured.err.count("failed:") == 1 and "b.wav: embeddings are NaN or Inf" in captured.err
    assert sorted(p.name for p in (tmp_path / "o").glob("*.npy")) == ["a.wav.scene.npy", "c.wav.scene.npy",
                                                                      "d.wav.scene.npy"]  # fmt: skip


def test_a_call_whose_join_runs_out_of_memory_lets_go_of_its_pieces_before_the_retry(tmp_path, monkeypatch, cuda):
    """[b, c] arrive in two pieces, each copied to the device; joining them runs out of memory.
    Both copies must be gone when b and c are tried alone."""
    inputs = _corpus(tmp_path / "in")
    monkeypatch.setattr(embed_files, "DECODE_SECONDS", 2.5)
    real_cat, real_embed = torch.cat, embed_files.embed_packed
    joins: list[list[weakref.ref]] = []
    alive_at_retry: list[bool] = []

    def cat(tensors, *args, **kwargs):
        uploaded = {id(ref()) for ref in cuda.uploaded if ref() is not None}
        if len(tensors) == 2 and all(id(t) in uploaded for t in tensors) and not joins:
            joins.append([weakref.ref(t) for t in tensors])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real_cat(tensors, *args, **kwargs)

    def embed(audio, lengths, model, timestamps=False):
        if joins and len(lengths) == 1 and len(audio) in (2 * 16000, 3 * 16000):
            alive_at_retry.append(any(ref() is not None for ref in joins[0]))
        return real_embed(audio, lengths, model, timestamps=timestamps)

    monkeypatch.setattr(torch, "cat", cat)
    monkeypatch.setattr(embed_files, "embed_packed", embed)
    assert _embed(inputs, tmp_path / "o") == 0
    assert len(joins) == 1 and alive_at_retry == [False, False]
    assert len(list((tmp_path / "o").glob("*.npy"))) == 4 and cuda.violations == []
