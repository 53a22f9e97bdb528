"""What one shard of a run computes, and what travels to a worker to compute it.

A shard is a slice of the batch: every sequence is independent of the others, so
``x[:, b0:b1]`` from ``state[b0:b1]`` gives exactly rows ``b0:b1`` of a plain run's
results. A :class:`Job` carries what a worker needs to compute any shard of one
command: the cell's **source text** (a user's ``.cell`` file need not exist on the
worker), the weights as arrays, the sizes, dtype and executor. A worker compiles a
job once per thread (:func:`runner`) and runs every shard through the normal API
(:class:`~lstm_graph.cell.Runner`), so a shard runs exactly the code a plain run does.

The same functions make a plain command's arrays (:func:`run_arrays`,
:func:`trace_arrays`, :func:`grad_arrays`): a plain run is one shard of the whole batch.
This module needs only NumPy; it is what a worker imports.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.cell import Cell, Runner, compile_layers
from lstm_graph.checks import not_finite, unread
from lstm_graph.errors import DataError, installed_version
from lstm_graph.executors.backends import to_numpy
from lstm_graph.executors.contract import Progress
from lstm_graph.formats.trace import LENGTHS, identity
from lstm_graph.library import builtin_names, compile_source, load_cell, read_cell_text

#: The commands a job can run.
COMMANDS = ("run", "trace", "grad")
#: Compiled jobs a worker thread keeps, the least recently used dropped first: a sharded
#: command's shards all reuse one; two let a worker serve two commands in turn without
#: compiling again. (A sweep's training runs compile their cells themselves.)
KEPT = 2


@dataclass(frozen=True)
class Moments:
    """Count, mean, sum of squared deviations from the mean, sum of squares, minimum and
    maximum of some numbers (in float64, a block of them at a time: no float64 copy of
    them all, and no float32 sum or square overflowing); two merge into those of their
    union as Chan, Golub and LeVeque (1979) add variances, so the deviation stays accurate
    where it is small beside the mean. Plain commands summarise their arrays with it too,
    so a plain run and a sharded one say the same.

    >>> a, b = np.arange(4.0), np.arange(4.0, 10.0)
    >>> both = Moments.of(a).merge(Moments.of(b))
    >>> round(both.std, 12) == round(float(np.arange(10.0).std()), 12), both.high
    (True, 9.0)
    >>> far = 1e9 + np.arange(8.0) % 2  # std 0.5 about 1e9: E[x²] - mean² gives 0
    >>> round(Moments.of(far[:3]).merge(Moments.of(far[3:])).std, 6)
    0.5
    >>> Moments.of(np.array([1.0, np.nan])).std  # not max(0, nan), which is 0
    nan
    >>> both = Moments.of(np.zeros(3)).merge(Moments.of(np.array([np.nan])))
    >>> both.low, both.high
    (nan, nan)
    """

    count: int
    mean: float
    deviations: float  # sum of (x - mean)²
    squares: float  # sum of x²
    low: float
    high: float

    #: Numbers taken at a time by :meth:`of`.
    BLOCK = 1 << 20

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        flat = np.ravel(values)
        found: Moments | None = None
        for start in range(0, max(flat.size, 1), cls.BLOCK):
            part = cls._block(flat[start:start + cls.BLOCK].astype(np.float64))
            found = part if found is None else found.merge(part)
        assert found is not None
        return found

    @classmethod
    def _block(cls, block: np.ndarray) -> Moments:
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, said as NaN
            size = max(block.size, 1)
            mean = float(np.sum(block)) / size
            centred = block - mean  # the sum of what rounding left corrects it (the
            missed = float(np.sum(centred))  # corrected two-pass formula)
            deviations = float(centred @ centred) - missed * missed / size
            return cls(block.size, mean, 0.0 if deviations < 0 else deviations,  # NaN kept
                       float(block @ block), float(block.min(initial=np.inf)),
                       float(block.max(initial=-np.inf)))

    def merge(self, other: Moments) -> Moments:
        count = self.count + other.count
        if not self.count or not other.count:
            return self if other.count == 0 else other
        delta = other.mean - self.mean
        return Moments(count, self.mean + delta * other.count / count,
                       self.deviations + other.deviations
                       + delta * delta * self.count * other.count / count,
                       self.squares + other.squares,  # NaN kept: min(0.0, nan) is 0.0
                       float(np.minimum(self.low, other.low)),
                       float(np.maximum(self.high, other.high)))

    @property
    def std(self) -> float:
        return math.sqrt(self.deviations / self.count)

    @property
    def norm(self) -> float:
        """The L2 norm of the numbers."""
        return math.sqrt(self.squares)


@dataclass(frozen=True)
class CellSource:
    """A cell's text and the names :func:`~lstm_graph.library.load_cell` would give it."""

    text: str
    file: str  # for messages: file:line:col
    name: str  # the cell's name when the text has no 'cell NAME' line

    def compile(self) -> Cell:
        return compile_source(self.text, self.file, self.name)


