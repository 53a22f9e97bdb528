"""The compiled plan: the fast executor, generated from the schedule.

Like ``torch.fx``'s code generation, the plan writes the time loop of one
cell as Python source over preallocated buffers and compiles it once, so a
step costs a handful of NumPy calls and no graph walking, dict lookups or
allocation. The source is ours, built from the validated graph with generated
variable names; nothing from a cell file is ever evaluated. Read it with
``Plan.source``.

What it does (see :mod:`lstm_graph.layout` for the analysis):

- one GEMM over all ``T·B`` rows for everything that reads only ``x``;
- one GEMM per step for each operand the linears share (``h[t-1]`` feeds
  all four LSTM gates at once);
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

The reference interpreter (:mod:`lstm_graph.interpreter`) is the definition;
the tests hold the plan to it. A plan is not meant to be run from two threads
at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lstm_graph.backends import to_numpy
from lstm_graph.ir import NodeKind
from lstm_graph.layout import Group, Layout, analyse, pack_group, pack_hoisted
from lstm_graph.ops import FAST_FORMS, OPS
from lstm_graph.schedule import Schedule

Array = Any
#: Steps up to this size (batch × hidden) use the "tanh" fast form, larger ones "exp".
SMALL_STEP = 1024
#: Work per step (batch × hidden) from which splitting the rows between threads pays off
#: (measured: 256 × 1024 gains 10 %, 64 × 256 loses to GIL contention).
THREAD_THRESHOLD = 65536
_UFUNCS = ("matmul", "add", "subtract", "multiply", "divide", "negative", "exp", "reciprocal",
           "copyto", "maximum", "tanh")


def default_threads(batch: int, hidden: int) -> int:
    """Threads to split the batch rows over: the usable CPUs (at most 8), for large steps."""
    if batch * hidden < THREAD_THRESHOLD or batch < 2:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 8, batch))


#: A float literal in a generated statement (integers only appear in slices).
_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d*(?:[eE][-+]?\d+)?|(?<![\w.])-?\d+[eE][-+]?\d+")


class _Code:
    """The step loop's statements and the arrays they name."""

    def __init__(self, xp: Any, dtype: np.dtype) -> None:
        self.arrays: dict[str, Any] = {}  # name -> array (None: set per run)
        self.batch_axis: dict[str, int] = {}  # name -> axis that holds the batch
        self.lines: list[str] = []
        self.xp, self.dtype = xp, dtype
        self.constants: dict[float, str] = {}

    def bind(self, prefix: str, hint: str, value: Any, batch_axis: int | None = None) -> str:
        base = f"{prefix}_{re.sub(r'[^0-9A-Za-z_]', '_', hint.replace('[t-1]', '_old'))}"
        name, k = base, 2
        while name in self.arrays:
            name, k = f"{base}{k}", k + 1
        self.arrays[name] = value
        if batch_axis is not None:
            self.batch_axis[name] = batch_axis
        return name

    def emit(self, statement: str) -> None:
        """Add a statement; its numbers become 0-d arrays of the plan's dtype, which
        NumPy combines with arrays twice as fast as Python floats (no conversion)."""
        self.lines.append(_FLOAT.sub(lambda m: self.constant(float(m.group())), statement))

    def constant(self, value: float) -> str:
        if value not in self.constants:
            hint = repr(value).replace("-", "minus").replace(".", "_").replace("+", "")
            self.constants[value] = self.bind("k", hint, self.xp.asarray(value, self.dtype))
        return self.constants[value]


