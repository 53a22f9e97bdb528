"""Writing output files whole or not at all, and never over a special file.

An output goes to a temporary file in the target's directory and is renamed
into place only once complete, so a failed or interrupted run leaves an
earlier file untouched and no partial file behind. Missing parent directories
are created (and removed again if the write fails). A new file gets the mode
the user's umask allows; a file written over keeps its mode; a symbolic link
is followed, and its target is written (no directories are made for it).

Only a regular file is ever replaced. A character device (``/dev/null``, a
terminal) or a FIFO (``/dev/stdout`` in a pipe) is written through, so
``--out /dev/stdout`` works; a FIFO that no process reads is refused rather
than waited on. Any other kind of file (a directory, a socket, a block device)
is refused.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lstm_graph.errors import OutputError


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (see the module's docstring); return the path."""
    with open_output(path) as stream:
        stream.write(data)
    return Path(path)


def finite(value: object) -> object:
    """``value`` with every float that is NaN or infinite (a diverged run's losses) as
    ``None``: JSON has no such numbers (``null`` then).

    >>> finite({"evals": [[1, 0.5], [2, float("nan")]], "loss": float("inf")})
    {'evals': [[1, 0.5], [2, None]], 'loss': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def json_text(data: object) -> str:
    """``data`` as the JSON every command prints or writes: keys sorted, indented, a number
    that is not finite as ``null`` (so the same data gives the same bytes, always valid)."""
    return json.dumps(finite(data), indent=2, sort_keys=True, allow_nan=False)


def write_section(path: Path, start: str, end: str, text: str) -> Path:
    """Put ``text`` (which begins with ``start`` and ends with ``end``) in place of the part
    of the file ``path`` between those markers, keeping the rest; a new file holds only it.
    How the benchmarks update their tables in ``docs/`` without touching the prose."""
    page = path.read_text(encoding="utf-8") if path.exists() else f"{start}\n{end}\n"
    before, _, rest = page.partition(start)
    _, _, after = rest.partition(end)
    return write_atomic(path, (before + text + after).encode("utf-8"))


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save arrays as an ``.npz`` file, streamed into place (no copy in memory). A
    terminal is refused: an ``.npz`` is binary."""
    save: Callable[..., None] = np.savez  # its stubs mistake the arrays for its flags
    with open_output(path, binary=True) as stream:
        save(stream, allow_pickle=False,
             **{name: np.asarray(value) for name, value in arrays.items()})
    return Path(path)


@contextlib.contextmanager
def open_output(path: str | Path, binary: bool = False) -> Iterator[BinaryIO]:
    """A stream for ``path``, written as the module's docstring says; ``binary`` output
    is refused on a terminal."""
    if not str(path):
        raise OutputError("the output path is empty; give a file name")
    path = Path(path)
    try:
        status: os.stat_result | None = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # a parent missing or a file: see below
        status = None
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None
    if status is not None and (stat.S_ISCHR(status.st_mode) or stat.S_ISFIFO(status.st_mode)):
        with _write_through(path, status, binary) as stream:
            yield stream
        return
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise OutputError(f"{path}: is {_kind(status.st_mode)}, not a regular file; give the "
                          "path of a file to write")
    link = path.is_symlink()
    target = Path(os.path.realpath(path)) if link else path
    directory = target.parent if str(target.parent) else Path(".")
    created = [] if link else _make_directories(path, directory)  # never where a link leads
    mode = stat.S_IMODE(status.st_mode) if status is not None else _new_file_mode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as err:
        _remove(created)
        raise OutputError(f"{path}: cannot write in {directory} ({err.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        _check_still_replaceable(path, target)
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        _remove(created)
        if isinstance(err, OSError):
            raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None
        raise


@contextlib.contextmanager
def _write_through(path: Path, status: os.stat_result, binary: bool) -> Iterator[BinaryIO]:
    """Write into a character device or FIFO in place: it is never replaced."""
    fifo = stat.S_ISFIFO(status.st_mode)  # FIFOs and fcntl exist where POSIX does
    flags = os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | (os.O_NONBLOCK if fifo else 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if fifo and err.errno == errno.ENXIO:
            raise OutputError(f"{path}: is a FIFO that no process is reading; start the "
                              "reader first, or give a file") from None
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None
    if fifo:  # opened without waiting; write with the usual blocking semantics
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    if binary and os.isatty(fd):
        os.close(fd)
        raise OutputError(f"{path}: is a terminal, and this output is binary (.npz); give a "
                          "file, or redirect it: --out /dev/stdout > y.npz")
    try:
        with io.BufferedWriter(_Unseekable(fd)) as stream:
            yield stream
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None


class _Unseekable(io.RawIOBase):
    """A device or FIFO as a stream that cannot seek, whatever the device says (``/dev/null``
    claims it can, and a zip written there would be laid out for a file)."""

    def __init__(self, fd: int):
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISBLK, "a block device"))
    return next((words for test, words in kinds if test(mode)), "a special file")


def _make_directories(path: Path, directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return those created, deepest last."""
    missing: list[Path] = []
    existing = directory
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: do not create where it points
            raise OutputError(f"{path}: {existing} is a broken symbolic link")
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{path}: {existing} is not a directory")
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            _remove(created)
            raise OutputError(f"{path}: cannot create the directory {folder} "
                              f"({err.strerror or err})") from None
        created.append(folder)
    return created


def _remove(created: list[Path]) -> None:
    """Remove directories this write created, deepest first, if still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _new_file_mode() -> int:
    """0666 less the user's umask: what the file would get from ``open``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _check_still_replaceable(path: Path, target: Path) -> None:
    """Just before the rename: what is at the target now must still be a regular file or
    nothing (something else may have been put there meanwhile)."""
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise OutputError(f"{path}: became {_kind(mode)} while it was written; nothing was "
                          "replaced")
