"""`hear-matpac embed`: embeddings for audio files, written beside names that mirror the inputs."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Optional

import torch

from ..api import load_model
from ..files.decode import CPU_WORKERS
from ..files.embed import FileEmbedder, Tally, folder_settings, plan_jobs
from ..io import first_line
from ..files.inputs import collect_inputs
from ..files.outputs import FRAMES_SUFFIX, SCENE_SUFFIX
from ..files.progress import AudioProgress
from ..files.ranks import USER_ERRORS, OtherRankFailed, RankGroup, Ranks, rank_group, rank_device, torchrun_ranks
from ..files.shard import Share, measure, shares
from ..files.store import OutputStore
from ..options import DEFAULT_MAX_WINDOWS
from ..precision import check_precision_device
from ..weights.locate import resolve_weights_path
from .flags import add_device, add_model_options, add_overwrite, add_weights, model_options, resolve_device

_PREFIX = "hear-matpac embed"


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
    add_weights(parser)
    parser.add_argument("--timestamps", action="store_true", help="also write frame embeddings and timestamps")
    add_device(parser)
    parser.add_argument(
        "--batch-size", type=int, metavar="N",
        help=f"at most N 6.08 s windows (or as many frames of shorter windows) per encoder pass: the "
        f"max_windows option; bounds memory, does not change results (default: {DEFAULT_MAX_WINDOWS} on CPU, "
        "sized by free memory on CUDA). Files are grouped into calls by their audio, not counted: "
        "about N windows' worth of audio a call on CPU, thousands of seconds on CUDA",
    )  # fmt: skip
    parser.add_argument(
        "--decode-workers", type=int, metavar="N",
        help="processes decoding and resampling the next files while these are embedded; 0: decode in "
        "the main process (default: none for one file; on CUDA the cores of each GPU (the CPUs this process "
        "may use, divided among a torchrun job's processes on the machine) less one, which feeds the GPU; "
        f"on CPU {CPU_WORKERS}, the cores being the encoder's; never more than there are chunks of files)",
    )  # fmt: skip
    add_overwrite(parser, "recompute this run's outputs even when up to date; with settings other than "
                  "OUT's, first delete every output in OUT")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(parser, exclude=("max_windows",))  # --batch-size sets max_windows
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with rank_group(torchrun_ranks()) as group:  # one process: SOLO, every exchange the identity
        if group.world == 1:
            return _run(args, group)
        try:
            return _run(args, group)
        except OtherRankFailed:  # that rank says why
            pass
        except USER_ERRORS as err:
            from . import error_line

            print(error_line(args.command, err), file=sys.stderr, flush=True)
        group.settle()  # torchrun stops the job at the first rank's exit: none before the line is out
        return 2


def _run(args: argparse.Namespace, group: RankGroup) -> int:
    """Embed on every rank of `group`: rank 0 holds the folder and plans, each rank embeds its
    share, rank 0 prints the totals; every rank returns the same status."""
    device, model, weights, files, bad_arguments = group.agree(lambda: _prepare(args, group.ranks))
    settings = folder_settings(weights, model)
    group.agree(lambda: _same_as_rank_0(settings, group))
    if group.rank == 0:
        with contextlib.ExitStack() as folder:
            try:
                store = folder.enter_context(OutputStore.open(args.out, settings, args.overwrite, report=_say))
                parts = _plan(args, files, bad_arguments, store, group.world)
                if group.world > 1:
                    token = store.mark_job()
                    for part in parts:
                        part.token = token
            except USER_ERRORS:
                group.abandon()
                raise
            share = group.scatter(parts)
            group.agree(lambda: None)  # while the others join the folder (`OutputStore.join` checks it is this one)
            tally = group.agree(lambda: _embed(args, model, device, store, share, group))
            counts = group.all_gather((tally.embedded, tally.skipped, len(tally.failed)))
        # (leaving the folder folds the other ranks' journals, complete by now)
    else:
        share = group.scatter(None)
        with contextlib.ExitStack() as folder:  # its journal closed before rank 0 folds it (after the counts)
            store = group.agree(lambda: folder.enter_context(
                OutputStore.join(args.out, group.rank, share.records, share.token)))
            tally = group.agree(lambda: _embed(args, model, device, store, share, group))
        counts = group.all_gather((tally.embedded, tally.skipped, len(tally.failed)))
    embedded, skipped, failed = (sum(column) for column in zip(*counts))
    if group.rank == 0:
        print(f"{embedded} embedded, {skipped} skipped (already there), {failed} failed; outputs in {args.out}")
    return 1 if failed else 0


def _same_as_rank_0(settings: dict, group: RankGroup) -> None:
    """`ValueError` on a rank whose outputs would not be what rank 0 records for the folder:
    other weights (by content), options or version (a relative --weights from another working
    directory, another machine's file)."""
    if group.world == 1:
        return
    mine = {k: v for k, v in settings.items() if k != "weights"}  # the path may differ; the content may not
    first = group.all_gather(mine)[0]
    if mine != first:
        difference = "; ".join(f"{k}: {first.get(k)!r} on rank 0, {v!r} here" for k, v in mine.items() if first.get(k) != v)
        raise ValueError(f"rank {group.rank} would embed with other settings than rank 0 ({difference}); give every "
                         "rank the same weights and options, by absolute paths on a file system they all see")  # fmt: skip


def _prepare(args: argparse.Namespace, ranks: Optional[Ranks]) -> tuple:
    """Check the options, list the inputs (rank 0) and load the model onto this rank's device."""
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.decode_workers is not None and args.decode_workers < 0:
        raise ValueError(f"--decode-workers must be 0 or more, got {args.decode_workers}")
    device = rank_device(resolve_device(args.device), ranks)
    options = model_options(args)
    if args.batch_size is not None:  # else the model's default for its device
        options["max_windows"] = args.batch_size
    if options.get("precision") == "fp16" and device.type != "cuda":
        raise ValueError(f"--precision fp16 needs a CUDA GPU and the device is {device}: add --device cuda "
                         "on a machine with one, or use --precision bf16 or fp32")  # fmt: skip
    files: list = []
    bad_arguments: list = []
    if ranks is None or ranks.rank == 0:
        files, bad_arguments = collect_inputs(args.paths)
        if not files:
            reasons = "; ".join(f"{b.argument}: {b.problem}" for b in bad_arguments)
            raise FileNotFoundError(f"no audio files to embed ({reasons or 'no audio files in the given directories'})")
    weights = resolve_weights_path(args.weights)
    model = load_model(str(weights), **options)
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"cannot use device {device}: {first_line(err)}") from None
    check_precision_device(model.options.precision, device)
    return device, model, weights, files, bad_arguments