class Plan:
    """The compiled NumPy executor for one cell, batch size and dtype.

    (CuPy has its own, :class:`lstm_graph.cuda.CudaPlan`, with fused kernels; the CPU
    has a faster one where a C compiler is found, :class:`lstm_graph.native.NativePlan`.)
    """

    kind = "numpy"

    def __init__(self, schedule: Schedule, xp: Any, params: Mapping[str, Array], batch: int,
                 input_size: int, hidden: int, dtype: np.dtype, threads: int | None = None):
        self.schedule = schedule
        self.layout: Layout = analyse(schedule)
        self.xp, self.params = xp, params
        self.batch, self.input_size, self.hidden, self.dtype = batch, input_size, hidden, dtype
        on_cpu = xp is np
        self.threads = (threads or default_threads(batch, hidden)) if on_cpu else 1
        self.form = FAST_FORMS["tanh" if batch * hidden <= SMALL_STEP else "exp"]
        self.code = _Code(xp, dtype)
        self.var: dict[str, str] = {}  # node id -> expression of its value inside the loop
        self.spans: dict[str, str] = {}  # adjacent accumulators -> one view's name
        self._pack_hoisted()
        self._emit_step()
        self.source = self._source()
        self._compile()

    # -- weights -----------------------------------------------------------------------------

    def _scale(self, linear: str) -> float:
        activation = self.layout.linears[linear].activation
        return self.form.scale[activation] if activation else 1.0

    def _weight(self, param: str, linear: str) -> np.ndarray:
        """A parameter on the host, times its linear's folded activation scale."""
        return to_numpy(self.params[param]) * self.dtype.type(self._scale(linear))

    def _buffer(self, width: int) -> Array:
        return self.xp.empty((self.batch, width), dtype=self.dtype)

    def _pack_hoisted(self) -> None:
        """Stack every dynamic linear's static operands and bias for the hoisted GEMM."""
        bias, stacks = pack_hoisted(self.layout, self.params, self.hidden, self.dtype,
                                    self._scale)
        self.hoisted_width = bias.shape[0]
        self.hoisted_bias = self.xp.asarray(bias)
        self.hoisted_weights = {op: self.xp.asarray(w) for op, w in stacks.items()}

    # -- the loop ----------------------------------------------------------------------------

    def _emit_step(self) -> None:
        layout, graph, hidden, code = self.layout, self.schedule.graph, self.hidden, self.code
        code.bind("run", "S", None, 1)
        code.bind("run", "Y", None, 1)
        (input_name,) = graph.inputs
        self.var[input_name] = f"{code.bind('run', 'x', None, 1)}[t]"
        self.per_run: dict[str, tuple[str, str]] = {}  # array name -> ("state"|"static", name)
        for name in graph.states:
            self.var[f"{name}[t-1]"] = code.bind("old", name, None, 0)
            self.per_run[self.var[f"{name}[t-1]"]] = ("state", name)
        for node in graph.nodes():
            if node.kind is NodeKind.CONST:
                self.var[node.id] = repr(node.value)
        for node_id in self.schedule.order:
            if node_id in layout.static and graph.node(node_id).kind is NodeKind.OP:
                scalar = self.schedule.sizes[node_id] == "1"
                array = code.bind("static", node_id, None, None if scalar else 1)
                self.var[node_id] = array if scalar else f"{array}[t]"
                self.per_run[array] = ("static", node_id)

        self.group_buffers: dict[str, tuple[str, Array, int]] = {}
        hoisted_at = 0
        for source, group in layout.groups.items():
            buffer = self._buffer(len(group.members) * hidden)
            self.group_buffers[source] = (code.bind("G", source, buffer, 0), buffer, hoisted_at)
            hoisted_at += group.accumulators * hidden
        for linear in layout.standalone:
            self.var[linear] = code.bind("acc", linear, self._buffer(hidden), 0)
        for info in layout.linears.values():
            if info.group is not None:
                buffer = self.group_buffers[info.group][1]
                start = info.column * hidden
                self.var[info.id] = code.bind("z", info.id, buffer[:, start:start + hidden], 0)

        self.pending = {name: len({s for s, _ in info.matrix}) + len(info.peep)
                        for name, info in layout.linears.items() if name not in layout.static}
        self.complete: list[str] = []  # linears whose last term was just added
        self.peeps: dict[str, list[tuple[str, str]]] = {}  # operand -> (linear, weight)
        for name, info in layout.linears.items():
            if name not in layout.static:
                for operand, param in info.peep:
                    self.peeps.setdefault(operand, []).append((name, param))
        self.fused: set[str] = set()
        self.owned: set[str] = set()  # buffers only one node writes: safe to swap
        # Terms added into an accumulator wait until it has been written this step.
        self.initialized: set[str] = set()
        self.deferred: dict[str, list[str]] = {}
        for linear in layout.standalone:
            column = layout.hoisted_column(linear) * hidden
            code.emit(f"copyto({self.var[linear]}, s_t[:, {column}:{column + hidden}])")
        self._initialize(layout.standalone)
        self._after(None)
        for node_id in self.schedule.order:
            node = graph.node(node_id)
            if node.kind is not NodeKind.OP or node_id in layout.static or \
                    node.op == "linear" or node_id in self.fused:
                continue
            width = {"H": hidden, "I": self.input_size, "1": 1}[self.schedule.sizes[node_id]]
            out = code.bind("v", node_id, self._buffer(width), 0)
            self.var[node_id] = out
            self.owned.add(out)
            args = [self.var[a] for a in node.args]
            if node.op in self.form.scale:
                scale, source = self.form.scale[node.op], args[0]
                if scale != 1.0:
                    code.emit(f"multiply({source}, {scale!r}, out={out})")
                    source = out
                code.emit(self.form.core.format(src=source, out=out))
                if self.form.finish[node.op]:
                    code.emit(self.form.finish[node.op].format(out=out))
            else:
                code.emit(OPS[node.op].numpy.format(*args, out=out))
            self._after(node_id)
        (output,) = graph.outputs
        code.emit(f"copyto(y_t, {self.var[output]})")
        self.swapped: list[tuple[str, str]] = []  # (old buffer, new buffer) exchanged per step
        for name in graph.states:
            old, new = self.var[f"{name}[t-1]"], self.var[name]
            if new in self.owned and new not in (n for pair in self.swapped for n in pair):
                self.swapped.append((old, new))
            else:
                code.emit(f"copyto({old}, {new})")

    def _at_start(self, node_id: str) -> bool:
        return node_id in self.layout.static or \
            self.schedule.graph.node(node_id).kind is not NodeKind.OP

    def _after(self, available: str | None) -> None:
        """Emit all that becomes possible once ``available`` (None: the step start) exists."""
        layout = self.layout
        if available is None:
            sources = [s for s in layout.groups if self._at_start(s)]
            operands = [o for o in self.peeps if self._at_start(o)]
        else:
            sources = [available] if available in layout.groups else []
            operands = [available] if available in self.peeps else []
        for source in sources:
            self._emit_gemm(source, layout.groups[source])
        for operand in operands:
            for linear, param in self.peeps[operand]:
                self._emit_peep(linear, operand, param)
        for activation in self._emit_activations():
            self._after(activation)

    def _emit_gemm(self, source: str, group: Group) -> None:
        hidden, code = self.hidden, self.code
        name, buffer, hoisted_at = self.group_buffers[source]
        packed = pack_group(self.layout, source, self.params, self.dtype, self._scale)
        weights = code.bind("W", source, self.xp.asarray(packed))
        code.emit(f"matmul({self.var[source]}, {weights}, out={name})")
        if group.accumulators:
            width = group.accumulators * hidden
            whole = buffer.shape[1] == width
            acc = name if whole else code.bind("z", f"{source}_acc", buffer[:, :width], 0)
            hoisted = "s_t" if hoisted_at == 0 and width == self.hoisted_width else \
                f"s_t[:, {hoisted_at}:{hoisted_at + width}]"
            code.emit(f"add({acc}, {hoisted}, out={acc})")
        self._initialize(group.members[: group.accumulators])
        for k, member in enumerate(group.members[group.accumulators:], group.accumulators):
            part = code.bind("z", f"{source}_{member}", buffer[:, k * hidden:(k + 1) * hidden], 0)
            target = self.var[member]
            self._add_into(member, f"add({target}, {part}, out={target})")
        for member in group.members:
            self._count_down(member)

    def _initialize(self, linears: list[str]) -> None:
        """Mark accumulators as written this step, and emit what waited for them."""
        for linear in linears:
            self.initialized.add(linear)
            for statement in self.deferred.pop(linear, []):
                self.code.emit(statement)

    def _add_into(self, linear: str, statement: str) -> None:
        if linear in self.initialized:
            self.code.emit(statement)
        else:
            self.deferred.setdefault(linear, []).append(statement)

    def _emit_peep(self, linear: str, operand: str, param: str) -> None:
        code = self.code
        weight = code.bind("p", param, self.xp.asarray(self._weight(param, linear)))
        tmp = code.bind("tmp", param, self._buffer(self.hidden), 0)
        target = self.var[linear]
        self._add_into(linear, f"multiply({self.var[operand]}, {weight}, out={tmp}); "
                               f"add({target}, {tmp}, out={target})")
        self._count_down(linear)

    def _count_down(self, linear: str) -> None:
        self.pending[linear] -= 1
        if self.pending[linear] == 0:
            del self.pending[linear]
            self.complete.append(linear)

    def _emit_activations(self) -> list[str]:
        """Finish every fused activation whose linear just became complete.

        Adjacent gates share one call of the fast form's core and, per activation, one
        finishing call. Returns the values now complete (unfused linears, activations):
        their users may run.
        """
        layout = self.layout
        complete, self.complete = self.complete, []
        ready = [n for n in complete if layout.linears[n].activation]
        finished = [n for n in complete if not layout.linears[n].activation]
        runs: list[list[str]] = []
        for name in sorted(ready, key=lambda n: (layout.linears[n].group or "", n in
                                                 layout.standalone, layout.linears[n].column)):
            info, last = layout.linears[name], runs[-1][-1] if runs else None
            if last and info.group is not None and layout.linears[last].group == info.group \
                    and layout.linears[last].column + 1 == info.column:
                runs[-1].append(name)
            else:
                runs.append([name])
        for run in runs:
            whole = self._span(run)
            self.code.emit(self.form.core.format(src=whole, out=whole))
            by_activation: list[list[str]] = []
            for name in run:
                if by_activation and layout.linears[by_activation[-1][0]].activation == \
                        layout.linears[name].activation:
                    by_activation[-1].append(name)
                else:
                    by_activation.append([name])
            for same in by_activation:
                finish = self.form.finish[layout.linears[same[0]].activation]
                if finish:
                    self.code.emit(finish.format(out=self._span(same)))
            for name in run:
                (consumer,) = self.schedule.graph.graph.successors(name)
                self.var[consumer] = self.var[name]
                self.fused.add(consumer)
                finished.append(consumer)
        return finished

    def _span(self, linears: list[str]) -> str:
        """A name for the adjacent accumulators of ``linears`` (one view)."""
        if len(linears) == 1:
            return self.var[linears[0]]
        key = "_".join(linears)
        if key not in self.spans:
            first = self.layout.linears[linears[0]]
            buffer = self.group_buffers[first.group][1]
            start, stop = first.column * self.hidden, (first.column + len(linears)) * self.hidden
            self.spans[key] = self.code.bind("z", key, buffer[:, start:stop], 0)
        return self.spans[key]

    # -- source and compilation -------------------------------------------------------------

    def _source(self) -> str:
        swapped = [name for pair in self.swapped for name in pair]
        lines = ["def steps(T, progress):"]
        if swapped:
            lines.append(f"    global {', '.join(swapped)}")
        lines.append("    for t, s_t, y_t in zip(range(T), run_S, run_Y):")
        lines += [f"        {statement}" for statement in self.code.lines]
        for old, new in self.swapped:
            lines.append(f"        {old}, {new} = {new}, {old}")
        lines += ["        if progress is not None:", "            progress(1)"]
        return "\n".join(lines) + "\n"

    def _compile(self) -> None:
        """One namespace for the whole batch, and one per thread holding its rows."""
        code = compile(self.source, f"<lstm-graph plan {self.schedule.graph.name}>", "exec")
        ufuncs = {name: getattr(self.xp, name) for name in _UFUNCS}
        bounds = np.linspace(0, self.batch, self.threads + 1).astype(int)
        self._rows_of_part = list(zip(bounds[:-1], bounds[1:]))
        self._parts: list[dict[str, Any]] = []
        for lo, hi in self._rows_of_part:
            part = {**ufuncs, **self._rows(self.code.arrays, lo, hi)}
            exec(code, part)  # our generated code: see the module docstring
            self._parts.append(part)
        if self.threads > 1:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lstm-graph")

    def _rows(self, arrays: Mapping[str, Any], lo: int, hi: int) -> dict[str, Any]:
        """``arrays`` with every batched one cut to rows ``lo:hi``."""
        out = dict(arrays)
        for name, axis in self.code.batch_axis.items():
            if out.get(name) is not None:
                out[name] = out[name][(slice(None),) * axis + (slice(lo, hi),)]
        return out

    # -- running -----------------------------------------------------------------------------

    def run(self, x: Array, state: Mapping[str, Array],
            progress: Callable[[int], None] | None = None) -> tuple[Array, dict[str, Array]]:
        """Run ``x`` ``(T, B, I)`` from ``state``; return ``y`` and the final states."""
        xp, graph = self.xp, self.schedule.graph
        steps, batch = x.shape[0], x.shape[1]
        static = static_values(self.schedule, self.layout, xp, self.params, x, self.dtype)
        hoisted = hoist(xp, static, self.hoisted_weights, self.hoisted_bias, steps, batch)
        (output,) = graph.outputs
        width = {"H": self.hidden, "I": self.input_size, "1": 1}[self.schedule.sizes[output]]
        per_run = {
            "run_S": hoisted,
            "run_Y": xp.empty((steps, batch, width), dtype=self.dtype),
            "run_x": x,
        }
        old = {name: xp.array(state[name], dtype=self.dtype, copy=True) for name in graph.states}
        for array, (kind, name) in self.per_run.items():
            per_run[array] = old[name] if kind == "state" else static[name]
        for part, (lo, hi) in zip(self._parts, self._rows_of_part):
            part.update(self._rows(per_run, lo, hi))
        if self.threads == 1:
            _steps(self._parts[0], steps, progress)
            final = {name: self._parts[0][array].copy()  # it may be a reused buffer
                     for array, (kind, name) in self.per_run.items() if kind == "state"}
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1, user_api="blas"):
                futures = [self._pool.submit(_steps, part, steps, progress if k == 0 else None)
                           for k, part in enumerate(self._parts)]
                for future in futures:
                    future.result()
            final = {name: xp.concatenate([part[array] for part in self._parts])
                     for array, (kind, name) in self.per_run.items() if kind == "state"}
        return per_run["run_Y"], final


