"""One interpreter per model (issue 23, items 3 to 5): `evaluate --python MODULE=PATH` runs a
model's hear-validator and embedding runner in another environment, the key covers that
environment, `model-env` makes one, and a bad interpreter or a crashing plugin is reported.

The conflict is built here without downloads: `tinydep` 1 (what the plugin `confplug` needs)
lives in the plugin's venv, `tinydep` 2 (which it cannot use) on our side through PYTHONPATH;
the venv shares the rest of our packages (heareval, torch, ...) through a `.pth` file, and a
`hear_matpac` there that refuses to import proves the launcher needs none of it.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hear_matpac.cli import main
from hear_matpac.hear_tools import environments, foreign_launcher, model_env
from hear_matpac.evaluate.specs import check_model
from hear_matpac.weights.integrity import sha256_file
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import hear_matpac_cli, need

SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"

# A HEAR plugin that needs tinydep 1 (`tinydep.bands`, gone in 2): log energies of 8 bands
# per 25 ms frame every 50 ms. CONFPLUG_CRASH=1 aborts its embedding runner (not hear-validator).
CONFPLUG = '''
import os, sys
import torch
from tinydep import bands

HOP, FRAME = 800, 400

class Model(torch.nn.Module):
    sample_rate = 16000
    scene_embedding_size = timestamp_embedding_size = bands()

def load_model(model_file_path="", crash=False):
    if model_file_path:
        raise ValueError("confplug takes no weights, got %r" % model_file_path)
    model = Model()
    model.crash = crash
    return model

def get_timestamp_embeddings(audio, model):
    if model.crash and "embed" in sys.argv:
        os.abort()
    audio = torch.nn.functional.pad(audio, (0, max(0, FRAME - audio.shape[1])))
    frames = audio.unfold(1, FRAME, HOP)
    power = torch.fft.rfft(frames).abs() ** 2
    chunks = torch.tensor_split(power, bands(), dim=-1)
    embeddings = torch.log(torch.stack([c.sum(-1) for c in chunks], -1) + 1e-6).float()
    n = embeddings.shape[1]
    timestamps = (torch.arange(n) * HOP + FRAME / 2) / 16.0
    return embeddings, timestamps.float().expand(audio.shape[0], n)

def get_scene_embeddings(audio, model):
    return get_timestamp_embeddings(audio, model)[0].mean(1)
'''
TINYDEP = {"1": "def bands():\n    return 8\n", "2": "def band_count():\n    return 8\n"}


def _dist(site: Path, name: str, version: str, code: str) -> None:
    (site / name).mkdir(parents=True, exist_ok=True)
    (site / name / "__init__.py").write_text(code)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _site_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    origin = Path(spec.origin)
    return origin.parents[1] if origin.name == "__init__.py" else origin.parent


def make_venv(root: Path, share: bool = True, plugin: bool = True) -> Path:
    """A venv at `root` (no pip) with tinydep 1 and confplug, our HEAR tools' packages shared
    through a .pth (`share`), and a hear_matpac that refuses to import; its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = root / SITE
    _dist(site, "tinydep", "1", TINYDEP["1"])
    if plugin:
        (site / "confplug.py").write_text(CONFPLUG)
    (site / "hear_matpac").mkdir()
    (site / "hear_matpac" / "__init__.py").write_text("raise ImportError('hear_matpac is not for this environment')\n")
    if share:
        shared = {_site_dir(m) for m in ("heareval", "hearvalidator", "torch", "numpy", "soundfile", "click", "tqdm")}
        (site / "our-packages.pth").write_text("".join(f"{p}\n" for p in sorted(shared)))
    return root / "bin" / "python"


@pytest.fixture
def ours(tmp_path, monkeypatch) -> Path:
    """Our side of the conflict: tinydep 2 and confplug, through PYTHONPATH (not the venv)."""
    folder = tmp_path / "ours"
    _dist(folder, "tinydep", "2", TINYDEP["2"])
    (folder / "confplug.py").write_text(CONFPLUG)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return folder


def _err_lines(capsys) -> list:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# --- the launcher ------------------------------------------------------------------------------

