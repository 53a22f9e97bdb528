"""The NumPy plan: a cell's time loop as generated Python over preallocated buffers.

Like ``torch.fx``'s code generation, the plan writes the time loop of one
cell as Python source and compiles it once, so a step costs a handful of NumPy
calls and no graph walking, dict lookups or allocation. It is written in two
passes: :func:`events` orders what one step does, from the layout alone (a
GEMM for a group, a peephole term, a run of fused activations, an element-wise
op, a state carried over); :class:`NumpyPlan` then writes one statement per
event. The source is ours, built from the validated graph with generated
variable names; nothing from a cell file is ever evaluated. Read it with
``plan.source``.

What a step does (see :mod:`~lstm_graph.executors.layout` for the analysis):

- one GEMM per step for each operand the linears share (``h[t-1]`` feeds
  all four LSTM gates at once), the hoisted part ``S`` added with one add;
- sigmoid and tanh after a linear are computed on the whole run of adjacent
  gates at once, in one of the op table's fast forms (:data:`FAST_FORMS`):
  ``1 + exp(s·z)`` then a reciprocal or ``2/· − 1`` for large steps (NumPy's
  float32 exp is about twice as fast as its tanh), or one ``tanh`` call for
  small steps (where each call's overhead is what costs); the scale ``s`` is
  folded into the weights (a power of two: exact), and the result agrees with
  the reference to float32 rounding;
- every element-wise op writes into its own buffer with ``out=``; new states
  are swapped with the old ones rather than copied;
- with a large batch, the rows are split between threads: each row of the
  batch is its own recurrence, so each thread runs the whole time loop on its
  rows, with single-threaded BLAS and no synchronisation (NumPy releases the
  GIL in large loops). Below :data:`THREAD_THRESHOLD` the many small NumPy
  calls would fight over the GIL, so one thread and BLAS's own threads win.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from types import CodeType
from typing import Any

import numpy as np

from lstm_graph.executors.backward import CompiledGrad
from lstm_graph.executors.contract import Array, Progress, Spec
from lstm_graph.executors.layout import Layout, analyse
from lstm_graph.executors.prepare import (
    hoist,
    pack_group,
    pack_hoisted,
    static_trace,
    static_values,
    usable_threads,
)
from lstm_graph.ir import NodeKind, Size
from lstm_graph.ops import FAST_FORMS, Attrs, Op
from lstm_graph.schedule import Schedule

#: Steps up to this size (batch × hidden) use the "tanh" fast form, larger ones "exp".
SMALL_STEP = 1024
#: Work per step (batch × hidden) from which splitting the rows between threads pays off
#: (measured: 256 × 1024 gains 10 %, 64 × 256 loses to GIL contention).
THREAD_THRESHOLD = 65536
#: Row counts whose namespaces a plan keeps (a run may use the first rows of its buffers).
ROW_COUNTS = 8
_UFUNCS = ("matmul", "add", "subtract", "multiply", "divide", "negative", "exp", "reciprocal",
           "copyto", "maximum", "tanh")


# -- pass 1: what a step does, in order ----------------------------------------------------

@dataclass(frozen=True)
class Gemm:
    """``source``'s per-step GEMM for its group; then the hoisted part added to the group's
    accumulators."""

    source: str


@dataclass(frozen=True)
class LoadHoisted:
    """A linear with no per-step GEMM (peepholes only) starts as its hoisted block."""

    linear: str


@dataclass(frozen=True)
class AddProduct:
    """A linear's block of another group's GEMM, added into its accumulator."""

    source: str
    linear: str


@dataclass(frozen=True)
class AddPeep:
    """A peephole term ``operand ⊙ param``, added into a linear's accumulator."""

    linear: str
    operand: str
    param: str


@dataclass(frozen=True)
class Activate:
    """The fused activations of adjacent accumulators: one call of the fast form's core,
    one finishing call per run of like activations."""

    linears: tuple[str, ...]


@dataclass(frozen=True)
class Compute:
    """One element-wise op into its own buffer."""

    node: str


@dataclass(frozen=True)
class WriteOutput:
    """``y_t`` ← the output's value."""

    node: str


