"""Options of `load_model` (also `heareval --model-options` JSON), checked once, up front.

`ModelOptions.parse` is the one place an option is turned into what it means for the work: it
returns `ParsedOptions`, the options normalised plus their derived settings (passes, hop in
samples, window frames, windows per encoder batch), which the model and the API read."""
from __future__ import annotations

import json
import math
import re
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Collection, Dict, List, Mapping, Optional

from .batching import DEFAULT_MAX_WINDOWS
from .config import COLUMN_HOP_MS, FRAMES_PER_SECOND, PATCH, SAMPLE_RATE, EncoderConfig
from .io import InputError, InputTypeError
from .precision import DEFAULT_PRECISION, check_precision_name

__all__ = ["DEFAULT_MAX_WINDOWS", "ModelOptions", "OptionFlag", "ParsedOptions", "TIMESTAMP_HOPS_MS", "option_flags",
           "option_help", "options_from_json", "result_options"]
# Finer timestamp hops: COLUMN_HOP_MS / hop passes, each shifted by a whole number of frames.
TIMESTAMP_HOPS_MS = (160, 80, 40, 20)
COLUMN_SECONDS = PATCH / FRAMES_PER_SECOND  # 0.16 s: window lengths are whole columns


def _option(default: Any, help: str, changes_results: bool) -> Any:
    """A `ModelOptions` field: its description (`option_help`, the command lines' help) and
    whether it changes the numbers beyond float tolerance (`result_options`: the model's
    identity for `embed`'s folders and `evaluate`'s result keys)."""
    return field(default=default, metadata={"help": " ".join(help.split()), "changes_results": changes_results})


