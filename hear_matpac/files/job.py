"""`embed_files`: embed audio files into an output folder, from Python or from every rank of a
torchrun job (what `hear-matpac embed` calls): open the folder's store, plan, mark a multi-rank
job, scatter the shares, embed, and agree on the totals."""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from ..api import load_model, resolve_device
from ..io import InputError, MissingFile, first_line, is_user_error, one_line
from ..precision import check_precision_device
from ..weights.locate import resolve_weights_path
from .embed import FileEmbedder, Tally, folder_settings, plan_jobs
from .inputs import collect_inputs
from .progress import AudioProgress
from .ranks import SOLO, OtherRankFailed, RankGroup, rank_device, rank_group, torchrun_ranks
from .shard import Share, measure, shares
from .store import OutputStore


@dataclass(frozen=True)
class Totals:
    """Files embedded, skipped (up to date in the folder) and failed, over every rank."""

    embedded: int
    skipped: int
    failed: int

    def describe(self, out: Union[str, Path]) -> str:
        """One line: the counts, and the output folder `out`."""
        return f"{self.embedded} embedded, {self.skipped} skipped (already there), {self.failed} failed; outputs in {out}"


@dataclass(frozen=True)
class _Run:
    paths: Sequence[str]
    out: Path
    timestamps: bool
    batch_size: Optional[int]
    decode_workers: Optional[int]
    overwrite: bool
    quiet: bool
    prefix: str


def embed_files(paths: Sequence[Union[str, Path]], out: Union[str, Path], weights: Union[str, Path] = "", *,
                timestamps: bool = False, device: Union[str, torch.device] = "auto",
                options: Optional[Mapping[str, Any]] = None, batch_size: Optional[int] = None,
                decode_workers: Optional[int] = None, overwrite: bool = False, quiet: bool = True,
                group: RankGroup = SOLO, prefix: str = "embed_files") -> Totals:  # fmt: skip
    """Embed the audio files that `paths` name (files, folders searched recursively, glob
    patterns) into `out`, as `hear-matpac embed` does (docs/command-line.md): the scene
    embedding of each, and its frame embeddings with `timestamps`; a file embedded there
    before, unchanged, with the same settings, is skipped; a file that fails is reported on
    stderr and counted, the rest go on. `weights`: a checkpoint path or published name
    (default: the best available); `options`: `load_model` options; `batch_size`: at most N
    windows per encoder pass and N files per call. Under torchrun every rank calls it with its
    `group` (`files.ranks.rank_group`); each embeds a share and all return the same totals.

    A user's mistake (a bad option, no input files, an output folder of other settings) is a
    `hear_matpac.io.UserError` (a `ValueError`, `TypeError` or `FileNotFoundError`)."""
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if decode_workers is not None and decode_workers < 0:
        raise InputError(f"decode_workers must be 0 or more, got {decode_workers}")
    run = _Run([str(p) for p in paths], Path(out), timestamps, batch_size, decode_workers, overwrite, quiet, prefix)
    device = group.agree(lambda: _device(device, group))
    model, weights_path, files, bad = group.agree(lambda: _prepare(run, weights, dict(options or {}), device, group))
    settings = folder_settings(weights_path, model)
    group.agree(lambda: _same_as_rank_0(settings, group))
    say = lambda line: print(f"{prefix}: {line}", file=sys.stderr, flush=True)  # noqa: E731
    if group.rank == 0:
        with contextlib.ExitStack() as folder:
            try:
                store = folder.enter_context(OutputStore.open(run.out, settings, overwrite, report=say))
                parts = _plan(run, files, bad, store, group.world)
                if group.world > 1:
                    token = store.mark_job()
                    for part in parts:
                        part.token = token
            except Exception as err:
                if is_user_error(err):
                    group.abandon()
                raise
            share = group.scatter(parts)
            group.agree(lambda: None)  # while the others join the folder (`OutputStore.join` checks it is this one)
            tally = group.agree(lambda: _embed(run, model, device, store, share, group))
            counts = group.all_gather((tally.embedded, tally.skipped, len(tally.failed)))
        # (leaving the folder folds the other ranks' journals, complete by now)
    else:
        share = group.scatter(None)
        with contextlib.ExitStack() as folder:  # its journal closed before rank 0 folds it (after the counts)
            store = group.agree(lambda: folder.enter_context(
                OutputStore.join(run.out, group.rank, share.records, share.token)))
            tally = group.agree(lambda: _embed(run, model, device, store, share, group))
        counts = group.all_gather((tally.embedded, tally.skipped, len(tally.failed)))
    return Totals(*(sum(column) for column in zip(*counts)))


