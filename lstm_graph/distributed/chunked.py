"""An ``.npz`` written chunk by chunk, whole or not at all, never held in memory.

Each array of the output is a memory-mapped ``.npy`` file
(:func:`numpy.lib.format.open_memmap`) in a private temporary directory beside the
output (in the nearest directory that exists; the system's temporary directory where
none can be made there, as for ``/dev/stdout``); results are written into it as they
arrive (rows of a shard, say). :meth:`ChunkedNpz.commit` copies the ``.npy`` files block
by block into a zip archive laid out as :func:`numpy.savez` lays it out (stored, not
compressed, one ``NAME.npy`` per array), streamed through
:func:`~lstm_graph.formats.files.open_output`: renamed into place when complete, with
every rule that any output of lstm-graph follows. On failure, or if never committed,
the directory is removed: the output is the new file, or whatever was there before.

The disk holds each array twice for a moment (the ``.npy`` and its copy in the
archive); memory holds one block.

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

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from types import TracebackType

import numpy as np

from lstm_graph.errors import OutputError
from lstm_graph.formats.files import open_output

#: Bytes copied at a time into the archive.
BLOCK = 1 << 22


def _parts_directory(path: Path) -> Path:
    """A new private directory for the arrays of ``path`` while they are written."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    folder = target.parent if str(target.parent) else Path(".")
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".parts", dir=folder))
    except OSError:  # no room to write there (/dev for /dev/stdout): the system's own
        try:
            return Path(tempfile.mkdtemp(prefix="lstm-graph-", suffix=".parts"))
        except OSError as err:
            raise OutputError(f"{path}: no directory to write its arrays in while they are "
                              f"made ({err.strerror or err})") from None


class ChunkedNpz:
    """The output file ``path`` while it is being written (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._parts = _parts_directory(self.path)
        self._arrays: dict[str, np.memmap] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.memmap:
        """A new array of the output, zero-filled and memory-mapped, to write into."""
        if name in self._arrays:
            raise OutputError(f"{self.path}: two arrays named '{name}'")
        part = self._parts / f"{len(self._arrays)}.npy"
        try:
            mapped = np.lib.format.open_memmap(part, mode="w+", dtype=np.dtype(dtype),
                                               shape=shape)
        except OSError as err:
            raise OutputError(f"{self.path}: cannot make {name} {shape} in {self._parts} "
                              f"({err.strerror or err})") from None
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
                with open(self._parts / f"{k}.npy", "rb") as source, \
                        archive.open(f"{name}.npy", "w", force_zip64=True) as target:
                    shutil.copyfileobj(source, target, BLOCK)
        return self.path

    def close(self) -> None:
        """Drop the memory maps and the temporary directory (after :meth:`commit`, or
        instead of it)."""
        self._arrays.clear()
        shutil.rmtree(self._parts, ignore_errors=True)

    def __enter__(self) -> ChunkedNpz:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