def test_the_launcher_is_one_file_for_python_3_8_that_imports_nothing_of_hear_matpac():
    source = Path(foreign_launcher.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module != "__future__"}
    assert not any(name.startswith(("hear_matpac", ".")) for name in imported), imported
    assert environments.LAUNCHER == Path(foreign_launcher.__file__).resolve()


def _python_3_8() -> str:
    import shutil

    for found in (shutil.which("python3.8"), *sorted(Path.home().glob(".pyenv/versions/3.8*/bin/python"))):
        if found and subprocess.run([str(found), "-c", ""], capture_output=True).returncode == 0:
            return str(found)
    pytest.skip("no Python 3.8 here")


def test_the_launcher_runs_on_python_3_8(tmp_path):
    """Probe and validate on Python 3.8, with stand-ins for the HEAR tools written here."""
    tools = tmp_path / "tools"
    (tools / "heareval").mkdir(parents=True)
    (tools / "heareval" / "__init__.py").write_text("")
    (tools / "hearvalidator").mkdir()
    (tools / "hearvalidator" / "__init__.py").write_text("")
    (tools / "hearvalidator" / "validate.py").write_text(
        "import sys, tensorflow as tf\nclass ModelError(Exception): pass\n"
        "def main():\n    print('validating', sys.argv[1:], tf.__version__)\n    raise ModelError('no good')\n")
    (tools / "plug38.py").write_text("print('plug38 says hello')\n")
    python = _python_3_8()
    venv = tmp_path / "env38"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "lib" / "python3.8" / "site-packages" / "tools.pth").write_text(f"{tools}\n")
    env = environments.probe(str(venv / "bin" / "python"), "plug38")
    assert env.version.startswith("3.8.") and env.python == str(venv / "bin" / "python")
    done = subprocess.run([*environments.launcher_command(env.python), "validate", "", "--module", "plug38",
                           "--tensorflow", "stand-in"], capture_output=True, text=True, env=environments.launcher_env())  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "validating ['plug38'] 0+standin" in done.stdout and "plug38 FAILED: no good" in done.stderr


# --- bad interpreters: one line naming model, interpreter and error, before anything runs ---

def test_an_interpreter_that_does_not_exist_is_one_line_and_exit_2(tmp_path, capsys, ours):
    out, python = tmp_path / "out", tmp_path / "no-env" / "bin" / "python"
    argv = ["evaluate", "--out", str(out), "--no-chart", "--model", "confplug", "--python", f"confplug={python}"]
    assert main(argv) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "confplug" in err[0] and str(python) in err[0] and "not found" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("share, plugin, problem", [
    (True, False, "ModuleNotFoundError: No module named 'confplug'"),
    (False, True, "No module named 'heareval'"),
])  # fmt: skip
def test_an_interpreter_that_cannot_import_the_module_is_one_line_and_exit_2(tmp_path, capsys, ours, share, plugin, problem):
    python = make_venv(tmp_path / "env", share=share, plugin=plugin)
    out = tmp_path / "out"
    argv = ["evaluate", "--out", str(out), "--no-chart", "--model", f"hear_matpac:{TINY_UNTRAINED}",
            "--model", "confplug", "--python", f"confplug={python}"]  # fmt: skip
    assert main(argv) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "'confplug'" in err[0] and str(python) in err[0] and problem in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("flag, problem", [
    ("confplug", "expected MODULE=PATH"),
    ("other=/usr/bin/python3", "no --model uses module other"),
])  # fmt: skip
def test_a_misused_python_flag_is_one_line_and_exit_2(tmp_path, capsys, flag, problem):
    out = tmp_path / "out"
    assert main(["evaluate", "--out", str(out), "--no-chart", "--model", f"hear_matpac:{TINY_UNTRAINED}",
                 "--python", flag]) == 2  # fmt: skip
    err = _err_lines(capsys)
    assert len(err) == 1 and problem in err[0], err
    assert not out.exists()


# --- the key covers the environment ------------------------------------------------------------

