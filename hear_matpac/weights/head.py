"""Recognise and check the AudioSet classification head that some checkpoints carry.

The published inference code names it `head_norm` (BatchNorm1d over `embed_dim`, no affine,
applied to the time-and-frequency mean of the tokens) and `head` (Linear(embed_dim, classes)).
A checkpoint holds a head when, after the `module.` / `model.` prefixes are stripped, it has
`head_norm.running_mean` `(D,)`, `head_norm.running_var` `(D,)`, `head.weight` `(C, D)` and
`head.bias` `(C,)`, optionally `head_norm.num_batches_tracked` `()`. Any other `head.*` /
`head_norm.*` entry, a missing one or a wrong shape makes the head malformed. The encoder
reader (`weights.read.extract_encoder`) ignores all of these keys; only `info` and `weights
export` look for a head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from torch import Tensor

from .read import CheckpointError, PathLike, model_state, strip_prefixes

HEAD_KEYS = ("head_norm.running_mean", "head_norm.running_var", "head.weight", "head.bias")
OPTIONAL_HEAD_KEYS = ("head_norm.num_batches_tracked",)
_HEAD_PREFIXES = ("head_norm.", "head.")


@dataclass(frozen=True)
class HeadWeights:
    """The head's tensors, keyed as in `HEAD_KEYS` (plus the optional batch counter)."""

    state_dict: dict[str, Tensor]

    @property
    def n_classes(self) -> int:
        return int(self.state_dict["head.weight"].shape[0])

    @property
    def in_features(self) -> int:
        return int(self.state_dict["head.weight"].shape[1])


def head_keys(raw: Mapping[str, object]) -> list[str]:
    """The checkpoint's keys (as stored) that belong to a classification head."""
    return [str(k) for k in model_state(raw) if strip_prefixes(str(k)).startswith(_HEAD_PREFIXES)]


def find_head(raw: Mapping[str, object], path: PathLike, embed_dim: int) -> Optional[HeadWeights]:
    """The checkpoint's classification head on `embed_dim`-d tokens, or None when it has none.

    Raises `CheckpointError` when head entries are present but do not form the published head."""
    found: dict[str, object] = {}
    source: dict[str, str] = {}
    for key, value in model_state(raw).items():
        name = strip_prefixes(str(key))
        if name.startswith(_HEAD_PREFIXES):
            if name in source:
                raise CheckpointError(path, f"ambiguous: {source[name]!r} and {str(key)!r} are both the head's {name}")
            found[name], source[name] = value, str(key)
    if not found:
        return None
    expected = (
        "expected BatchNorm1d without affine (head_norm.running_mean, head_norm.running_var) "
        "and Linear (head.weight, head.bias)"
    )
    unexpected = sorted(set(found) - set(HEAD_KEYS) - set(OPTIONAL_HEAD_KEYS))
    missing = [k for k in HEAD_KEYS if k not in found]
    if unexpected or missing:
        problems = ([f"unexpected {', '.join(unexpected)}"] if unexpected else []) + (
            [f"missing {', '.join(missing)}"] if missing else []
        )
        raise CheckpointError(path, f"malformed classification head ({'; '.join(problems)}): {expected}")
    not_tensors = sorted(k for k, v in found.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise CheckpointError(path, f"classification head entries are not tensors: {', '.join(not_tensors)}")
    n_classes = found["head.weight"].shape[0] if found["head.weight"].ndim == 2 else -1
    shapes = {
        "head_norm.running_mean": (embed_dim,),
        "head_norm.running_var": (embed_dim,),
        "head.weight": (n_classes, embed_dim),
        "head.bias": (n_classes,),
    }
    for key, shape in shapes.items():
        tensor = found[key]
        if tuple(tensor.shape) != shape or n_classes < 1:
            raise CheckpointError(
                path,
                f"classification head: {key} has shape {tuple(tensor.shape)}, expected {shape} for {embed_dim}-d tokens",
            )
        if not tensor.is_floating_point():
            raise CheckpointError(
                path, f"classification head: {key} has dtype {tensor.dtype}, expected floating point"
            )
    counter = found.get("head_norm.num_batches_tracked")
    if counter is not None and counter.numel() != 1:
        raise CheckpointError(
            path,
            f"classification head: head_norm.num_batches_tracked has shape {tuple(counter.shape)}, expected ()",
        )
    return HeadWeights(found)