def cell_source(spec: str) -> CellSource:
    """The text of the cell SPEC names (a built-in name or a ``.cell`` path).

    >>> source = cell_source("rnn")
    >>> source.file, source.compile().name
    ('<builtin>/rnn.cell', 'rnn')
    """
    if spec in builtin_names():
        resource = resources.files("lstm_graph") / "cells" / f"{spec}.cell"
        return CellSource(resource.read_text(encoding="utf-8"), f"<builtin>/{spec}.cell", spec)
    path = Path(spec)
    if not path.is_file():
        load_cell(spec)  # raises the error a plain run gives for this SPEC
    return CellSource(read_cell_text(path), spec, path.stem)


@dataclass(frozen=True)
class Shard:
    """What a command writes for one slice of the batch (or, in a plain run, all of it).

    ``arrays`` are named and ordered as in the output file; ``axes`` gives each one's
    batch axis, or ``None`` for a sum over the batch (a weight gradient), which shards
    add, or for a text that every shard gives alike (a trace's cell), written once;
    ``times`` the time axis of those that have one. ``loss`` is ``grad``'s
    ``sum(grad_y · y)`` over these sequences (in float64).
    """

    arrays: dict[str, np.ndarray]
    axes: dict[str, int | None]
    ran_with: str
    loss: float | None = None
    #: Each array's time axis, for those that have one (``y``, a trace's values, ``x``).
    times: dict[str, int] = field(default_factory=dict)


def check_finite(what: str, raw: Any, converted: np.ndarray, offset: int | None,
                 fix: str, axis: int = 1, skip: np.ndarray | None = None) -> None:
    """A plain run's error for rows of ``what`` (``x``, ``grad_output``) that are not
    finite in ``converted``'s dtype: NaN or infinity in ``raw`` (the rows as read), or a
    finite number too large for that dtype; none where ``skip`` (past the rows' lengths:
    :func:`~lstm_graph.checks.unread`) is true. ``offset`` is the rows' first sequence in
    the whole batch, along ``axis`` (0 batch-first), so the index is the whole batch's;
    ``None`` for one sequence ``(T, ...)``.

    >>> check_finite("x", np.ones((2, 3, 1)), np.ones((2, 3, 1)), 0, "clean the input")
    >>> from lstm_graph.errors import LstmGraphError
    >>> bad = np.ones((2, 3, 1)); bad[1, 2, 0] = np.inf
    >>> try:
    ...     check_finite("x", bad, bad, 4, "clean the input")
    ... except LstmGraphError as err:
    ...     print(err)
    x holds NaN or infinity, first at index (1, 6, 0); clean the input or pass --allow-nonfinite
    """
    bad = ~np.isfinite(converted)
    if skip is not None:
        bad &= ~skip
    if not bad.any():
        return
    first = [int(i) for i in np.argwhere(bad)[0]]
    value = raw[tuple(first)]
    if offset is not None:
        first[axis] += offset
    raise not_finite(what, value, tuple(first), converted.dtype, fix)


def batch_axis(runner: Runner, x: Any) -> int:
    """The axis of ``x`` (and of ``y``, a trace's values, ``grad``'s ``x``) that holds the
    sequences: 0 batch-first, else 1."""
    return 0 if runner.batch_first and np.ndim(x) == 3 else 1