def _plan(args: argparse.Namespace, files: list, bad_arguments: list, store: OutputStore, world: int) -> list:
    """Each rank's share of the work (rank 0's also the skipped files and early failures)."""
    jobs, skipped, missing = plan_jobs(files, store, args.timestamps, args.overwrite,
                                       measure=not args.quiet and world == 1)  # fmt: skip
    if world > 1:  # the lengths balance the shares
        jobs = measure(jobs)
    failures = [(bad.argument, bad.problem) for bad in bad_arguments] + list(missing)
    return shares(jobs, store.records, skipped, failures, world)


def _embed(args: argparse.Namespace, model, device: torch.device, store: OutputStore, share: Share,
           group: RankGroup) -> Tally:  # fmt: skip
    """Embed this rank's share; the progress display is rank 0's (of its share) only."""
    prefix = _PREFIX if group.world == 1 else f"{_PREFIX}: rank 0's share"
    progress = AudioProgress(sum(j.seconds for j in share.jobs), len(share.jobs) + len(share.failures),
                             prefix, quiet=args.quiet or group.rank != 0)  # fmt: skip
    embedder = FileEmbedder(model, device, store, progress, _PREFIX, workers=args.decode_workers)
    embedder.tally.skipped = share.skipped
    try:
        for what, problem in share.failures:
            embedder.fail(what, problem)
        return embedder.run(share.jobs)
    finally:
        progress.close()


def _say(line: str) -> None:
    print(f"{_PREFIX}: {line}", file=sys.stderr, flush=True)