def static_values(schedule: Schedule, layout: Layout, xp: Any, params: Mapping[str, Array],
                  x: Array, dtype: np.dtype) -> dict[str, Array]:
    """Every static node for all steps at once, as ``(T, B, size)`` (or a 0-d number)."""
    graph = schedule.graph
    (input_name,) = graph.inputs
    env: dict[str, Array] = {input_name: x}
    for node in graph.nodes():
        if node.kind is NodeKind.CONST:
            env[node.id] = xp.asarray(node.value, dtype=dtype)
    for node_id in schedule.order:
        node = graph.node(node_id)
        if node.kind is NodeKind.OP and node_id in layout.static:
            args = [env[a] for a in node.args]
            weights = [params[p] for p in node.params]
            fast = node.op == "linear" and bool(args) and all(a.ndim == 3 for a in args) \
                and all(w.ndim == 2 for w in weights[:-1])
            env[node_id] = (_linear_over_steps if fast else OPS[node.op].reference)(
                xp, args, weights)
    return env


def _linear_over_steps(xp: Any, args: list[Array], params: list[Array]) -> Array:
    """The op table's ``linear`` on ``(T, B, size)`` operands, as one GEMM per operand over
    all ``T·B`` rows with the sums done in place (a third faster than the batched form,
    which multiplies step by step and allocates every partial sum); the same additions
    in the same order: ``(bias + a·Wᵀ) + b·Vᵀ …``.
    """
    *weights, bias = params
    steps, batch = args[0].shape[:2]
    total = None
    for value, weight in zip(args, weights):
        product = xp.matmul(value.reshape(steps * batch, -1), weight.T)
        if total is None:
            total = product
            total += bias
        else:
            total += product
    return total.reshape(steps, batch, -1)