@dataclass(frozen=True)
class CarryState:
    """The state's new value becomes the next step's old one: its buffer swapped with
    the old one's (``swap``), or copied where the value lives in a shared buffer."""

    state: str
    swap: bool


Event = Gemm | LoadHoisted | AddProduct | AddPeep | Activate | Compute | WriteOutput | CarryState


def events(schedule: Schedule, layout: Layout) -> list[Event]:
    """What one step does, in order: everything as soon as what it reads exists.

    A GEMM runs once its operand exists; a term is added into a linear once the
    linear's accumulator has been written this step; a linear's fused activation
    runs once its last term is in, adjacent ones together; element-wise ops follow
    the schedule.

    >>> from lstm_graph.library import load_cell
    >>> cell = load_cell("gru")
    >>> [type(e).__name__ for e in events(cell.schedule, analyse(cell.schedule))][:3]
    ['Gemm', 'Activate', 'Compute']
    """
    graph = schedule.graph
    found: list[Event] = []
    dynamic = {n: info for n, info in layout.linears.items() if n not in layout.static}
    pending = {n: len({s for s, _ in info.matrix}) + len(info.peep) for n, info in dynamic.items()}
    peeps: dict[str, list[tuple[str, str]]] = {}
    for name, info in dynamic.items():
        for operand, param in info.peep:
            peeps.setdefault(operand, []).append((name, param))
    written: set[str] = set()  # accumulators written this step
    waiting: dict[str, list[Event]] = {}  # terms whose accumulator is not written yet
    complete: list[str] = []  # linears whose last term just went in
    fused: set[str] = set()  # activations an Activate computes

    def write(linears: list[str]) -> None:
        for linear in linears:
            written.add(linear)
            found.extend(waiting.pop(linear, []))

    def add_into(linear: str, event: Event) -> None:
        if linear in written:
            found.append(event)
        else:
            waiting.setdefault(linear, []).append(event)

    def count_down(linear: str) -> None:
        pending[linear] -= 1
        if pending[linear] == 0:
            complete.append(linear)

    def activate() -> list[str]:
        """Activate the fused linears just completed; return the values now there."""
        ready = [n for n in complete if layout.linears[n].activation]
        there = [n for n in complete if not layout.linears[n].activation]
        complete.clear()
        runs: list[list[str]] = []
        for name in sorted(ready, key=lambda n: (layout.linears[n].group or "",
                                                 n in layout.standalone, layout.linears[n].column)):
            info = layout.linears[name]
            last = layout.linears[runs[-1][-1]] if runs else None
            if last is not None and info.group is not None and last.group == info.group \
                    and last.column + 1 == info.column:
                runs[-1].append(name)
            else:
                runs.append([name])
        for run in runs:
            found.append(Activate(tuple(run)))
            for name in run:
                (consumer,) = graph.consumers(name)
                fused.add(consumer)
                there.append(consumer)
        return there

    def at_start(node_id: str) -> bool:
        return node_id in layout.static or graph.node(node_id).kind is not NodeKind.OP

    def after(value: str | None) -> None:
        """Everything that becomes possible once ``value`` (None: the step start) exists."""
        sources = [s for s in layout.groups if (at_start(s) if value is None else s == value)]
        operands = [o for o in peeps if (at_start(o) if value is None else o == value)]
        for source in sources:
            group = layout.groups[source]
            found.append(Gemm(source))
            write(group.members[: group.accumulators])
            for member in group.members[group.accumulators:]:
                add_into(member, AddProduct(source, member))
            for member in group.members:
                count_down(member)
        for operand in operands:
            for linear, param in peeps[operand]:
                add_into(linear, AddPeep(linear, operand, param))
                count_down(linear)
        for there in activate():
            after(there)

    found += [LoadHoisted(linear) for linear in layout.standalone]
    write(layout.standalone)
    after(None)
    for node_id in schedule.order:
        node = graph.node(node_id)
        if node.kind is NodeKind.OP and node_id not in layout.static and \
                not node.is_linear and node_id not in fused:
            found.append(Compute(node_id))
            after(node_id)
    (output,) = graph.outputs
    found.append(WriteOutput(output))
    computed = {e.node for e in found if isinstance(e, Compute)}
    found += [CarryState(state, state in computed) for state in graph.states]
    return found


# -- pass 2: one statement per event -----------------------------------------------------

