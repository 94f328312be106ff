"""`hear-matpac make-tasks OUT`: write the small synthetic HEAR task suite."""
from __future__ import annotations

import argparse

from .flags import add_overwrite, add_tasks


def register(parser: argparse.ArgumentParser) -> None:
    from ..hear_tools.tasks import suite

    names = ", ".join(spec.name for spec in suite())
    parser.description = (f"Write the synthetic HEAR tasks ({names}) into OUT, ready for "
        "`hear-matpac heareval embed hear_matpac --tasks-dir OUT`. Test and demo data, not a "
        "benchmark.")
    parser.add_argument("out", help="folder to create (holds only the task folders)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--scale", type=int, default=1, help="multiply clips per split (default 1)")
    add_tasks(parser, old="--task")
    add_overwrite(parser, "replace OUT if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluate.task_folders import parse_task_names
    from ..hear_tools.tasks import write_suite

    for path in write_suite(args.out, args.seed, args.scale, args.overwrite, parse_task_names(args.tasks)):
        print(path)
    return 0
