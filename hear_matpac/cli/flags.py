"""The flags several subcommands share, declared once: `--weights`, `--device` (one device),
`--devices`/`--jobs` (a command that spreads work over a node), the model options (one flag
per `ModelOptions` field, plus `--model-options JSON`), `--tensorflow`, `--overwrite` (with
its old spelling `--force` kept as a hidden alias), `--grid`, `--engine` and the `--slurm-*`
options. It imports the tools' modules only in the function that needs them, so that importing
a subcommand's module stays cheap."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Collection, Dict, List

from ..options import option_flags, options_from_json
from ..weights.locate import weights_help

def add_weights(parser: argparse.ArgumentParser, fallback: bool = False) -> None:
    """`--weights W` (`fallback`: the tiny untrained stand-in when nothing is named or found)."""
    parser.add_argument("--weights", default="", metavar="W", help=weights_help(fallback=fallback))


def add_device(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument(
        "--device", default=default,
        help="torch device, e.g. cpu, cuda, cuda:1 (default auto: cuda when available, else cpu)",
    )  # fmt: skip


def add_devices(parser: argparse.ArgumentParser) -> None:
    """`--devices LIST` and `--jobs N`, for a command that spreads its work over the devices of a
    node (every other command takes one `--device`); read back with `devices(args)`."""
    parser.add_argument("--devices", default="", metavar="LIST",
                        help="devices to spread the stages over, comma-separated: cpu or cuda:N, e.g. "
                        "cuda:0,cuda:1 (default: every visible GPU, else cpu)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="stages at a time on each device, each in its own processes (default 1)")  # fmt: skip


def devices(args: argparse.Namespace) -> List[str]:
    """The `--devices` names, checked (`evaluate.engines.local.parse_devices`), and `--jobs` checked."""
    from ..evaluate.engines.local import check_jobs, parse_devices

    check_jobs(args.jobs)
    return parse_devices(args.devices)


def add_tensorflow(parser: argparse.ArgumentParser) -> None:
    from ..hear_tools.tensorflow_standin import MODES

    parser.add_argument("--tensorflow", choices=MODES, default="auto", help="which `tensorflow` the HEAR tool imports: "
                        "auto (the real one if installed, else hear_matpac's stand-in), real, or stand-in (default auto)")


def add_grid(parser: argparse.ArgumentParser) -> None:
    """heareval's `--grid` and `--grid-points` (checked in `evaluate.stages`)."""
    from ..evaluate.stages import GRIDS

    parser.add_argument("--grid", choices=GRIDS, default="faster", help="heareval grid (default faster)")
    parser.add_argument("--grid-points", type=int, default=8, help="grid points per task (default 8)")


def add_model_options(parser: argparse.ArgumentParser, exclude: Collection[str] = ()) -> None:
    """One flag per `ModelOptions` field not in `exclude` (`options.option_flags`), each passed
    to `load_model` only when given, and `--model-options JSON` for any of them; a flag
    overrides the same key in the JSON. Read back with `model_options(args)`."""
    group = parser.add_argument_group("model options (load_model keyword arguments; default: the model's)")
    flags = option_flags(exclude)
    for f in flags:
        if f.kind is bool:
            group.add_argument(f.flag, action=argparse.BooleanOptionalAction, default=None, help=f.help)
        else:
            group.add_argument(f.flag, type=f.kind, default=None, metavar=f.metavar, help=f.help)
    group.add_argument("--model-options", default="{}", metavar="JSON",
                       help='load_model options as a JSON object, e.g. \'{"layer": 6}\' (default {})')  # fmt: skip
    parser.set_defaults(model_option_flags=[f.name for f in flags])