def _apply(op: Op, xp: Any, attrs: Attrs, *args: Array) -> Array:
    """``op``'s reference form on ``args``: how the plan computes a function that has no
    NumPy statement of its own in the op table."""
    return op.reference(xp, list(args), [], attrs)


#: A float literal in a generated statement (integers only appear in slices).
_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d*(?:[eE][-+]?\d+)?|(?<![\w.])-?\d+[eE][-+]?\d+")


class _Names:
    """The generated names of the step loop and the arrays they stand for."""

    def __init__(self, xp: Any, dtype: np.dtype) -> None:
        self.arrays: dict[str, Any] = {}  # name -> array (None: set per run)
        self.batch_axis: dict[str, int] = {}  # name -> the axis that holds the batch
        self.constants: dict[float, str] = {}
        self.xp, self.dtype = xp, dtype

    def bind(self, prefix: str, hint: str, value: Any, batch_axis: int | None = None) -> str:
        base = f"{prefix}_{re.sub(r'[^0-9A-Za-z_]', '_', hint.replace('[t-1]', '_old'))}"
        name, k = base, 2
        while name in self.arrays:
            name, k = f"{base}{k}", k + 1
        self.arrays[name] = value
        if batch_axis is not None:
            self.batch_axis[name] = batch_axis
        return name

    def numbers(self, statement: str) -> str:
        """The statement with its numbers as 0-d arrays of the plan's dtype, which NumPy
        combines with arrays twice as fast as Python floats (no conversion)."""
        return _FLOAT.sub(lambda m: self.constant(float(m.group())), statement)

    def constant(self, value: float) -> str:
        if value not in self.constants:
            hint = repr(value).replace("-", "minus").replace(".", "_").replace("+", "")
            self.constants[value] = self.bind("k", hint, self.xp.asarray(value, self.dtype))
        return self.constants[value]


@dataclass
class _Part:
    """One namespace of the generated loop, running rows ``lo:hi`` of the batch."""

    namespace: dict[str, Any]
    lo: int
    hi: int


