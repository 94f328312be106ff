"""Files written all at once or not at all, JSON written strictly, and how errors read.

`atomic_path`/`atomic_write`: a temporary file beside the target, then a rename.
`write_json`: strict JSON (no NaN), atomically. `first_line`: an error's message on one line.
`UserError` and its subclasses: a mistake of the user's (bad input, a missing file), which the
command line reports in one line with exit status 2; anything else is a bug and keeps its
traceback. They subclass `ValueError`/`TypeError`/`FileNotFoundError`, so the API's contract
for bad input holds for them too."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class UserError(Exception):
    """A mistake of the user's: the command line prints `hear-matpac CMD: error: MESSAGE`, exit 2."""


class InputError(UserError, ValueError):
    """A bad value given by the user (an option, a flag, a file's contents)."""


class InputTypeError(UserError, TypeError):
    """A value of the wrong kind given by the user (an unknown option, a string for a number)."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named that does not exist."""


@contextlib.contextmanager
def atomic_path(path: Union[str, "os.PathLike[str]"]) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write by any means; on a clean exit it replaces
    `path` (parents created), on an error it is removed and `path` is left as it was."""
    tmp = temporary_beside(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temporary_beside(path: PathLike) -> Path:
    """A new empty file beside `path` (parents created), named `.NAME.XXXXXXXX.tmp`: the name by
    which a later run knows a killed run's leftover."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def publish(tmp: PathLike, path: PathLike) -> None:
    """Give the written temporary file `tmp` the umask's mode and rename it to `path`."""
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path: Union[str, "os.PathLike[str]"]) -> Iterator[BinaryIO]:
    """Yield a binary file; on a clean exit it replaces `path` (parents created), on an error
    it is removed and `path` is left as it was. Readers never see a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST)


def unwritable(err: OSError, where: Union[str, "os.PathLike[str]"], advice: str) -> Optional[InputError]:
    """A one-line `InputError` (a `ValueError`) when `err` says that `where` cannot be written (permissions, a
    read-only or immutable folder, a file where a folder should be), else None."""
    if err.errno not in _NOT_WRITABLE:
        return None
    return InputError(f"cannot write into {where} ({err.strerror or type(err).__name__}); {advice}")


# An operating-system failure the user can fix, on a path they named: a missing file, no
# permission, a read-only or full file system (quota, `ulimit -f`), a file where a folder should
# be (or the reverse), a name too long, a loop of links.
USER_OS_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                            errno.ENOTEMPTY, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP})  # fmt: skip


def is_user_error(err: BaseException) -> bool:
    """Whether `err` is the user's to fix (one line, exit status 2) rather than a bug (its
    traceback): a `UserError`, or an `OSError` with one of `USER_OS_ERRNOS`, or one that
    hear_matpac raised with a message and no error number (`FileExistsError("OUT exists ...")`)."""
    if isinstance(err, UserError):
        return True
    return isinstance(err, OSError) and (err.errno in USER_OS_ERRNOS or err.errno is None)


def one_line(err: BaseException) -> str:
    """`err`'s message on one line; an operating-system error as `PATH: reason`."""
    if isinstance(err, OSError) and err.strerror:
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        return f"{where}: {err.strerror}" if where else err.strerror
    return " ".join(line.strip() for line in str(err).strip().splitlines()) or type(err).__name__


def write_json(path: PathLike, data: Any, sort_keys: bool = False) -> None:
    """`data` as indented JSON in `path`, atomically; NaN or infinity is a `ValueError` (strict
    JSON readers refuse them), raised before anything is written."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))


def first_line(err: BaseException) -> str:
    """The first line of an error's message, or its type's name."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _read_umask() -> int:
    """The process's umask, from /proc/self/status where Linux gives it; elsewhere by setting it
    and back, once, at import (before any thread of ours starts a tool)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def current_umask() -> int:
    """The process's umask, as read once at import: never set again, so a tool another thread
    starts meanwhile never sees a changed umask."""
    return _UMASK
