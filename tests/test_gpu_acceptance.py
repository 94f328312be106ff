"""The GPU acceptance script runs on CPU in quick mode and passes, so it cannot rot."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_acceptance_passes_on_cpu_quick():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--device", "cpu", "--quick"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not [line for line in lines if line.startswith("FAIL")]
    passed = {line.split(":")[0] for line in lines if line.startswith("PASS ")}
    for check in ("parity fp32", "parity bf16", "contract outputs", "contract timestamps", "host syncs", "oom path",
                  "tf32 getters fp32", "tf32 getters tf32", "retry frees encoder", "retry frees embed"):
        assert f"PASS {check}" in passed, check
    assert any(line.startswith("| fp32 | 4 x 1 s |") for line in lines)  # the throughput table
    embed = lines[lines.index("| embed audio-s/s (end to end) | encoder alone audio-s/s | embed / encoder |") + 2]
    assert float(embed.split("|")[1]) > 0 and float(embed.split("|")[2]) > 0  # the embed row
    assert any(line.startswith("embed, ") and "16 WAV files x 1 s" in line and "(exit 0)" in line for line in lines)
    assert lines[-1].startswith("PASS: 0 check(s) failed")


def test_gpu_acceptance_refuses_cuda_where_there_is_none():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the refusal applies only where there is none")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--device", "cuda:0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "CUDA is not available" in done.stderr


def test_the_refusal_test_skips_with_a_reason_where_cuda_is_available(monkeypatch):
    """With CUDA present the refusal test must say it skipped, not pass having checked nothing."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(pytest.skip.Exception, match="CUDA is available"):
        test_gpu_acceptance_refuses_cuda_where_there_is_none()
