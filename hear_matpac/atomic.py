"""Write a file all at once or not at all: a temporary file beside it, then a rename."""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union


@contextlib.contextmanager
def atomic_path(path: Union[str, "os.PathLike[str]"]) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write by any means; on a clean exit it replaces
    `path` (parents created), on an error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: Union[str, "os.PathLike[str]"]) -> Iterator[BinaryIO]:
    """Yield a binary file; on a clean exit it replaces `path` (parents created), on an error
    it is removed and `path` is left as it was. Readers never see a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST)


def unwritable(err: OSError, where: Union[str, "os.PathLike[str]"], advice: str) -> Optional[ValueError]:
    """A one-line `ValueError` when `err` says that `where` cannot be written (permissions, a
    read-only or immutable folder, a file where a folder should be), else None."""
    if err.errno not in _NOT_WRITABLE:
        return None
    return ValueError(f"cannot write into {where} ({err.strerror or type(err).__name__}); {advice}")


def current_umask() -> int:
    """The process's umask (read by setting it and back: Python has no other way)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
