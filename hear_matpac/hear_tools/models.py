"""`--model SPEC`: which HEAR module, weights and options a run evaluates, and the stage list.

SPEC is `MODULE[:WEIGHTS[:OPTIONS_JSON]]`, split at the first two colons (the options JSON may
hold colons). Each model is checked before anything is written: the module is importable, the
weights file exists (hear_matpac: its options parse against the checkpoint). A model's *key*
is the sha256 of its module, the sha256 of its weights' bytes and its options (sorted JSON):
a changed file or option set is a different model, with a different result folder.

The stage list is plain data (`StagePlan`, one per (model, task), `as_dict` gives JSON), so a
scheduler can take it unchanged. A stage names its task folder by resolved path and content
fingerprint (`taskdirs.task_fingerprint`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence

from ..options import ModelOptions
from ..weights.integrity import sha256_file
from ..weights.locate import best_available_weights
from ..weights.read import read_config
from .launch import PLUGIN_MODULE
from .taskdirs import task_fingerprint


@dataclass(frozen=True)
class ModelSpec:
    """One model of a run, checked: module, weights path ('' for none), options, their key
    and a readable folder name that differs whenever the key does."""

    spec: str
    module: str
    weights: str
    weights_sha256: str
    options: Dict[str, object]
    key: str
    folder: str

    @property
    def options_json(self) -> str:
        return json.dumps(self.options, sort_keys=True)


@dataclass(frozen=True)
class StagePlan:
    """One (model, task) stage: everything needed to run it, as plain values."""

    model_folder: str
    model_key: str
    module: str
    weights: str
    options_json: str
    task: str
    task_dir: str
    task_fingerprint: str = ""  # `taskdirs.task_fingerprint` of task_dir when the run was planned

    def as_dict(self) -> Dict[str, str]:
        return asdict(self)


def split_spec(spec: str) -> tuple[str, str, str]:
    """`MODULE[:WEIGHTS[:OPTIONS_JSON]]` -> (module, weights, options text), split at the
    first two colons."""
    parts = str(spec).split(":", 2)
    parts += [""] * (3 - len(parts))
    return parts[0].strip(), parts[1].strip(), parts[2].strip()


def _readable(module: str, weights: str, options: Dict[str, object]) -> str:
    words = [module] + ([Path(weights).stem] if weights else [])
    words += [f"{k}={json.dumps(v)}" for k, v in sorted(options.items())]
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", "-".join(words))[:100]


def check_model(spec: str) -> ModelSpec:
    """Parse and check one SPEC (`ValueError`/`FileNotFoundError` naming it) without writing."""
    module, weights, options_text = split_spec(spec)
    if not module or not re.fullmatch(r"[A-Za-z_][\w.]*", module):
        raise ValueError(f"--model {spec!r}: {module!r} is not a module name (SPEC is MODULE[:WEIGHTS[:OPTIONS_JSON]])")
    try:
        options = json.loads(options_text) if options_text else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"--model {spec!r}: options are not JSON ({err})") from None
    if not isinstance(options, dict):
        raise ValueError(f"--model {spec!r}: options must be a JSON object, got {options_text!r}")
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"--model {spec!r}: module {module} is not installed")
    if module == PLUGIN_MODULE:
        path = best_available_weights(weights)
        try:
            ModelOptions.parse(options, read_config(path))
        except (ValueError, TypeError) as err:
            raise ValueError(f"--model {spec!r}: {err}") from None
        weights = str(path)
    elif weights and not Path(weights).is_file():
        raise FileNotFoundError(f"--model {spec!r}: weights file {weights} not found")
    digest = sha256_file(Path(weights)) if weights else ""
    text = json.dumps({"module": module, "weights_sha256": digest, "options": options}, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()
    folder = f"{_readable(module, weights, options)}-{key[:8]}"
    return ModelSpec(spec, module, weights, digest, options, key, folder)


def read_spec_file(path: Path) -> List[str]:
    """SPECs from a file: one a line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise FileNotFoundError(f"--models-file {path}: {err.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def plan_stages(models: Sequence[ModelSpec], task_dirs: Sequence[Path]) -> List[StagePlan]:
    """The (model, task) stages, model-major; each names its task folder by resolved path and
    content fingerprint, so a moved, replaced or edited task is another stage."""
    prints = {t: task_fingerprint(Path(t)) for t in task_dirs}
    return [StagePlan(m.folder, m.key, m.module, m.weights, m.options_json, t.name, str(Path(t).resolve()), prints[t])
            for m in models for t in task_dirs]  # fmt: skip
