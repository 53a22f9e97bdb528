"""A run, trace or gradient sharded over the batch on a Dask cluster, written chunk by chunk.

The client (:func:`execute`) cuts the batch into shards of ``shard_size`` sequences,
reads each shard's rows from ``x`` (a memory-mapped ``.npy`` is read only a shard at a
time) and, for ``grad``, from ``grad_y``, checks them for NaN and infinity, converts
them to the run's dtype and submits them as one Dask task each, with their initial
states. At most :data:`IN_FLIGHT` shards per worker thread are out at once, so the
client, the scheduler and the workers hold a bounded amount of data whatever the size of
the input. Each result is written into the output's memory-mapped arrays
(:class:`~lstm_graph.distributed.chunked.ChunkedNpz`) as it arrives.

**Placement and retries.** A shard's task carries everything it needs: its rows and the
job (cell text and weights; a worker compiles it once, by its token). Tasks depend on
nothing, so the scheduler spreads them over the workers from the start, and if a worker
dies it sends that worker's shards to another (up to
``distributed.scheduler.allowed-failures`` times, 3 by default). Shards are made large
enough that the job is a small part of each (:func:`default_shard_size`). A shard's result
is written to its own rows, so a shard computed twice writes the same numbers to the
same place: nothing is lost or counted twice. Weight gradients, which are sums over
the batch, are added in shard order (in float64, rounded once to the run's dtype), so
the result does not depend on which shard finished first.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import CancelledError, Client, Future, KilledWorker, as_completed

from lstm_graph.cell import Runner
from lstm_graph.checks import (
    REAL_KINDS,
    check_state,
    run_allocations,
    states_mapping,
    unread,
    work_allocations,
)
from lstm_graph.distributed import DaskError
from lstm_graph.distributed.chunked import ChunkedNpz
from lstm_graph.distributed.cluster import arrivals, one_line, result, threads
from lstm_graph.distributed.jobs import (
    Job,
    Moments,
    Shard,
    check_finite,
    command_arrays,
    run_shard,
)
from lstm_graph.errors import DataError
from lstm_graph.executors.contract import Progress
from lstm_graph.formats import memory
from lstm_graph.formats.memory import MemoryLimitError, allocation
from lstm_graph.layers import check_lengths

#: By default a worker's arrays for one shard take at most this many bytes: large enough
#: that a step's fixed costs are shared by many sequences, small enough that a step's
#: values stay near the cache (measured: gradients of 1024 sequences of 1000 steps ran
#: fastest in shards of 64-128 sequences, about 0.5-1 GB each).
SHARD_BYTES = 512 << 20
#: By default a shard holds at least this many times the bytes of the job's weights.
JOB_SHARE = 8
#: Shards out at once per worker thread: one computing, one waiting behind it.
IN_FLIGHT = 2


def shard_bounds(batch: int, size: int) -> list[tuple[int, int]]:
    """``(b0, b1)`` of each shard: ``⌈batch / size⌉`` shards, sizes differing by at most one.

    >>> shard_bounds(10, 4)
    [(0, 3), (3, 6), (6, 10)]
    """
    count = math.ceil(batch / size)
    edges = [batch * k // count for k in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def row_bytes(runner: Runner, command: str, steps: int, dtype: np.dtype) -> int:
    """Bytes a worker holds per sequence of a shard: its rows of ``x`` and every array the
    run (and the trace or the backward pass) makes, in every layer and direction
    (:mod:`lstm_graph.checks`)."""
    held = [allocation("x", (steps, 1, runner.input_size), dtype)]
    for unit in runner.units:
        held += [*run_allocations(unit.cell.schedule, steps, 1, unit.input_size,
                                  runner.hidden_size, dtype, dtype),
                 *work_allocations(unit.cell.schedule, command, steps, 1, unit.input_size,
                                   runner.hidden_size, dtype)]
    return sum(a.nbytes for a in held)


def default_shard_size(batch: int, per_sequence: int, workers: int, job_bytes: int = 0,
                       most: int | None = None) -> int:
    """Sequences per shard: a worker's arrays for it take at most :data:`SHARD_BYTES` (or
    :data:`JOB_SHARE` times the job's weights, which travel with every shard, if that is
    more; and no more than ``most`` bytes, where given: ``$LSTM_GRAPH_MAX_BYTES``, which a
    local cluster's workers are bound by), and a whole number of shards per worker thread
    (at least one each), so that every worker gets the same work.

    >>> default_shard_size(1000, 8 << 20, 2)  # 8 MiB a sequence: 64 fit; 16 shards of 62-63
    63
    >>> default_shard_size(1000, 8 << 20, 2, most=256 << 20)  # 32 fit: 32 shards of 31-32
    32
    """
    limit = max(SHARD_BYTES, JOB_SHARE * job_bytes)
    if most is not None:
        limit = min(limit, max(1, most - job_bytes))
    shards = max(workers, math.ceil(batch * per_sequence / limit))
    size = whole_rounds(batch, math.ceil(batch / shards), workers)
    return size if most is None else \
        whole_rounds(batch, max(1, min(size, limit // max(1, per_sequence))), workers)


def whole_rounds(batch: int, size: int, workers: int) -> int:
    """The largest shard size up to ``size`` that cuts ``batch`` sequences into a whole
    number of shards per worker thread (or one sequence a shard, where there are fewer
    sequences than threads), as even as can be.

    >>> whole_rounds(200, 12, 2)  # 17 shards of 12 are 18 (9 a thread) of 11-12
    12
    >>> whole_rounds(200, 13, 2)  # 16 shards (8 a thread) of 12-13
    13
    """
    shards = min(batch, workers * math.ceil(math.ceil(batch / size) / workers))
    return math.ceil(batch / shards)


@dataclass(frozen=True)
class Layout:
    """The arrays a command writes, in the file's order: shapes, dtypes, batch axes (``None``
    for a sum over the batch)."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    axes: dict[str, int | None]

    @property
    def nbytes(self) -> int:
        return sum(math.prod(shape) * self.dtypes[name].itemsize
                   for name, shape in self.shapes.items())


