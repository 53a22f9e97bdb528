"""What a runner is given, checked before any work: ``x``, the initial states, and the
memory a run will take.

:class:`~lstm_graph.cell.Runner` calls these on every call, and the ``run``
command calls :func:`run_allocations` from ``x``'s header alone, before
reading it. The memory a run, a trace or a gradient takes is the executor's own
model (:meth:`~lstm_graph.executors.contract.Executor.allocations`), asked
through the registry. Every problem is a :class:`~lstm_graph.errors.DataError` that
names the array, its shape and, for values, the first offending index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from lstm_graph.errors import DataError
from lstm_graph.executors import registry
from lstm_graph.executors.backends import to_numpy
from lstm_graph.formats import memory
from lstm_graph.formats.memory import Allocation, allocation
from lstm_graph.schedule import Schedule

#: dtype kinds that hold real numbers (floats, signed and unsigned integers).
REAL_KINDS = "fiu"


def switch(value: Any, what: str) -> bool:
    """``value`` where it is True or False (Python's or NumPy's); else a DataError naming
    it: a string such as "no" is truthy, and would turn on what it meant to leave off.

    >>> switch(np.bool_(True), "record")
    True
    >>> switch("no", "allow_nonfinite")
    Traceback (most recent call last):
    ...
    lstm_graph.errors.DataError: allow_nonfinite is 'no'; it must be True or False
    """
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"{what} is {value!r}; it must be True or False")
    return bool(value)


def whole(value: Any, what: str, low: int | None = None) -> int:
    """``value`` as an ``int`` where it is a whole number (Python's or NumPy's; not a bool,
    not a float that happens to be whole) of at least ``low`` (None: any, the caller checks
    the range in its own words); else a DataError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        least = "" if low is None else f", {low} or more"
        raise DataError(f"{what} is {value!r}, of type {type(value).__name__}; it must be a "
                        f"whole number{least}")
    if low is not None and value < low:
        raise DataError(f"{what} is {value}; it must be a whole number, {low} or more")
    return int(value)


def as_array(value: Any, what: str) -> Any:
    """``value`` itself when it is an array with a NumPy dtype (NumPy, CuPy), else as a
    NumPy array; an error for what is no array of numbers at all."""
    if isinstance(value, np.ma.MaskedArray):
        raise DataError(f"{what} is a masked array, whose mask a run would not see; give "
                        "plain numbers (its .filled(value), or its .data)")
    try:
        np.dtype(value.dtype)
        tuple(value.shape)
        return value
    except (AttributeError, TypeError):
        pass
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:  # RuntimeError: a tensor with grad
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{what} is not an array of numbers ({reason})") from None


def states_mapping(value: Any, what: str, states: Iterable[str]) -> Mapping[str, Any] | None:
    """``value`` (a run's ``state``, a gradient's ``grad_state``) when it is None or maps
    state names to arrays; a DataError for anything else, such as PyTorch's ``(h, c)``
    tuple, whose order this cell's states need not share."""
    if value is None or isinstance(value, Mapping):
        return value
    states = list(states)
    example = ", ".join(f"'{name}': ..." for name in states)
    kind = "a tuple or list (PyTorch's (h, c) habit)" if isinstance(value, (tuple, list)) \
        else f"of type {type(value).__name__}"
    raise DataError(f"{what} is {kind}; it must map state names to arrays, as "
                    f"{{{example}}} (this cell's states: {', '.join(states)}; any left out "
                    "count as zeros)")


