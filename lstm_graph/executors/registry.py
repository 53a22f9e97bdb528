"""The one place that picks an executor.

=============  =========================================================================
``plan``       the fastest available: on NumPy the native C step where a C compiler is
               found and the cell has at most ``native.MAX_NODES`` ops, else the NumPy
               plan; on CuPy the CUDA plan
``native``     the native C step (NumPy only; an error without a C compiler)
``numpy``      the NumPy plan (a generated Python loop of in-place array calls)
``reference``  the reference interpreter: the definition of the semantics, any backend
``cuda``       the CUDA plan (CuPy only)
=============  =========================================================================

A backward pass that records every value's gradient (``record``: the gradient-flow
view) runs on the executor that can, the reference. What an executor allocates
is its own :meth:`~.contract.Executor.allocations`, asked through
:func:`allocations`.

When ``plan`` chose the native step and building it fails (the compiler fails,
times out, writes nothing, or the disk is full), it warns in one line and runs
the NumPy plan; asking for ``native`` makes that failure an error.
"""

from __future__ import annotations

import warnings

import numpy as np

from lstm_graph.errors import BackendError, LstmGraphWarning
from lstm_graph.executors import native
from lstm_graph.executors.contract import Executor, Spec
from lstm_graph.executors.cuda import CudaPlan
from lstm_graph.executors.interpreter import Reference
from lstm_graph.executors.numpy_plan import NumpyPlan
from lstm_graph.formats.memory import Allocation
from lstm_graph.schedule import Schedule

#: Every executor class, by the name it answers to (``Executor.name``).
CLASSES: dict[str, type[Executor]] = {
    cls.name: cls for cls in (native.NativePlan, NumpyPlan, Reference, CudaPlan)}
#: What ``--executor`` accepts: ``plan`` (the fastest available), then each class by name.
EXECUTORS = ("plan", *CLASSES)
_ON = {"plan": ("numpy", "cupy"), **{name: cls.backends for name, cls in CLASSES.items()}}


def mismatch(executor: str, backend: str) -> str | None:
    """Why ``executor`` cannot be asked for on ``backend`` (a usage mistake: the CLI exits
    2 with it), or None where it can."""
    if executor not in EXECUTORS:
        return f"unknown executor '{executor}'; choose one of {', '.join(EXECUTORS)}"
    if backend not in _ON[executor]:
        here = [name for name in EXECUTORS if backend in _ON[name]]
        return (f"the {executor} executor does not run on the {backend} backend; use "
                f"--executor {', '.join(here[:-1])} or {here[-1]} there")
    return None


def check(executor: str, backend: str) -> None:
    """Refuse, before any work, an executor that cannot run here."""
    problem = mismatch(executor, backend)
    if problem is not None:
        raise BackendError(problem)
    if executor == "native":
        native.require_compiler()


def chosen(executor: str, schedule: Schedule, backend: str, record: bool = False) -> str:
    """The name of the executor class ``executor`` means for this cell and backend
    (``plan``: the fastest available; any other name: itself). With ``record`` (a
    backward pass that records every value's gradient), the one that records."""
    if record:
        return next(name for name, cls in CLASSES.items()
                    if cls.records and backend in cls.backends)
    if executor != "plan":
        return executor
    if backend == "cupy":
        return CudaPlan.name
    return native.NativePlan.name if native.suits(schedule) else NumpyPlan.name


def build(executor: str, spec: Spec, backend: str, record: bool = False,
          work: str = "run") -> Executor:
    """The executor named ``executor`` for ``spec`` (see the module docstring); with
    ``record``, one whose backward pass records every value's gradient. ``work`` (``run``,
    ``trace`` or ``grad``) is what it will do first: the native executor compiles the
    library for that now (a compiler failing on it is a fallback to the NumPy plan
    here) and the others when they are first needed."""
    check(executor, backend)
    name = chosen(executor, spec.schedule, backend, record)
    if name != native.NativePlan.name:
        return CLASSES[name](spec)
    try:
        return native.NativePlan(spec, work=work)
    except BackendError as err:
        if executor == native.NativePlan.name:
            raise
        warnings.warn(f"{err}; running the NumPy plan instead", LstmGraphWarning, stacklevel=3)
        return NumpyPlan(spec)


def allocations(executor: str, backend: str, schedule: Schedule, work: str, steps: int,
                batch: int, input_size: int, hidden: int, dtype: np.dtype,
                record: bool = False) -> list[Allocation]:
    """What the executor ``executor`` would allocate for ``work`` (``run``, ``trace`` or
    ``grad``): that executor's own :meth:`~.contract.Executor.allocations`."""
    name = chosen(executor, schedule, backend, record)
    return CLASSES[name].allocations(schedule, work, steps, batch, input_size, hidden, dtype)


def packing(executor: str, backend: str, schedule: Schedule, input_size: int, hidden: int,
            dtype: np.dtype, record: bool = False) -> list[Allocation]:
    """What building the executor ``executor`` allocates besides the runner's weights:
    that executor's own :meth:`~.contract.Executor.packing`."""
    name = chosen(executor, schedule, backend, record)
    return CLASSES[name].packing(schedule, input_size, hidden, dtype)