def time_axis(runner: Runner, x: Any) -> int:
    """The axis of ``x`` (and ``y``, …) that holds the steps: 1 batch-first, else 0."""
    return 1 - batch_axis(runner, x) if np.ndim(x) == 3 else 0


def state_axis(runner: Runner) -> int:
    """The axis of a final state (or its gradient) that holds the sequences: 0 for one
    layer and direction ``(B, H)``, 1 for a stack ``(L·D, B, H)``."""
    return 0 if runner.stack.single else 1


def check_run_names(runner: Runner) -> None:
    """``run`` writes ``y`` and each final state under its own name: a state named ``y``
    would overwrite the output (the file held the state alone, and the summary described
    it), so such a cell is refused before any work."""
    if "y" in runner.cell.graph.states:
        raise DataError(f"cell '{runner.cell.name}' has a state named y, the name under "
                        "which run writes the output sequence; rename the state (or use "
                        "trace, which writes it as final.y)")


def check_trace_names(runner: Runner) -> None:
    """``trace`` writes each value under its own name, and the output sequence as ``y``:
    a value named ``y`` that is not the output took that place without a word (the file's
    ``y`` was the value, 0.47 off the run's), so such a cell is refused before any work.
    In a stack the values are under their units' prefixes (``l0.y``), which no output
    takes."""
    graph = runner.cell.graph
    if runner.stack.single and "y" in graph.assignments and "y" not in graph.outputs:
        (output,) = graph.outputs
        raise DataError(f"cell '{runner.cell.name}' computes a value named y, the name under "
                        f"which trace writes the output sequence (its output is {output}); "
                        "rename the value")


def check_grad_names(runner: Runner) -> None:
    """``grad`` writes each parameter's gradient under its name and each state's initial
    value's as ``initial.STATE``: a value named ``initial`` whose parameter is named as a
    state (``initial.b`` of a cell with a state ``b``) lost its gradient to the state's
    without a word, so such a cell is refused before any work."""
    taken = sorted(set(runner.weights) & {f"initial.{name}" for name in runner.cell.graph.states})
    if taken:
        raise DataError(f"cell '{runner.cell.name}' has a parameter named {taken[0]}, the name "
                        "under which grad writes the gradient of the initial value of state "
                        f"'{taken[0].removeprefix('initial.')}'; rename the value 'initial'")


def run_arrays(runner: Runner, x: Any, state: Mapping[str, Any] | None,
               allow_nonfinite: bool, progress: Progress | None = None,
               lengths: Any = None) -> Shard:
    """``run``'s output: ``y`` and each state's final value."""
    check_run_names(runner)
    y, final = runner(x, state, progress=progress, allow_nonfinite=allow_nonfinite,
                      lengths=lengths)
    arrays = {"y": to_numpy(y), **{name: to_numpy(value) for name, value in final.items()}}
    axes: dict[str, int | None] = {name: state_axis(runner) for name in final}
    return Shard(arrays, {"y": batch_axis(runner, x), **axes}, str(runner.ran_with),
                 times={"y": time_axis(runner, x)})


