"""`hear-matpac embed`: embeddings for audio files, written beside names that mirror the inputs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..api import load_model
from ..config import SAMPLE_RATE
from ..weights.integrity import weights_sha256
from ..weights.locate import resolve_weights_path, weights_help
from ..devices import resolve_device
from ..files.embed import FileEmbedder, Job, audio_seconds, first_line
from ..files.outputs import FRAMES_SUFFIX, SCENE_SUFFIX
from ..files.inputs import InputFile, collect_inputs
from ..model import MatpacModel
from ..options import DEFAULT_MAX_WINDOWS
from ..files.store import OutputStore, Source
from ..precision import check_precision_device
from ..files.progress import AudioProgress

_PREFIX = "hear-matpac embed"
# load_model options with a flag of the same name, passed only when given (the model checks them).
_MODEL_OPTIONS = ("layer", "timestamp_hop_ms", "precision")
# ModelOptions fields that change the numbers (max_windows and cpu_packed_weights do not).
_RESULT_OPTIONS = ("layer", "timestamp_hop_ms", "window_overlap", "window_seconds", "precision")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed audio files (wav, flac, ogg, mp3, ...) into .npy/.npz files",
        description=(
            "Embed audio files with a MATPAC checkpoint. PATH is a file (any name), a directory "
            "(searched recursively for audio files) or a glob pattern (quote it; ** recurses). "
            "Each file is decoded with libsndfile, mixed to mono and resampled to 16 kHz. For an "
            f"input named NAME (its path relative to the inputs' common directory) this writes "
            f"OUT/NAME{SCENE_SUFFIX} (scene embedding) and, with --timestamps, OUT/NAME{FRAMES_SUFFIX} "
            "(arrays 'embeddings' (T, D) and 'timestamps' (T,) in ms). OUT records its settings and "
            "each output's source file (path, size, mtime); a file embedded there before, unchanged, "
            "with the same settings is skipped. One OUT holds one set of settings. A file that fails "
            "is reported and the rest go on."
        ),
        epilog=(
            "exit status: 0 when every file was embedded or skipped, 1 when any file failed, "
            "2 for a usage error (bad option, weights that cannot be loaded)."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="audio file, directory or glob pattern")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (created)")
    parser.add_argument(
        "--weights", default="", metavar="W", help=weights_help(),
    )  # fmt: skip
    parser.add_argument("--timestamps", action="store_true", help="also write frame embeddings and timestamps")
    parser.add_argument("--layer", type=int, help="encoder block, 0-based, negative from the end (model default: -1)")
    parser.add_argument("--timestamp-hop-ms", type=float, metavar="MS", help="timestamp hop in ms (model option)")
    parser.add_argument("--precision", metavar="P", help="inference precision (model option)")
    parser.add_argument(
        "--device", default="auto",
        help="torch device, e.g. cpu, cuda, cuda:1 (default auto: cuda when available, else cpu)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_MAX_WINDOWS, metavar="N",
        help=f"at most N 6.08 s windows per encoder pass (the max_windows option), and up to N files "
        f"of equal length embedded in one call; bounds memory, does not change results (default {DEFAULT_MAX_WINDOWS})",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="recompute this run's outputs even when up to date; with settings other than OUT's, "
        "first delete every output in OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device)
    if args.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"--precision fp16 needs a CUDA GPU and the device is {device}: add --device cuda "
                         "on a machine with one, or use --precision bf16 or fp32")  # fmt: skip
    files, bad_arguments = collect_inputs(args.paths)
    if not files:
        reasons = "; ".join(f"{b.argument}: {b.problem}" for b in bad_arguments)
        raise FileNotFoundError(f"no audio files to embed ({reasons or 'no audio files in the given directories'})")
    options: dict[str, Any] = {"max_windows": args.batch_size}
    options.update({name: getattr(args, name) for name in _MODEL_OPTIONS if getattr(args, name) is not None})
    weights = resolve_weights_path(args.weights)
    model = load_model(str(weights), **options)
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"cannot use device {device}: {first_line(err)}") from None
    check_precision_device(model.options.precision, device)
    settings = _settings(weights, model)
    with OutputStore.open(args.out, settings, args.overwrite, report=_say) as store:
        jobs, skipped, missing = _plan(files, store, args)
        progress = AudioProgress(sum(j.seconds for j in jobs), len(jobs) + len(missing) + len(bad_arguments),
                                 _PREFIX, quiet=args.quiet)  # fmt: skip
        embedder = FileEmbedder(model, device, store, progress, _PREFIX)
        embedder.tally.skipped = skipped
        try:
            for bad in bad_arguments:
                embedder.fail(bad.argument, bad.problem)
            for path, problem in missing:
                embedder.fail(path, problem)
            tally = embedder.run(jobs, args.batch_size)
        finally:
            progress.close()
    print(
        f"{tally.embedded} embedded, {tally.skipped} skipped (already there), {len(tally.failed)} failed; "
        f"outputs in {args.out}"
    )
    return 1 if tally.failed else 0


def _plan(files: list[InputFile], store: OutputStore, args: argparse.Namespace
          ) -> tuple[list[Job], int, list[tuple[str, str]]]:  # fmt: skip
    """The jobs to run, how many files are skipped, and (path, problem) for files gone since
    they were listed. A name recorded from another file is refused here, before any decoding."""
    jobs, skipped, missing, collisions = [], 0, [], []
    for item in files:
        try:
            source = Source.of(item.path)
        except OSError as err:
            missing.append((str(item.path), err.strerror or first_line(err)))
            continue
        problem = store.collision(item.name, source)
        if problem is not None and not args.overwrite:
            collisions.append(problem)
            continue
        need = store.need(item.name, source, args.timestamps, args.overwrite)
        if need.scene or need.frames:
            jobs.append(Job(item, source, need, 0.0 if args.quiet else audio_seconds(item.path)))
        else:
            skipped += 1
    if collisions:
        more = f" ({len(collisions) - 1} more name(s) like it)" if len(collisions) > 1 else ""
        raise ValueError(
            f"{collisions[0]}{more}: use another --out, embed the inputs from a folder holding both "
            "(names then keep their subfolders), or --overwrite to replace the older outputs"
        )
    return jobs, skipped, missing


def _settings(weights: Path, model: MatpacModel) -> dict[str, Any]:
    """What the folder's outputs depend on: the weights' content and the options that change
    the numbers, as the model normalised them (defaults given explicitly equal omitted ones)."""
    options = model.options
    return {
        "hear_matpac_version": __version__,
        "weights": str(weights.resolve()),
        # the digest of the very bytes loaded; hashed again only for a mapped, unrecorded file
        "weights_sha256": model.weights_sha256 or weights_sha256(weights),
        "model_options": {name: getattr(options, name) for name in _RESULT_OPTIONS},
        "sample_rate": SAMPLE_RATE,
        "scene_embedding_size": model.scene_embedding_size,
        "timestamp_embedding_size": model.timestamp_embedding_size,
        "scene_suffix": SCENE_SUFFIX,
        "frames_suffix": FRAMES_SUFFIX,
    }


def _say(line: str) -> None:
    print(f"{_PREFIX}: {line}", file=sys.stderr, flush=True)
