"""The layering rule of docs/architecture.md, checked on every module of the package and on
the package root (which imports `api` and `version`: it sits in the API layer); no import
cycles, function-level imports included; every module named in docs/architecture.md's map.

Layers, lowest first; a module imports only from its own layer or lower ones:
  0 core       config options batching tf32 precision frontend windows timestamps encoder
               packed_linear packing model finite_checks io marks version
  1 weights/   locate, read, integrity, registry, http_transfer, download, export, info, head, synthetic
  2 api        the HEAR surface (load_model reads weights/), and the package root
  3 files/     audio decoding, input paths, the output-folder store, embedding many files (job: embed_files)
  4 reports/   heareval results, comparison tables, charts, the run summary, the sweep table
  5 hear_tools/  the HEAR team's tools (install, launch), the TensorFlow stand-in, the synthetic
               task suite, model environments
  6 evaluate/  model specs and task folders, stages under claims, the tools as processes, the
               engines (local slots, Slurm), evaluate(), sweep
  7 cli/       the command line; nothing else imports or spawns it
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import hear_matpac

PACKAGE = Path(hear_matpac.__file__).resolve().parent
LAYERS = {"weights": 1, "api": 2, "files": 3, "reports": 4, "hear_tools": 5, "evaluate": 6, "cli": 7}


def _modules() -> list[str]:
    """Every module of the package, the package root (`hear_matpac`) first."""
    return ["hear_matpac"] + sorted(m.name for m in pkgutil.walk_packages(hear_matpac.__path__, "hear_matpac."))


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else LAYERS["api"]  # the root imports api: the API layer


def _source(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    if path == PACKAGE:
        return path / "__init__.py"
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(module: str) -> set[str]:
    """Every hear_matpac module that `module`'s source imports, at any depth of its code."""
    path = _source(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("hear_matpac"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("hear_matpac"):
                continue
            found.add(target)
            for alias in node.names:  # `from . import api`: the module api
                if _source(f"{target}.{alias.name}").exists():
                    found.add(f"{target}.{alias.name}")
    return found


def test_the_layout_is_the_documented_one():
    names = set(_modules())
    for package in LAYERS:
        assert f"hear_matpac.{package}" in names
    core = {"config", "options", "batching", "tf32", "precision", "frontend", "windows", "timestamps", "encoder", "packed_linear",
            "packing", "model", "finite_checks", "io", "marks", "version", "api"}  # fmt: skip
    top_level = {n.split(".")[1] for n in names if n.count(".") == 1} - (set(LAYERS) - {"api"})
    assert top_level == core, "a new top-level module belongs in a folder by its job (docs/architecture.md)"
    assert "architecture" in (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8").lower()


@pytest.mark.parametrize("module", [m for m in _modules() if not m.endswith("__main__")])
def test_every_module_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("module", _modules())
def test_imports_point_down(module):
    upward = sorted(t for t in _imports(module) if _layer(t) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module)}) imports {upward} from a higher layer"


@pytest.mark.parametrize("module", [m for m in _modules() if _layer(m) < LAYERS["cli"]])
def test_nothing_outside_cli_names_the_cli(module):
    text = _source(module).read_text(encoding="utf-8")
    assert "hear_matpac.cli" not in text and "hear-matpac=" not in text, module


def _cycles(graph: dict[str, list[str]]) -> set[tuple[str, ...]]:
    """Every import cycle in `graph` (module -> the modules it imports), each as its modules
    from the smallest name on."""
    found, state = set(), {}  # state: 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for target in graph.get(module, []):
            if state.get(target) == 1:
                cycle = path[path.index(target):]
                start = cycle.index(min(cycle))
                found.add(tuple(cycle[start:] + cycle[:start]))
            elif target not in state:
                visit(target, path)
        path.pop()
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
    return found


def test_no_import_cycles():
    """Written imports at any depth of the code (`_imports` walks the whole tree), so an import
    inside a function closes a cycle as a top-level one does."""
    cycles = _cycles({m: sorted(t for t in _imports(m) if t != m) for m in _modules()})
    assert cycles == set(), "modules that import each other (directly or round a circle)"


def test_the_cycle_check_finds_cycles_and_function_level_imports():
    assert "hear_matpac.files.job" in _imports("hear_matpac.cli.embed")  # imported inside `run` only
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": [], "e": ["e2"], "e2": ["e"]}
    assert _cycles(graph) == {("a", "b", "c"), ("e", "e2")}
    assert _cycles({"a": ["b"], "b": ["c"], "c": []}) == set()


def test_every_module_is_in_the_map():
    """Each module's name appears in docs/architecture.md (its map of the package)."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [m for m in _modules()[1:] if not m.endswith("__main__") and not
               re.search(rf"(?<![\w/.]){re.escape(m.split('.')[-1])}(?![\w])", text)]  # fmt: skip
    assert missing == [], "add them to the map in docs/architecture.md"


def test_no_test_module_imports_another():
    """Helpers shared by test modules live in conftest.py: importing a test module from another
    runs its module-level code (and its fixtures' state) a second time."""
    tests = Path(__file__).resolve().parent
    names = {p.stem for p in tests.glob("test_*.py")}
    found = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []  # fmt: skip
            found += [f"{path.name} imports {m}" for m in modules if m.split(".")[0] in names]
    assert found == []