def test_the_key_covers_the_interpreter_and_its_packages(tmp_path, ours):
    python = make_venv(tmp_path / "env")
    first = check_model("confplug", str(python))
    assert first.python == str(python) and first.packages["tinydep"] == "1"
    assert check_model("confplug", str(python)).key == first.key  # the same environment: the same model
    info = tmp_path / "env" / SITE / "tinydep-1.dist-info"
    info.rename(info.with_name("tinydep-1.1.dist-info"))
    (info.with_name("tinydep-1.1.dist-info") / "METADATA").write_text("Metadata-Version: 2.1\nName: tinydep\nVersion: 1.1\n")
    upgraded = check_model("confplug", str(python))
    assert upgraded.key != first.key and upgraded.folder != first.folder and upgraded.packages["tinydep"] == "1.1"
    twin = check_model("confplug", str(make_venv(tmp_path / "twin")))  # same packages, another interpreter
    assert twin.key not in (first.key, upgraded.key)
    # our own interpreter: no environment in the key (module, weights' sha256, the options that
    # change results, parsed: issue 26's scheme 2)
    from hear_matpac.options import ModelOptions, result_options
    from hear_matpac.weights.read import read_config

    plain = check_model(f"hear_matpac:{TINY_UNTRAINED}")
    numbers = result_options(ModelOptions.parse({}, read_config(TINY_UNTRAINED)))
    text = json.dumps({"scheme": 2, "module": "hear_matpac", "weights_sha256": sha256_file(TINY_UNTRAINED),
                       "options": numbers}, sort_keys=True)
    assert plain.key == hashlib.sha256(text.encode()).hexdigest() and plain.python == ""


# --- end to end ----------------------------------------------------------------------------------

COMMON = ["--tasks", "synth_scene_multiclass", "--grid-points", "1", "--no-chart", "--tensorflow", "stand-in",
          "--devices", "cpu"]  # fmt: skip


