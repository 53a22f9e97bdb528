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


def sequence_norms(xp: Any, values: Any) -> Any:
    """Each sequence's Euclidean norm over the units of ``values`` ``(…, B, width)``, in
    float64: ``(…, B)``. Scaled by each row's largest magnitude, so that a norm float64
    can hold is never infinity (``sqrt(sum(v²))`` overflowed once a unit passed about
    1.3e154, and gradflow drew finite gradients as missing); NaN and infinity stay what
    they are.

    >>> sequence_norms(np, np.array([[3.0, 4.0], [1e200, 1e200], [0.0, 0.0]]))
    array([5.00000000e+000, 1.41421356e+200, 0.00000000e+000])
    """
    values = xp.asarray(values, dtype=xp.float64)
    scale = _scale(xp, xp.max(xp.abs(values), axis=-1, keepdims=True))
    scaled = values / scale
    scaled *= scaled  # in place: two arrays of values' size at most, as squaring them took
    return xp.sqrt(xp.sum(scaled, axis=-1)) * scale[..., 0]


def mean_sequence_norm(xp: Any, values: Any) -> Any:
    """The mean over the sequences of :func:`sequence_norms` of ``values`` ``(…, B,
    width)``: ``(…)``, scaled as they are (a mean that sums first overflowed past 9e307).

    >>> float(mean_sequence_norm(np, np.full((2, 4), 6e307)))
    1.2e+308
    """
    norms = sequence_norms(xp, values)
    scale = _scale(xp, xp.max(norms, axis=-1, keepdims=True))
    return xp.mean(norms / scale, axis=-1) * scale[..., 0]


def _scale(xp: Any, largest: Any) -> Any:
    """What to divide by before summing: the largest magnitude, or 1 where it is 0 or not
    finite (NaN and infinity then stay what they are)."""
    return xp.where(xp.isfinite(largest) & (largest > 0), largest, 1.0)
