"""Check hear_matpac against given torch releases, each in a new venv, in one command.

    python tools/torch_matrix.py 2.4.0 2.14.1            # oldest supported and newest
    python tools/torch_matrix.py 2.4.0 --torchaudio      # also cross-check with torchaudio 2.4.0

For each release: a new venv, `pip install torch==V` (plus the torchaudio of the same release
with --torchaudio), then `pip install -e .[test]` (which must leave that torch alone), then the
front-end, resampling, parity and TF32-getter tests. Prints one line per release and exits 1 if any failed.
Each venv holds a full torch (several GB): they go under --root (default: a temporary folder,
removed afterwards unless --keep).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_parity.py", "tests/test_frontend.py", "tests/test_resample.py", "tests/test_tf32_getters.py"]


def _run(command: list, log) -> int:
    print("+ " + " ".join(map(str, command)), file=log, flush=True)
    return subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def check_release(version: str, root: Path, torchaudio: bool, log) -> str:
    """Build the venv for torch `version` and run the tests; a one-line verdict."""
    venv = root / f"torch-{version}"
    python = venv / "bin" / "python"
    if _run([sys.executable, "-m", "venv", str(venv)], log):
        return "FAIL (venv)"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    note = ""
    if torchaudio and _run(pip + [f"torch=={version}", f"torchaudio=={version}"], log) == 0:
        note = " (with torchaudio: cross-checks ran)"
    elif _run(pip + [f"torch=={version}"], log):
        return f"FAIL (pip could not install torch=={version})"
    elif torchaudio:
        note = f" (no torchaudio {version} installs: cross-checks skipped)"
    if _run(pip + ["-e", ".[test]"], log):
        return "FAIL (pip install -e .[test])"
    installed = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    if installed.split("+")[0] != version:
        return f"FAIL (installing hear-matpac changed torch {version} to {installed})"
    status = _run([str(python), "-m", "pytest", "-q", "-rs", *TESTS], log)
    return ("pass" if status == 0 else f"FAIL (pytest exit {status})") + note


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", help="torch releases, e.g. 2.4.0 2.14.1")
    parser.add_argument(
        "--torchaudio", action="store_true",
        help="also install the same torchaudio release where one exists (cross-checks; the last is 2.11)",
    )  # fmt: skip
    parser.add_argument("--root", type=Path, help="where the venvs go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the venvs afterwards")
    parser.add_argument("--log", type=Path, help="pip and pytest output (default: ROOT/matrix.log)")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="hear-matpac-torch-"))
    root.mkdir(parents=True, exist_ok=True)
    log_path = args.log or root / "matrix.log"
    failed = False
    with open(log_path, "a") as log:
        for version in args.versions:
            verdict = check_release(version, root, args.torchaudio, log)
            failed |= not verdict.startswith("pass")
            print(f"torch {version}: {verdict}", flush=True)
            if not args.keep:
                shutil.rmtree(root / f"torch-{version}", ignore_errors=True)
    print(f"log: {log_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