def output_layout(job: Job, steps: int, batch: int | None, lengths: bool = False) -> Layout:
    """What ``job`` writes for ``x`` of ``steps`` steps and ``batch`` sequences (``None``:
    one sequence ``(T, I)``), with sequence ``lengths`` or without: the arrays of one step
    of one sequence, run here by the reference executor, stretched to ``steps`` along
    their time axis and to ``batch`` along their batch axis.

    >>> from lstm_graph.distributed.jobs import cell_source
    >>> weights = cell_source("lstm").compile().random_weights(3, 4, seed=0)
    >>> job = Job("run", (cell_source("lstm"),), weights, 3, 4, "float32", "plan")
    >>> output_layout(job, 7, 5).shapes
    {'y': (7, 5, 4), 'c': (5, 4), 'h': (5, 4)}
    """
    compiled = job.compile(executor="reference")
    x = np.zeros((1, job.input_size) if batch is None else (1, 1, job.input_size), job.dtype)
    probe = command_arrays(job.command, compiled, x, None, None,
                           np.ones(1, np.int64) if lengths else None)
    shapes, dtypes = {}, {}
    for name, value in probe.arrays.items():
        shape, axis = list(value.shape), probe.axes[name]
        if name in probe.times:
            shape[probe.times[name]] = steps
        if axis is not None and batch is not None:
            shape[axis] = batch
        shapes[name], dtypes[name] = tuple(shape), value.dtype
    return Layout(shapes, dtypes, dict(probe.axes))


@dataclass(frozen=True)
class Outcome:
    """What a sharded command wrote and how it ran."""

    path: Path
    shapes: dict[str, tuple[int, ...]]  # every array written, in the file's order
    moments: dict[str, Moments]  # of the arrays asked for with ``measure``
    loss: float | None  # grad: sum(grad_y · y)
    shards: int
    shard_size: int  # sequences of the largest shard
    workers: int
    ran_with: list[str]  # the executors the shards ran with
    seconds: float


@dataclass
class _Folded:
    """What is added up over shards, in shard order."""

    sums: dict[str, np.ndarray]
    moments: dict[str, Moments]
    loss: float | None


