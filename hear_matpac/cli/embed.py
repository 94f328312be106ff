"""`hear-matpac embed`: embeddings for audio files, written beside names that mirror the inputs."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..batching import DEFAULT_MAX_WINDOWS
from ..io import InputError
from .flags import add_device, add_model_options, add_overwrite, add_weights, model_options


def register(parser: argparse.ArgumentParser) -> None:
    from ..files.decode import CPU_WORKERS
    from ..files.outputs import FRAMES_SUFFIX, SCENE_SUFFIX

    parser.description = ("Embed audio files with a MATPAC checkpoint. PATH is a file (any name), a directory "
        "(searched recursively for audio files) or a glob pattern (quote it; ** recurses). "
        "Each file is decoded with libsndfile, mixed to mono and resampled to 16 kHz. For an "
        f"input named NAME (its path relative to the inputs' common directory) this writes "
        f"OUT/NAME{SCENE_SUFFIX} (scene embedding) and, with --timestamps, OUT/NAME{FRAMES_SUFFIX} "
        "(arrays 'embeddings' (T, D) and 'timestamps' (T,) in ms). OUT records its settings and "
        "each output's source file (path, size, mtime); a file embedded there before, unchanged, "
        "with the same settings is skipped. One OUT holds one set of settings. A file that fails "
        "is reported and the rest go on.")
    parser.epilog = ("exit status: 0 when every file was embedded or skipped, 1 when any file failed, "
        "2 for a usage error (bad option, weights that cannot be loaded).")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="audio file, directory or glob pattern")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (created)")
    add_weights(parser)
    parser.add_argument("--timestamps", action="store_true", help="also write frame embeddings and timestamps")
    add_device(parser)
    parser.add_argument(
        "--batch-size", type=int, metavar="N",
        help=f"at most N 6.08 s windows (or as many frames of shorter windows) per encoder pass: the "
        f"max_windows option, unless --max-windows is given; bounds memory, does not change results (default: {DEFAULT_MAX_WINDOWS} on CPU, "
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
    add_model_options(parser)  # every load_model option; --max-windows overrides --batch-size's windows
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`files.job.embed_job`: one call of `embed_files` on every rank of the job (one process
    outside torchrun); a user's mistake on any rank is said once, by that rank, and every rank exits 2."""
    from ..files.job import embed_job
    from ..files.ranks import torchrun_ranks

    totals = embed_job(args.paths, args.out, args.weights, timestamps=args.timestamps, device=args.device,
                       options=lambda: _checked(args), batch_size=args.batch_size, decode_workers=args.decode_workers,
                       overwrite=args.overwrite, quiet=args.quiet, prefix="hear-matpac embed", device_flag="--device")  # fmt: skip
    if totals is None:  # a rank said why
        return 2
    ranks = torchrun_ranks()
    if ranks is None or ranks.rank == 0:
        print(totals.describe(args.out))
    return 1 if totals.failed else 0


def _checked(args: argparse.Namespace) -> dict:
    """The model options `args` give; `InputError` for a bad flag (checked on every rank, said once)."""
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.decode_workers is not None and args.decode_workers < 0:
        raise InputError(f"--decode-workers must be 0 or more, got {args.decode_workers}")
    return model_options(args)
