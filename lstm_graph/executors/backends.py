"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

Everything that computes takes an array namespace ``xp``; this module is the
one place that picks it. CuPy is imported only when asked for, and asking for
it without CuPy or without a GPU is an error, never a silent fallback.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_graph.errors import BackendError, install_hint

BACKENDS = ("numpy", "cupy")
DTYPES = ("float32", "float64")


def namespace(backend: str) -> Any:
    """The array module for ``backend`` ("numpy" or "cupy")."""
    if backend == "numpy":
        return np
    if backend != "cupy":
        raise BackendError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    try:
        import cupy
    except ImportError:
        raise BackendError(f"the cupy backend needs CuPy: {install_hint('gpu')} (or "
                           "cupy-cuda11x for CUDA 11); use --backend numpy to run on the "
                           "CPU") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CuPy raises its own CUDARuntimeError kinds here
        raise BackendError(f"the cupy backend found no usable GPU ({err}); use --backend "
                           "numpy to run on the CPU") from None
    if count < 1:
        raise BackendError("the cupy backend found no GPU; use --backend numpy")
    return cupy


def check_dtype(dtype: str | np.dtype | type) -> np.dtype:
    """``dtype`` (a name, or NumPy's: ``np.float64``, ``np.dtype("float32")``) as one of
    :data:`DTYPES`; else a BackendError."""
    try:
        named = dtype if isinstance(dtype, str) or dtype is None else np.dtype(dtype).name
    except TypeError:
        named = None
    if named not in DTYPES:
        shown = dtype if isinstance(dtype, str) else repr(dtype)
        raise BackendError(f"unsupported dtype '{shown}'; choose one of {', '.join(DTYPES)}")
    return np.dtype(named)


def to_numpy(array: Any) -> np.ndarray:
    """A host NumPy copy of a NumPy or CuPy array."""
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)