class _Run:
    """The client's bookkeeping for one sharded command (see :func:`execute`)."""

    def __init__(self, job: Job, x: Any, state: dict[str, np.ndarray], grad_y: Any,
                 bounds: list[tuple[int, int]], out: ChunkedNpz, measure: Sequence[str],
                 allow_nonfinite: bool, lengths: np.ndarray | None = None,
                 files: Mapping[str, str] | None = None):
        self.job, self.x, self.grad_y, self.bounds, self.out = job, x, grad_y, bounds, out
        self.files = dict(files or {})  # "x", "grad_output": the file each came from
        self.state = state  # checked and converted (see check)
        self.lengths = lengths
        self.measure, self.allow_nonfinite = set(measure), allow_nonfinite
        self.unbatched = np.ndim(x) == 2
        self.axis = 0 if job.batch_first and not self.unbatched else 1
        self.state_axis = 0 if job.layers == 1 and job.direction != "bidirectional" else 1
        self.batch = 1 if self.unbatched else int(x.shape[self.axis])
        self.dtype = np.dtype(job.dtype)
        self.steps = steps = len(x) if self.unbatched else int(x.shape[1 - self.axis])
        layout = output_layout(job, steps, None if self.unbatched else self.batch,
                               lengths is not None)
        self.order, self.axes = list(layout.shapes), layout.axes
        out.reserve(layout.nbytes, len(layout.shapes))
        for name in self.order:  # their room taken on the disk now, before any shard is sent
            out.array(name, layout.shapes[name], layout.dtypes[name])
        self.waiting: dict[int, _Folded] = {}
        self.total: _Folded | None = None
        self.folded = 0
        self.ran_with: set[str] = set()

    def rows(self, k: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None,
                                    np.ndarray | None]:
        """Shard ``k``'s ``x`` (read, converted and checked), initial states, ``grad_y``
        and lengths."""
        b0, b1 = self.bounds[k]
        pick = (slice(None),) if self.unbatched else \
            (slice(None),) * self.axis + (slice(b0, b1),)
        lengths = None if self.lengths is None else self.lengths[b0:b1]
        past = unread(lengths, self.steps, np.ndim(self.x), self.axis == 0)
        x = self._converted("x", self.x[pick], b0, "clean the input", past)
        state = {name: value if self.unbatched else np.ascontiguousarray(
            value[(slice(None),) * self.state_axis + (slice(b0, b1),)])
            for name, value in self.state.items()}
        grad_y = None if self.grad_y is None else \
            self._converted("grad_output", self.grad_y[pick], b0, "clean it", past)
        return x, state, grad_y, lengths

    def _converted(self, what: str, raw: np.ndarray, b0: int, fix: str,
                   past: np.ndarray | None) -> np.ndarray:
        """A shard's rows of ``what`` in the run's dtype, checked as a plain run checks
        them (the index in the error is the whole batch's), but where ``past`` their
        lengths."""
        with np.errstate(over="ignore"):  # a number too large for the dtype: named below
            converted = np.array(raw, dtype=self.dtype, order="C")
        if not self.allow_nonfinite:
            try:
                check_finite(what, raw, converted, None if self.unbatched else b0, fix,
                             self.axis, past)
            except DataError as err:  # named by its file, as a plain run names it
                if what not in self.files:
                    raise
                raise DataError(f"{self.files[what]}: {err}") from None
        return converted

    def place(self, k: int, shard: Shard) -> None:
        """Write shard ``k``'s rows into the output; keep its sums to add in order."""
        b0, b1 = self.bounds[k]
        if list(shard.arrays) != self.order:
            raise DaskError(f"shard {k} came back with arrays {', '.join(shard.arrays)}, but "
                            f"this run writes {', '.join(self.order)}; do the workers run the "
                            "lstm-graph this machine runs?")
        sums, moments = {}, {}
        for name, value in shard.arrays.items():
            axis, target = self.axes[name], self.out[name]
            rows = target if axis is None or self.unbatched else \
                target[(slice(None),) * axis + (slice(b0, b1),)]
            if value.shape != rows.shape:
                raise DaskError(f"shard {k} came back with {name} of shape {value.shape}, "
                                f"expected {rows.shape}; do the workers run the lstm-graph "
                                "this machine runs?")
            if axis is None and value.dtype.kind == "U":  # a trace's cell: alike in all
                rows[...] = value
                continue
            if axis is None:
                sums[name] = value
                continue
            rows[...] = value
            if name in self.measure:
                moments[name] = Moments.of(value)
        self.ran_with.add(shard.ran_with)
        self.waiting[k] = _Folded(sums, moments, shard.loss)
        while self.folded in self.waiting:
            self._fold(self.waiting.pop(self.folded))
            self.folded += 1

    def _fold(self, part: _Folded) -> None:
        if self.total is None:
            self.total = _Folded({name: value.astype(np.float64)
                                  for name, value in part.sums.items()},
                                 dict(part.moments), part.loss)
            return
        for name, value in part.sums.items():
            self.total.sums[name] += value
        for name, found in part.moments.items():
            self.total.moments[name] = self.total.moments[name].merge(found)
        if part.loss is not None and self.total.loss is not None:
            self.total.loss += part.loss

    def finish(self) -> _Folded:
        """Write the sums; return what was added up."""
        if self.total is None or self.folded != len(self.bounds):
            raise DaskError(f"only {self.folded} of {len(self.bounds)} shards came back")
        for name, value in self.total.sums.items():
            target = self.out[name]
            target[...] = value.astype(target.dtype)
            if name in self.measure:
                self.total.moments[name] = Moments.of(target)
        return self.total


