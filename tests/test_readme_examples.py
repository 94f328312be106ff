"""The README's Usage example runs, and the shapes in its comments are what it gives.

Always run with the bundled tiny checkpoint, whose embedding size stands for the real one's in
the comments: whatever a user fetched into `weights/` (or nothing) gives the same test.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

import hear_matpac
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import write_other_weights

ROOT = Path(__file__).resolve().parents[1]
REAL = "weights/matpac_10_2048.pt"
REAL_SIZE = 3840  # ViT-Base, 768 x 5 frequency patches


def _usage_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    usage = text[text.index("\n## Usage\n"):]
    return re.search(r"```python\n(.*?)```", usage, re.S).group(1)


def _commented_shapes(code: str) -> dict[str, list[tuple[int, ...]]]:
    """`name` (or `a, b`) -> the shapes in the line's `# (..), (..)` comment."""
    shapes = {}
    for line in code.splitlines():
        if "=" in line and "#" in line:
            names = [n.strip() for n in line.split("=")[0].split(",")]
            found = [tuple(int(x) for x in m.split(",")) for m in re.findall(r"\(([\d, ]+)\)", line.split("#", 1)[1])]
            if len(found) == len(names):
                shapes.update(zip(names, found))
    return shapes


def test_usage_example_runs_and_its_shapes_hold() -> None:
    code = _usage_block()
    assert f'"{REAL}"' in code
    code = code.replace(f'"{REAL}"', repr(str(TINY_UNTRAINED)))
    namespace: dict = {}
    exec(compile(code, "README.md (Usage)", "exec"), namespace)  # noqa: S102 - our own README
    model = namespace["model"]
    size = model.scene_embedding_size
    expected = _commented_shapes(code)
    assert set(expected) == {"emb", "ts", "scene"}
    for name, shape in expected.items():
        shape = tuple(size if d == REAL_SIZE else d for d in shape)
        value = namespace[name]
        assert isinstance(value, torch.Tensor) and tuple(value.shape) == shape, (name, tuple(value.shape), shape)
    assert namespace["emb"].dtype == torch.float32 and isinstance(model, hear_matpac.api.MatpacModel)


def test_the_example_holds_whatever_checkpoint_is_in_weights(tmp_path, monkeypatch) -> None:
    """Another checkpoint where the real one goes (a user's fetch, a fine-tuned copy)."""
    (tmp_path / "weights").mkdir()
    write_other_weights(tmp_path / REAL)
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    test_usage_example_runs_and_its_shapes_hold()
