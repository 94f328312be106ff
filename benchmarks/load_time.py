"""Load time of a ViT-Base-sized MATPAC checkpoint: `.pt`, `.safetensors` read into memory (the
default) and `.safetensors` memory-mapped (`load_model(..., mmap=True)`).

Builds a random encoder in the published layout (embed_dim 768, depth 12, 608 frames; nothing
is downloaded or committed), saves it as `.pt`, exports it with `weights export`, then times,
alternating the two files in each round:
  - `load_model(path)` alone (a mapped file's pages come in on first touch), and
  - `load_model(path)` then reading one value per 4 KiB page of every parameter (every byte
    really in memory: mmap's deferred page faults are counted),
each with the file in the page cache ("warm") and with its pages evicted first via
posix_fadvise(DONTNEED) on that one file ("cold"). Prints medians, the private memory each
loaded model holds and the peak during the load, and the time of a separate sha256 pass (what
a recorded mapped file costs on every use; a file read into memory is hashed from that read).

    python benchmarks/load_time.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

import hear_matpac

from hear_matpac.weights.export import export_safetensors
from hear_matpac.weights.integrity import sha256_file
from hear_matpac.weights.locate import TINY_UNTRAINED
from hear_matpac.weights.synthetic import VIT_BASE, write_random_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
from _common import status_kb  # noqa: E402


def evict(path: Path) -> None:
    """Drop this file's pages from the page cache (only this file; no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


MMAP = False  # set per variant by main()


def load_only(path: Path) -> None:
    hear_matpac.load_model(str(path), mmap=MMAP)


def load_and_touch(path: Path) -> None:
    model = hear_matpac.load_model(str(path), mmap=MMAP)
    with torch.no_grad():  # one float per 4 KiB page: every page of every weight is read
        total = sum(float(p.reshape(-1)[::1024].sum()) for p in model.parameters())
    assert total == total


def anon_memory_mb() -> float:
    """Private (anonymous) resident memory of this process, MB (Linux), or NaN elsewhere."""
    return status_kb("RssAnon") / 1e3


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (VmHWM), MB (Linux), or NaN elsewhere."""
    return status_kb("VmHWM") / 1e3


def memory_cost(path: Path, mmap: bool) -> str:
    """Private memory the loaded model holds, MB (weights read into memory count, weights
    mapped from the file, shared with the page cache, do not), and the peak resident memory
    the load added."""
    gc.collect()
    before, peak_before = anon_memory_mb(), peak_rss_mb()
    model = hear_matpac.load_model(str(path), mmap=mmap)
    with torch.no_grad():
        float(sum(p.reshape(-1)[::1024].sum() for p in model.parameters()))
    return f"{anon_memory_mb() - before:.0f} MB held, peak +{peak_rss_mb() - peak_before:.0f} MB"


def memory_in_fresh_process(path: Path, mmap: bool) -> str:
    """`memory_cost(path)` measured in a new interpreter: the allocator of this one keeps memory
    freed by earlier loads and would hide the cost."""
    argv = [sys.executable, __file__, "--memory-of", str(path)] + (["--mmap"] if mmap else [])
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def timed(fn: Callable[[Path], None], path: Path, cold: bool) -> float:
    if cold:
        evict(path)
    start = time.perf_counter()
    fn(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dir", default=None, help="where to write the two files (default: a temp dir)")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mmap", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        hear_matpac.load_model(str(TINY_UNTRAINED))  # imports and one-off allocations first
        print(memory_cost(Path(args.memory_of), args.mmap))
        return
    config = VIT_BASE
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        pt = write_random_checkpoint(folder / "vit_base_random.pt", config)
        st = export_safetensors(pt, folder / "vit_base_random.safetensors").path
        n_params = sum(v.numel() for v in hear_matpac.load_model(str(pt)).parameters())
        print(
            f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''}, "
            f"{os.cpu_count()} CPUs; python {platform.python_version()}, torch {torch.__version__}"
        )
        print(
            f"checkpoint: embed_dim {config.embed_dim}, depth {config.depth}, {config.n_frames} frames, "
            f"{n_params:,} parameters; .pt {pt.stat().st_size / 1e6:.1f} MB, "
            f".safetensors {st.stat().st_size / 1e6:.1f} MB"
        )
        global MMAP
        variants = ((".pt", pt, False), (".safetensors", st, False), (".safetensors mmap", st, True))
        for _, path, mmap in variants:  # import and first-call costs out of the way
            MMAP = mmap
            load_only(path)
        print(f"{'measure':<34}" + "".join(f"{name + ' (s)':>24}" for name, _, _ in variants))
        for cold in (False, True):
            for label, fn in (("load_model", load_only), ("load_model + read weights", load_and_touch)):
                times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
                for _ in range(args.repeats):
                    for name, path, mmap in variants:
                        MMAP = mmap
                        times[name].append(timed(fn, path, cold))
                row = f"{label} ({'cold' if cold else 'warm'})"
                print(f"{row:<34}" + "".join(f"{statistics.median(times[name]):>24.3f}" for name, _, _ in variants))
        for name, path, mmap in variants:
            print(f"memory, {name} (fresh process): {memory_in_fresh_process(path, mmap)}")
        hashes = [timed(lambda p: sha256_file(p), st, cold=False) for _ in range(args.repeats)]
        print(f"separate sha256 pass over the file (warm): {statistics.median(hashes):.3f} s")
        print(f"median of {args.repeats} alternating rounds")


if __name__ == "__main__":
    main()