def check_x(x: Any, input_size: int, allow_nonfinite: bool, xp: Any, dtype: np.dtype
            ) -> tuple[Any, bool]:
    """``x`` as a ``(T, B, I)`` array of ``xp`` and ``dtype``, and whether it came as
    ``(T, I)``; errors for a wrong dtype, rank or size, and for values that are not
    finite in ``dtype`` (unless ``allow_nonfinite``)."""
    if type(x) is np.ndarray and xp is np and x.dtype == dtype and x.ndim == 3 \
            and x.shape[2] == input_size and x.shape[0] and x.shape[1] \
            and (allow_nonfinite or all_finite(np, x)):
        return x, False  # the common case, at once (a small run lasts tens of µs)
    x = as_array(x, "x")
    shape = tuple(x.shape)
    if np.dtype(x.dtype).kind not in REAL_KINDS:
        raise DataError(f"x has dtype {x.dtype}; it must hold real numbers")
    if len(shape) not in (2, 3):
        raise DataError(f"x has shape {shape}; expected (T, B, I) = (T, B, {input_size}) or "
                        f"(T, I) = (T, {input_size})")
    if shape[-1] != input_size:
        raise DataError(f"x has shape {shape}: its last axis is {shape[-1]}, but the cell's "
                        f"input size I is {input_size}")
    if shape[0] == 0 or (len(shape) == 3 and shape[1] == 0):
        raise DataError(f"x has shape {shape}: no time steps or no sequences")
    converted = convert(x, xp, dtype)
    if not allow_nonfinite:
        check_finite(x, converted, "x", dtype, xp, "clean the input")
    unbatched = len(shape) == 2
    return (converted[:, None, :] if unbatched else converted), unbatched


