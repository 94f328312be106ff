"""How the stages of a run are carried out: one seam, `Engine.run(plans, settings, report)`
-> their outcomes in the order of `plans`. `local`: this node's devices, `--jobs` slots on
each, a thread pool. `slurm`: one Slurm job per stage (submitit). `evaluate()` picks one and
knows nothing else of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Protocol, Sequence

if TYPE_CHECKING:
    from ..specs import StagePlan
    from ..stages import Outcome

ENGINES = ("local", "slurm")


@dataclass(frozen=True)
class StageSettings:
    """What every stage of a run shares (the arguments of `stages.run_stage` beside its plan)."""

    runs: Path
    grid: str
    grid_points: int
    tensorflow: str
    keep_logs: bool
    overwrite: bool


class Engine(Protocol):
    def run(self, plans: Sequence["StagePlan"], settings: StageSettings,
            report: Callable[[str], None]) -> List["Outcome"]:  # fmt: skip
        """Run every stage of `plans` (in the order to start them); their outcomes in that order.
        A failed stage is an outcome; the others go on."""