@pytest.mark.slow
def test_a_plugin_conflicting_with_our_environment_is_compared_with_hear_matpac_in_one_run(tmp_path, ours):
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    python = make_venv(tmp_path / "env")
    # the conflict is real: confplug does not import here, and does there
    here = subprocess.run([sys.executable, "-c", "import confplug"], capture_output=True, text=True)
    assert here.returncode != 0 and "cannot import name 'bands' from 'tinydep'" in here.stderr
    subprocess.run([str(python), "-c", "import confplug"], check=True, env=environments.launcher_env())
    models = tmp_path / "models.txt"  # the models file says --python too
    models.write_text(f"hear_matpac:{TINY_UNTRAINED}\nconfplug\n# its own environment\n--python confplug={python}\n")
    run = hear_matpac_cli("evaluate", "--out", str(tmp_path / "out"), "--models-file", str(models), *COMMON, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    modules = {m["module"]: m for m in summary["models"]}
    assert modules["confplug"]["python"] == str(python) and modules["confplug"]["packages"]["tinydep"] == "1"
    assert modules["hear_matpac"]["python"] == ""
    assert {s["status"] for s in summary["stages"]} == {"ran"}
    assert {s["model"].split("-")[0] for s in summary["scores"]} == {"hear_matpac", "confplug"}
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "confplug" in table and "hear_matpac" in table
    confplug = modules["confplug"]["folder"]
    embed_log = (tmp_path / "out" / "runs" / confplug / "synth_scene_multiclass" / "embed.log").read_text()
    assert f"{python} {environments.LAUNCHER} embed" in embed_log
    validate_log = (tmp_path / "out" / "runs" / confplug / "validate.log").read_text()
    assert f"{python} {environments.LAUNCHER} validate" in validate_log and "Looks good!" in validate_log


@pytest.mark.slow
def test_a_plugin_crashing_in_its_environment_fails_its_stage_and_the_others_go_on(tmp_path, ours):
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    python = make_venv(tmp_path / "env")
    run = hear_matpac_cli("evaluate", "--out", str(tmp_path / "out"), *COMMON, "--model", f"hear_matpac:{TINY_UNTRAINED}",
                          "--model", 'confplug::{"crash": true}', "--python", f"confplug={python}", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {(s.get("module") or s["spec"].split(":")[0], s.get("task", "validate")): s["status"] for s in summary["stages"]}
    assert status == {("hear_matpac", "validate"): "ran", ("confplug", "validate"): "ran",
                      ("hear_matpac", "synth_scene_multiclass"): "ran", ("confplug", "synth_scene_multiclass"): "failed"}, status
    failed = [s for s in summary["stages"] if s["status"] == "failed"][0]
    assert "exit -6" in failed["message"] and failed["log"].endswith("embed.log") and Path(failed["log"]).is_file()
    lines = [line for line in run.stderr.splitlines() if "failed" in line]
    assert len(lines) == 1 and "confplug" in lines[0] and failed["log"] in lines[0]
    assert "hear_matpac" in (tmp_path / "out" / "comparison.md").read_text()


# --- model-env -------------------------------------------------------------------------------------

def _pins(path: Path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_model_env_pins_what_the_embedding_side_imports_as_our_tools_do():
    from importlib.metadata import packages_distributions

    from hear_matpac.hear_tools.install import CONSTRAINTS
    from hear_matpac.hear_tools.model_env import EMBED_REQUIREMENTS

    need("heareval", "the HEAR tools")
    pinned = _pins(EMBED_REQUIREMENTS)
    assert pinned and all(_pins(CONSTRAINTS)[name] == version for name, version in pinned.items())
    unpinned = {line.strip().lower() for line in EMBED_REQUIREMENTS.read_text().splitlines()
                if line.strip() and not line.startswith("#") and "==" not in line}  # fmt: skip
    listed = set(pinned) | unpinned
    distributions = packages_distributions()
    for module in ("heareval.embeddings.runner", "heareval.embeddings.task_embeddings", "heareval.gpu_max_mem",
                   "hearvalidator.validate"):  # fmt: skip
        tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        for name in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"heareval", "hearvalidator", "tensorflow"}:
            wanted = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            assert wanted & listed, f"{module} imports {name} ({wanted}), which requirements-hear-embed.txt leaves out"


def _wheel(folder: Path, name: str, version: str, code: str) -> Path:
    """A pure-Python wheel of one module, written by hand (no build tools, no download)."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}.py", code)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", f"{name}.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return path


@pytest.mark.slow
def test_model_env_makes_a_venv_that_runs_the_plugin_and_prints_the_flag(tmp_path, monkeypatch, capsys):
    need("heareval", "the HEAR tools")
    wheel = _wheel(tmp_path, "tinyplug", "1.0", CONFPLUG.replace("from tinydep import bands", "bands = lambda: 8"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: the pins are met by our shared packages
    # share the base venv's site-packages alone: a worktree's venv puts its own old setuptools (which
    # fails torch's pin, and is not in the base) first on our sys.path
    monkeypatch.setattr(model_env, "our_site_dirs", lambda: [str(_site_dir("heareval"))])
    env = tmp_path / "envs" / "tinyplug"
    assert main(["model-env", str(env), str(wheel), "--module", "tinyplug", "--share", "--python", sys.executable]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    python = env / "bin" / "python"
    assert out[-1].strip() == f"--python tinyplug={python}"
    assert importlib.util.find_spec("tinyplug") is None  # installed there, not here
    where = subprocess.run([str(python), "-c", "import tinyplug, heareval; print(tinyplug.__file__)"],
                           capture_output=True, text=True, env=environments.launcher_env(), check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(env))
    assert check_model("tinyplug", str(python)).packages["tinyplug"] == "1.0"


def test_model_env_refuses_bad_input_in_one_line(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    cases = [(["model-env", str(taken), "hearbaseline"], "is not a venv"),
             (["model-env", str(tmp_path / "new"), "hearbaseline", "--python", str(tmp_path / "nope")], "interpreter not found"),
             (["model-env", str(tmp_path / "new"), "./plugin"], "name it with --module")]  # fmt: skip
    for argv, problem in cases:
        assert main(argv) == 2
        err = _err_lines(capsys)
        assert len(err) == 1 and problem in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and (taken / "notes.txt").read_text() == "mine"
