"""`--model SPEC`: which HEAR module, weights and options a run evaluates, and the stage list.

SPEC is `MODULE[:WEIGHTS[:OPTIONS_JSON]]`, split at the first two colons (the options JSON may
hold colons). Each model is checked before anything is written: the module is importable, the
weights file exists (hear_matpac: its options parse against the checkpoint). A model's *key*
is the sha256 of its module name, the sha256 of its weights' bytes and its options (sorted
JSON), and, for a model run by another environment's interpreter (`--python MODULE=PATH`),
that interpreter's path, Python version and packages' versions: a changed file, option set
or environment is a different model, with a different result folder.

The stage list is plain data (`StagePlan`, one per (model, task), `as_dict` gives JSON), so a
scheduler can take it unchanged. A stage names its task folder by resolved path and content
fingerprint (`taskdirs.task_fingerprint`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..io import InputError, MissingFile
from ..options import ModelOptions, result_options
from ..weights.integrity import sha256_file
from ..weights.locate import best_available_weights
from ..weights.read import read_config
from ..hear_tools.environments import Environment, probe
from ..hear_tools.launch import PLUGIN_MODULE
from .task_folders import task_fingerprint

PYTHON_LINE = "--python "


@dataclass(frozen=True)
class ModelSpec:
    """One model of a run, checked: module, weights path ('' for none), options, their key
    and a readable folder name that differs whenever the key does; `python`: the interpreter
    that runs its validation and embedding ('' for ours) and `packages` its environment's."""

    spec: str
    module: str
    weights: str
    weights_sha256: str
    options: Dict[str, object]
    key: str
    folder: str
    python: str = ""
    packages: Dict[str, str] = field(default_factory=dict)

    @property
    def options_json(self) -> str:
        return json.dumps(self.options, sort_keys=True)

    def describe(self) -> str:
        """One line naming the model: its folder, module, weights, options and interpreter."""
        return (f"model {self.folder}: {self.module} {self.weights or '(no weights)'} {json.dumps(self.options)}"
                + (f" with {self.python}" if self.python else ""))

    def record(self) -> Dict[str, object]:
        """What `summary.json` says of the model."""
        return {"spec": self.spec, "folder": self.folder, "module": self.module, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "options": self.options, "key": self.key,
                "python": self.python, "packages": self.packages}  # fmt: skip


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
    python: str = ""

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


def model_key(module: str, weights_sha256: str, options: Mapping[str, object],
              environment: Optional[Environment] = None) -> str:
    """The model's identity, shared by every stage of it: the module, the weights' bytes
    (sha256), the options that change its numbers (for hear_matpac its parsed
    `options.result_options`, so equal settings spelt differently are one model; for another
    plugin its options as given, keys sorted) and, for a `--python` interpreter, its
    environment (interpreter, version, packages)."""
    identity: Dict[str, object] = {"scheme": 2, "module": module, "weights_sha256": weights_sha256,
                                   "options": dict(options)}  # fmt: skip
    if environment is not None:  # absent for our own interpreter
        identity["environment"] = environment.identity()
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def check_model(spec: str, python: str = "", environment: Optional[Environment] = None) -> ModelSpec:
    """Parse and check one SPEC (`ValueError`/`FileNotFoundError` naming it) without writing.
    `python`: another environment's interpreter for its validation and embedding, probed here
    (it must import the module and the HEAR tools) unless its `environment` is given."""
    module, weights, options_text = split_spec(spec)
    if not module or not re.fullmatch(r"[A-Za-z_][\w.]*", module):
        raise InputError(f"--model {spec!r}: {module!r} is not a module name (SPEC is MODULE[:WEIGHTS[:OPTIONS_JSON]])")
    try:
        options = json.loads(options_text) if options_text else {}
    except json.JSONDecodeError as err:
        raise InputError(f"--model {spec!r}: options are not JSON ({err})") from None
    if not isinstance(options, dict):
        raise InputError(f"--model {spec!r}: options must be a JSON object, got {options_text!r}")
    if python and environment is None:
        try:
            environment = probe(python, module)
        except ValueError as err:
            raise InputError(f"--model {spec!r}: {err}") from None
    if not python and importlib.util.find_spec(module) is None:
        raise InputError(f"--model {spec!r}: module {module} is not installed")
    named = options  # what the folder name shows: the options given
    if module == PLUGIN_MODULE:
        path = best_available_weights(weights)
        try:
            config = read_config(path)
            numbers = result_options(ModelOptions.parse(options, config))
        except (ValueError, TypeError) as err:
            raise InputError(f"--model {spec!r}: {err}") from None
        defaults = result_options(ModelOptions.parse({}, config))
        named = {k: v for k, v in numbers.items() if v != defaults[k]}
        weights = str(path)
    elif weights and not Path(weights).is_file():
        raise MissingFile(f"--model {spec!r}: weights file {weights} not found")
    digest = sha256_file(Path(weights)) if weights else ""
    key = model_key(module, digest, numbers if module == PLUGIN_MODULE else options, environment)
    folder = f"{_readable(module, weights, named)}-{key[:8]}"
    if environment is None:
        return ModelSpec(spec, module, weights, digest, options, key, folder)
    return ModelSpec(spec, module, weights, digest, options, key, folder, environment.python, environment.packages)