class NumpyPlan(CompiledGrad):
    """The compiled NumPy executor for one cell, batch size and dtype (NumPy or CuPy arrays).

    ``threads`` splits the batch rows between threads (default: by step size).
    """

    name = "numpy"
    backends = ("numpy", "cupy")
    weight_copies = 1  # each group's weights, transposed and side by side

    def __init__(self, spec: Spec, threads: int | None = None):
        super().__init__(spec)
        self.layout = analyse(spec.schedule)
        on_cpu = spec.xp is np
        self.threads = (threads or default_threads(spec.batch, spec.hidden)) if on_cpu else 1
        self.form = FAST_FORMS["tanh" if spec.batch * spec.hidden <= SMALL_STEP else "exp"]
        self.events = events(spec.schedule, self.layout)
        self.names = _Names(spec.xp, spec.dtype)
        self.hoisting = pack_hoisted(self.layout, spec.params, spec.hidden, spec.dtype,
                                     self._scale, spec.xp)
        self._bind()
        self._lines = [self.names.numbers(self._statement(event)) for event in self.events
                       if not isinstance(event, CarryState) or not event.swap]
        self._source = self._loop(self._lines)
        self._code = self._compile(self._source)
        self._namespaces: OrderedDict[tuple[CodeType, int], list[_Part]] = OrderedDict()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lstm-graph") \
            if self.threads > 1 else None
        self._recorders: dict[str, str] = {}  # assignment -> the array recording it
        self._traced_code: CodeType | None = None
        self._stale = False  # the loop binds older weights than the spec's

    @property
    def source(self) -> str:
        self._reload()
        return self._source

    def update(self, params: Mapping[str, Array]) -> None:
        """New weights: the backward pass reads them at once; the generated loop, which
        binds its weights (scaled, packed), is made anew when it next runs."""
        super().update(params)
        self._stale = True

    def _reload(self) -> None:
        if self._stale:
            if self._pool is not None:
                self._pool.shutdown()
            self.__init__(self.spec, self.threads)  # type: ignore[misc]

    # -- names and buffers -------------------------------------------------------------------

    def _scale(self, linear: str) -> float:
        activation = self.layout.linears[linear].activation
        return self.form.scale[activation] if activation else 1.0

    def _buffer(self, width: int) -> Array:
        return self.spec.xp.empty((self.spec.batch, width), dtype=self.spec.dtype)

    def _bind(self) -> None:
        """A name for every value the loop reads or writes (``self.var``: node -> expression)."""
        spec, layout, names = self.spec, self.layout, self.names
        graph, hidden = spec.schedule.graph, spec.hidden
        names.bind("run", "S", None, 1)
        names.bind("run", "Y", None, 1)
        (input_name,) = graph.inputs
        self.var: dict[str, str] = {input_name: f"{names.bind('run', 'x', None, 1)}[t]"}
        self.per_run: dict[str, tuple[str, str]] = {}  # name -> ("state"|"static", key)
        for name in graph.states:
            self.var[f"{name}[t-1]"] = names.bind("old", name, None, 0)
            self.per_run[self.var[f"{name}[t-1]"]] = ("state", name)
        for node in graph.nodes.values():
            if node.kind is NodeKind.CONST:
                self.var[node.id] = repr(node.value)
        for node_id in spec.schedule.order:
            if node_id in layout.static and graph.node(node_id).kind is NodeKind.OP:
                scalar = spec.schedule.sizes[node_id] is Size.SCALAR
                array = names.bind("static", node_id, None, None if scalar else 1)
                self.var[node_id] = array if scalar else f"{array}[t]"
                self.per_run[array] = ("static", node_id)
        self.groups: dict[str, tuple[str, Array, int]] = {}  # source -> name, buffer, S column
        hoisted_at = 0
        for source, group in layout.groups.items():
            buffer = self._buffer(len(group.members) * hidden)
            self.groups[source] = (names.bind("G", source, buffer, 0), buffer, hoisted_at)
            hoisted_at += group.accumulators * hidden
        for linear in layout.standalone:
            self.var[linear] = names.bind("acc", linear, self._buffer(hidden), 0)
        for info in layout.linears.values():
            if info.group is not None:
                buffer = self.groups[info.group][1]
                start = info.column * hidden
                self.var[info.id] = names.bind("z", info.id, buffer[:, start:start + hidden], 0)
        for event in self.events:
            if isinstance(event, Compute):
                self.var[event.node] = names.bind("v", event.node,
                                                  self._buffer(spec.width(event.node)), 0)
            elif isinstance(event, Activate):
                for linear in event.linears:
                    (consumer,) = graph.consumers(linear)
                    self.var[consumer] = self.var[linear]
        self.spans: dict[tuple[str, ...], str] = {}  # adjacent accumulators -> one view

    def _span(self, linears: tuple[str, ...]) -> str:
        """A name for the adjacent accumulators of ``linears`` (one view)."""
        if len(linears) == 1:
            return self.var[linears[0]]
        if linears not in self.spans:
            first = self.layout.linears[linears[0]]
            buffer = self.groups[str(first.group)][1]
            hidden = self.spec.hidden
            start, stop = first.column * hidden, (first.column + len(linears)) * hidden
            self.spans[linears] = self.names.bind("z", "_".join(linears), buffer[:, start:stop], 0)
        return self.spans[linears]

    # -- statements --------------------------------------------------------------------------

    def _statement(self, event: Event) -> str:
        hidden, var, names = self.spec.hidden, self.var, self.names
        if isinstance(event, Gemm):
            group = self.layout.groups[event.source]
            name, buffer, hoisted_at = self.groups[event.source]
            packed = pack_group(self.layout, event.source, self.spec.params, self.spec.dtype,
                                self._scale)
            weights = names.bind("W", event.source, self.spec.xp.asarray(packed))
            statement = f"matmul({var[event.source]}, {weights}, out={name})"
            if group.accumulators:
                width = group.accumulators * hidden
                acc = name if buffer.shape[1] == width else \
                    names.bind("z", f"{event.source}_acc", buffer[:, :width], 0)
                hoisted = "s_t" if hoisted_at == 0 and width == self.hoisting.width else \
                    f"s_t[:, {hoisted_at}:{hoisted_at + width}]"
                statement += f"; add({acc}, {hoisted}, out={acc})"
            return statement
        if isinstance(event, LoadHoisted):
            column = self.layout.hoisted_column(event.linear) * hidden
            return f"copyto({var[event.linear]}, s_t[:, {column}:{column + hidden}])"
        if isinstance(event, AddProduct):
            k = self.layout.groups[event.source].members.index(event.linear)
            part = names.bind("z", f"{event.source}_{event.linear}",
                              self.groups[event.source][1][:, k * hidden:(k + 1) * hidden], 0)
            target = var[event.linear]
            return f"add({target}, {part}, out={target})"
        if isinstance(event, AddPeep):
            weight = names.bind("p", event.param, self.spec.xp.asarray(
                self.spec.params[event.param] * self.spec.dtype.type(self._scale(event.linear))))
            tmp = names.bind("tmp", event.param, self._buffer(hidden), 0)
            target = var[event.linear]
            return (f"multiply({var[event.operand]}, {weight}, out={tmp}); "
                    f"add({target}, {tmp}, out={target})")
        if isinstance(event, Activate):
            whole = self._span(event.linears)
            parts = [self.form.core.format(src=whole, out=whole)]
            kinds = [self.layout.linears[n].activation for n in event.linears]
            start = 0
            for end in range(1, len(kinds) + 1):
                if end == len(kinds) or kinds[end] != kinds[start]:
                    finish = self.form.finish[str(kinds[start])]
                    if finish:
                        parts.append(finish.format(out=self._span(event.linears[start:end])))
                    start = end
            return "; ".join(parts)
        if isinstance(event, Compute):
            node = self.spec.schedule.graph.node(event.node)
            args, out = [var[a] for a in node.args], var[event.node]
            if node.op in self.form.scale:
                scale, source, parts = self.form.scale[str(node.op)], args[0], []
                if scale != 1.0:
                    parts.append(f"multiply({source}, {scale!r}, out={out})")
                    source = out
                parts.append(self.form.core.format(src=source, out=out))
                if self.form.finish[str(node.op)]:
                    parts.append(self.form.finish[str(node.op)].format(out=out))
                return "; ".join(parts)
            if node.operation.numpy is None:  # the op table's reference form, into the buffer
                function = names.bind("f", event.node, partial(
                    _apply, node.operation, self.spec.xp, node.attributes))
                return f"copyto({out}, {function}({', '.join(args)}))"
            return node.operation.numpy.format(*args, out=out)
        if isinstance(event, WriteOutput):
            return f"copyto(y_t, {var[event.node]})"
        return f"copyto({var[event.state + '[t-1]']}, {var[event.state]})"  # a copied state

    def _loop(self, lines: list[str], recorded: Mapping[str, str] | None = None) -> str:
        """The step loop; ``recorded`` (assignment -> array) adds one copy per step of
        each assignment's value, after the step and before states are swapped."""
        swapped = [(self.var[f"{e.state}[t-1]"], self.var[e.state]) for e in self.events
                   if isinstance(e, CarryState) and e.swap]
        source = ["def steps(T, progress):"]
        if swapped:
            source.append(f"    global {', '.join(name for pair in swapped for name in pair)}")
        source.append("    for t, s_t, y_t in zip(range(T), run_S, run_Y):")
        source += [f"        {line}" for line in lines]
        source += [f"        copyto({array}[t], {self.var[name]})"
                   for name, array in (recorded or {}).items()]
        source += [f"        {old}, {new} = {new}, {old}" for old, new in swapped]
        source += ["        if progress is not None:", "            progress(1)"]
        return "\n".join(source) + "\n"

    # -- compiling and running ---------------------------------------------------------------

    def _compile(self, source: str) -> CodeType:
        return compile(source, f"<lstm-graph plan {self.spec.schedule.graph.name}>", "exec")

    def _parts(self, code: CodeType, rows: int) -> list[_Part]:
        """The namespaces that run ``code`` on the first ``rows`` rows of the buffers: one,
        or one per thread holding its share (kept for the :data:`ROW_COUNTS` most recently
        used row counts)."""
        key = (code, rows)
        if key in self._namespaces:
            self._namespaces.move_to_end(key)
            return self._namespaces[key]
        ufuncs = {name: getattr(self.spec.xp, name) for name in _UFUNCS}
        bounds = np.linspace(0, rows, min(self.threads, rows) + 1).astype(int)
        parts = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            part = {**ufuncs, **self._rows(self.names.arrays, int(lo), int(hi))}
            exec(code, part)  # our generated code: see the module docstring
            parts.append(_Part(part, int(lo), int(hi)))
        self._namespaces[key] = parts
        while len(self._namespaces) > ROW_COUNTS:
            self._namespaces.popitem(last=False)
        return parts

    def _rows(self, arrays: Mapping[str, Any], lo: int, hi: int) -> dict[str, Any]:
        """``arrays`` with every batched one cut to rows ``lo:hi``."""
        out = dict(arrays)
        for name, axis in self.names.batch_axis.items():
            if out.get(name) is not None:
                out[name] = out[name][(slice(None),) * axis + (slice(lo, hi),)]
        return out

    def run(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
            ) -> tuple[Array, dict[str, Array]]:
        self._reload()
        y, final, _ = self._execute(self._code, x, state, progress, {})
        return y, final

    def trace(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
              ) -> dict[str, Array]:
        self._reload()
        spec, xp = self.spec, self.spec.xp
        graph = spec.schedule.graph
        if self._traced_code is None:
            self._recorders = {name: self.names.bind("rec", name, None, 1)
                               for name in graph.assignments if name not in self.layout.static}
            self._traced_code = self._compile(self._loop(self._lines, self._recorders))
        steps, batch = x.shape[0], x.shape[1]
        recorded = {array: xp.empty((steps, batch, spec.width(name)), dtype=spec.dtype)
                    for name, array in self._recorders.items()}
        _, _, static = self._execute(self._traced_code, x, state, progress, recorded)
        found = static_trace(spec.schedule, self.layout, static, xp, steps, batch, spec.width,
                             spec.dtype)
        found.update({name: recorded[array] for name, array in self._recorders.items()})
        return {name: found[name] for name in graph.assignments}

    def _execute(self, code: CodeType, x: Array, state: Mapping[str, Array],
                 progress: Progress | None, extra: Mapping[str, Array]
                 ) -> tuple[Array, dict[str, Array], dict[str, Array]]:
        """Run the step loop ``code`` with ``extra`` per-run arrays; return ``y``, the
        final states and the static values."""
        spec, xp = self.spec, self.spec.xp
        steps, batch = x.shape[0], x.shape[1]
        parts = self._parts(code, batch)
        static = static_values(spec.schedule, self.layout, xp, spec.params, x, spec.dtype)
        per_run = {**extra,
            "run_S": hoist(xp, static, self.hoisting, steps, batch),
            "run_Y": xp.empty((steps, batch, spec.output_width), dtype=spec.dtype),
            "run_x": x,
        }
        old = {name: xp.array(state[name], dtype=spec.dtype, copy=True)
               for name in spec.schedule.graph.states}
        for array, (kind, key) in self.per_run.items():
            per_run[array] = old[key] if kind == "state" else static[key]
        for part in parts:
            part.namespace.update(self._rows(per_run, part.lo, part.hi))
        states = [(array, key) for array, (kind, key) in self.per_run.items() if kind == "state"]
        if len(parts) == 1:
            _steps(parts[0].namespace, steps, progress)
            final = {key: parts[0].namespace[array].copy()  # it may be a reused buffer
                     for array, key in states}
        else:
            from threadpoolctl import threadpool_limits

            assert self._pool is not None
            with threadpool_limits(1, user_api="blas"):
                futures = [self._pool.submit(_steps, part.namespace, steps,
                                             progress if k == 0 else None)
                           for k, part in enumerate(parts)]
                for future in futures:
                    future.result()
            final = {key: xp.concatenate([part.namespace[array] for part in parts])
                     for array, key in states}
        return per_run["run_Y"], final, static


def default_threads(batch: int, hidden: int) -> int:
    """Threads to split the batch rows over, for large steps: see ``usable_threads``."""
    if batch * hidden < THREAD_THRESHOLD or batch < 2:
        return 1
    return min(usable_threads(), batch)


def _steps(namespace: dict[str, Any], steps: int, progress: Progress | None) -> None:
    with np.errstate(over="ignore"):  # exp(large) = inf is right here: 1/(1+inf) = 0
        namespace["steps"](steps, progress)
