"""`hear-matpac heareval embed|predict ARGS`: heareval's own runners, unmodified, with ARGS
passed through verbatim (see `hear-matpac heareval embed -- --help`)."""
from __future__ import annotations

import argparse

from .flags import add_tensorflow


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run heareval 2021.1.3's runners, unmodified. Every argument that is not "
        "one of hear-matpac's own options goes to the runner as written; put `--` before "
        "arguments meant for the runner only (e.g. `-- --help`).")
    runners = parser.add_subparsers(dest="runner", metavar="RUNNER", required=True)
    embed = runners.add_parser(
        "embed",
        allow_abbrev=False,
        usage="hear-matpac heareval embed [--tensorflow MODE] MODULE [--model W] "
        "[--tasks-dir T] [--task NAME] [--embeddings-dir E] [--model-options JSON]",
        help="python -m heareval.embeddings.runner ...",
        description="heareval.embeddings.runner: embed every task under --tasks-dir into "
        "--embeddings-dir/MODULE/TASK. Where TensorFlow is not installed, its "
        "`import tensorflow` gets hear_matpac's stand-in, for this process only.",
    )
    add_tensorflow(embed)
    embed.set_defaults(func=run_embed, passthrough=True)
    predict = runners.add_parser(
        "predict",
        allow_abbrev=False,
        usage="hear-matpac heareval predict [--logs-dir DIR] TASK_EMBEDDINGS_DIR... "
        "[--grid default|fast|faster] [--grid-points N] [--gpus JSON] ...",
        help="python -m heareval.predictions.runner ...",
        description="heareval.predictions.runner: train the downstream predictors on each "
        "task's embeddings and write TASK/test.predicted-scores.json. Runs with "
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (it reloads its own pickled checkpoints) and keeps "
        "its logs/ and checkpoints out of the working directory.",
    )
    predict.add_argument("--logs-dir", default=None, help="keep heareval's logs/ (one checkpoint per grid point) "
                         "here; default: a temporary folder, deleted afterwards")  # fmt: skip
    predict.set_defaults(func=run_predict, passthrough=True)


def run_embed(args: argparse.Namespace) -> int:
    from ..hear_tools.launch import run_embeddings

    return run_embeddings(args.upstream, args.tensorflow)


def run_predict(args: argparse.Namespace) -> int:
    from ..hear_tools.launch import run_predictions

    return run_predictions(args.upstream, args.logs_dir)