def check_state(state: Mapping[str, Any] | None, states: Mapping[str, Any], batch: int,
                hidden_size: int, unbatched: bool, allow_nonfinite: bool, xp: Any,
                dtype: np.dtype, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Every state's starting value as ``(B, H)`` arrays of ``xp`` and ``dtype``: the ones
    given, checked like ``x``, and zeros for the rest. With ``shape``, each given value
    must have exactly that shape (a stack's ``(L·D, B, H)``) and keeps it."""
    given = dict(state or {})
    unknown = sorted(map(str, set(given) - set(states)))
    if unknown:
        raise DataError(f"unknown state {', '.join(unknown)}; this cell's states are "
                        f"{', '.join(states)}")
    want = shape if shape is not None else \
        (hidden_size,) if unbatched else (batch, hidden_size)
    unbatched = unbatched and shape is None
    start = {}
    for name in states:
        if name not in given:
            start[name] = xp.zeros((batch, hidden_size), dtype=dtype)
            continue
        value = as_array(given[name], f"state '{name}'")
        if np.dtype(value.dtype).kind not in REAL_KINDS:
            raise DataError(f"state '{name}' has dtype {value.dtype}; states are real numbers")
        if tuple(value.shape) != want:
            raise DataError(f"state '{name}' has shape {tuple(value.shape)}, expected {want}")
        converted = convert(value, xp, dtype)
        if not allow_nonfinite:
            check_finite(value, converted, f"state '{name}'", dtype, xp, "clean it")
        start[name] = converted[None, :] if unbatched else converted
    return start


def convert(value: Any, xp: Any, dtype: np.dtype) -> Any:
    """``value`` as an array of ``xp`` and ``dtype``; a number too large for ``dtype``
    becomes infinity quietly (:func:`check_finite` names it)."""
    if np.dtype(value.dtype) == dtype:
        return xp.asarray(value)
    with np.errstate(over="ignore"):
        return xp.asarray(value, dtype=dtype)


def all_finite(xp: Any, *arrays: Any) -> bool:
    """Whether every number in ``arrays`` (floating point, of ``xp``) is finite.

    First the sum of squares of each (one BLAS pass, no temporary array): NaN and
    infinity make it NaN or infinity, and a sum that stays finite proves every term
    was. Only where a sum is not finite (NaN, infinity, or numbers beyond about 1e19
    in float32 whose squares overflow) is each element tested. Half the time of
    ``isfinite(a).all()`` on the arrays of a small run, a quarter less on large ones.
    """
    vdot = getattr(xp, "vdot", None)  # NumPy's and CuPy's; other namespaces test elements
    for array in arrays:
        if array.size and (vdot is None or not math.isfinite(float(vdot(array, array)))) \
                and not bool(xp.all(xp.isfinite(array))):
            return False
    return True


def check_finite(original: Any, converted: Any, what: str, dtype: np.dtype, xp: Any,
                  fix: str, skip: np.ndarray | None = None) -> None:
    """An error at the first value of ``converted`` that is not finite: NaN or infinity
    in ``original``, or a finite number too large for ``dtype``; none where ``skip`` (a
    NumPy mask that broadcasts to ``converted``: :func:`unread`) is true."""
    if all_finite(xp, converted):
        return
    bad = ~to_numpy(xp.isfinite(converted))
    if skip is not None:
        bad &= ~skip
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise not_finite(what, to_numpy(original[position])[()], position, dtype, fix)


def unread(lengths: np.ndarray | None, steps: int, ndim: int, batch_first: bool
           ) -> np.ndarray | None:
    """Where an array of ``ndim`` axes laid out as ``x`` (``(T, B, ·)``, ``(B, T, ·)``
    batch-first, ``(T, ·)`` one sequence) lies past each sequence's length (``lengths``,
    checked, ``(B,)``): what a run never reads of ``x`` nor of a gradient of ``y``, as
    PyTorch's packed sequences do not, so NaN there is no error. None without lengths.

    >>> unread(np.array([3, 1]), 3, 3, False)[..., 0].astype(int).tolist()
    [[0, 0], [0, 1], [0, 1]]
    >>> unread(np.array([3, 1]), 3, 3, True).shape
    (2, 3, 1)
    """
    if lengths is None:
        return None
    past = np.arange(steps)[:, None] >= np.asarray(lengths)[None, :]
    if ndim == 2:
        return past[:, :1]
    return (past.T if batch_first else past)[:, :, None]


def not_finite(what: str, value: Any, position: tuple[int, ...], dtype: np.dtype,
               fix: str) -> DataError:
    """The error for the first element of ``what`` that is not finite in ``dtype``: ``value``
    (as read, before conversion, in its own type: a float128's 1e400 is finite) is NaN or
    infinity, or finite but too large for ``dtype``.

    >>> for part in str(not_finite("x", np.float64(1e39), (0, 1), np.dtype("float32"),
    ...                            "")).split("; "):
    ...     print(part)
    x holds 1e+39 at index (0, 1), too large for float32 (the largest is about 3.4e+38)
    run in float64 (--dtype float64)
    """
    if np.isfinite(value):
        widest = "run in float64 (--dtype float64)" if dtype.itemsize < 8 and \
            abs(value) <= np.finfo(np.float64).max else \
            "lstm-graph computes in float32 or float64: scale the data down"
        return DataError(f"{what} holds {np.format_float_scientific(value, 2, trim='-')} at "
                         f"index {position}, too large for {dtype} (the largest is about "
                         f"{float(np.finfo(dtype).max):.2g}); {widest}")
    return DataError(f"{what} holds NaN or infinity, first at index {position}; {fix} or pass "
                     "--allow-nonfinite")


#: Runs whose arrays surely take less are not weighed against the machine's memory
#: (reading it costs more than running a small cell), unless $LSTM_GRAPH_MAX_BYTES is set.
SURELY_FITS = 64 * 2**20


#: Allocation lists a caller's cache keeps (see :func:`check_run_fits`).
CACHED_SHAPES = 8


def check_run_fits(schedule: Schedule, steps: int, batch: int, input_size: int,
                   hidden_size: int, dtype: np.dtype, executor: str = "plan",
                   backend: str = "numpy", work: str = "run", record: bool = False,
                   cache: dict[tuple[Any, ...], list[Allocation]] | None = None) -> None:
    """Refuse ``work`` (a run, a trace or a gradient) over ``x`` of shape ``(steps, batch,
    input_size)``, already in ``dtype``, whose arrays would not fit in memory, as the
    executor that will do it allocates them (see :func:`run_allocations`). ``cache``
    (a runner's, for its schedule and sizes) keeps the executor's allocation list per
    shape (see :func:`require_fits`): working it out took 0.2 ms, a percent of a medium
    run."""
    widest = max(input_size, hidden_size)
    per_row = (len(schedule.order) + 3) * widest * (1 if work == "run" else 3)
    rough = steps * batch * (input_size + per_row) * dtype.itemsize
    if rough > SURELY_FITS or memory.set_limit() is not None:
        require_fits(cache, (executor, backend, work, steps, batch, record),
                     lambda: registry.allocations(executor, backend, schedule, work, steps,
                                                  batch, input_size, hidden_size, dtype,
                                                  record))


def check_build_fits(executor: str, backend: str, schedule: Schedule, input_size: int,
                     hidden_size: int, dtype: np.dtype, record: bool = False) -> None:
    """Refuse building ``executor`` where the copies of the weights it packs
    (:func:`~lstm_graph.executors.registry.packing`) would not fit in memory; the machine's
    memory is read only where they take more than :data:`SURELY_FITS`, as for a run."""
    packing = registry.packing(executor, backend, schedule, input_size, hidden_size, dtype,
                               record)
    if sum(a.nbytes for a in packing) > SURELY_FITS or memory.set_limit() is not None:
        try:
            memory.require(packing, "building the executor")
        except memory.MemoryLimitError as err:
            if registry.chosen(executor, schedule, backend, record) != "native":
                raise
            raise memory.MemoryLimitError(f"{err}; the NumPy plan (--executor numpy, "
                                          "executor='numpy') packs one copy") from None


def require_fits(cache: dict[tuple[Any, ...], list[Allocation]] | None, key: tuple[Any, ...],
                 make: Callable[[], list[Allocation]]) -> None:
    """Refuse a run whose arrays (``make()``, kept in ``cache`` under ``key``, at most
    :data:`CACHED_SHAPES` lists) would not fit in memory. The machine's memory is read
    only where they take more than :data:`SURELY_FITS` or ``$LSTM_GRAPH_MAX_BYTES`` is set
    (reading it took 20 µs alone and 100 µs right after a medium run: 0.4 % of the run,
    whose arrays take 7 MB)."""
    found = None if cache is None else cache.get(key)
    if found is None:
        found = make()
        if cache is not None:
            if len(cache) >= CACHED_SHAPES:
                cache.clear()
            cache[key] = found
    if memory.set_limit() is not None or sum(a.nbytes for a in found) > SURELY_FITS:
        memory.require(found, "this run")


def work_allocations(schedule: Schedule, work: str, steps: int, batch: int, input_size: int,
                     hidden_size: int, dtype: np.dtype, executor: str = "plan",
                     backend: str = "numpy", record: bool = False) -> list[Allocation]:
    """What ``trace`` and ``grad`` hold beyond a run (``work`` is "run", "trace" or
    "grad"), as ``executor`` allocates it (the default executor by default; with
    ``record``, the one that records a gradient's every value)."""
    found = registry.allocations(executor, backend, schedule, work, steps, batch, input_size,
                                 hidden_size, dtype, record)
    run = registry.allocations(executor, backend, schedule, "run", steps, batch, input_size,
                               hidden_size, dtype, record)
    return [a for a in found if a not in run]


def run_allocations(schedule: Schedule, steps: int, batch: int, input_size: int,
                    hidden_size: int, dtype: np.dtype, x_dtype: np.dtype,
                    executor: str = "plan", backend: str = "numpy", record: bool = False
                    ) -> list[Allocation]:
    """What a run over ``x`` of shape ``(steps, batch, input_size)`` will allocate: ``x`` in
    the run's dtype (when it comes in another) and what ``executor`` (the default
    executor by default) makes for a run: ``y``, the states and its buffers
    (:meth:`~lstm_graph.executors.contract.Executor.allocations`)."""
    found = registry.allocations(executor, backend, schedule, "run", steps, batch, input_size,
                                 hidden_size, dtype, record)
    if np.dtype(x_dtype) != dtype:
        found.append(allocation(f"x in {dtype}", (steps, batch, input_size), dtype))
    return found
