"""The executor contract: what every way of running a cell is built from and offers.

An executor is built for one cell, batch size, dtype and set of weights
(:class:`Spec`) and then runs whole sequences::

    executor = NumpyPlan(spec)
    y, final = executor.run(x, state, progress)     # x: (T, B, I); state: {name: (B, H)}
    values = executor.trace(x, state)               # {assignment: (T, B, width)}
    grads = executor.grad(x, state, grad_y, {})     # Gradients: x, weights, state, y, final
    tape = executor.forward(x, state)               # the same in two halves: forward,
    grads = executor.backward(tape, grad_y, {})     # a loss on tape.y, then backward
    print(executor.source)                          # the code it generated, to read

Every executor computes what the reference interpreter computes (the
semantics in :mod:`lstm_graph.ops`); the registry
(:mod:`lstm_graph.executors.registry`) is the one place that picks one.
``Cell.compile`` and the ``Runner`` check inputs and delegate to it. What each
executor allocates for a run, a trace or a gradient is its own
:meth:`Executor.allocations`, which the checks ask before any work.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple

import numpy as np

from lstm_graph.errors import BackendError
from lstm_graph.formats.memory import Allocation, allocation
from lstm_graph.schedule import Schedule

#: An array of the spec's namespace (a NumPy or CuPy ndarray).
Array = Any
#: Called with the number of steps just finished.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Spec:
    """What an executor is built for: a cell's schedule bound to sizes, dtype and weights.

    ``params`` are arrays of ``xp`` (NumPy or CuPy) in the cell's parameter names.
    """

    schedule: Schedule
    xp: Any
    params: Mapping[str, Array]
    batch: int
    input_size: int
    hidden: int
    dtype: np.dtype

    def width(self, node_id: str) -> int:
        """How many numbers a sequence's value of ``node_id`` holds at one step."""
        return self.schedule.width(node_id, self.input_size, self.hidden)

    @property
    def output_width(self) -> int:
        (output,) = self.schedule.graph.outputs
        return self.width(output)


@dataclass
class Gradients:
    """Gradients of the loss ``sum(grad_y · y) + Σ_s sum(grad_final[s] · final[s])``.

    ``x`` is ``(T, B, I)``; ``weights`` maps every parameter name to an array of its
    shape; ``state`` maps every state to the gradient with respect to its initial
    value ``(B, H)``. ``y`` and ``final`` are the forward run's results. ``values``,
    when recorded, maps every assignment to ``∂L/∂value`` at every step ``(T, B, width)``
    (for a state: the total, through every later step), and ``edges`` maps every IR
    edge ``(source, target)`` to the size of the gradient it carried at each step
    ``(T,)``, float64: the norm of what ``target`` passed back to ``source``, each
    sequence's over the units, averaged over the batch (as gradflow's states).
    """

    x: Array
    weights: dict[str, Array]
    state: dict[str, Array]
    y: Array
    final: dict[str, Array]
    values: dict[str, Array] = field(default_factory=dict)
    edges: dict[tuple[str, str], Array] = field(default_factory=dict)


@dataclass
class Tape:
    """What an executor's :meth:`~Executor.forward` keeps for its :meth:`~Executor.backward`:
    the run's input and start states, its results, and (in a subclass) whatever else that
    executor's backward pass reads. A tape is read by the executor that made it."""

    x: Array
    state: Mapping[str, Array]
    y: Array
    final: dict[str, Array]


class FromZeros(NamedTuple):
    """What :meth:`Executor.run_from_zeros` returns: the run's results and what the
    executor saw as it ran. A False is "not seen finite": the runner then tests the
    arrays itself (and names the first value that is not finite)."""

    y: Array
    final: dict[str, Array]
    x_finite: bool  # every number of x was finite as the step read it
    finite: bool  # every value of y and of the final states was finite as the step wrote it


#: What an executor may be asked to do, for :meth:`Executor.allocations`.
WORKS = ("run", "trace", "grad")


