"""The public face of a compiled cell: its graph, schedule, parameters, and runner.

>>> import numpy as np, lstm_graph
>>> cell = lstm_graph.load_cell("peephole_lstm")
>>> run = cell.compile(input_size=3, hidden_size=4, seed=0)
>>> y, state = run(np.ones((5, 2, 3), dtype="float32"))
>>> y.shape, state["c"].shape
((5, 2, 4), (2, 4))
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph import checks
from lstm_graph.errors import CellError, DataError, Diagnostic, WeightsError
from lstm_graph.executors import registry
from lstm_graph.executors.backends import check_dtype, namespace
from lstm_graph.executors.contract import Executor, Gradients, Progress, Spec
from lstm_graph.formats.importers import read_weights
from lstm_graph.formats.weights import check_sizes, check_weights, infer_sizes, random_weights
from lstm_graph.ir import CellGraph
from lstm_graph.language.validate import check_constants
from lstm_graph.schedule import Schedule

#: How a runner executes (see :mod:`lstm_graph.executors.registry`).
EXECUTORS = registry.EXECUTORS


@dataclass(frozen=True)
class Cell:
    """A validated, scheduled cell. Get one with :func:`lstm_graph.load_cell`."""

    graph: CellGraph
    schedule: Schedule
    warnings: list[Diagnostic]

    @property
    def name(self) -> str:
        return self.graph.name

    def params(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, in file order.

        >>> from lstm_graph import load_cell
        >>> load_cell("rnn").params(input_size=3, hidden_size=2)
        {'h.W_x': (2, 3), 'h.W_h': (2, 2), 'h.b': (2,)}
        """
        return self.schedule.param_shapes(input_size, hidden_size)

    def random_weights(self, input_size: int, hidden_size: int, seed: int | None = 0,
                       dtype: str = "float32") -> dict[str, np.ndarray]:
        """Seeded weights, uniform in ±1/√H (PyTorch's initialisation)."""
        return random_weights(self.schedule, input_size, hidden_size, seed, dtype)

    def compile(self, input_size: int | None = None, hidden_size: int | None = None,
                backend: str = "numpy", dtype: str = "float32",
                weights: str | Path | Mapping[str, Any] | None = None, seed: int | None = 0,
                executor: str = "plan") -> Runner:
        """Bind sizes, a backend, a dtype and weights; return a callable :class:`Runner`.

        ``weights`` is a dict in our names, a PyTorch state dict, or a path to an
        ``.npz``, ``.pt``/``.pth`` or ``.onnx`` file; without it, weights are drawn
        with ``seed``. Sizes are read off the weights when not given.
        ``executor`` is one of :data:`EXECUTORS` (``"plan"``: the fastest available;
        ``"reference"``: the reference interpreter).
        """
        np_dtype = check_dtype(dtype)
        namespace(backend)  # an unavailable backend fails before any work
        registry.check(executor, backend)
        too_large = check_constants(self.graph, np_dtype)
        if too_large:
            raise CellError(too_large)
        if weights is None:
            if input_size is None or hidden_size is None:
                raise DataError("without weights, give both input_size and hidden_size")
            params = random_weights(self.schedule, input_size, hidden_size, seed, np_dtype)
        else:
            source = str(weights) if isinstance(weights, (str, Path)) else "the weights dict"
            raw = read_weights(weights, self.graph)
            found_input, found_hidden = infer_sizes(self.schedule, raw, source)
            for what, given, found in (("input", input_size, found_input),
                                       ("hidden", hidden_size, found_hidden)):
                if given is not None and found is not None and given != found:
                    raise WeightsError(f"{source} has {what} size {found}, but {what} size "
                                       f"{given} was asked for")
            input_size = found_input if input_size is None else input_size
            hidden_size = found_hidden
            if input_size is None:
                raise DataError("the weights do not show the input size; give input_size")
            check_sizes(input_size, hidden_size)
            params = check_weights(self.schedule, raw, input_size, hidden_size, np_dtype,
                                   source)
        return Runner(self, input_size, hidden_size, backend, np_dtype, params, executor)


