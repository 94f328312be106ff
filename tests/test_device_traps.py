"""Small traps on the way to a GPU: a model cast with .half(), audio on another device than the
model, bf16 support of the model's own device, and embed stopping on a failed device."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import hear_matpac
from hear_matpac import precision
from hear_matpac.files import embed as embed_files
from hear_matpac.cli import main
from hear_matpac.model import audio_device_problem

from conftest import TINY_FLAT


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_model_cast_to_half_keeps_its_front_end_float32_and_returns_float32(clips, dtype):
    exact = hear_matpac.load_model(str(TINY_FLAT))
    cast = hear_matpac.load_model(str(TINY_FLAT)).to(dtype)
    assert cast.encoder.cls_token.dtype == dtype
    assert torch.equal(cast.frontend(clips), exact.frontend(clips))  # front end untouched
    emb, ts = hear_matpac.get_timestamp_embeddings(clips, cast)
    ref, ref_ts = hear_matpac.get_timestamp_embeddings(clips, exact)
    assert emb.dtype == torch.float32 and torch.equal(ts, ref_ts)
    cosine = torch.nn.functional.cosine_similarity(emb, ref, dim=-1)
    assert cosine.min() >= 0.99
    scene = hear_matpac.get_scene_embeddings(clips, cast)
    assert scene.dtype == torch.float32 and scene.shape == (3, cast.scene_embedding_size)


def test_a_half_model_this_torch_cannot_run_points_to_the_precision_option(monkeypatch, clips):
    model = hear_matpac.load_model(str(TINY_FLAT)).half()

    def unsupported(x, layer):
        raise RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'')

    monkeypatch.setattr(model.encoder, "forward", unsupported)
    with pytest.raises(RuntimeError, match=r"weights are torch.float16 .*model.half\(\).*precision='bf16'"):
        hear_matpac.get_scene_embeddings(clips, model)


def test_audio_on_an_accelerator_with_the_model_on_cpu_is_a_problem_to_say():
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert "model.to('cuda:0')" in audio_device_problem(cuda, cpu)
    assert audio_device_problem(cpu, cpu) is None
    assert audio_device_problem(cuda, cuda) is None
    assert audio_device_problem(cpu, cuda) is None  # the API moves CPU audio to the model: expected use


def test_the_device_warning_is_given_once_per_model(clips):
    model = hear_matpac.load_model(str(TINY_FLAT))
    with pytest.warns(UserWarning, match="audio is on cuda:0 and the model on the CPU") as said:
        model.check_audio_device(torch.device("cuda:0"))
        model.check_audio_device(torch.device("cuda:0"))
    assert len(said) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.check_audio_device(torch.device("cuda:0"))
        hear_matpac.get_scene_embeddings(clips, hear_matpac.load_model(str(TINY_FLAT)))  # CPU audio: silent


def test_bf16_support_is_checked_on_the_models_device_not_the_current_one(monkeypatch):
    capability = {0: (9, 0), 1: (7, 5)}  # current device 0 is a Hopper, device 1 a Turing
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what the current one says
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: capability[0 if device is None or device.index is None else device.index])  # fmt: skip
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"gpu{device.index}")
    precision.check_precision_device("bf16", torch.device("cuda:0"))
    with pytest.raises(ValueError, match="not supported natively by gpu1"):
        precision.check_precision_device("bf16", torch.device("cuda:1"))


def _wavs(folder: Path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        path = folder / f"f{i}.wav"
        soundfile.write(path, 0.1 * np.sin(np.arange(16000 + 1000 * i) / (5 + i)), 16000)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize(
    "error, expected",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
         r"stopped at .*f0.wav: out of device memory for a single file \(CUDA out of memory.*lower --batch-size"),
        (RuntimeError("CUDA error: an illegal memory access was encountered"),
         r"stopped at .*f0.wav: the device failed \(CUDA error: an illegal memory access"),
    ],
)  # fmt: skip
def test_embed_stops_with_the_cause_when_the_device_fails(monkeypatch, tmp_path, capsys, error, expected):
    calls = []

    def failing(audio, lengths, model, timestamps=False):
        calls.append(len(lengths))
        raise error

    monkeypatch.setattr(embed_files, "embed_packed", failing)
    code = main(["embed", "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet", "--out", str(tmp_path / "o"),
                 *_wavs(tmp_path, 4)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert __import__("re").search(expected, err[0]), err[0]
    # the chunk's call, then (out of memory: maybe the chunk's size) its first file alone; never the rest
    assert calls == ([4, 1] if isinstance(error, torch.cuda.OutOfMemoryError) else [4])


def test_out_of_memory_for_a_group_retries_its_files_one_by_one(monkeypatch, tmp_path, capsys):
    real = embed_files.embed_packed

    def tight(audio, lengths, model, timestamps=False):
        if len(lengths) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(audio, lengths, model, timestamps)

    monkeypatch.setattr(embed_files, "embed_packed", tight)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        soundfile.write(folder / f"same{i}.wav", 0.1 * np.sin(np.arange(16000) / (3 + i)), 16000)
    assert main(["embed", "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet", "--out", str(tmp_path / "o"),
                 str(folder)]) == 0  # fmt: skip
    assert "3 embedded" in capsys.readouterr().out


def test_a_bad_file_still_fails_alone(monkeypatch, tmp_path, capsys):
    real = embed_files.embed_packed

    def picky(audio, lengths, model, timestamps=False):
        if 17000 in lengths:
            raise ValueError(f"audio contains NaN or Inf in clip(s) {lengths.index(17000)}")
        return real(audio, lengths, model, timestamps)

    monkeypatch.setattr(embed_files, "embed_packed", picky)
    code = main(["embed", "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet", "--out", str(tmp_path / "o"),
                 *_wavs(tmp_path, 3)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "2 embedded" in captured.out and "failed: " in captured.err and "f1.wav" in captured.err


def test_a_failed_chunks_memory_is_freed_before_its_files_are_retried(monkeypatch, tmp_path, capsys):
    """The chunk's call runs out of memory holding a buffer; the buffer must be gone (the
    traceback that keeps its frame alive dropped) before the first file is retried alone."""
    import weakref

    real = embed_files.embed_packed
    held, alive_at_retry = [], []

    def tight(audio, lengths, model, timestamps=False):
        if len(lengths) > 1:
            buffer = audio * 1  # a tensor of the failed call's frame, like its device tensors
            held.append(weakref.ref(buffer))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        alive_at_retry.append(held[0]() is not None)
        return real(audio, lengths, model, timestamps)

    monkeypatch.setattr(embed_files, "embed_packed", tight)
    assert main(["embed", "--weights", str(TINY_FLAT), "--device", "cpu", "--quiet", "--out", str(tmp_path / "o"),
                 *_wavs(tmp_path, 3)]) == 0  # fmt: skip
    assert alive_at_retry and alive_at_retry == [False] * len(alive_at_retry), alive_at_retry


def test_the_encoders_out_of_memory_retry_frees_the_failed_batch_first(monkeypatch, clips):
    """model.py halves a micro-batch after out of memory; the failed batch's tensors must be gone
    before the halves run."""
    import weakref

    model = hear_matpac.load_model(str(TINY_FLAT), max_windows=64)
    real = model.encoder.forward
    held, alive_at_retry = [], []

    def tight(x, layer):
        if not held:
            buffer = x * 1  # a tensor of the failed call
            held.append(weakref.ref(buffer))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        alive_at_retry.append(held[0]() is not None)
        return real(x, layer)

    monkeypatch.setattr(model.encoder, "forward", tight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hear_matpac.get_timestamp_embeddings(clips, model)
    assert alive_at_retry and alive_at_retry == [False] * len(alive_at_retry), alive_at_retry
