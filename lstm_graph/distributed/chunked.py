"""An ``.npz`` written chunk by chunk, whole or not at all, never held in memory.

Each array of the output is a memory-mapped ``.npy`` file in a private temporary
directory beside the output (in the nearest directory that exists; the system's
temporary directory where none can be made there, as for ``/dev/stdout``); results are
written into it as they arrive (rows of a shard, say). The directory is named
``.NAME.lstm-graph-XXXXXXXX.parts``, made and read only through its own descriptor
(never through a link), and locked (``flock``) while it is alive: one that a killed
command left behind is removed by the next write of the same output
(:func:`~lstm_graph.formats.files.sweep_leftovers`). :meth:`ChunkedNpz.commit` copies
the ``.npy`` files block by block into a zip archive laid out as :func:`numpy.savez`
lays it out (stored, not compressed, one ``NAME.npy`` per array), streamed through
:func:`~lstm_graph.formats.files.open_output`: renamed into place when complete, with
every rule that any output of lstm-graph follows. On failure, or if never committed,
the directory is removed: the output is the new file, or whatever was there before.

The disk holds each array twice for a moment (the ``.npy`` and its copy in the
archive); memory holds one block. :meth:`ChunkedNpz.reserve` refuses, before any work,
an output for which the disk has not that much room, and each ``.npy`` takes its room on
the disk when it is made (``posix_fallocate``, where the system has it): a disk that
fills up meanwhile is an :class:`OutputError` then, not a crash (a sparse memory-mapped
file on a full disk is killed by ``SIGBUS`` when written).

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> with ChunkedNpz(folder / "out.npz") as out:
...     y = out.array("y", (3, 4), np.float32)
...     y[:, :2] = 1
...     y[:, 2:] = 2
...     _ = out.commit()
>>> np.load(folder / "out.npz")["y"].tolist()[0]
[1.0, 1.0, 2.0, 2.0]
>>> sorted(p.name for p in folder.iterdir())
['out.npz']
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from lstm_graph import interrupts
from lstm_graph.errors import OutputError
from lstm_graph.formats.files import create_locked, open_output
from lstm_graph.formats.memory import size_text

#: Bytes copied at a time into the archive.
BLOCK = 1 << 22
#: Bytes an array takes beyond its numbers: its ``.npy`` header, and in the archive its
#: entry's headers (zip64 included); rounded up.
OVERHEAD = 1024


def _nearest_directory(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists."""
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def _archive_directory(path: Path) -> Path | None:
    """Where :func:`~lstm_graph.formats.files.open_output` writes the archive before it is
    renamed into place (the nearest directory of it that exists); ``None`` for a device or
    FIFO, written through, which takes no room on a disk."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            return None
    except OSError:
        pass
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    return _nearest_directory(target.parent if str(target.parent) else Path("."))


def _allocate(fd: int) -> None:
    """Give the open file ``fd`` its room on the disk now (``posix_fallocate``) rather than
    as pages of its memory map are first written; a no-op where the system cannot."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:
        return
    try:
        allocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise


def _write_header(stream: BinaryIO, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """An ``.npy`` header for an array of ``shape`` and ``dtype`` (format 1.0 where it
    fits, else 2.0, as :func:`numpy.lib.format.open_memmap` writes it)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(stream, header)
    except ValueError:
        stream.seek(0)
        np.lib.format.write_array_header_2_0(stream, header)


def _parts_directory(path: Path) -> tuple[Path, int, int, str]:
    """A new private directory for the arrays of ``path`` while they are written: where
    it is, a descriptor of that directory, the new directory's own (locked) descriptor,
    and its name there."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    places = [(_nearest_directory(target.parent if str(target.parent) else Path(".")),
               target.name),  # no room there (/dev for /dev/stdout): the system's own
              (Path(tempfile.gettempdir()), path.name or "output")]
    why = ""
    for folder, name in places:
        try:
            parent = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            why = err.strerror or str(err)
            continue
        try:
            fd, entry = create_locked(parent, name, "parts", str(path), str(folder))
        except OutputError as err:
            os.close(parent)
            why = str(err)
            continue
        return folder, parent, fd, entry
    raise OutputError(f"{path}: no directory to write its arrays in while they are made "
                      f"({why})")


