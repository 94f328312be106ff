"""The log-mel front end on torch alone: the Slaney filterbank, its buffers, and a cross-check
against torchaudio's MelSpectrogram where torchaudio loads."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import hear_matpac
from conftest import TINY_FLAT, reference, torchaudio_or_skip
from hear_matpac.config import F_MAX, F_MIN, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH
from hear_matpac.frontend import LogMel, hz_to_mel_slaney, mel_to_hz_slaney, slaney_mel_filterbank


def test_slaney_scale_known_points():
    # Slaney: 200/3 Hz per mel up to 1 kHz (= 15 mels), then 27 mels per factor 6.4.
    hz = torch.tensor([0.0, 200.0 / 3.0, 1000.0, 6400.0, 8000.0], dtype=torch.float64)
    expected = [0.0, 1.0, 15.0, 42.0, 15.0 + 27.0 * math.log(8.0) / math.log(6.4)]
    assert hz_to_mel_slaney(hz).tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert mel_to_hz_slaney(hz_to_mel_slaney(hz)).tolist() == pytest.approx(hz.tolist(), rel=1e-12, abs=1e-9)


def test_filterbank_shape_edges_and_area():
    fb = slaney_mel_filterbank().double()
    assert fb.shape == (N_FFT // 2 + 1, N_MELS) and slaney_mel_filterbank().dtype == torch.float32
    assert bool((fb >= 0).all())
    bin_hz = torch.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1, dtype=torch.float64)
    used = bin_hz[fb.sum(dim=1) > 0]
    assert float(used.min()) > F_MIN and float(used.max()) < F_MAX  # nothing outside 50 Hz..8 kHz
    # Slaney normalisation: each triangle has unit area in Hz, up to the sampling of the bins
    # (40 Hz apart): the upper half's filters span many bins and integrate to 1 within 5%.
    areas = fb.sum(dim=0) * (SAMPLE_RATE / N_FFT)
    assert areas[40:].tolist() == pytest.approx([1.0] * (N_MELS - 40), rel=0.05)


def test_buffers_are_not_state_and_stay_float32():
    model = hear_matpac.load_model(str(TINY_FLAT))
    assert not any(key.startswith("frontend.") for key in model.state_dict())
    model.half()
    assert model.frontend.window.dtype == torch.float32
    assert model.frontend.filterbank.dtype == torch.float32
    torch.testing.assert_close(model.frontend.filterbank, slaney_mel_filterbank(), rtol=0, atol=0)
    audio = torch.from_numpy(reference(17120)["audio"])
    mel = model.frontend(audio.half())  # half input is computed in float32
    assert mel.dtype == torch.float32
    assert torch.equal(mel, LogMel()(audio.half().float()))
    moved = model.to("meta")
    assert moved.frontend.filterbank.device.type == "meta" and moved.frontend.filterbank.dtype == torch.float32


def test_front_end_matches_torchaudio_melspectrogram():
    torchaudio = torchaudio_or_skip()
    reference_mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH,
        f_min=F_MIN, f_max=F_MAX, n_mels=N_MELS, window_fn=torch.hann_window, power=2.0,
        center=False, norm="slaney", mel_scale="slaney",
    )  # fmt: skip
    # torchaudio builds it in float32 (band edges good to ~1e-7 relative), we in float64 rounded
    # once: equal to a few float32 ulps of the largest filter value, at the triangles' feet.
    ours_fb, theirs_fb = slaney_mel_filterbank(), reference_mel.mel_scale.fb
    torch.testing.assert_close(ours_fb, theirs_fb, rtol=1e-5, atol=1e-5 * float(theirs_fb.max()))
    audio = torch.from_numpy(reference(31680)["audio"])
    ours, theirs = LogMel().mel_power(audio), reference_mel(audio)
    # A foot's float32 rounding, times a loud STFT bin, moves a mel bin by up to ~1e-4 relative.
    torch.testing.assert_close(ours, theirs, rtol=2e-4, atol=1e-6 * float(theirs.max()))
    # After the log, bins of almost no energy carry those ulps further; still within parity.
    theirs_log = (torch.log(theirs + 1.1920929e-07) + 7.056) / 4.193
    torch.testing.assert_close(LogMel()(audio), theirs_log, rtol=0, atol=1e-4)


def test_broken_torchaudio_beside_it_changes_nothing(tmp_path: Path):
    """A torchaudio that raises OSError on import (as 2.11.1 does next to another torch) is
    never imported by the package, the API or the CLI."""
    fake = tmp_path / "site" / "torchaudio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace")\n'
    )
    script = textwrap.dedent(
        f"""
        import sys, torch, hear_matpac, hear_matpac.cli
        from hear_matpac.files.audio import read_audio
        model = hear_matpac.load_model({str(TINY_FLAT)!r})
        emb, ts = hear_matpac.get_timestamp_embeddings(torch.zeros(1, 16000), model)
        assert emb.shape[0] == 1 and bool(torch.isfinite(emb).all())
        assert "torchaudio" not in sys.modules, "torchaudio was imported"
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