def trace_arrays(runner: Runner, x: Any, state: Mapping[str, Any] | None,
                 allow_nonfinite: bool, progress: Progress | None = None,
                 lengths: Any = None) -> Shard:
    """``trace``'s output: every assignment ``(T, B, width)`` under its own name (under its
    unit's prefix in a stack: ``l0.c``), ``y`` (the run's output: a value named ``y`` is
    the output, or refused, :func:`check_trace_names`), ``final.STATE`` for each state,
    and the cell's name and digest (:mod:`lstm_graph.formats.trace`), which a reader of
    the trace checks. One sequence ``(T, I)`` keeps its batch axis here, unlike a run."""
    check_trace_names(runner)
    values = runner.trace(x, state, progress=progress, allow_nonfinite=allow_nonfinite,
                          lengths=lengths)
    arrays = {name: to_numpy(value) for name, value in values.items()}
    if np.ndim(x) == 2:
        arrays = {name: value[:, None] for name, value in arrays.items()}
    states = list(runner.cell.graph.states)
    along = batch_axis(runner, x)
    if runner.plain and lengths is None:  # y and the final states are in the trace
        (output,) = runner.cell.graph.outputs  # an assignment, or the input itself
        if output in arrays:
            arrays.setdefault("y", arrays[output])
        else:  # the output is the input, as the run gives it
            as_run = np.asarray(to_numpy(x), dtype=runner.dtype)
            arrays.setdefault("y", as_run.reshape(len(as_run), -1, as_run.shape[-1]))
        arrays.update({f"final.{name}": arrays[name][-1] for name in states})
    else:  # each sequence ends at its own step, in each unit
        y, final = runner(x, state, allow_nonfinite=allow_nonfinite, lengths=lengths)
        y = to_numpy(y)
        arrays.setdefault("y", y[:, None] if np.ndim(x) == 2 else y)
        arrays.update({f"final.{name}": to_numpy(final[name]) if np.ndim(x) == 3
                       else to_numpy(final[name])[..., None, :] for name in states})
    axes: dict[str, int | None] = {name: along for name in arrays}
    axes.update({f"final.{name}": state_axis(runner) for name in states})
    times = {name: time_axis(runner, x) for name in arrays if not name.startswith("final.")}
    made_by = identity(runner.cell.schedule, along == 0)  # batch-first: (B, T, width)
    arrays.update(made_by)
    axes.update(dict.fromkeys(made_by))
    if lengths is not None:  # each sequence's steps: past them its values are zeros
        arrays[LENGTHS] = np.asarray(lengths, dtype=np.int64).reshape(-1)
        axes[LENGTHS] = 0
    return Shard(arrays, axes, str(runner.ran_with), times=times)


def last_step_loss(runner: Runner, x_shape: tuple[int, ...], lengths: Any = None
                   ) -> np.ndarray:
    """``grad_y`` for the loss ``grad`` takes without ``--grad-output``: the sum of the
    last step's output (each sequence's own last step, with ``lengths``)."""
    unbatched = len(x_shape) == 2  # one sequence, (T, I): a step is a row of grad_y
    steps_axis = 1 if runner.batch_first and not unbatched else 0
    grad_y = np.zeros((*x_shape[:-1], runner.output_width), dtype=runner.dtype)
    if lengths is None:
        grad_y[(slice(None),) * steps_axis + (-1,)] = 1
    else:
        for b, length in enumerate(np.asarray(lengths).tolist()):
            grad_y[(length - 1,) if unbatched else (b, length - 1) if steps_axis
                   else (length - 1, b)] = 1
    return grad_y


