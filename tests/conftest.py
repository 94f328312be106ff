"""Shared test fixtures: the tiny checkpoint and the reference outputs of the published code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import hear_matpac
from hear_matpac.weights_choice import TINY_UNTRAINED

FIXTURES = Path(__file__).parent / "fixtures"
TINY_FLAT = TINY_UNTRAINED  # tiny_flat.pt of the parity fixtures, bundled as a package asset
TINY_FAIRSEQ = FIXTURES / "tiny_fairseq.pt"
CASES = json.loads((FIXTURES / "tiny_cases.json").read_text())["cases"]
LENGTHS = sorted(case["n_samples"] for case in CASES.values())


def reference(n_samples: int) -> dict:
    """Audio and the published code's frame features for one fixture length."""
    with np.load(FIXTURES / f"tiny_len{n_samples}.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def tiny_model() -> hear_matpac.api.MatpacModel:
    return hear_matpac.load_model(str(TINY_FLAT))


@pytest.fixture
def no_weights_found(monkeypatch, tmp_path) -> Path:
    """Nothing named and nothing in any weights folder, whatever this checkout has fetched into
    its own weights/: the working directory is an empty `tmp_path`."""
    from hear_matpac import weights_locate

    monkeypatch.delenv(weights_locate.WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(weights_locate.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(weights_locate, "repo_weights_dir", lambda: tmp_path / "no-weights-here")
    return tmp_path


@pytest.fixture
def clips() -> torch.Tensor:
    """Three different 2.5 s clips, deterministic."""
    generator = torch.Generator().manual_seed(1234)
    return (0.3 * torch.randn(3, 40000, generator=generator)).clamp(-1, 1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: end-to-end run of the HEAR tools (tens of seconds); part of the default run and of CI",
    )