def check(runner: Runner, x: Any, state: Mapping[str, Any] | None, allow_nonfinite: bool,
          grad_y: Any = None, lengths: Any = None
          ) -> tuple[int, dict[str, np.ndarray], np.ndarray | None]:
    """What a plain run would refuse at once, refused before any shard is sent: ``x``'s
    dtype and shape (its values are checked shard by shard), the initial states (all of
    them, as a plain run does: they are small), ``grad_y``'s dtype and shape (its values
    shard by shard, as ``x``'s), the lengths. Returns the batch size (1 for one sequence),
    the states, checked and converted, in the runner's shapes, and the lengths."""
    state = states_mapping(state, "state", runner.cell.graph.states)
    for what, array in (("x", x), ("grad_y", grad_y)):
        if array is not None and np.dtype(array.dtype).kind not in REAL_KINDS:
            raise DataError(f"{what} has dtype {array.dtype}; it must hold real numbers")
    shape = tuple(np.shape(x))
    layout = "(B, T, I)" if runner.batch_first else "(T, B, I)"
    if len(shape) not in (2, 3):
        raise DataError(f"x has shape {shape}; expected {layout} or (T, I)")
    if shape[-1] != runner.input_size:
        raise DataError(f"x has shape {shape}: its last axis is {shape[-1]}, but the cell's "
                        f"input size I is {runner.input_size}")
    if 0 in shape[:-1]:
        raise DataError(f"x has shape {shape}: no time steps or no sequences")
    unbatched = len(shape) == 2
    batch = 1 if unbatched else shape[0 if runner.batch_first else 1]
    steps = shape[0] if unbatched or not runner.batch_first else shape[1]
    if grad_y is not None:
        want = (*shape[:-1], runner.output_width)
        if tuple(np.shape(grad_y)) != want:
            raise DataError(f"grad_y has shape {tuple(np.shape(grad_y))}, expected {want}")
    checked = {}
    for name, value in dict(state or {}).items():  # those not given start at zero in each job
        want_state = runner.state_shape(name, None if unbatched else batch)
        checked[name] = check_state({name: value}, runner.cell.graph.states, batch,
                                    want_state[-1], unbatched, allow_nonfinite, np,
                                    runner.dtype, want_state)[name]
    unknown = sorted(set(state or {}) - set(runner.cell.graph.states))
    if unknown:
        raise DataError(f"unknown state {', '.join(unknown)}; this cell's states are "
                        f"{', '.join(runner.cell.graph.states)}")
    found = None if lengths is None else check_lengths(lengths, batch, steps)
    return batch, checked, found