def grad_arrays(runner: Runner, x: Any, grad_y: Any, state: Mapping[str, Any] | None,
                allow_nonfinite: bool, lengths: Any = None) -> Shard:
    """``grad``'s output: ``x`` (the input's gradient), every parameter's gradient under its
    name, and ``initial.STATE`` for each state's initial value; and the loss."""
    check_grad_names(runner)
    found = runner.grad(x, grad_y, state=state, allow_nonfinite=allow_nonfinite,
                        lengths=lengths)
    arrays = {"x": to_numpy(found.x),
              **{name: to_numpy(value) for name, value in found.weights.items()},
              **{f"initial.{name}": to_numpy(value) for name, value in found.state.items()}}
    axes: dict[str, int | None] = {name: None for name in found.weights}
    axes.update({"x": batch_axis(runner, x),
                 **{f"initial.{name}": state_axis(runner) for name in found.state}})
    weights = to_numpy(grad_y)
    past = None if lengths is None else unread(
        np.asarray(lengths), np.shape(x)[time_axis(runner, x)], np.ndim(x), runner.batch_first)
    if past is not None:  # past a sequence's length grad_y is not read: NaN there adds 0
        weights = np.where(past, 0, weights)
    loss = float(np.einsum("i,i->", np.ravel(weights), np.ravel(to_numpy(found.y)),
                           dtype=np.float64))
    return Shard(arrays, axes, str(runner.ran_with), loss, {"x": time_axis(runner, x)})


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to run shards of one command on one cell and weights.

    ``sources`` holds the cell's text (two for an ONNX model whose directions compute
    differently: forward, then reverse); ``layers``, ``direction``, ``proj`` and
    ``batch_first`` are the runner's (:mod:`lstm_graph.layers`). ``x`` reaches the
    worker checked (the client looks for NaN and infinity as it reads each shard, so the
    message can give the index in the whole batch) and converted to ``dtype``.
    """

    command: str  # one of COMMANDS
    sources: tuple[CellSource, ...]
    weights: dict[str, np.ndarray]
    input_size: int
    hidden_size: int
    dtype: str
    executor: str
    layers: int = 1
    direction: str = "forward"
    proj: int | None = None
    batch_first: bool = False
    token: str = field(init=False)

    @property
    def source(self) -> CellSource:
        """The cell's text (the forward direction's)."""
        return self.sources[0]

    @property
    def nbytes(self) -> int:
        """Bytes of weights the job carries (its text is small)."""
        return sum(value.nbytes for value in self.weights.values())

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        for part in (self.command, *(f"{s.text}\0{s.file}\0{s.name}" for s in self.sources),
                     self.input_size, self.hidden_size, self.dtype, self.executor, self.layers,
                     self.direction, self.proj, self.batch_first):
            digest.update(f"{part}\0".encode())
        for name, value in sorted(self.weights.items()):
            digest.update(f"{name}\0{value.dtype.str}\0{value.shape}\0".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        object.__setattr__(self, "token", digest.hexdigest()[:16])

    def compile(self, executor: str | None = None) -> Runner:
        """The job's runner (with ``executor`` instead of the job's, if given)."""
        return compile_layers([source.compile() for source in self.sources], self.input_size,
                              self.hidden_size, "numpy", self.dtype, self.weights, None,
                              executor or self.executor, self.layers, self.direction,
                              self.batch_first, self.proj)


def job_of(command: str, sources: tuple[CellSource, ...], runner: Runner) -> Job:
    """The job that runs ``command`` as ``runner`` does, on workers."""
    stack = runner.stack
    return Job(command, sources, runner.weights, runner.input_size, runner.hidden_size,
               runner.dtype.name, runner.executor, stack.layers, stack.direction, stack.proj,
               runner.batch_first)


_compiled = threading.local()


def runner(job: Job) -> Runner:
    """The job's cell compiled with its weights, once per worker thread (a runner runs one
    call at a time, so threads of one worker each keep their own)."""
    kept: OrderedDict[str, Runner] | None = getattr(_compiled, "runners", None)
    if kept is None:
        kept = _compiled.runners = OrderedDict()
    if job.token in kept:
        kept.move_to_end(job.token)
    else:
        kept[job.token] = job.compile()
        while len(kept) > KEPT:
            kept.popitem(last=False)
    return kept[job.token]


def run_shard(job: Job, x: np.ndarray, state: dict[str, np.ndarray] | None,
              grad_y: np.ndarray | None, lengths: np.ndarray | None = None) -> Shard:
    """One shard: rows ``x`` (or one sequence ``(T, I)``), their initial states, for
    ``grad`` their ``grad_y`` (``None``: the last step's sum), and their lengths."""
    return command_arrays(job.command, runner(job), x, state, grad_y, lengths)


def command_arrays(command: str, compiled: Runner, x: np.ndarray,
                   state: dict[str, np.ndarray] | None, grad_y: np.ndarray | None,
                   lengths: np.ndarray | None = None) -> Shard:
    """What ``command`` writes for rows ``x`` (checked already), run by ``compiled``."""
    if command == "run":
        return run_arrays(compiled, x, state, allow_nonfinite=True, lengths=lengths)
    if command == "trace":
        return trace_arrays(compiled, x, state, allow_nonfinite=True, lengths=lengths)
    if grad_y is None:
        grad_y = last_step_loss(compiled, x.shape, lengths)
    return grad_arrays(compiled, x, grad_y, state, allow_nonfinite=True, lengths=lengths)


def worker_version() -> str:
    """The lstm-graph installed where this runs (:func:`~lstm_graph.errors.installed_version`).
    A worker that cannot import lstm-graph fails to unpickle this function, which is how a
    client finds such workers."""
    return installed_version()