class ChunkedNpz:
    """The output file ``path`` while it is being written (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._arrays: dict[str, np.memmap] = {}
        noted: list[int] = []  # Ctrl-C held until the directory is this object's to close
        previous = interrupts.hold(noted)
        try:
            folder, self._parent, self._fd, self._entry = _parts_directory(self.path)
        except BaseException:
            interrupts.restore(previous, noted)
            raise
        self._parts = folder / self._entry  # for messages and the disk's free room
        try:
            interrupts.restore(previous, noted)  # one that came meanwhile is raised here
        except BaseException:
            self.close()
            raise

    def reserve(self, nbytes: int, arrays: int = 1) -> None:
        """Refuse (:class:`OutputError`, naming the bytes) an output of ``arrays`` arrays of
        ``nbytes`` in all where the disk has not room for it twice: as the ``.npy`` files
        while it is written, and as the archive made from them (once on each disk where
        those are on two). Call it before any work; :meth:`array` takes the room."""
        need = nbytes + arrays * OVERHEAD
        wanted: dict[int, tuple[Path, int, list[str]]] = {}
        for folder, what in ((self._parts.parent, "its arrays while they are written"),
                             (_archive_directory(self.path), "the archive made of them")):
            if folder is None:
                continue
            device = folder.stat().st_dev
            where, total, whats = wanted.get(device, (folder, 0, []))
            wanted[device] = (where, total + need, [*whats, what])
        for where, total, whats in wanted.values():
            free = shutil.disk_usage(where).free
            if free < total:
                each = f"{size_text(need)} each" if len(whats) > 1 else size_text(need)
                raise OutputError(f"{self.path}: needs {size_text(total)} of free disk in "
                                  f"{where} ({' and '.join(whats)}: {each}), but only "
                                  f"{size_text(free)} is free; free some space, or write the "
                                  "output to another disk")

    def array(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.memmap:
        """A new array of the output, zero-filled and memory-mapped, to write into; its
        room on the disk taken now."""
        if name in self._arrays:
            raise OutputError(f"{self.path}: two arrays named '{name}'")
        part = f"{len(self._arrays)}.npy"
        dtype = np.dtype(dtype)
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=self._fd)
            with os.fdopen(fd, "r+b") as stream:
                _write_header(stream, dtype, shape)
                mapped = np.memmap(stream, dtype, mode="r+", offset=stream.tell(), shape=shape)
                _allocate(stream.fileno())
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(part, dir_fd=self._fd)
            why = f"{self.path}: cannot make {name} {shape} in {self._parts}"
            if err.errno == errno.ENOSPC:
                nbytes = math.prod(shape) * dtype.itemsize
                raise OutputError(f"{why}: no room for its {size_text(nbytes)} on the disk "
                                  f"({err.strerror}); free some space, or write the output "
                                  "to another disk") from None
            raise OutputError(f"{why} ({err.strerror or err})") from None
        self._arrays[name] = mapped
        return mapped

    def __getitem__(self, name: str) -> np.memmap:
        return self._arrays[name]

    def commit(self) -> Path:
        """Pack every array, in the order made, into the ``.npz`` and put it in place."""
        with open_output(self.path, binary=True) as stream, \
                zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for k, (name, mapped) in enumerate(self._arrays.items()):
                mapped.flush()
                part = os.open(f"{k}.npy", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                               dir_fd=self._fd)
                with os.fdopen(part, "rb") as source, \
                        archive.open(f"{name}.npy", "w", force_zip64=True) as target:
                    shutil.copyfileobj(source, target, BLOCK)
        return self.path

    def close(self) -> None:
        """Drop the memory maps and the temporary directory (after :meth:`commit`, or
        instead of it): the files it made there, then the directory."""
        if self._fd < 0:
            return
        made = len(self._arrays)
        self._arrays.clear()
        for k in range(made + 1):  # and one that failed half-made
            with contextlib.suppress(OSError):
                os.unlink(f"{k}.npy", dir_fd=self._fd)
        with contextlib.suppress(OSError):
            os.rmdir(self._entry, dir_fd=self._parent)
        os.close(self._fd)  # the lock goes with it
        os.close(self._parent)
        self._fd = self._parent = -1

    def __enter__(self) -> ChunkedNpz:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