def parse_pythons(values: Sequence[str]) -> Dict[str, str]:
    """`--python MODULE=PATH` values -> {module: interpreter}; `ValueError` for a malformed one
    or a module given two different interpreters."""
    found: Dict[str, str] = {}
    for value in values:
        module, sep, path = str(value).partition("=")
        module, path = module.strip(), path.strip()
        if not sep or not path or not re.fullmatch(r"[A-Za-z_][\w.]*", module):
            raise InputError(f"--python {value!r}: expected MODULE=PATH, e.g. hearbaseline=envs/hearbaseline/bin/python")
        if found.get(module, path) != path:
            raise InputError(f"--python: module {module} is given two interpreters ({found[module]} and {path})")
        found[module] = path
    return found


def split_python_lines(lines: Sequence[str]) -> Tuple[List[str], List[str]]:
    """A models file's lines -> (SPECs, `--python` values): a line `--python MODULE=PATH` says
    what the flag says; every other line is a SPEC."""
    specs = [line for line in lines if not line.startswith(PYTHON_LINE)]
    pythons = [line[len(PYTHON_LINE):].strip() for line in lines if line.startswith(PYTHON_LINE)]
    return specs, pythons


def check_models(specs: Sequence[str], pythons: Dict[str, str]) -> List[ModelSpec]:
    """Every SPEC checked, each module's interpreter (if any) probed once; `ValueError` for a
    `--python` module that no SPEC uses."""
    unused = set(pythons) - {split_spec(spec)[0] for spec in specs}
    if unused:
        name = sorted(unused)[0]
        raise InputError(f"--python {name}={pythons[name]}: no --model uses module {name}")
    environments: Dict[str, Environment] = {}
    models = []
    for spec in specs:
        module = split_spec(spec)[0]
        python = pythons.get(module, "")
        if python and module not in environments:
            try:
                environments[module] = probe(python, module)
            except ValueError as err:
                raise InputError(f"--model {spec!r}: {err}") from None
        models.append(check_model(spec, python, environments.get(module)))
    return models


def read_spec_file(path: Path) -> List[str]:
    """SPECs from a file: one a line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise MissingFile(f"--models-file {path}: {err.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def models_from_flags(specs: Sequence[str], models_file: str, pythons: Sequence[str], weights: str,
                      options: Mapping[str, object]) -> List[ModelSpec]:
    """A run's models, checked (`check_models`) before anything is written: the `--model` SPECs,
    then the models file's (`read_spec_file`; its `--python MODULE=PATH` lines as the flag), or,
    with none, the one default model: hear_matpac with `weights` and `options`. `InputError`
    for `weights` or `options` given beside SPECs (they belong in each SPEC)."""
    from_file, file_pythons = split_python_lines(read_spec_file(Path(models_file)) if models_file else [])
    specs = [*specs, *from_file]
    if specs and (weights or options):
        raise InputError("--weights and model option flags describe the one default model; with --model, "
                         "put them in each SPEC (MODULE:WEIGHTS:OPTIONS_JSON)")  # fmt: skip
    default = [f"{PLUGIN_MODULE}:{weights}:{json.dumps(dict(options))}"]
    return check_models(specs or default, parse_pythons([*pythons, *file_pythons]))


def plan_stages(models: Sequence[ModelSpec], task_dirs: Sequence[Path]) -> List[StagePlan]:
    """The (model, task) stages, model-major; each names its task folder by resolved path and
    content fingerprint, so a moved, replaced or edited task is another stage."""
    prints = {t: task_fingerprint(Path(t)) for t in task_dirs}
    return [StagePlan(m.folder, m.key, m.module, m.weights, m.options_json, t.name, str(Path(t).resolve()), prints[t],
                      m.python)
            for m in models for t in task_dirs]  # fmt: skip
