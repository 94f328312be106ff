"""The README's Usage example runs, and the shapes in its comments are what it gives.

Run with the real weights when `weights/matpac_10_2048.pt` is there; otherwise with the
bundled tiny checkpoint, whose embedding size stands for the real one's in the comments.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

import hear_matpac
from hear_matpac.weights.locate import TINY_UNTRAINED

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
    real = (ROOT / REAL).is_file()
    if not real:
        code = code.replace(f'"{REAL}"', repr(str(TINY_UNTRAINED)))
    namespace: dict = {}
    exec(compile(code, "README.md (Usage)", "exec"), namespace)  # noqa: S102 - our own README
    model = namespace["model"]
    size = REAL_SIZE if real else model.scene_embedding_size
    expected = _commented_shapes(code)
    assert set(expected) == {"emb", "ts", "scene"}
    for name, shape in expected.items():
        shape = tuple(size if d == REAL_SIZE else d for d in shape)
        value = namespace[name]
        assert isinstance(value, torch.Tensor) and tuple(value.shape) == shape, (name, tuple(value.shape), shape)
    assert namespace["emb"].dtype == torch.float32 and isinstance(model, hear_matpac.api.MatpacModel)