@dataclass(frozen=True)
class ModelOptions:
    """The options of `load_model`; each field's metadata holds its description."""

    layer: int = _option(-1, """encoder block whose output gives the features, 0-based, negative
        counts from the end (default -1, the last, after the final LayerNorm, as MATPAC).""", True)
    max_windows: Optional[int] = _option(None, """most full-length windows encoded at once, or as many
        frames in shorter windows (bounds memory; does not change results). None (default): 16 on
        CPU; on CUDA as many as half the free memory holds, at most 512 (`batching`).""", False)
    timestamp_hop_ms: int = _option(COLUMN_HOP_MS, """spacing of timestamp embeddings, 160 (native) /
        80 / 40 / 20 ms; finer hops add passes over the audio shifted by multiples of the hop
        (scene unaffected).""", True)
    window_overlap: float = _option(0.0, """fraction in [0, 1) by which consecutive windows overlap on
        long audio; each column is kept from the window in which it sits most centrally (0:
        MATPAC's cut).""", True)
    window_seconds: Optional[float] = _option(None, """window length (temporal support), a multiple of
        0.16 s up to the checkpoint's maximum; None means the maximum (6.08 s, or 9.92 s).""", True)
    precision: str = _option(DEFAULT_PRECISION, """"fp32" (default; exact: TF32 off on CUDA whatever
        the global settings), "tf32" (CUDA matmuls and convolutions of the encoder in TF32; on CPU
        the same as fp32), "bf16" (CPU, CUDA) or "fp16" (CUDA): autocast for the encoder only; the
        front end runs and the features come back in float32.""", True)
    cpu_packed_weights: bool = _option(True, """for float32 on CPU, multiply by a copy of the linear
        weights kept in MKL's packed GEMM layout (faster, same numbers, one more copy of those
        weights in memory; docs/performance.md); False saves that memory.""", False)
    compile: bool = _option(False, """run the encoder through torch.compile with dynamic shapes (window
        count and length vary without recompiling each); the first calls are slower while it
        compiles; same numbers within float tolerance. Needs a C compiler on CPU, where it
        replaces cpu_packed_weights.""", False)

    @classmethod
    def parse(cls, options: Mapping[str, Any], config: EncoderConfig) -> "ParsedOptions":
        """Check user options against the encoder they apply to; normalise them (`layer`
        0-based, `window_seconds` a length) and derive their settings."""
        known = {f.name for f in fields(ModelOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputTypeError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
        parsed = ModelOptions(**options)
        layer = _int_option("layer", parsed.layer)
        if not -config.depth <= layer < config.depth:
            raise InputError(
                f"layer={layer} is out of range for an encoder of depth {config.depth}: "
                f"use 0..{config.depth - 1}, or -1 for the last"
            )
        max_windows = None if parsed.max_windows is None else _int_option("max_windows", parsed.max_windows)
        if max_windows is not None and max_windows < 1:
            raise InputError(f"max_windows must be at least 1, got {max_windows}")
        hop_ms = _hop_option(parsed.timestamp_hop_ms)
        window_columns = _window_columns_option(parsed.window_seconds, config)
        window_frames = window_columns * PATCH
        return ParsedOptions(
            layer=layer % config.depth,
            max_windows=max_windows,
            timestamp_hop_ms=hop_ms,
            window_overlap=_overlap_option(parsed.window_overlap),
            window_seconds=window_frames / FRAMES_PER_SECOND,
            precision=check_precision_name(parsed.precision),
            cpu_packed_weights=_bool_option("cpu_packed_weights", parsed.cpu_packed_weights),
            compile=_bool_option("compile", parsed.compile),
            passes=COLUMN_HOP_MS // hop_ms,
            hop_samples=hop_ms * SAMPLE_RATE // 1000,
            window_frames=window_frames,
        )


@dataclass(frozen=True)
class ParsedOptions(ModelOptions):
    """Options as `ModelOptions.parse` checked them, with what they mean for the work:
    `passes`: shifted passes over the audio for the timestamp hop (1 at the native 160 ms);
    `hop_samples`: the timestamp hop in samples; `window_frames`: log-mel frames per window
    (`window_seconds`, never None here). How many windows go into one encoder call depends on
    the device and each window group's length: `batching.frame_budget`."""

    passes: int = 1
    hop_samples: int = COLUMN_HOP_MS * SAMPLE_RATE // 1000
    window_frames: int = 0


def option_help() -> Dict[str, str]:
    """Each option's description (for command lines), from its field's metadata."""
    return {f.name: f.metadata["help"] for f in fields(ModelOptions)}


@dataclass(frozen=True)
class OptionFlag:
    """A `ModelOptions` field as a command-line flag: `flag` (`--timestamp-hop-ms`), the value's
    type (`bool`: a `--flag`/`--no-flag` switch), its metavar, and the field's help in the
    flag's words (`False`/`True` are `--no-FLAG`/`--FLAG`; `None`, the option left out, is the
    flag not given)."""

    name: str
    flag: str
    kind: type
    metavar: str
    help: str


def option_flags(exclude: Collection[str] = ()) -> List[OptionFlag]:
    """One `OptionFlag` per `ModelOptions` field not in `exclude`, in field order."""
    hints = typing.get_type_hints(ModelOptions)
    found = []
    for name, text in option_help().items():
        if name in exclude:
            continue
        flag, kind = "--" + name.replace("_", "-"), hints[name]
        text = re.sub(r"\bFalse\b", "--no-" + flag[2:], text)
        text = re.sub(r"\bTrue\b", flag, text)
        text = re.sub(r"\bNone\b", "not given", re.sub(r"(^|[.:] )None\b", r"\1Not given", text))
        base = bool if kind is bool else next((t for t in (int, float, str) if kind in (t, Optional[t])), str)
        found.append(OptionFlag(name, flag, base, name.split("_")[-1].upper(), text))
    return found


def options_from_json(text: str, what: str = "--model-options") -> Dict[str, Any]:
    """`load_model` options written as a JSON object (`--model-options`, a SPEC's last part);
    `InputError` naming `what` for text that is not one. The values are checked later, by
    `ModelOptions.parse`."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{what} must be a JSON object: {err}") from None
    if not isinstance(options, dict):
        raise InputError(f"{what} must be a JSON object, got {text!r}")
    return options


def result_options(options: ModelOptions) -> Dict[str, Any]:
    """The options that change the numbers beyond float tolerance, by name: what, with the
    module, weights and environment, makes two runs the same model (`max_windows` and
    `cpu_packed_weights` do not). Give it parsed options, so equal settings spelt differently
    (`layer=-1` and `layer=11`) compare equal."""
    return {f.name: getattr(options, f.name) for f in fields(ModelOptions) if f.metadata["changes_results"]}


def _int_option(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"option {name} must be an integer, got {value!r}")
    return value


def _bool_option(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputTypeError(f"option {name} must be true or false, got {value!r}")
    return value


def _number_option(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"option {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"option {name} must be finite, got {value!r}")
    return float(value)


def _hop_option(value: Any) -> int:
    hop = _number_option("timestamp_hop_ms", value)
    if hop not in TIMESTAMP_HOPS_MS:
        raise InputError(
            f"timestamp_hop_ms must be one of {', '.join(map(str, TIMESTAMP_HOPS_MS))} (ms), got {value!r}; "
            f"finer hops cost {COLUMN_HOP_MS} / hop passes of the encoder"
        )
    return int(hop)


def _overlap_option(value: Any) -> float:
    overlap = _number_option("window_overlap", value)
    if not 0.0 <= overlap < 1.0:
        raise InputError(
            f"window_overlap must be a fraction in [0, 1), e.g. 0 (no overlap) or 0.5, got {value!r}"
        )
    return overlap


def _window_columns_option(value: Any, config: EncoderConfig) -> int:
    """`window_seconds` as whole columns (None: the checkpoint's window)."""
    longest = config.n_frames / FRAMES_PER_SECOND
    if value is None:
        return config.max_columns
    seconds = _number_option("window_seconds", value)
    columns = seconds / COLUMN_SECONDS
    if seconds <= 0 or abs(columns - round(columns)) > 1e-6:
        raise InputError(
            f"window_seconds must be a positive multiple of {COLUMN_SECONDS:g} s (one 16-frame "
            f"column), e.g. 0.96, 1.92, 3.04 or {longest:g}; got {value!r}"
        )
    if round(columns) > config.max_columns:
        raise InputError(
            f"window_seconds={value!r} is longer than this checkpoint's window of {longest:g} s "
            f"({config.n_frames} frames); use at most {longest:g}"
        )
    return round(columns)
