"""The one writer of report files: Markdown and CSV tables as text, and any report file (text
or a matplotlib figure as PNG) written atomically, so a reader never sees half of one."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Collection, Sequence, Union

from ..io import atomic_write

PathLike = Union[str, Path]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> str:
    """A GitHub Markdown table; `|` in a cell is escaped; columns whose index is in `right` are
    right-aligned."""
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "".join("---:|" if i in right else "---|" for i in range(len(header)))]  # fmt: skip
    lines += ["| " + " | ".join(_md_escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """CSV text (`\\n` line ends) of `header` and `rows`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_text(path: PathLike, text: str) -> Path:
    """`text` as UTF-8 at `path`, atomically."""
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


def save_png(figure: Any, path: PathLike, dpi: int) -> Path:
    """A matplotlib `Figure` as PNG at `path`, atomically."""
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    return Path(path)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def plural(count: int, word: str) -> str:
    """"1 model", "2 models": a count and its noun."""
    return f"{count} {word}" + ("" if count == 1 else "s")
