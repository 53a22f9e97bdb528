"""The public face of a compiled cell: its graph, schedule, parameters, and runner.

>>> import numpy as np, lstm_graph
>>> cell = lstm_graph.load_cell("peephole_lstm")
>>> run = cell.compile(input_size=3, hidden_size=4, seed=0)
>>> y, state = run(np.ones((5, 2, 3), dtype="float32"))
>>> y.shape, state["c"].shape
((5, 2, 4), (2, 4))
>>> stack = cell.compile(input_size=3, hidden_size=4, layers=2, direction="bidirectional")
>>> y, state = stack(np.ones((5, 2, 3), dtype="float32"), lengths=[5, 3])
>>> y.shape, state["c"].shape
((5, 2, 8), (4, 2, 4))
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph import checks
from lstm_graph.errors import (
    CellError,
    DataError,
    Diagnostic,
    LstmGraphWarning,
    SizeMismatch,
    WeightsError,
)
from lstm_graph.executors import registry
from lstm_graph.executors.backends import DTYPES, check_dtype, namespace, to_numpy
from lstm_graph.executors.contract import Executor, Gradients, Progress, Spec
from lstm_graph.formats import memory
from lstm_graph.formats.importers import read_weights
from lstm_graph.formats.memory import Allocation
from lstm_graph.formats.weights import check_sizes, check_weights, infer_sizes, random_weights
from lstm_graph.ir import CellGraph
from lstm_graph.language.validate import check_constants
from lstm_graph.layers import (
    Compiled,
    Packing,
    Stack,
    check_lengths,
    grad_unit,
    infer_stack,
    run_unit,
    trace_unit,
)
from lstm_graph.schedule import Schedule

#: How a runner executes (see :mod:`lstm_graph.executors.registry`).
EXECUTORS = registry.EXECUTORS


def _ieee() -> Any:
    """NumPy quiet about NaN and infinity: arithmetic on them is IEEE's, as the op table
    says (a run that overflows is told once, by :meth:`Runner._warn_nonfinite`)."""
    return np.errstate(invalid="ignore", over="ignore", divide="ignore")


def _first_bad_step(xp: Any, values: Any) -> int | None:
    """The first step (axis 0) of ``values`` holding NaN or infinity, if any."""
    bad = ~xp.isfinite(values).reshape(values.shape[0], -1).all(axis=1)
    return int(np.argmax(to_numpy(bad))) if bool(bad.any()) else None


@dataclass(frozen=True)
class Cell:
    """A validated, scheduled cell. Get one with :func:`lstm_graph.load_cell`."""

    graph: CellGraph
    schedule: Schedule
    warnings: list[Diagnostic]

    @property
    def name(self) -> str:
        return self.graph.name

    def __repr__(self) -> str:
        """``<Cell lstm: input x; states c, h; output h; 3 stages>`` (the stages in full:
        ``print(cell.schedule.to_text())``)."""
        graph = self.graph
        return (f"<Cell {graph.name}: input {', '.join(graph.inputs)}; states "
                f"{', '.join(graph.states)}; output {', '.join(graph.outputs)}; "
                f"{len(self.schedule.stages)} stages>")

    def params(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, in file order.

        >>> from lstm_graph import load_cell
        >>> load_cell("rnn").params(input_size=3, hidden_size=2)
        {'h.W_x': (2, 3), 'h.W_h': (2, 2), 'h.b': (2,)}
        """
        return self.schedule.param_shapes(input_size, hidden_size)

    def stack_params(self, input_size: int, hidden_size: int, stack: Stack
                     ) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes of every layer and direction of ``stack``, each
        under its prefix (``l0.f.W_x``, ``l0_reverse.f.W_x``, …; none for one unit).

        >>> from lstm_graph import load_cell
        >>> shapes = load_cell("rnn").stack_params(3, 2, Stack(2, "bidirectional"))
        >>> shapes["l1_reverse.h.W_x"]
        (2, 4)
        """
        shapes = {}
        for (layer, reverse), size in zip(stack.units, self.input_sizes(input_size,
                                                                        hidden_size, stack)):
            prefix = stack.prefix(layer, reverse)
            shapes.update({prefix + name: shape
                           for name, shape in self.params(size, hidden_size).items()})
        return shapes

    def input_sizes(self, input_size: int, hidden_size: int, stack: Stack) -> list[int]:
        """The input size of every unit of ``stack``: ``I`` for the first layer, then
        ``D`` times the output width of the layer below."""
        sizes: list[int] = []
        size = input_size
        for layer, _ in stack.units:
            if layer > 0 and len(sizes) % stack.directions == 0:
                size = stack.directions * self.output_width(size, hidden_size, stack)
            sizes.append(size)
        return sizes

    def output_width(self, input_size: int, hidden_size: int, stack: Stack | None = None
                     ) -> int:
        """How many numbers a unit writes per step: the output's width, or the projection's."""
        if stack is not None and stack.proj is not None:
            return stack.proj
        (output,) = self.graph.outputs
        return self.schedule.width(output, input_size, hidden_size)

    def random_weights(self, input_size: int, hidden_size: int, seed: int | None = 0,
                       dtype: str = "float32") -> dict[str, np.ndarray]:
        """Seeded weights, uniform in ±1/√H (PyTorch's initialisation)."""
        return random_weights(self.schedule, input_size, hidden_size, seed, dtype)

    def compile(self, input_size: int | None = None, hidden_size: int | None = None,
                backend: str = "numpy", dtype: str | np.dtype | type = "float32",
                weights: str | Path | Mapping[str, Any] | None = None, seed: int | None = 0,
                executor: str = "plan", layers: int | None = None,
                direction: str | None = None, batch_first: bool = False,
                warn: bool = True) -> Runner:
        """Bind sizes, a backend, a dtype and weights; return a callable :class:`Runner`.

        ``weights`` is a dict in our names, a PyTorch state dict, or a path to an
        ``.npz``, ``.pt``/``.pth`` or ``.onnx`` file; without it, weights are drawn
        with ``seed``. Sizes are read off the weights when not given.
        ``executor`` is one of :data:`EXECUTORS` (``"plan"``: the fastest available;
        ``"reference"``: the reference interpreter). ``layers`` and ``direction``
        (``"forward"``, ``"reverse"``, ``"bidirectional"``) make a stack
        (:mod:`lstm_graph.layers`); left out, they are what the weights hold, else one
        layer forward. With ``batch_first``, ``x`` and ``y`` are ``(B, T, ·)``.
        With ``warn``, what the weights' file says that changes how to run it (a model
        that reads ``x`` batch-first, an ``nn.RNN``'s nonlinearity assumed, …) is a
        :class:`~lstm_graph.errors.LstmGraphWarning`; every note, the weights' precision
        too, is in the runner's ``notes``.
        """
        return compile_layers([self], input_size, hidden_size, backend, dtype, weights, seed,
                              executor, layers, direction, batch_first, warn=warn)

    # -- drawing, in a notebook too (lstm_graph.render, lstm_graph.notebook) ----------------

    def render(self, style: str = "pipe", highlight: str | None = None,
               stages: bool = False) -> Any:
        """The diagram in ``style`` ("pipe" or "cell"), a ``graphviz.Digraph`` (a notebook
        shows it); ``highlight`` names a value or a preset (see
        :func:`lstm_graph.render.render`)."""
        from lstm_graph.render import render

        return render(self, style, highlight, stages)

    def _repr_svg_(self) -> str | None:
        """A notebook shows the cell as its pipe-style diagram."""
        from lstm_graph.notebook import cell_svg

        return cell_svg(self)


def compile_layers(cells: Sequence[Cell], input_size: int | None, hidden_size: int | None,
                   backend: str, dtype: str | np.dtype | type,
                   weights: str | Path | Mapping[str, Any] | None,
                   seed: int | None, executor: str, layers: int | None, direction: str | None,
                   batch_first: bool, proj: int | None = None,
                   weights_name: str | None = None,
                   stored_dtypes: frozenset[np.dtype] | None = None,
                   warn: bool = False) -> Runner:
    """:meth:`Cell.compile` for one cell, or one per direction (``cells[-1]`` runs the
    reverse direction: an ONNX model may give its two directions other activations);
    ``weights_name`` names the weights in messages (a model's file; by default their path,
    or "the weights dict"), ``stored_dtypes`` the precision they were stored in (a model
    file's: its biases are summed in float64), for the note on a precision other than
    ``dtype``; with ``warn``, the notes of the weights' reading (not the precision's) are
    warnings too."""
    cell = cells[0]
    _check_arguments(input_size, hidden_size, weights, seed, layers, direction, batch_first)
    np_dtype = check_dtype(dtype)
    namespace(backend)  # an unavailable backend fails before any work
    registry.check(executor, backend)
    for each in cells:
        too_large = check_constants(each.graph, np_dtype)
        if too_large:
            raise CellError(too_large)
    notes: tuple[str, ...] = ()
    if weights is None:
        if input_size is None or hidden_size is None:
            raise DataError("without weights, give both input_size and hidden_size")
        stack = Stack(1 if layers is None else layers,
                      "forward" if direction is None else direction, proj)
        raw = None
    else:
        source = weights_name or (str(weights) if isinstance(weights, (str, Path))
                                  else "the weights dict")
        read = read_weights(weights, cell.graph)
        stored = stored_dtypes or read.dtypes or _raw_dtypes(read.arrays)
        raw = read.arrays
        layout: tuple[str, ...] = ()
        if read.batch_first and not batch_first:
            layout = (f"note: {source} is of a model that reads x batch-first, (B, T, I); "
                      "this run reads x time-major, (T, B, I): give --batch-first "
                      "(batch_first=True) to read it as the model does",)
        if warn:
            for note in read.notes + layout:
                warnings.warn(note.removeprefix("note: "), LstmGraphWarning, stacklevel=3)
        notes = read.notes + _dtype_notes(stored, np_dtype, source) + layout
        found = read.stack
        if found is None and not raw and not cell.schedule.params:  # nothing to read it off
            found = Stack(1 if layers is None else layers,
                          "forward" if direction is None else direction, proj)
        if found is None:
            # a cell's own names may look like a stack's (an assignment named l1: l1.W_x)
            own = {spec.name for spec in cell.schedule.params}
            inferred = None if raw and set(raw) <= own else infer_stack(list(raw))
            # one unit's names, and a stack's without "_reverse" (l0., l1.): forward or
            # reverse alike, as asked
            if inferred is None:
                found = Stack(1, "reverse" if direction == "reverse" else "forward", proj)
            else:
                found = Stack(inferred[0], "reverse" if direction == "reverse" and
                              inferred[1] == "forward" else inferred[1], proj)
        for what, asked, held in (("layers", layers, found.layers),
                                  ("direction", direction, found.direction)):
            if asked is not None and asked != held:
                raise SizeMismatch(f"{source} holds {found.describe()}, but {what}={asked} "
                                   "was asked for", what, found.describe())
        stack = found
        first = {name[len(stack.prefix(0, stack.units[0][1])):]: value
                 for name, value in raw.items()
                 if name.startswith(stack.prefix(0, stack.units[0][1]))}
        found_input, found_hidden = infer_sizes(cell.schedule, first, source)
        for what, given, seen in (("input", input_size, found_input),
                                  ("hidden", hidden_size, found_hidden)):
            if given is not None and seen is not None and given != seen:
                raise SizeMismatch(f"{source} has {what} size {seen}, but {what} size "
                                   f"{given} was asked for", what)
        input_size = found_input if input_size is None else input_size
        hidden_size = found_hidden if found_hidden is not None else hidden_size
        if input_size is None or hidden_size is None:
            what = "input" if input_size is None else "hidden"
            flag = "-I" if what == "input" else "-H"
            raise DataError(f"the weights do not show the {what} size; give {what}_size "
                            f"({flag} on the command line)")
    check_sizes(input_size, hidden_size)
    if stack.proj is not None and cell.graph.outputs.keys() - cell.graph.states.keys():
        raise DataError(f"a projection cuts the output state, and cell '{cell.name}''s output "
                        "is not a state")
    if stack.proj is not None and stack.proj > hidden_size:
        raise DataError(f"a projection of {stack.proj} units is wider than the hidden size "
                        f"H={hidden_size}")
    sizes = cell.input_sizes(input_size, hidden_size, stack)
    if not stack.single:  # every unit's weights at once (each unit checks its own too)
        shapes = {stack.prefix(layer, reverse) + name: shape
                  for (layer, reverse), size in zip(stack.units, sizes)
                  for name, shape in (cells[-1] if reverse else cells[0]).schedule
                  .param_shapes(size, hidden_size).items()}
        largest = max(shapes, key=lambda name: math.prod(shapes[name]), default=None)
        memory.require([*(memory.allocation(name, shape, np_dtype)
                          for name, shape in shapes.items()),
                        *([memory.allocation(f"{largest} as drawn or read (float64)",
                                             shapes[largest], np.float64)] if largest else [])],
                       f"the weights of {stack.describe()} with I={input_size}, "
                       f"H={hidden_size}")
    units = []
    expected = set()
    for index, ((layer, reverse), size) in enumerate(zip(stack.units, sizes)):
        unit_cell = cells[-1] if reverse else cells[0]
        prefix = stack.prefix(layer, reverse)
        if raw is None:
            unit_seed = seed if seed is None or index == 0 else \
                int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            params = random_weights(unit_cell.schedule, size, hidden_size, unit_seed, np_dtype)
        else:
            where = f"{source} ({_unit_words(stack, layer, reverse)})" if prefix else source
            mine = {name[len(prefix):]: value for name, value in raw.items()
                    if name.startswith(prefix)}
            expected |= {prefix + name for name in unit_cell.schedule.param_shapes(
                size, hidden_size)}
            params = check_weights(unit_cell.schedule, mine, size, hidden_size, np_dtype,
                                   where, owned=isinstance(weights, (str, Path)))
        units.append(_Unit(unit_cell, layer, reverse, size, hidden_size, params, prefix))
    if raw is not None:
        extra = sorted(set(raw) - expected)
        if extra:
            raise WeightsError(f"{source} holds {extra[0]}, which no parameter of "
                               f"{stack.describe()} of cell '{cell.name}' is (it takes "
                               f"{', '.join(sorted(expected)[:6])}, …)")
    return Runner(cell, stack, batch_first, units, input_size, hidden_size, backend,
                  np_dtype, executor, notes)


def _raw_dtypes(arrays: Mapping[str, Any]) -> frozenset[np.dtype]:
    """The floating dtypes of some weights (NumPy's or PyTorch's arrays)."""
    found = set()
    for value in arrays.values():
        try:
            dtype = np.dtype(str(getattr(value, "dtype", "")).removeprefix("torch."))
        except TypeError:
            continue
        if dtype.kind == "f":
            found.add(dtype)
    return frozenset(found)


def _dtype_notes(dtypes: frozenset[np.dtype], computing: np.dtype, source: str) -> tuple[str, ...]:
    """A note where weights of another precision are computed in ``computing``: float64
    weights rounded to float32 (float128 ones to float64 at most), or float16 ones computed
    in float32 (which PyTorch's own float16 run is not: it rounds every step's values to
    float16)."""
    notes = []
    for dtype in sorted(dtypes, key=lambda d: d.itemsize):
        if dtype.itemsize > computing.itemsize:
            keeps = f"--dtype {dtype}, dtype='{dtype}', keeps them" if dtype.name in DTYPES \
                else "lstm-graph computes in float32 or float64"
            notes.append(f"note: {source} holds {dtype} weights; computing in {computing}, "
                         f"which rounds them ({keeps})")
        elif dtype.kind == "f" and dtype.itemsize < 4:
            notes.append(f"note: {source} holds {dtype} weights; computing in {computing} "
                         f"(lstm-graph computes in float32 or float64; a {dtype} run of the "
                         f"model rounds each step's values to {dtype}, and differs)")
    return tuple(notes)


def _check_arguments(input_size: Any, hidden_size: Any, weights: Any, seed: Any, layers: Any,
                     direction: Any, batch_first: Any) -> None:
    """The arguments of :meth:`Cell.compile` are of their kinds, or a DataError names the
    one that is not (a float size or a string for ``batch_first`` failed deep inside, or
    ran: ``batch_first="no"`` read ``x`` batch-first)."""
    for what, size in (("input_size", input_size), ("hidden_size", hidden_size),
                       ("layers", layers)):
        if size is not None:
            checks.whole(size, what)
    if seed is not None:
        checks.whole(seed, "seed", 0)
    if not (weights is None or isinstance(weights, (str, Path, Mapping))):
        raise DataError(f"weights is of type {type(weights).__name__}; give a dict of arrays "
                        "(our names, or a PyTorch state dict) or the path of an .npz, .pt, "
                        ".pth or .onnx file")
    if direction is not None:
        Stack(direction=direction)  # a stack checks its direction
    checks.switch(batch_first, "batch_first")


def _unit_words(stack: Stack, layer: int, reverse: bool) -> str:
    """How a message names a unit: ``layer 2, reverse``."""
    direction = ", reverse" if reverse and stack.direction == "bidirectional" else ""
    return f"layer {layer + 1}{direction}"


def _frozen(value: np.ndarray) -> np.ndarray:
    """``value``, which the runner owns (drawn, or copied by
    :func:`~lstm_graph.formats.weights.check_weights`), made read-only: the executors that
    pack the weights read them once, the reference at every call, so a change in place
    would reach some batch sizes and executors and not others."""
    value.setflags(write=False)
    return value


class _Unit:
    """One layer and direction of a runner: its cell, sizes, weights and executors."""

    def __init__(self, cell: Cell, layer: int, reverse: bool, input_size: int,
                 hidden_size: int, weights: dict[str, np.ndarray], prefix: str):
        self.cell, self.layer, self.reverse = cell, layer, reverse
        self.input_size, self.hidden_size, self.prefix = input_size, hidden_size, prefix
        self.weights = {name: _frozen(value) for name, value in weights.items()}
        self.params: dict[str, Any] = {}
        self._plans: OrderedDict[tuple[int, bool], Executor] = OrderedDict()

    def bind(self, xp: Any) -> None:
        self.params = {name: xp.asarray(value) for name, value in self.weights.items()}


class Runner:
    """A cell bound to sizes, backend, dtype and weights. Call it on a sequence.

    ``run(x)`` takes ``x`` time-major ``(T, B, I)`` (or ``(T, I)`` for one
    sequence; ``(B, T, I)`` with ``batch_first``) and returns ``(y, state)``: ``y``
    is the output at every step and ``state`` the final value of each state;
    ``run(x, state)`` continues from it, and ``run(x, lengths=…)`` ends each
    sequence at its own length. A stack (``layers``, ``direction``, see
    :mod:`lstm_graph.layers`) writes ``y`` of width ``D·O`` (the forward half
    first) and each state as ``(L·D, B, H)`` in PyTorch's ``h_n`` order; one layer
    and direction keeps the plain ``(B, H)``.
    ``runner.ran_with`` says which executor ran the last call.
    ``runner.weights`` holds the parameters in our names (prefixed ``l0.``,
    ``l0_reverse.``, … in a stack; e.g. after importing from PyTorch or ONNX:
    ``numpy.savez("w.npz", **runner.weights)``): read-only copies of the runner's own,
    made when it was compiled, so a later change to the arrays it was given (an
    optimiser's step on the PyTorch model) does not reach it; compile again for new
    weights.

    A runner checks its inputs and hands the work to an executor built for the
    batch size (:meth:`compiled`); it keeps the :data:`PLANS` most recently used
    per layer and direction. It is thread-safe: calls from several threads run one
    at a time (an executor reuses its buffers from run to run).
    """

    #: Executors kept, one per batch size, least recently used dropped first.
    PLANS = 4

    def __init__(self, cell: Cell, stack: Stack, batch_first: bool, units: list[_Unit],
                 input_size: int, hidden_size: int, backend: str, dtype: np.dtype,
                 executor: str, notes: tuple[str, ...] = ()):
        self.cell, self.stack, self.batch_first = cell, stack, batch_first
        self.units = units
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.backend = backend
        self.dtype = dtype
        self.executor = executor
        #: What the user must be told about the weights (one line each, for stderr).
        self.notes = notes
        #: The initial states and sequence lengths a model file stores
        #: (:meth:`lstm_graph.models.Model.compile`): used where a call gives none, as
        #: ``lstm-graph run`` uses them (a model's own numbers, not zeros and whole runs).
        self.stored_state: dict[str, Any] = {}
        self.stored_lengths: Any = None
        #: For one unit of a stack (:meth:`unit_runner`): which one, as the explorer page
        #: says it, and whether it reads its input from the last step; ("", False) otherwise.
        self.unit_of: tuple[str, bool] = ("", False)
        self.xp = namespace(backend)
        for unit in units:
            unit.bind(self.xp)
        self.weights = {unit.prefix + name: value for unit in units
                        for name, value in unit.weights.items()}
        self.params = {unit.prefix + name: value for unit in units
                       for name, value in unit.params.items()}
        self._lock = threading.RLock()
        self._state_widths = [(name, self.state_shape(name, 1)[-1])
                              for name in cell.graph.states]
        self._fits: dict[tuple[Any, ...], list[Allocation]] = {}  # see checks.check_run_fits
        #: The states whose final values a plain run's ``y`` does not hold (an output
        #: state's is ``y``'s last step): the ones its finiteness test reads beyond ``y``.
        self._beyond_y = [name for name in cell.graph.states if name not in cell.graph.outputs]
        #: What ran the last call: "native", "numpy", "cuda" or "reference".
        self.ran_with: str | None = None

    def __repr__(self) -> str:
        """``<Runner lstm: I=3, H=4, 1 layer, forward, float32 on numpy, executor plan>``."""
        first = " batch-first," if self.batch_first else ""
        return (f"<Runner {self.cell.name}: I={self.input_size}, H={self.hidden_size}, "
                f"{self.stack.describe()},{first} {self.dtype.name} on {self.backend}, "
                f"executor {self.executor}>")

    @property
    def output_width(self) -> int:
        """The width of ``y``'s last axis: ``D`` times a unit's output width."""
        last = self.units[-1]
        return self.stack.directions * last.cell.output_width(last.input_size,
                                                              self.hidden_size, self.stack)

    @property
    def plain(self) -> bool:
        """One unit, no projection, time-major: a run goes straight to the executor."""
        return self.stack.single and self.stack.proj is None and \
            self.stack.direction == "forward" and not self.batch_first

    def state_shape(self, name: str, batch: int | None) -> tuple[int, ...]:
        """The shape a state takes and gives: ``(L·D, B, width)``, or ``(B, width)`` for one
        unit; ``batch`` None for one sequence given as ``(T, I)``."""
        width = self.stack.proj if self.stack.proj is not None and \
            name in self.cell.graph.outputs else self.hidden_size
        rows = () if batch is None else (batch,)
        return (*rows, width) if self.stack.single else (len(self.units), *rows, width)

    # -- running ---------------------------------------------------------------------------

    def __call__(self, x: Any, state: Mapping[str, Any] | None = None,
                 progress: Progress | None = None, allow_nonfinite: bool = False,
                 lengths: Any = None) -> tuple[Any, dict[str, Any]]:
        state = checks.states_mapping(state, "state", self.cell.graph.states)
        if self.plain and not state and lengths is None and progress is None and \
                not self.stored_state and self.stored_lengths is None:
            return self._plain_call(x, allow_nonfinite)
        x, starts, packing, unbatched = self._inputs(x, state, allow_nonfinite, lengths)
        with self._lock, _ieee():
            if self.plain and packing is None:
                plan = self.compiled(x.shape[1])
                y, final = plan.run(x, starts[0], progress)
                self.ran_with = plan.name
                finals = [final]
            else:
                _, y, finals = self._forward(x, starts, packing, progress, keep=False)
            if not allow_nonfinite:
                self._warn_nonfinite(x, starts, packing, y, finals)
        return self._y(y, unbatched), self._states(finals, unbatched)

    def _plain_call(self, x: Any, allow_nonfinite: bool) -> tuple[Any, dict[str, Any]]:
        """A call of a plain runner from zero states over whole sequences: what
        :meth:`__call__` does, in fewer steps (a small run lasts tens of microseconds)."""
        checks.switch(allow_nonfinite, "allow_nonfinite")  # the other calls': in _inputs
        # x as given (no copy in another dtype or shape): the executor may test it for NaN
        # and infinity as it reads it, instead of a pass over it here (0.2 ms at medium)
        as_given = type(x) is np.ndarray and self.xp is np and x.dtype == self.dtype \
            and x.ndim == 3
        x, unbatched = self._check_x(x, allow_nonfinite or as_given, "run", False)
        batch = x.shape[1]
        with self._lock:
            plan = self.compiled(batch)
            found = plan.run_from_zeros(x)
            if as_given and not allow_nonfinite and (found is None or not found.x_finite):
                checks.check_finite(x, x, "x", self.dtype, np, "clean the input")
            if found is None:
                with _ieee():
                    y, final = plan.run(x, self._zeros(batch))
                seen_finite = False
            else:
                y, final, _, seen_finite = found
            if not allow_nonfinite and not seen_finite and not checks.all_finite(
                    self.xp, y, *(final[name] for name in self._beyond_y)):
                with _ieee():
                    self._warn_nonfinite(x, [self._zeros(batch)], None, y, [final])
        if unbatched:
            return y[:, 0], {name: value[0] for name, value in final.items()}
        return y, final

    def _zeros(self, batch: int) -> dict[str, Any]:
        """Every state at zero, for ``batch`` sequences."""
        return {name: self.xp.zeros((batch, width), dtype=self.dtype)
                for name, width in self._state_widths}

    def _warn_nonfinite(self, x: Any, starts: list[dict[str, Any]], packing: Packing | None,
                        y: Any, finals: list[dict[str, Any]]) -> bool:
        """A one-line warning when a run of finite inputs made NaN or infinity (a value
        that overflowed): the first assignment and step that did, where a trace fits in
        memory, else the first step of ``y``. Whether it warned."""
        xp = self.xp
        if checks.all_finite(xp, y, *(v for final in finals for v in final.values())):
            return False
        where = ""
        if self.plain and packing is None:
            unit = self.units[0]
            try:
                memory.require(checks.work_allocations(
                    unit.cell.schedule, "trace", x.shape[0], x.shape[1], unit.input_size,
                    self.hidden_size, self.dtype), "finding where")
                values = self.compiled(x.shape[1]).trace(x, starts[0])
            except memory.MemoryLimitError:
                values = {}
            order = [n for n in unit.cell.schedule.order if n in values]
            found = [(t, k, name) for k, name in enumerate(order)
                     for t in [_first_bad_step(xp, values[name])] if t is not None]
            if found:
                step, _, name = min(found)
                where = f": '{name}' is not finite at step {step + 1} first"
        if not where:
            bad = ~xp.isfinite(y).reshape(y.shape[0], -1).all(axis=1) if y.size else None
            if bad is not None and bool(bad.any()):
                where = f": y is not finite from step {int(np.argmax(to_numpy(bad))) + 1}"
        warnings.warn(f"the run made NaN or infinity from finite inputs{where} (a value "
                      "overflowed the dtype, or a function was given numbers outside its "
                      "domain); pass --allow-nonfinite (allow_nonfinite=True) to run quietly",
                      LstmGraphWarning, stacklevel=3)
        return True

    def trace(self, x: Any, state: Mapping[str, Any] | None = None,
              progress: Progress | None = None, allow_nonfinite: bool = False,
              lengths: Any = None) -> dict[str, Any]:
        """Every assignment's value at every step, as this runner's executor computes it.

        Returns ``{name: (T, B, width)}`` in the cell file's order (``(T, width)`` for
        one sequence given as ``(T, I)``; ``(B, T, width)`` batch-first); the states'
        last rows are the final states. In a stack every unit's values are there under
        its prefix (``l0.c``, ``l0_reverse.c``, …), each at the step of ``x`` that
        computed it; values of a sequence after its length are zero.
        """
        x, starts, packing, unbatched = self._inputs(x, state, allow_nonfinite, lengths,
                                                     "trace")
        xp = self.xp
        found: dict[str, Any] = {}
        with self._lock, _ieee():
            inputs, _, _ = self._forward(x, starts, packing, progress=None, keep=True,
                                         last=False)
            for unit, start in zip(self.units, starts):
                values = trace_unit(self._compiled(unit, work="trace"), inputs[unit.layer],
                                    self._pad(start), xp, unit.reverse, packing, progress)
                found.update({unit.prefix + name: value for name, value in values.items()})
        for name, value in found.items():
            value = xp.swapaxes(value, 0, 1) if self.batch_first else value
            found[name] = value[:, 0] if unbatched else value
        return found

    def grad(self, x: Any, grad_y: Any, state: Mapping[str, Any] | None = None,
             grad_state: Mapping[str, Any] | None = None, allow_nonfinite: bool = False,
             record: bool = False, lengths: Any = None) -> Gradients:
        """Gradients of ``sum(grad_y · y) + Σ_s sum(grad_state[s] · final[s])``.

        ``grad_y`` has the shape of ``y``; ``grad_state`` maps some states to arrays of
        their shape (the others count zero). The answer (:class:`Gradients`) holds
        ``.x``, ``.weights`` (by parameter name, as :attr:`weights`), ``.state`` (with
        respect to the initial states), and the forward results ``.y`` and ``.final``;
        for one sequence ``(T, I)`` the batch axis is dropped, as in a run. Each unit's
        executor computes them (the native step's backward pass is compiled C). With
        ``record``, the executor the registry picks for it (the reference) also records
        ``∂L/∂value`` of every assignment at every step and the gradient each edge carried
        (``.values``, ``.edges``: what the gradient-flow view draws; one layer and
        direction only).
        """
        x, starts, packing, unbatched = self._inputs(x, state, allow_nonfinite, lengths,
                                                     "grad", record)
        steps, batch = x.shape[0], x.shape[1]
        want = (steps, self.output_width) if unbatched else \
            ((batch, steps, self.output_width) if self.batch_first
             else (steps, batch, self.output_width))
        grad_y = self._check_array("grad_y", grad_y, want, allow_nonfinite,
                                   self._unread(packing, len(want)))
        grad_y = grad_y[:, None] if unbatched else \
            (self.xp.swapaxes(grad_y, 0, 1) if self.batch_first else grad_y)
        ends: list[dict[str, Any]] = [{} for _ in self.units]
        grad_state = checks.states_mapping(grad_state, "grad_state", self.cell.graph.states)
        for name, value in (grad_state or {}).items():
            if name not in self.cell.graph.states:
                raise DataError(f"grad_state names '{name}', which is not a state of this cell "
                                f"(its states: {', '.join(self.cell.graph.states)})")
            value = self._check_array(f"grad_state['{name}']", value,
                                      self.state_shape(name, None if unbatched else batch),
                                      allow_nonfinite)
            for index, part in enumerate(self._per_unit(value, unbatched)):
                ends[index][name] = part
        if record and (not self.plain or packing is not None):
            raise DataError("recording the gradient flow (record=True) works on one layer "
                            "and direction, forward, time-major, with no sequence shorter "
                            "than x (lengths)")
        if self.plain and packing is None:
            with self._lock, _ieee():
                plan = self.compiled(batch, record, "grad")
                found = plan.grad(x, starts[0], grad_y, ends[0], record)
                self.ran_with = plan.name
            state_grads, finals = [found.state], [found.final]
        else:
            with _ieee():
                found, state_grads, finals = self._backward(x, starts, packing, grad_y, ends)
        if not allow_nonfinite:
            with _ieee():
                if not self._warn_nonfinite(x, starts, packing, found.y, finals):
                    self._warn_nonfinite_gradient(found, state_grads)
        return Gradients(self._y(found.x, unbatched), found.weights,
                         self._states(state_grads, unbatched), self._y(found.y, unbatched),
                         self._states(finals, unbatched),
                         {k: v[:, 0] if unbatched else v for k, v in found.values.items()},
                         found.edges)

    def _warn_nonfinite_gradient(self, found: Gradients,
                                 state_grads: list[dict[str, Any]]) -> None:
        """A one-line warning when a gradient of finite inputs and a finite forward run
        holds NaN or infinity (it overflowed on the way back): which gradient, first."""
        xp = self.xp
        named = [("x", found.x), *found.weights.items(),
                 *((f"the initial {name}", value) for grads in state_grads
                   for name, value in grads.items())]
        bad = next((name for name, value in named if not checks.all_finite(xp, value)), None)
        if bad is not None:
            warnings.warn(f"the gradient holds NaN or infinity from finite inputs and a finite "
                          f"run: the gradient of {bad} first (a value overflowed the dtype on "
                          "the way back); pass --allow-nonfinite (allow_nonfinite=True) to "
                          "compute it quietly", LstmGraphWarning, stacklevel=3)

    def unit_runner(self, index: int) -> Runner:
        """Layer and direction ``index`` (in ``h_n`` order: 0 to L·D − 1) as a runner of its
        own: one unit, forward, time-major, its weights without their prefix (what the
        explorer shows; :attr:`unit_of` says which unit it is, and the page says it too). It
        runs what it is given as that unit reads its input: a reverse unit's from the last
        step (give it x, or the layer below's output, reversed in time)."""
        count = len(self.units)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < count:
            listing = ", ".join(f"{k}: {_unit_words(self.stack, u.layer, u.reverse)}"
                                for k, u in enumerate(self.units))
            raise DataError(f"unit_runner({index!r}): this runner has {count} "
                            f"unit{'s' if count > 1 else ''}, numbered in h_n order ({listing})")
        unit = self.units[int(index)]
        alone = _Unit(unit.cell, 0, False, unit.input_size, self.hidden_size, unit.weights, "")
        found = Runner(unit.cell, Stack(), False, [alone], unit.input_size, self.hidden_size,
                       self.backend, self.dtype, self.executor)
        if not self.plain:
            both = self.stack.direction == "bidirectional"
            which = (", reverse direction," if unit.reverse else ", forward direction,") \
                if both else ""
            found.unit_of = (
                f"The page shows layer {unit.layer + 1}{which} of {self.stack.describe()}"
                + (": it reads its input from the last step, so its step t is x's step "
                   "T + 1 − t." if unit.reverse else "."), unit.reverse)
        return found

    def compiled(self, batch: int, record: bool = False, work: str = "run") -> Executor:
        """The executor of the first layer and direction for batch size ``batch`` (with
        ``record``: one that records every value's gradient), built on first use (see
        :data:`PLANS`) for ``work`` first (``run``, ``trace`` or ``grad``: see
        :func:`~lstm_graph.executors.registry.build`)."""
        return self._plan(self.units[0], batch, record, work)

    # -- the stack ---------------------------------------------------------------------------

    def _compiled(self, unit: _Unit, record: bool = False, work: str = "run") -> Compiled:
        """``batch -> executor`` for ``unit`` (kept per batch size and ``record``, see
        :data:`PLANS`; built for ``work`` first)."""
        return functools.partial(self._plan, unit, record=record, work=work)

    def _plan(self, unit: _Unit, batch: int, record: bool = False, work: str = "run"
              ) -> Executor:
        """``unit``'s executor for batch size ``batch`` (and ``record``), built on first use
        for ``work`` first."""
        with self._lock:
            plans, key = unit._plans, (batch, record)
            if key in plans:
                plans.move_to_end(key)
            else:
                spec = Spec(unit.cell.schedule, self.xp, unit.params, batch,
                            unit.input_size, self.hidden_size, self.dtype)
                checks.check_build_fits(self.executor, self.backend, spec.schedule,
                                        unit.input_size, self.hidden_size, self.dtype, record)
                plans[key] = registry.build(self.executor, spec, self.backend, record, work)
                while len(plans) > self.PLANS:
                    plans.popitem(last=False)
            plan = plans[key]
            self.ran_with = plan.name
            return plan

    def _forward(self, x: Any, starts: list[dict[str, Any]], packing: Packing | None,
                 progress: Progress | None, keep: bool, last: bool = True
                 ) -> tuple[list[Any], Any, list[dict[str, Any]]]:
        """Run the stack: every layer's input (all of them with ``keep``, and the top
        layer's run only with ``last``), ``y`` and every unit's final states."""
        xp, directions = self.xp, self.stack.directions
        inputs, finals = [x], []
        layer_input = x
        for layer in range(self.stack.layers):
            if layer == self.stack.layers - 1 and not last:
                break
            outputs = []
            for unit, start in list(zip(self.units, starts))[layer * directions:
                                                              (layer + 1) * directions]:
                y, final = run_unit(self._compiled(unit), layer_input, self._pad(start), xp,
                                    unit.reverse, packing, progress)
                outputs.append(self._cut_y(y))
                finals.append(self._cut_states(final))
            layer_input = outputs[0] if directions == 1 else xp.concatenate(outputs, axis=-1)
            if keep or layer == 0:
                inputs.append(layer_input)
            else:
                inputs[-1] = layer_input
        return inputs, layer_input, finals

    def _backward(self, x: Any, starts: list[dict[str, Any]], packing: Packing | None,
                  grad_y: Any, ends: list[dict[str, Any]]
                  ) -> tuple[Gradients, list[dict[str, Any]], list[dict[str, Any]]]:
        """Gradients through the stack: the top layer first, each unit's input gradient
        added up for the layer below (see :mod:`lstm_graph.layers`); with every unit's
        initial-state gradients and final states."""
        xp, stack = self.xp, self.stack
        directions = stack.directions
        with self._lock:
            inputs, _, _ = self._forward(x, starts, packing, None, keep=True, last=False)
            weights: dict[str, Any] = {}
            state: list[dict[str, Any]] = [{} for _ in self.units]
            finals: list[dict[str, Any]] = [{} for _ in self.units]
            top: list[Any] = []
            upstream = grad_y
            for layer in reversed(range(stack.layers)):
                width = upstream.shape[-1] // directions
                below = None
                for d in range(directions):
                    index = layer * directions + d
                    unit = self.units[index]
                    found = grad_unit(self._compiled(unit, work="grad"), inputs[layer],
                                      self._pad(starts[index]),
                                      self._pad_y(upstream[..., d * width:(d + 1) * width]),
                                      self._pad(ends[index]), xp, unit.reverse, packing)
                    below = found.x if below is None else below + found.x
                    weights.update({unit.prefix + k: v for k, v in found.weights.items()})
                    state[index] = self._cut_states(found.state)
                    finals[index] = self._cut_states(found.final)
                    if layer == stack.layers - 1:
                        top.append(self._cut_y(found.y))
                upstream = below
        y = top[0] if directions == 1 else xp.concatenate(top, axis=-1)
        # in the weights' order (l0. first), not the backward pass's
        ordered = {**{name: weights[name] for name in self.weights if name in weights},
                   **weights}
        return Gradients(upstream, ordered, {}, y, {}), state, finals

    def _pad(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """States as the cell holds them: a projected state widened with zeros to H."""
        if self.stack.proj is None:
            return dict(values)
        out = {}
        for name, value in values.items():
            if value.shape[-1] < self.hidden_size:
                wide = self.xp.zeros((*value.shape[:-1], self.hidden_size), dtype=value.dtype)
                wide[..., : value.shape[-1]] = value
                value = wide
            out[name] = value
        return out

    def _pad_y(self, value: Any) -> Any:
        """An output gradient as wide as the cell's output (zeros past a projection)."""
        if self.stack.proj is None:
            return value
        wide = self.xp.zeros((*value.shape[:-1], self.hidden_size), dtype=value.dtype)
        wide[..., : value.shape[-1]] = value
        return wide

    def _cut_y(self, y: Any) -> Any:
        return y if self.stack.proj is None else y[..., : self.stack.proj]

    def _cut_states(self, states: Mapping[str, Any]) -> dict[str, Any]:
        if self.stack.proj is None:
            return dict(states)
        return {name: value[..., : self.stack.proj] if name in self.cell.graph.outputs
                else value for name, value in states.items()}

    # -- inputs and outputs ------------------------------------------------------------------

    def _inputs(self, x: Any, state: Mapping[str, Any] | None, allow_nonfinite: bool,
                lengths: Any, work: str = "run", record: bool = False
                ) -> tuple[Any, list[dict[str, Any]], Packing | None, bool]:
        """``x`` time-major ``(T, B, I)``, each unit's start states, the packing of
        ``lengths``, and whether ``x`` was one sequence ``(T, I)``; ``work`` (a run, a trace
        or a gradient, ``record``-ed) that would not fit in memory is refused."""
        state = checks.states_mapping(state, "state", self.cell.graph.states)
        checks.switch(allow_nonfinite, "allow_nonfinite")
        checks.switch(record, "record")
        given = x = checks.as_array(x, "x")
        if self.batch_first and len(x.shape) == 3:
            x = self.xp.ascontiguousarray(self.xp.swapaxes(self.xp.asarray(x), 0, 1))
        # NaN and infinity looked for below, in x as given (its index is the caller's) and
        # only where a run reads it (not past a sequence's length)
        x, unbatched = self._check_x(x, True, work, record)
        steps, batch = x.shape[0], x.shape[1]
        state, lengths = self._stored(state, lengths, batch, unbatched)
        packing = None
        if lengths is not None:
            checked = check_lengths(lengths, batch, steps)
            if not np.all(checked == steps):  # all full: nothing to pack
                packing = Packing.of(checked, steps)
        if not allow_nonfinite:
            laid = x[:, 0] if unbatched else \
                self.xp.swapaxes(x, 0, 1) if self.batch_first else x
            checks.check_finite(given, laid, "x", self.dtype, self.xp, "clean the input",
                                self._unread(packing, given.ndim))
        starts = self._check_state(state, batch, unbatched, allow_nonfinite)
        return x, starts, packing, unbatched

    def _unread(self, packing: Packing | None, ndim: int) -> np.ndarray | None:
        """Where an array laid out as this runner's ``x`` (of ``ndim`` axes) lies past a
        sequence's length (:func:`~lstm_graph.checks.unread`)."""
        return None if packing is None else \
            checks.unread(packing.given, packing.steps, ndim, self.batch_first)

    def _stored(self, state: Mapping[str, Any] | None, lengths: Any, batch: int,
                unbatched: bool) -> tuple[Mapping[str, Any] | None, Any]:
        """``state`` with the model's stored initial states for those it does not give, and
        ``lengths``, else the stored ones (:attr:`stored_state`); a DataError where they
        are for another number of sequences than ``x`` holds."""
        def fitted(name: str, value: Any, axis: int, option: str) -> Any:
            if value.shape[axis] != batch:
                raise DataError(f"the model stores {name} for {value.shape[axis]} sequence"
                                f"{'s' if value.shape[axis] != 1 else ''} (of shape "
                                f"{tuple(value.shape)}), and x holds {batch}; give {option}")
            return value
        axis = 0 if self.stack.single else 1
        kept = {name: fitted(f"the initial {name}", value, axis, f"state={{'{name}': …}}")
                for name, value in self.stored_state.items()
                if state is None or name not in state}
        if kept:
            if unbatched:  # one sequence, x of (T, I): its states have no batch axis
                kept = {name: self.xp.take(value, 0, axis=axis) for name, value in kept.items()}
            state = {**kept, **(state or {})}
        if lengths is None and self.stored_lengths is not None:
            lengths = fitted("sequence lengths", self.stored_lengths, 0, "lengths=")
        return state, lengths

    def _check_x(self, x: Any, allow_nonfinite: bool, work: str, record: bool
                 ) -> tuple[Any, bool]:
        """``x`` checked (see :func:`~lstm_graph.checks.check_x`), and the work it asks
        for refused when every unit's arrays together would not fit in memory."""
        x, unbatched = checks.check_x(x, self.input_size, allow_nonfinite, self.xp, self.dtype)
        steps, batch = x.shape[0], x.shape[1]
        if self.stack.single:
            checks.check_run_fits(self.cell.schedule, steps, batch, self.input_size,
                                  self.hidden_size, self.dtype, self.executor, self.backend,
                                  work, record, self._fits)
        else:  # a stack's list of every unit's arrays: 0.5 ms to work out, kept per shape
            checks.require_fits(self._fits, ("stack", work, steps, batch),
                                lambda: self.allocations(steps, batch, self.dtype, work))
        return x, unbatched

    def allocations(self, steps: int, batch: int, x_dtype: np.dtype, work: str = "run",
                    record: bool = False) -> list[Allocation]:
        """What a run of every layer and direction over ``x`` of shape ``(steps, batch, I)``
        in ``x_dtype`` allocates (and what ``work``, "trace" or "grad", holds beyond it),
        as this runner's executor allocates it (the one that records a gradient's every
        value, with ``record``), with the outputs of the layers between them."""
        found = []
        for unit in self.units:
            count = sum(math.prod(shape) for shape in unit.cell.schedule.param_shapes(
                unit.input_size, self.hidden_size).values())
            whose = "the" if self.stack.single else \
                f"{_unit_words(self.stack, unit.layer, unit.reverse)}:"
            found.append(memory.allocation(f"{whose} weights as the executor packs them",
                                           (count,), self.dtype))
            found += checks.run_allocations(unit.cell.schedule, steps, batch, unit.input_size,
                                            self.hidden_size, self.dtype, x_dtype,
                                            self.executor, self.backend, record)
            found += checks.work_allocations(unit.cell.schedule, work, steps, batch,
                                             unit.input_size, self.hidden_size, self.dtype,
                                             self.executor, self.backend, record)
            x_dtype = self.dtype  # the layers above read the one below in the run's dtype
        if not self.stack.single:
            kept = self.stack.layers if work == "grad" else 2
            found.append(memory.allocation(f"the layers' outputs ({kept} kept)",
                                           (kept, steps, batch, self.output_width), self.dtype))
        return found

    def _check_state(self, state: Mapping[str, Any] | None, batch: int, unbatched: bool,
                     allow_nonfinite: bool) -> list[dict[str, Any]]:
        """Every unit's start states ``(B, width)``: the ones given, checked, and zeros."""
        if not state:  # the common case, made quickly (a small run lasts tens of µs)
            return [{name: self.xp.zeros((batch, width), dtype=self.dtype)
                     for name, width in self._state_widths} for _ in self.units]
        given = dict(state)
        unknown = sorted(map(str, set(given) - set(self.cell.graph.states)))
        if unknown:
            raise DataError(f"unknown state {', '.join(unknown)}; this cell's states are "
                            f"{', '.join(self.cell.graph.states)}")
        per_unit: list[dict[str, Any]] = [{} for _ in self.units]
        for name, value in given.items():
            want = self.state_shape(name, None if unbatched else batch)
            value = checks.check_state({name: value}, {name: None}, batch, want[-1], unbatched,
                                       allow_nonfinite, self.xp, self.dtype, want)[name]
            for index, part in enumerate(self._per_unit(value, unbatched)):
                per_unit[index][name] = part
        for unit_state in per_unit:
            for name in self.cell.graph.states:
                if name not in unit_state:
                    width = self.state_shape(name, batch)[-1]
                    unit_state[name] = self.xp.zeros((batch, width), dtype=self.dtype)
        return per_unit

    def _per_unit(self, value: Any, unbatched: bool) -> list[Any]:
        """A state-shaped array as one ``(B, width)`` array per unit."""
        if self.stack.single:
            return [value[None, :] if unbatched else value]
        return [value[k][None, :] if unbatched else value[k] for k in range(len(self.units))]

    def _y(self, y: Any, unbatched: bool) -> Any:
        if unbatched:
            return y[:, 0]
        return self.xp.ascontiguousarray(self.xp.swapaxes(y, 0, 1)) if self.batch_first else y

    def _states(self, finals: list[dict[str, Any]], unbatched: bool) -> dict[str, Any]:
        """Every unit's final states as the runner gives them (see :meth:`state_shape`)."""
        out = {}
        for name in self.cell.graph.states:
            values = [final[name] for final in finals]
            value = values[0] if self.stack.single else self.xp.stack(values)
            out[name] = value[..., 0, :] if unbatched else value
        return out

    def _check_array(self, what: str, value: Any, shape: tuple[int, ...],
                     allow_nonfinite: bool, skip: np.ndarray | None = None) -> Any:
        """``value`` as an array of the runner's dtype and namespace, of exactly ``shape``,
        and finite there (but where ``skip`` is true) unless ``allow_nonfinite``."""
        array = checks.as_array(value, what)  # an array as is (not a masked one), or NumPy's
        if tuple(array.shape) != shape:
            raise DataError(f"{what} has shape {tuple(array.shape)}, expected {shape}")
        if np.dtype(array.dtype).kind not in "fiu":
            raise DataError(f"{what} has dtype {array.dtype}; it must hold real numbers")
        converted = checks.convert(array, self.xp, self.dtype)
        if not allow_nonfinite:
            checks.check_finite(array, converted, what, self.dtype, self.xp, f"clean {what}",
                                skip)
        return converted

    # -- export and the notebook (lstm_graph.export, lstm_graph.notebook) -------------------

    def time_major(self) -> Runner:
        """This runner taking and giving time-major arrays (``(T, B, ·)``): itself, or a
        twin of a batch-first one sharing its layers, weights and executors, and the
        initial states and lengths a model stores (whose shapes do not depend on the
        layout: the twin ran from zeros, and exported what the runner refuses to)."""
        if not self.batch_first:
            return self
        twin = Runner(self.cell, self.stack, False, self.units, self.input_size,
                      self.hidden_size, self.backend, self.dtype, self.executor, self.notes)
        twin.stored_state, twin.stored_lengths = self.stored_state, self.stored_lengths
        twin.unit_of = self.unit_of
        return twin

    def export_onnx(self, path: str | Path, check: bool = True, scan: bool = False) -> str:
        """Write this runner as one ONNX model (see :mod:`lstm_graph.export.onnx_model`),
        checked against it first; returns how it was checked. The model is time-major
        (``x`` of shape ``(T, B, I)``) whether or not the runner is batch-first. ``scan``:
        a Scan over the step even where the cell is ONNX's LSTM, GRU or RNN (onnxruntime's
        kernels of those turn NaN and infinity in ``x`` into numbers; its Scan does not)."""
        from lstm_graph.export import onnx_model

        self._refuse_stored()
        return onnx_model.export(self.time_major(), path, check, scan)

    def export_torch(self, path: str | Path, check: bool = True) -> tuple[Path, Path]:
        """Write this runner as a PyTorch module ``path`` (``.py``) and its state dict
        beside it (``.pt``; see :mod:`lstm_graph.export.torch_module`); time-major, as
        :meth:`export_onnx`."""
        from lstm_graph.export import torch_module

        self._refuse_stored()
        return torch_module.export(self.time_major(), path, check)

    def _refuse_stored(self) -> None:
        """Refuse to export a model's stored initial states or lengths (see
        :func:`lstm_graph.export.refuse_stored`), as the command line does."""
        from lstm_graph.export import refuse_stored

        refuse_stored("the model this runner was compiled from", self.stored_state,
                      self.stored_lengths, "The runner runs them; to export the layers alone, "
                      "compile the cell with weights=runner.weights (and the model's layers "
                      "and direction)")

    def explore(self, x: Any, state: Mapping[str, Any] | None = None,
                allow_nonfinite: bool = False) -> Any:
        """The explorer page of a run on ``x``, shown inline in a notebook
        (:class:`lstm_graph.notebook.Explorer`); one layer and direction, ``x`` batch-first
        where this runner reads it so."""
        from lstm_graph.notebook import explore

        state = checks.states_mapping(state, "state", self.cell.graph.states)
        checks.switch(allow_nonfinite, "allow_nonfinite")
        return explore(self, x, dict(state) if state is not None else None, allow_nonfinite)