def execute(client: Client, job: Job, x: Any, out: Path,
            state: Mapping[str, np.ndarray] | None = None, grad_y: Any = None,
            shard_size: int | None = None, measure: Sequence[str] = (),
            allow_nonfinite: bool = False, progress: Progress | None = None,
            lengths: Any = None, files: Mapping[str, str] | None = None) -> Outcome:
    """Run ``job`` over ``x`` ``(T, B, I)`` (or one sequence ``(T, I)``) on ``client``'s
    cluster, sharded over the batch, and write what the plain command writes to ``out``
    (an ``.npz``, whole or not at all). ``state`` maps states to ``(B, H)`` starts and
    ``grad_y`` is ``grad``'s ``(T, B, width)`` (``None``: the last step's sum); both, like
    ``x``, may be memory-mapped. ``shard_size`` is in sequences (default: see
    :func:`default_shard_size`); ``measure`` names arrays to return the :class:`Moments` of;
    ``progress`` is called with the number of sequences of each shard written. The output's
    arrays are made on the disk (:func:`output_layout`) before any shard is sent: an
    output the disk cannot hold is refused then (:meth:`ChunkedNpz.reserve`). ``files``
    names the file ``x`` (and ``"grad_output"``) came from, for the errors about their
    numbers (NaN, infinity, a number too large for the dtype).
    """
    began = time.perf_counter()
    runner = job.compile(executor="reference")  # checks, sizes: no executor is built
    batch, checked, found = check(runner, x, state, allow_nonfinite, grad_y, lengths)
    dtype = np.dtype(job.dtype)
    steps = len(x) if np.ndim(x) == 2 or not job.batch_first else int(x.shape[1])
    per_sequence = row_bytes(runner, job.command, steps, dtype)
    workers = max(1, threads(client))
    window = IN_FLIGHT * workers
    # the local cluster's workers are bound as this process is; a remote one's by their own
    most = memory.set_limit()
    most = most if most is not None and client.cluster is not None else None
    size = shard_size or default_shard_size(batch, per_sequence, workers, job.nbytes, most)
    if shard_size is None and most is not None:  # and the client's rows of x in flight fit
        if per_sequence + job.nbytes > most:
            raise MemoryLimitError(
                f"one sequence's arrays on a worker ({memory.size_text(per_sequence)}, with "
                f"the weights {memory.size_text(per_sequence + job.nbytes)}) are more than "
                f"the limit of {memory.size_text(most)} set by {memory.ENV}: no shard fits")
        size = max(1, min(size, most // (window * steps * job.input_size * dtype.itemsize)))
        size = whole_rounds(batch, size, workers)  # the cap undid default_shard_size's
    bounds = shard_bounds(batch, size)
    flying = min(window, len(bounds))  # shards of the batch sent at once
    in_flight = (steps, min(batch, window * size), job.input_size)
    memory.require([allocation(
        f"the rows of x in flight ({flying} shard{'s' * (flying != 1)} of "
        f"{'up to ' * (len(bounds) > 1)}{min(size, batch)} sequences)", in_flight, dtype)],
        "the client")
    with ChunkedNpz(out) as written:
        run = _Run(job, x, checked, grad_y, bounds, written, measure, allow_nonfinite, found,
                   files)
        _submit_all(client, run, window, progress)
        total = run.finish()
        written.commit()
        shapes = {name: tuple(written[name].shape) for name in run.order}
    return Outcome(out, shapes, total.moments, total.loss, len(bounds),
                   max(b1 - b0 for b0, b1 in bounds), workers,
                   sorted(run.ran_with), time.perf_counter() - began)


def _submit_all(client: Client, run: _Run, window: int, progress: Progress | None) -> None:
    """Submit every shard, at most ``window`` ahead of the first not yet written; write
    each result as it comes. On any failure, cancel what is still out."""
    tag = uuid.uuid4().hex[:12]
    shard_of: dict[str, int] = {}
    out: set[Future] = set()
    arrived = as_completed()
    submitted = 0

    def top_up() -> None:
        nonlocal submitted
        while submitted < len(run.bounds) and submitted - run.folded < window:
            x, state, grad_y, lengths = run.rows(submitted)
            future = client.submit(run_shard, run.job, x, state or None, grad_y, lengths,
                                   key=f"lstm-graph-{run.job.command}-{tag}-{submitted}")
            shard_of[str(future.key)] = submitted
            out.add(future)
            arrived.add(future)
            submitted += 1

    try:
        top_up()
        for future in arrivals(client, arrived, lambda: out):
            k = shard_of[str(future.key)]
            try:
                shard = result(client, future)
            except KilledWorker:
                b0, b1 = run.bounds[k]
                raise DaskError(f"shard {k} (sequences {b0}–{b1 - 1}) was lost with its "
                                "worker too many times; a worker may be running out of "
                                "memory: give a smaller --shard-size") from None
            except MemoryLimitError as err:
                b0, b1 = run.bounds[k]
                what = "1 sequence" if b1 - b0 == 1 else f"{b1 - b0} sequences"
                advice = "give a smaller --shard-size" if b1 - b0 > 1 else \
                    f"no shard is smaller: give the workers more memory ({memory.ENV})"
                raise MemoryLimitError(f"on a worker, for shard {k} ({what}): {err}; "
                                       f"{advice}") from None
            except (CancelledError, OSError) as err:
                raise DaskError(f"the Dask cluster lost the work ({one_line(err)}); is the "
                                "scheduler still running?") from None
            run.place(k, shard)
            if progress is not None:
                progress(run.bounds[k][1] - run.bounds[k][0])
            out.discard(future)
            future.release()
            top_up()
    finally:
        client.cancel(list(out))
