"""Reading ``.npy`` and ``.npz`` files safely: headers first, data only once it fits.

``numpy.load`` allocates whatever a header declares before it reads a byte of
data, so a 4 MB file can ask for 4 GB. Here a file is opened by its header
alone (:func:`open_npy`, :func:`open_npz`): the dtype must hold numbers (never
Python objects: nothing is unpickled), and the bytes the shape declares must
be exactly the bytes the file (or the zip member) holds, so a truncated file
or a compressed member that claims more than it has is refused before anything
is allocated. Callers check names and shapes against what they need, then
:meth:`StoredArray.read` reads an array once :mod:`~lstm_graph.formats.memory`
says it fits.
"""

from __future__ import annotations

import math
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from lstm_graph.errors import DataError, LstmGraphError
from lstm_graph.formats.memory import allocation, file_size, require, size_text


@dataclass(frozen=True)
class StoredArray:
    """An array in an ``.npy`` file or an ``.npz`` member, known by its header."""

    path: Path
    member: str | None  # the zip member, for an .npz
    name: str  # what messages call it
    shape: tuple[int, ...]
    dtype: np.dtype
    error: type[LstmGraphError]  # what its problems raise (DataError, WeightsError)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def read(self) -> np.ndarray:
        """The array, once its bytes fit in memory; the file must still match its header."""
        require([allocation(self.name, self.shape, self.dtype)], "reading it", str(self.path))
        try:
            with _open(self.path, self.member) as stream:
                array = npy_format.read_array(stream, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
            raise self.error(f"{self.path}: cannot read {self.name} ({_reason(err)})") from None
        if array.shape != self.shape or array.dtype != self.dtype:
            raise self.error(f"{self.path}: {self.name} changed while it was read")
        return array


def open_npy(path: Path, name: str, error: type[LstmGraphError] = DataError) -> StoredArray:
    """The array of an ``.npy`` file, by its header (nothing else is read)."""
    size = file_size(path, error)
    try:
        with open(path, "rb") as stream:
            if stream.read(4) == b"PK\x03\x04":  # a zip: an .npz named otherwise
                raise error(f"{path}: is an .npz file (arrays by name) named "
                            f"{path.suffix or 'without .npz'}; this takes one array: name it "
                            f"{path.with_suffix('.npz').name}, or save it with numpy.save")
            stream.seek(0)
            return _header(stream, size, path, None, name, error)
    except OSError as err:
        raise error(f"{path}: cannot read ({_reason(err)})") from None


def open_npz(path: Path, error: type[LstmGraphError] = DataError,
             expected: str = "an .npz of arrays by name (numpy.savez(path, h=…, c=…))"
             ) -> dict[str, StoredArray]:
    """The arrays of an ``.npz`` file by name, each by its header (no data is read);
    ``expected`` says what the file should be, where it is an ``.npy`` named so."""
    file_size(path, error)
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            found = {}
            for info in members:
                name = info.filename[: -len(".npy")] if info.filename.endswith(".npy") \
                    else info.filename
                with archive.open(info) as stream:
                    found[name] = _header(stream, info.file_size, path, info.filename, name,
                                          error)
            return found
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError,
            RuntimeError) as err:
        if is_npy(path):
            raise error(f"{path}: is an .npy file, one array; this takes {expected}") from None
        raise error(f"{path}: not a readable .npz file ({_reason(err)})") from None


def is_npy(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts as an ``.npy`` file does (NumPy's
    magic string). Anything else is not looked into: opening a FIFO to read waits for a
    writer (``grad --input f.npz`` with f.npz a FIFO hung until killed)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as stream:
            return stream.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def read_npz(path: Path, error: type[LstmGraphError] = DataError) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, once all of them together fit in memory."""
    stored = open_npz(path, error)
    require([allocation(a.name, a.shape, a.dtype) for a in stored.values()],
            "reading them", str(path))
    return {name: array.read() for name, array in stored.items()}


def _open(path: Path, member: str | None) -> IO[bytes]:
    if member is None:
        return open(path, "rb")
    archive = zipfile.ZipFile(path)
    try:
        return archive.open(member)
    finally:
        archive.close()  # the member stream keeps the file open until it is closed


def _header(stream: IO[bytes], stored_bytes: int, path: Path, member: str | None, name: str,
            error: type[LstmGraphError]) -> StoredArray:
    """Read and check an array header; ``stored_bytes`` is the size of the whole .npy."""
    where = f"{path}: {name}" if member is not None else str(path)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):  # 3.0: 2.0's layout, its header in UTF-8 (only
            # field names need more than Latin-1, and structured dtypes are refused below)
            shape, _fortran, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
        start = stream.tell()
    except (ValueError, EOFError, OSError, SyntaxError) as err:
        if member is not None and not member.endswith(".npy"):  # numpy.savez names each so
            kind = " (a PyTorch file's pickle)" if member.endswith("data.pkl") else ""
            raise error(f"{path}: not an .npz that numpy.savez wrote: it holds {member!r}"
                        f"{kind}, which is not an .npy array") from None
        hint = "" if member is not None else "; give an array written by numpy.save"
        raise error(f"{where}: not a readable .npy array ({_reason(err)}){hint}") from None
    if dtype.hasobject:
        raise error(f"{where}: holds Python objects (dtype object), not numbers; nothing in "
                    "it was unpickled")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise error(f"{where}: has the structured dtype {dtype}; it must hold plain numbers")
    if any(n < 0 for n in shape):
        raise error(f"{where}: the header declares the impossible shape {shape}")
    declared = math.prod(shape) * dtype.itemsize
    held = stored_bytes - start
    if declared != held:
        state = "truncated" if held < declared else "longer than its header says"
        raise error(f"{where}: the header declares {name} of shape {shape} {dtype} "
                    f"({size_text(declared)}), but the file holds {size_text(max(held, 0))} "
                    f"of data; it is {state}, or not an .npy array")
    return StoredArray(path, member, name, tuple(int(n) for n in shape), dtype, error)


def _reason(err: BaseException) -> str:
    """An error's first line, with a zip member's repr (``<ZipInfo filename='x' …>``, in
    zipfile's "File … is encrypted") shortened to its name."""
    text = getattr(err, "strerror", None) or str(err).strip() or type(err).__name__
    return re.sub(r"<ZipInfo filename=('[^']*'|\"[^\"]*\")[^>]*>", r"\1", text.splitlines()[0])
