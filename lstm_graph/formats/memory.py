"""How much memory a command may take, and refusing work that would take more.

Every array lstm-graph reads or makes is sized before it exists: from a file's
header, or from the shapes a run will produce. Work whose arrays would not fit
is refused with a message naming the largest array, its shape and its size,
instead of failing half-way with a ``MemoryError``.

The bound (:func:`limit`) is ``$LSTM_GRAPH_MAX_BYTES`` when set, else what the
machine can give now: the memory available (``MemAvailable`` in
``/proc/meminfo``, else the physical memory ``os.sysconf`` reports) and, under
an address-space limit (``ulimit -v``), the room left below it.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lstm_graph.errors import LstmGraphError

#: The environment variable that sets the bound, in bytes (``4G``, ``512M`` also work).
ENV = "LSTM_GRAPH_MAX_BYTES"

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class MemoryLimitError(LstmGraphError):
    """Arrays a command would make do not fit in the memory it may take."""


@dataclass(frozen=True)
class Allocation:
    """An array a command will hold: what messages call it, its shape and item size."""

    name: str
    shape: tuple[int, ...]
    itemsize: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    def __str__(self) -> str:
        return f"{self.name} of shape {self.shape}"


def allocation(name: str, shape: Iterable[int], dtype: npt.DTypeLike) -> Allocation:
    """An :class:`Allocation` of ``shape`` items of ``dtype``."""
    return Allocation(name, tuple(int(n) for n in shape), np.dtype(dtype).itemsize)


def size_text(nbytes: int) -> str:
    """Bytes for a person: ``"512 bytes"``, ``"16.4 GB"``."""
    value = float(nbytes)
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            break
        value /= 1000
    return f"{nbytes} bytes" if unit == "bytes" else f"{value:.3g} {unit}"


def parse_size(text: str) -> int:
    """``"4G"`` → 4·2³⁰; a number of bytes, with an optional K, M, G or T (powers of 1024)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not found:
        raise LstmGraphError(f"{ENV}={text!r} is not a size; give a number of bytes, "
                             "optionally with K, M, G or T (e.g. 4G)")
    return int(float(found.group(1)) * _UNITS[found.group(2).upper()])


def set_limit() -> int | None:
    """The bound ``$LSTM_GRAPH_MAX_BYTES`` sets, or None where it is not set."""
    given = os.environ.get(ENV)
    return parse_size(given) if given else None


def limit() -> int:
    """The most bytes a command's new arrays may take now (see the module's docstring)."""
    given = set_limit()
    if given is not None:
        return given
    bounds = [bound for bound in (_available_memory(), _address_space_left()) if bound is not None]
    return min(bounds) if bounds else 2**63


def _limit_text(bound: int) -> str:
    """Where the bound comes from, for messages."""
    if os.environ.get(ENV):
        return f"the limit of {size_text(bound)} set by {ENV}"
    return f"the {size_text(bound)} of memory available (set {ENV} to change the limit)"


def require(allocations: Iterable[Allocation], what: str, source: str = "") -> None:
    """Refuse ``what`` (``"this run"``) when ``allocations`` together exceed :func:`limit`.

    The message names the largest array, its shape and size, then the total;
    ``source`` (a file name) prefixes it when the arrays come from a file.
    """
    wanted = sorted(allocations, key=lambda a: a.nbytes, reverse=True)
    total = sum(a.nbytes for a in wanted)
    if not wanted:
        return
    bound = limit()
    if total <= bound:
        return
    others = f"; {size_text(total)} in all for {what}" if len(wanted) > 1 else ""
    prefix = f"{source}: " if source else ""
    raise MemoryLimitError(f"{prefix}{wanted[0]} would take {size_text(wanted[0].nbytes)}"
                           f"{others}, more than {_limit_text(bound)}")


def file_size(path: Path, error: type[LstmGraphError]) -> int:
    """The size of ``path``, which must be a regular file: reading a FIFO or a device
    could block or never end, and its size says nothing about what it holds."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    if stat.S_ISDIR(status.st_mode):
        raise error(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(status.st_mode):
        raise error(f"{path}: not a regular file (a FIFO, socket or device); give a file")
    return status.st_size


def require_file(path: Path, error: type[LstmGraphError]) -> None:
    """Refuse a file that is read whole (``.pt``, ``.onnx``) when it would not fit in
    memory, or when it is not a regular file (see :func:`file_size`)."""
    size = file_size(path, error)
    bound = limit()
    if size > bound:
        raise MemoryLimitError(f"{path}: reading its {size_text(size)} would take more than "
                               f"{_limit_text(bound)}")


def require_unpacked(path: Path, nbytes: int, size: int) -> None:
    """Refuse a compressed file (``size`` bytes) whose members unpack to ``nbytes`` that would
    not fit in memory: its size on disk says nothing of that (a zip bomb)."""
    bound = limit()
    if nbytes > bound:
        raise MemoryLimitError(f"{path}: its {size_text(size)} unpack to {size_text(nbytes)}, "
                               f"more than {_limit_text(bound)}")


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _address_space_left() -> int | None:
    """Room below ``ulimit -v``: the soft limit less what the process maps now."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, AttributeError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        mapped = 0
    return max(soft - mapped, 0)
