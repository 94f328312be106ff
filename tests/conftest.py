"""Shared test fixtures: the tiny checkpoint and the reference outputs of the published code."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hear_matpac
from hear_matpac.weights.locate import TINY_UNTRAINED

FIXTURES = Path(__file__).parent / "fixtures"
TINY_FLAT = TINY_UNTRAINED  # tiny_flat.pt of the parity fixtures, bundled as a package asset
TINY_FAIRSEQ = FIXTURES / "tiny_fairseq.pt"
CASES = json.loads((FIXTURES / "tiny_cases.json").read_text())["cases"]
LENGTHS = sorted(case["n_samples"] for case in CASES.values())


def need(module: str, why: str) -> None:
    """Skip without `module`, but fail under CI, which must run every test."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed ({why}): run `hear-matpac install-hear-tools --tensorflow-cpu`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def hear_matpac_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`hear-matpac ARGS` in a subprocess, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "hear_matpac.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def torchaudio_or_skip():
    """torchaudio if it loads. A torchaudio built for another torch raises OSError (undefined
    symbol in libtorchaudio.so), not ImportError: both mean "no cross-check here"."""
    try:
        import torchaudio
    except (ImportError, OSError) as err:
        pytest.skip(f"torchaudio does not load here ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
    return torchaudio


@pytest.fixture
def no_tensorflow_module():
    """`tensorflow` (and its submodules) out of `sys.modules` for one test, and afterwards
    exactly the entries that were there before: a stand-in the test registers goes with it."""
    def entries() -> dict:
        return {n: m for n, m in sys.modules.items() if n == "tensorflow" or n.startswith("tensorflow.")}

    saved = entries()
    for name in saved:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in entries():
            del sys.modules[name]
        sys.modules.update(saved)


def write_other_weights(path: Path) -> Path:
    """The tiny checkpoint with every float tensor halved, saved at `path`: same layout, other
    numbers (and another sha256)."""
    state = torch.load(TINY_UNTRAINED, weights_only=True, map_location="cpu")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()} \
        if isinstance(state, dict) else {}  # fmt: skip
    assert tensors
    for value in tensors.values():
        value.mul_(0.5)
    torch.save(state, path)
    return path


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
    from hear_matpac.weights import locate as weights_locate

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
    config.addinivalue_line(
        "markers",
        "package_index: asks pip's resolver, which reaches the package index; part of the default run "
        "and of CI (offline: -m 'not package_index')",
    )


@pytest.fixture
def read_only_dir(tmp_path):
    """An empty folder nobody can write into: mode 0o555, and immutable (`chattr +i`) when the
    tests run as root (who ignores modes). Skips where neither works."""
    import os
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = hasattr(os, "geteuid") and os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: no read-only folder to test with")
    try:
        probe = folder / "probe"
        try:
            probe.write_bytes(b"")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("this folder stays writable")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)