def hoist(xp: Any, static: Mapping[str, Array], weights: Mapping[str, Array], bias: Array,
          steps: int, batch: int, add_bias: bool = True, out: Array | None = None) -> Array:
    """The hoisted part of every dynamic linear for all steps: ``S = X·W + b``, (T, B, width).

    One GEMM per static operand over all ``T·B`` rows; the first writes in place. With
    ``add_bias=False``, ``S = X·W`` and the caller adds ``b`` itself (the fused kernels
    add it per element, saving a pass over ``S``). ``out``, a ``(T·B, width)`` buffer to
    reuse, saves allocating (and the OS zeroing) ``S`` anew on every run.
    """
    rows = steps * batch
    hoisted = xp.empty((rows, bias.shape[0]), dtype=bias.dtype) if out is None else out
    if not weights:
        hoisted[...] = bias if add_bias else 0
    for k, (operand, weight) in enumerate(weights.items()):
        product = static[operand].reshape(rows, -1)
        if k == 0:
            xp.matmul(product, weight, out=hoisted)
        else:
            hoisted += product @ weight
    if weights and add_bias:
        hoisted += bias
    return hoisted.reshape(steps, batch, -1)


def _steps(namespace: dict[str, Any], steps: int, progress: Callable[[int], None] | None
           ) -> None:
    with np.errstate(over="ignore"):  # exp(large) = inf is right here: 1/(1+inf) = 0
        namespace["steps"](steps, progress)