class Executor(ABC):
    """One way of running a cell; subclasses are listed in the registry.

    ``run`` takes ``x`` of shape ``(T, B, I)`` in the spec's dtype and namespace and
    ``state`` mapping every state to its ``(B, H)`` start value (not modified), and
    returns ``y`` of shape ``(T, B, width of the output)`` and the final states, as
    arrays no later run overwrites. ``B`` may be less than the spec's batch: an executor
    then works on the first ``B`` rows of its buffers (how a layer runs the sequences
    still going when others of its batch have ended, see :mod:`lstm_graph.layers`). An
    executor keeps buffers between runs: it is not meant to run from two threads at once
    (the ``Runner`` serialises calls).
    """

    #: How ``runner.ran_with``, ``--executor`` and messages name it.
    name: ClassVar[str]
    #: The array backends it runs on.
    backends: ClassVar[tuple[str, ...]]
    #: Whether its backward pass can record every value's gradient (``record=True``).
    records: ClassVar[bool] = False

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def source(self) -> str:
        """The code this executor generated for the cell, to read."""

    @abstractmethod
    def run(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
            ) -> tuple[Array, dict[str, Array]]:
        """Run the sequence ``x`` from ``state``; return ``y`` and the final states."""

    def run_from_zeros(self, x: Array) -> FromZeros | None:
        """:meth:`run` from zero states, where this executor can do it without any
        arithmetic in the array namespace (so the runner need not quiet NumPy about NaN
        and infinity around it); None where it cannot, and the runner calls :meth:`run`.
        A small run lasts tens of microseconds: this spares it a few. Called with ``x``
        not yet tested for NaN and infinity: the executor looks at it (and at the results)
        as it runs, and says what it saw (see :class:`FromZeros`)."""
        return None

    @abstractmethod
    def trace(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
              ) -> dict[str, Array]:
        """Run like :meth:`run` and return the value of every assignment at every step,
        ``{name: (T, B, width)}`` in the cell file's order, as this executor computed it.
        A compiled plan builds a recording variant of its code for this, so :meth:`run`
        stays as fast as without tracing."""

    @abstractmethod
    def forward(self, x: Array, state: Mapping[str, Array]) -> Tape:
        """Run ``x`` from ``state`` keeping what :meth:`backward` reads (``tape.y`` and
        ``tape.final`` are the run's results)."""

    @abstractmethod
    def backward(self, tape: Tape, grad_y: Array, grad_final: Mapping[str, Array],
                 record: bool = False) -> Gradients:
        """Backpropagate through time from a :meth:`forward` of this executor: the
        gradients of ``sum(grad_y · y) + Σ sum(grad_final[s] · final[s])`` (see
        :class:`Gradients`). ``grad_y`` has ``y``'s shape; ``grad_final`` may leave out
        states (zero). With ``record`` (executors whose :attr:`records` is true), also
        every value's gradient and every edge's."""

    def grad(self, x: Array, state: Mapping[str, Array], grad_y: Array,
             grad_final: Mapping[str, Array], record: bool = False) -> Gradients:
        """:meth:`forward`, then :meth:`backward`."""
        return self.backward(self.forward(x, state), grad_y, grad_final, record)

    def update(self, params: Mapping[str, Array]) -> None:
        """Take new values of the same parameters (same names, shapes, dtype and array
        namespace), as a trainer does after every step of its optimiser: the executor keeps
        what it compiled and reloads only what holds weights (a compiled plan repacks its
        panels in place). A tape made before is not read after."""
        self.spec = replace(self.spec, params=params)

    def refuse_record(self, record: bool) -> None:
        """An error for ``record`` where this executor cannot (the registry sends a
        recording backward pass to one that can)."""
        if record and not self.records:
            raise BackendError(f"the {self.name} executor does not record every value's "
                               "gradient; the reference executor does")

    #: Copies of the cell's weights that building this executor holds besides the
    #: runner's: the weights it keeps in its own order, and any it holds while it packs
    #: them (see :meth:`packing`).
    weight_copies: ClassVar[int] = 0

    @classmethod
    def packing(cls, schedule: Schedule, input_size: int, hidden: int, dtype: np.dtype
                ) -> list[Allocation]:
        """What building this executor allocates besides the runner's weights
        (:attr:`weight_copies` of them), so that a build that would not fit is refused
        before it starts."""
        count = sum(math.prod(shape)
                    for shape in schedule.param_shapes(input_size, hidden).values())
        return [allocation(f"the weights as the {cls.name} executor packs them",
                           (cls.weight_copies, count), dtype)] if cls.weight_copies else []

    @classmethod
    @abstractmethod
    def allocations(cls, schedule: Schedule, work: str, steps: int, batch: int,
                    input_size: int, hidden: int, dtype: np.dtype) -> list[Allocation]:
        """What this executor allocates for ``work`` (one of :data:`WORKS`) over ``x`` of
        shape ``(steps, batch, input_size)`` (besides ``x`` itself and the weights): its
        results and every buffer it makes, so that work that would not fit is refused
        before it starts."""