def embed_job(paths: Sequence[Union[str, Path]], out: Union[str, Path], weights: Union[str, Path] = "", *,
              device: Union[str, torch.device] = "auto", options: Union[Mapping[str, Any], Callable[[], Mapping[str, Any]], None] = None,
              prefix: str = "embed_files", device_flag: str = "device", **settings: Any) -> Optional[Totals]:
    """`embed_files` on every rank of the torchrun job that started this process (one process
    outside torchrun), the job's process group set up for the call and torn down after; every
    rank gets the same totals. `device`: a torch device or its name (`api.resolve_device`; an
    unknown name is reported as `device_flag`, the caller's word for it);
    `options`: the `load_model` options, or a function that parses them (so a mistake in them,
    made alike on every rank, is said once); `settings`: `embed_files`' other keywords. A user's
    mistake is said once, on stderr after `prefix`, by the lowest rank that made it, and every
    rank returns None (its caller exits as for a mistake); in a single process it is raised. A
    bug keeps its traceback on every rank."""
    with rank_group(torchrun_ranks()) as group:  # one process: SOLO, every exchange the identity
        try:
            device, options = group.agree(lambda: (resolve_device(device, device_flag) if isinstance(device, str) else device,
                                                   options() if callable(options) else options))  # fmt: skip
            return embed_files(paths, out, weights, device=device, options=options, group=group, prefix=prefix,
                               **settings)  # fmt: skip
        except OtherRankFailed:  # that rank says why
            group.settle()
            return None
        except Exception as err:
            if group.world == 1 or not is_user_error(err):
                raise  # one process: the caller says it; a bug keeps its traceback
            print(f"{prefix}: error: {one_line(err)}", file=sys.stderr, flush=True)
            group.settle()  # torchrun stops the job at the first rank's exit: none before the line is out
            return None


def _device(device: Union[str, torch.device], group: RankGroup) -> torch.device:
    """`auto`: cuda when available, else cpu; `cuda` under torchrun: this rank's GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return rank_device(torch.device(device), group.ranks)


def _prepare(run: _Run, weights: Union[str, Path], options: dict, device: torch.device, group: RankGroup) -> tuple:
    """List the inputs (rank 0) and load the model onto this rank's device."""
    if run.batch_size is not None:  # unless max_windows is given, else the model's default for its device
        options.setdefault("max_windows", run.batch_size)
    if options.get("precision") == "fp16" and device.type != "cuda":
        raise InputError(f"--precision fp16 needs a CUDA GPU and the device is {device}: add --device cuda "
                         "on a machine with one, or use --precision bf16 or fp32")  # fmt: skip
    files: list = []
    bad: list = []
    if group.rank == 0:
        files, bad = collect_inputs(run.paths)
        if not files:
            reasons = "; ".join(f"{b.argument}: {b.problem}" for b in bad)
            raise MissingFile(f"no audio files to embed ({reasons or 'no audio files in the given directories'})")
    weights_path = resolve_weights_path(str(weights))
    model = load_model(str(weights_path), **options)
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as err:
        raise InputError(f"cannot use device {device}: {first_line(err)}") from None
    check_precision_device(model.options.precision, device)
    return model, weights_path, files, bad


def _same_as_rank_0(settings: dict, group: RankGroup) -> None:
    """`InputError` on a rank whose outputs would not be what rank 0 records for the folder:
    other weights (by content), options or version (a relative --weights from another working
    directory, another machine's file)."""
    if group.world == 1:
        return
    mine = {k: v for k, v in settings.items() if k != "weights"}  # the path may differ; the content may not
    first = group.all_gather(mine)[0]
    if mine != first:
        difference = "; ".join(f"{k}: {first.get(k)!r} on rank 0, {v!r} here" for k, v in mine.items() if first.get(k) != v)
        raise InputError(f"rank {group.rank} would embed with other settings than rank 0 ({difference}); give every "
                         "rank the same weights and options, by absolute paths on a file system they all see")  # fmt: skip


def _plan(run: _Run, files: list, bad: list, store: OutputStore, world: int) -> list:
    """Each rank's share of the work (rank 0's also the skipped files and early failures)."""
    jobs, skipped, missing = plan_jobs(files, store, run.timestamps, run.overwrite, measure=not run.quiet and world == 1)
    if world > 1:  # the lengths balance the shares
        jobs = measure(jobs)
    failures = [(b.argument, b.problem) for b in bad] + list(missing)
    return shares(jobs, store.records, skipped, failures, world)


def _embed(run: _Run, model: Any, device: torch.device, store: OutputStore, share: Share, group: RankGroup) -> Tally:
    """Embed this rank's share; the progress display is rank 0's (of its share) only."""
    label = run.prefix if group.world == 1 else f"{run.prefix}: rank 0's share"
    progress = AudioProgress(sum(j.seconds for j in share.jobs), len(share.jobs) + len(share.failures),
                             label, quiet=run.quiet or group.rank != 0)  # fmt: skip
    embedder = FileEmbedder(model, device, store, progress, run.prefix, workers=run.decode_workers)
    embedder.tally.skipped = share.skipped
    try:
        for what, problem in share.failures:
            embedder.fail(what, problem)
        return embedder.run(share.jobs)
    finally:
        progress.close()