class Runner:
    """A cell bound to sizes, backend, dtype and weights. Call it on a sequence.

    ``run(x)`` takes ``x`` time-major ``(T, B, I)`` (or ``(T, I)`` for one
    sequence) and returns ``(y, state)``: ``y`` is the output at every step and
    ``state`` the final value of each state; ``run(x, state)`` continues from it.
    ``runner.ran_with`` says which executor ran the last call.
    ``runner.weights`` holds the parameters in our names (e.g. after importing
    from PyTorch or ONNX: ``numpy.savez("w.npz", **runner.weights)``).

    A runner checks its inputs and hands the work to an executor built for the
    batch size (:meth:`compiled`); it keeps the :data:`PLANS` most recently used.
    It is thread-safe: calls from several threads run one at a time (an
    executor reuses its buffers from run to run).
    """

    #: Executors kept, one per batch size, least recently used dropped first.
    PLANS = 4

    def __init__(self, cell: Cell, input_size: int, hidden_size: int, backend: str,
                 dtype: np.dtype, params: dict[str, np.ndarray], executor: str):
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.backend = backend
        self.dtype = dtype
        self.executor = executor
        self.xp = namespace(backend)
        self.weights = params
        self.params = {name: self.xp.asarray(value) for name, value in params.items()}
        self._plans: OrderedDict[tuple[int, bool], Executor] = OrderedDict()
        self._lock = threading.RLock()
        #: What ran the last call: "native", "numpy", "cuda" or "reference".
        self.ran_with: str | None = None

    def __call__(self, x: Any, state: Mapping[str, Any] | None = None,
                 progress: Progress | None = None, allow_nonfinite: bool = False
                 ) -> tuple[Any, dict[str, Any]]:
        x, start, unbatched = self._inputs(x, state, allow_nonfinite)
        with self._lock:
            plan = self.compiled(x.shape[1])
            y, final = plan.run(x, start, progress)
            self.ran_with = plan.name
        if unbatched:
            return y[:, 0], {name: value[0] for name, value in final.items()}
        return y, final

    def trace(self, x: Any, state: Mapping[str, Any] | None = None,
              progress: Progress | None = None, allow_nonfinite: bool = False
              ) -> dict[str, Any]:
        """Every assignment's value at every step, as this runner's executor computes it.

        Returns ``{name: (T, B, width)}`` in the cell file's order (``(T, width)`` for
        one sequence given as ``(T, I)``); the states' last rows are the final states.
        """
        x, start, unbatched = self._inputs(x, state, allow_nonfinite, "trace")
        with self._lock:
            plan = self.compiled(x.shape[1])
            values = plan.trace(x, start, progress)
            self.ran_with = plan.name
        if unbatched:
            return {name: value[:, 0] for name, value in values.items()}
        return values

    def grad(self, x: Any, grad_y: Any, state: Mapping[str, Any] | None = None,
             grad_state: Mapping[str, Any] | None = None, allow_nonfinite: bool = False,
             record: bool = False) -> Gradients:
        """Gradients of ``sum(grad_y · y) + Σ_s sum(grad_state[s] · final[s])``.

        ``grad_y`` has the shape of ``y``; ``grad_state`` maps some states to arrays of
        their shape (the others count zero). The answer (:class:`Gradients`) holds
        ``.x``, ``.weights`` (by parameter name, as :attr:`weights`), ``.state`` (with
        respect to the initial states), and the forward results ``.y`` and ``.final``;
        for one sequence ``(T, I)`` the batch axis is dropped, as in a run. The runner's
        executor computes them (the native step's backward pass is compiled C). With
        ``record``, the executor the registry picks for it (the reference) also
        records ``∂L/∂value`` of every assignment at every step and the gradient each
        edge carried (``.values``, ``.edges``: what the gradient-flow view draws).
        """
        x, start, unbatched = self._inputs(x, state, allow_nonfinite, "grad", record)
        steps, batch = x.shape[0], x.shape[1]
        (output,) = self.cell.graph.outputs
        width = self.cell.schedule.width(output, self.input_size, self.hidden_size)
        want = (steps, width) if unbatched else (steps, batch, width)
        grad_y = self._check_array("grad_y", grad_y, want)
        state_shape = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
        finals = {}
        for name, value in (grad_state or {}).items():
            if name not in self.cell.graph.states:
                raise DataError(f"grad_state names '{name}', which is not a state of this cell "
                                f"(its states: {', '.join(self.cell.graph.states)})")
            value = self._check_array(f"grad_state['{name}']", value, state_shape)
            finals[name] = value[None, :] if unbatched else value
        grad_y = grad_y[:, None] if unbatched else grad_y
        with self._lock:
            plan = self.compiled(batch, record)
            found = plan.grad(x, start, grad_y, finals, record)
            self.ran_with = plan.name
        if unbatched:
            found = Gradients(found.x[:, 0], found.weights,
                              {k: v[0] for k, v in found.state.items()}, found.y[:, 0],
                              {k: v[0] for k, v in found.final.items()},
                              {k: v[:, 0] for k, v in found.values.items()}, found.edges)
        return found

    def _check_array(self, what: str, value: Any, shape: tuple[int, ...]) -> Any:
        """``value`` as an array of the runner's dtype and namespace, of exactly ``shape``."""
        array = value if hasattr(value, "shape") and hasattr(value, "dtype") \
            else np.asarray(value)
        if tuple(array.shape) != shape:
            raise DataError(f"{what} has shape {tuple(array.shape)}, expected {shape}")
        if np.dtype(array.dtype).kind not in "fiu":
            raise DataError(f"{what} has dtype {array.dtype}; it must hold real numbers")
        return self.xp.asarray(array, dtype=self.dtype)

    def _inputs(self, x: Any, state: Mapping[str, Any] | None, allow_nonfinite: bool,
                work: str = "run", record: bool = False) -> tuple[Any, dict[str, Any], bool]:
        """``x`` as ``(T, B, I)`` and the start states, checked; whether ``x`` was ``(T, I)``.
        ``work`` (a run, a trace or a gradient, ``record``-ed) that would not fit in memory,
        as its executor allocates it, is refused."""
        x, unbatched = self._check_x(x, allow_nonfinite, work, record)
        return x, self._check_state(state, x.shape[1], unbatched, allow_nonfinite), unbatched

    def compiled(self, batch: int, record: bool = False) -> Executor:
        """The executor for batch size ``batch`` (with ``record``: one that records every
        value's gradient), built on first use (see :data:`PLANS`)."""
        with self._lock:
            key = (batch, record)
            if key in self._plans:
                self._plans.move_to_end(key)
            else:
                spec = Spec(self.cell.schedule, self.xp, self.params, batch, self.input_size,
                            self.hidden_size, self.dtype)
                self._plans[key] = registry.build(self.executor, spec, self.backend, record)
                while len(self._plans) > self.PLANS:
                    self._plans.popitem(last=False)
            return self._plans[key]

    def _check_x(self, x: Any, allow_nonfinite: bool, work: str = "run",
                 record: bool = False) -> tuple[Any, bool]:
        """``x`` checked (see :func:`~lstm_graph.checks.check_x`), and the work it asks
        for refused when its arrays would not fit in memory."""
        x, unbatched = checks.check_x(x, self.input_size, allow_nonfinite, self.xp, self.dtype)
        checks.check_run_fits(self.cell.schedule, x.shape[0], x.shape[1], self.input_size,
                              self.hidden_size, self.dtype, self.executor, self.backend, work,
                              record)
        return x, unbatched

    def _check_state(self, state: Mapping[str, Any] | None, batch: int, unbatched: bool,
                     allow_nonfinite: bool) -> dict[str, Any]:
        return checks.check_state(state, self.cell.graph.states, batch, self.hidden_size,
                                  unbatched, allow_nonfinite, self.xp, self.dtype)