def model_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The model options given on the command line: `--model-options` JSON, then the flags."""
    options = options_from_json(args.model_options)
    options.update({n: getattr(args, n) for n in args.model_option_flags if getattr(args, n) is not None})
    return options


def add_tasks(parser: argparse.ArgumentParser, old: str = "") -> None:
    """`--tasks NAME[,NAME...]` (repeatable): the one task selector of evaluate, sweep and
    make-tasks; read back with `evaluate.task_folders.parse_task_names(args.tasks)`. `old`: a
    former spelling kept as a hidden alias that says the new name."""
    parser.add_argument("--tasks", action="append", default=[], metavar="NAMES",
                        help="only these tasks, comma-separated or repeated (default all)")  # fmt: skip
    if old:
        parser.add_argument(old, dest="tasks", action=_Renamed, new="--tasks", help=argparse.SUPPRESS)


def add_overwrite(parser: argparse.ArgumentParser, help: str) -> None:
    """`--overwrite`, and `--force`, its old spelling, hidden: it works and says the new one."""
    parser.add_argument("--overwrite", action="store_true", help=help)
    parser.add_argument("--force", dest="overwrite", nargs=0, action=_Renamed, new="--overwrite", help=argparse.SUPPRESS)


class _Renamed(argparse.Action):
    """A renamed option, hidden: says on stderr what it is called now, then acts as the new one
    does: a switch (`nargs=0`) sets its destination, an option with a value appends it."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Any = None) -> None:  # fmt: skip
        print(f"{parser.prog}: {option_string} is now {self.new}", file=sys.stderr)
        if self.nargs == 0:
            setattr(namespace, self.dest, True)
        else:
            setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values])


def add_engine(parser: argparse.ArgumentParser) -> None:
    """`--engine local|slurm` and the `--slurm-*` options, each `--slurm-X` stored as `slurm_FIELD`
    (a `evaluate.engines.slurm.SlurmOptions` field); read back with `engine_options(args)`."""
    from ..evaluate.engines.slurm import CLUSTERS, ENGINES, SlurmOptions

    d = SlurmOptions()
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="where the stages run: local (this process, default) or slurm (one Slurm job per "
                        "stage through submitit, from a login node; docs/scale-out.md)")  # fmt: skip
    group = parser.add_argument_group("Slurm (with --engine slurm; needs pip install 'hear-matpac[slurm]')")
    group.add_argument("--slurm-partition", metavar="P", help="partition to submit to (default: the cluster's)")
    group.add_argument("--slurm-gpus-per-stage", type=int, metavar="N", help=f"GPUs per stage's job (default {d.gpus_per_stage})")
    group.add_argument("--slurm-cpus-per-stage", type=int, metavar="N", help=f"CPUs per stage's job (default {d.cpus_per_stage})")
    group.add_argument("--slurm-time", dest="slurm_time_min", type=int, metavar="MIN", help=f"time limit per stage, minutes (default {d.time_min})")
    group.add_argument("--slurm-folder", metavar="DIR", help="submitit's job files and logs (default OUT/slurm)")
    group.add_argument("--slurm-retries", type=int, metavar="N",
                       help=f"submit a job that died without a result (node failure) again, N times (default {d.retries})")
    group.add_argument("--slurm-extra", action="append", metavar="KEY=VALUE",
                       help="any submitit parameter, repeatable, e.g. mem_gb=64, slurm_account=lab, "
                       "slurm_array_parallelism=16")  # fmt: skip
    group.add_argument("--slurm-cluster", choices=CLUSTERS,
                       help="slurm (default), or local: the same jobs on this machine, to try a set-up")  # fmt: skip


def engine_options(args: argparse.Namespace) -> tuple:
    """(`--engine`, its `SlurmOptions` or None), checked by `evaluate.engines.slurm.choose_engine`."""
    from ..evaluate.engines.slurm import choose_engine

    given = {k[len("slurm_"):]: v for k, v in vars(args).items() if k.startswith("slurm_") and k != "slurm_extra"}
    spread = bool(getattr(args, "devices", "")) or getattr(args, "jobs", 1) != 1
    return choose_engine(args.engine, given, args.slurm_extra or [], spread=spread)
