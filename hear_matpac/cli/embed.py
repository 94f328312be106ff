"""`hear-matpac embed`: embeddings for audio files, written beside names that mirror the inputs."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from .. import __version__
from ..api import get_scene_and_timestamp_embeddings, get_scene_embeddings, load_model
from ..audio_io import AudioFileError, read_audio
from ..checkpoint import resolve_weights_path
from ..config import SAMPLE_RATE, WEIGHTS_ENV
from ..embed_outputs import FRAMES_SUFFIX, SCENE_SUFFIX, claim_output_dir, output_paths, save_frames, save_scene
from ..file_inputs import InputFile, collect_inputs
from ..model import MatpacModel
from ..options import DEFAULT_MAX_WINDOWS

# load_model options with a flag of the same name, passed only when given (the model checks them).
_MODEL_OPTIONS = ("layer", "timestamp_hop_ms", "precision")


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
            "(arrays 'embeddings' (T, D) and 'timestamps' (T,) in ms). Files already embedded are "
            "skipped unless --overwrite. A file that fails is reported and the rest go on."
        ),
        epilog=(
            "exit status: 0 when every file was embedded or skipped, 1 when any file failed, "
            "2 for a usage error (bad option, weights that cannot be loaded)."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="audio file, directory or glob pattern")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (created)")
    parser.add_argument(
        "--weights", default="", metavar="W",
        help=f"checkpoint .pt (default: ${WEIGHTS_ENV}, else weights/matpac_10_2048.pt)",
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
    parser.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


@dataclass
class Tally:
    embedded: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = _device(args.device)
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
        raise ValueError(f"cannot use device {device}: {str(err).splitlines()[0]}") from None
    result_options = {k: v for k, v in options.items() if k != "max_windows"}
    result_options["layer"] = model.options.layer
    claim_output_dir(args.out, _run_info(weights, result_options, model), args.overwrite)

    tally = Tally()
    progress = {"unit": "file", "file": sys.stderr, "disable": True if args.quiet else None}  # None: on a TTY only
    with tqdm(total=len(files) + len(bad_arguments), **progress) as bar:
        for bad in bad_arguments:
            _fail(tally, bar, bad.argument, bad.problem)
        todo = []
        for item in files:
            need_scene, need_frames = _missing_outputs(args.out, item, args.timestamps, args.overwrite)
            if need_scene or need_frames:
                todo.append(item)
            else:
                tally.skipped += 1
                bar.update(1)
        for first in range(0, len(todo), args.batch_size):
            _embed_chunk(todo[first:first + args.batch_size], model, device, args, tally, bar)
    print(
        f"{tally.embedded} embedded, {tally.skipped} skipped (already there), {len(tally.failed)} failed; "
        f"outputs in {args.out}"
    )
    return 1 if tally.failed else 0


def _embed_chunk(chunk: list[InputFile], model: MatpacModel, device: torch.device,
                 args: argparse.Namespace, tally: Tally, bar: tqdm) -> None:  # fmt: skip
    """Read `chunk`, then embed its files of equal length together (the HEAR API takes clips of
    one length per call; padding would change the embeddings)."""
    by_length: dict[int, list[tuple[InputFile, torch.Tensor]]] = {}
    for item in chunk:
        try:
            clip = read_audio(item.path)
        except (AudioFileError, OSError) as err:
            _fail(tally, bar, str(item.path), getattr(err, "problem", None) or str(err))
            continue
        by_length.setdefault(clip.samples.shape[0], []).append((item, clip.samples))
    for group in by_length.values():
        problem = _try_embed(group, model, device, args)
        if problem is None:
            tally.embedded += len(group)
            bar.update(len(group))
        elif len(group) == 1:
            _fail(tally, bar, str(group[0][0].path), problem)
        else:  # find the culprit: one file at a time
            _embed_one_by_one(group, model, device, args, tally, bar)


def _embed_one_by_one(group: list[tuple[InputFile, torch.Tensor]], model: MatpacModel, device: torch.device,
                       args: argparse.Namespace, tally: Tally, bar: tqdm) -> None:  # fmt: skip
    for member in group:
        problem = _try_embed([member], model, device, args)
        if problem is None:
            tally.embedded += 1
            bar.update(1)
        else:
            _fail(tally, bar, str(member[0].path), problem)


def _try_embed(group: list[tuple[InputFile, torch.Tensor]], model: MatpacModel, device: torch.device,
               args: argparse.Namespace) -> Optional[str]:  # fmt: skip
    """Embed and write `group`; the problem in one line if that failed, else None."""
    try:
        _embed_group(group, model, device, args)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        return _first_line(err)
    return None


def _embed_group(group: list[tuple[InputFile, torch.Tensor]], model: MatpacModel,
                 device: torch.device, args: argparse.Namespace) -> None:  # fmt: skip
    """Embed clips of one length in one call and write each file's missing outputs."""
    needs = [_missing_outputs(args.out, item, args.timestamps, args.overwrite) for item, _ in group]
    audio = torch.stack([samples for _, samples in group]).to(device)  # (clips, samples)
    if any(f for _, f in needs):
        scene_tensor, *frames = get_scene_and_timestamp_embeddings(audio, model)
    else:
        scene_tensor, frames = get_scene_embeddings(audio, model), None
    scene = scene_tensor.cpu().numpy()
    for i, ((item, _), (need_scene, need_frames)) in enumerate(zip(group, needs)):
        paths = output_paths(args.out, item.name)
        if need_scene:
            save_scene(paths.scene, scene[i])
        if need_frames:
            save_frames(paths.frames, frames[0][i].cpu().numpy(), frames[1][i].cpu().numpy())


def _missing_outputs(out: Path, item: InputFile, timestamps: bool, overwrite: bool) -> tuple[bool, bool]:
    """(scene needed, frames needed) for `item`."""
    paths = output_paths(out, item.name)
    return overwrite or not paths.scene.is_file(), timestamps and (overwrite or not paths.frames.is_file())


def _fail(tally: Tally, bar: tqdm, what: str, problem: str) -> None:
    tally.failed.append(what)
    bar.update(1)
    tqdm.write(f"hear-matpac embed: failed: {what}: {problem}", file=sys.stderr)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        problem = _first_line(err)
        raise ValueError(f"--device {name!r} is not a torch device ({problem}); use e.g. cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def _run_info(weights: Path, result_options: dict[str, Any], model: MatpacModel) -> dict[str, Any]:
    return {
        "hear_matpac_version": __version__,
        "weights": str(weights.resolve()),
        "model_options": result_options,
        "sample_rate": SAMPLE_RATE,
        "scene_embedding_size": model.scene_embedding_size,
        "timestamp_embedding_size": model.timestamp_embedding_size,
        "scene_suffix": SCENE_SUFFIX,
        "frames_suffix": FRAMES_SUFFIX,
    }
