"""Writing output files whole or not at all.

Every output goes to a temporary file in the target directory and is renamed
into place only once complete, so a failed or interrupted run leaves an
earlier file untouched and no partial file behind.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from lstm_graph.errors import OutputError


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{path}: {directory} is not a directory")
    if not directory.is_dir():
        raise OutputError(f"{path}: the directory {directory} does not exist; create it first")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise OutputError(f"{path}: cannot write in {directory} ({err.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None
        raise
    return path


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save arrays as an ``.npz`` file, atomically."""
    buffer = io.BytesIO()
    save: Callable[..., None] = np.savez  # its stubs mistake the arrays for its flags
    save(buffer, allow_pickle=False, **{name: np.asarray(value) for name, value in arrays.items()})
    return write_atomic(path, buffer.getvalue())
