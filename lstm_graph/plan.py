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
- sigmoid and tanh after a linear become ``1 + exp(s·z)`` on the whole run of
  adjacent gates, with ``s`` folded into the weights, then a reciprocal
  (sigmoid) or ``2/· − 1`` (tanh): NumPy's float32 ``exp`` is about twice as
  fast as its ``tanh``, and the result agrees with the reference to float32
  rounding;
- every element-wise op writes into its own buffer with ``out=``.

The reference interpreter (:mod:`lstm_graph.interpreter`) is the definition;
the tests hold the plan to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lstm_graph.ir import NodeKind
from lstm_graph.layout import Layout, analyse
from lstm_graph.ops import OPS
from lstm_graph.schedule import Schedule

Array = Any


class _Emitter:
    """Builds the step function's source and the namespace it runs in."""

    def __init__(self, layout: Layout, xp: Any, params: Mapping[str, Array], batch: int,
                 hidden: int, dtype: np.dtype):
        self.layout = layout
        self.schedule = layout.schedule
        self.graph = layout.schedule.graph
        self.xp, self.params, self.batch, self.hidden, self.dtype = xp, params, batch, hidden, dtype
        self.namespace: dict[str, Any] = {
            name: getattr(xp, name) for name in (
                "matmul", "add", "subtract", "multiply", "divide", "negative", "exp",
                "reciprocal", "copyto", "maximum", "tanh")
        }
        self.body: list[str] = []
        self.var: dict[str, str] = {}  # node id -> expression of its value in the loop
        self.per_step: list[str] = []  # "name = array[t]" lines at the top of the loop
        self.run_args: list[tuple[str, str]] = []  # (argument, what the caller passes)
        self.counter = 0

    def bind(self, prefix: str, value: Any) -> str:
        name = f"{prefix}{self.counter}"
        self.counter += 1
        self.namespace[name] = value
        return name

    def buffer(self, width: int) -> Array:
        return self.xp.empty((self.batch, width), dtype=self.dtype)

    def scale(self, linear: str) -> float:
        activation = self.layout.linears[linear].activation
        return OPS[activation].exp_scale if activation else 1.0

    def weight(self, param: str, linear: str) -> Array:
        return self.params[param] * self.dtype.type(self.scale(linear))


class Plan:
    """A compiled executor for one cell, batch size, backend and dtype."""

    def __init__(self, schedule: Schedule, xp: Any, params: Mapping[str, Array], batch: int,
                 input_size: int, hidden: int, dtype: np.dtype):
        self.schedule = schedule
        self.layout = analyse(schedule)
        self.xp, self.params = xp, params
        self.batch, self.input_size, self.hidden, self.dtype = batch, input_size, hidden, dtype
        emitter = _Emitter(self.layout, xp, params, batch, hidden, dtype)
        self._pack_hoisted(emitter)
        self._emit_step(emitter)
        self.source = self._source(emitter)
        code = compile(self.source, f"<lstm-graph plan {schedule.graph.name}>", "exec")
        exec(code, emitter.namespace)  # our generated code: see the module docstring
        self._steps: Callable[..., None] = emitter.namespace["steps"]
        self._emitter = emitter

    # -- before the loop: hoisted GEMM and static nodes ------------------------------------

    def _pack_hoisted(self, e: _Emitter) -> None:
        layout, hidden = self.layout, self.hidden
        width = len(layout.hoisted) * hidden
        bias = np.zeros(width, dtype=self.dtype)
        stacks: dict[str, Array] = {}  # static operand -> (size, width) weights
        for k, name in enumerate(layout.hoisted):
            info = layout.linears[name]
            cols = slice(k * hidden, (k + 1) * hidden)
            bias[cols] = np.asarray(_host(e.weight(info.bias, name)))
            for operand, param in info.static:
                weight = _host(e.weight(param, name))
                if operand not in stacks:
                    stacks[operand] = np.zeros((weight.shape[1], width), dtype=self.dtype)
                stacks[operand][:, cols] += weight.T
        self.hoisted_width = width
        self.hoisted_bias = self.xp.asarray(bias)
        self.hoisted_weights = {op: self.xp.asarray(w) for op, w in stacks.items()}

    def _static_values(self, x: Array) -> dict[str, Array]:
        """Every static node for all steps at once, as ``(T, B, size)`` (or a 0-d number)."""
        graph, xp = self.schedule.graph, self.xp
        (input_name,) = graph.inputs
        env: dict[str, Array] = {input_name: x}
        for node in graph.nodes():
            if node.kind is NodeKind.CONST:
                env[node.id] = xp.asarray(node.value, dtype=self.dtype)
        for node_id in self.schedule.order:
            node = graph.node(node_id)
            if node.kind is NodeKind.OP and node_id in self.layout.static:
                params = [self.params[p] for p in node.params]
                env[node_id] = OPS[node.op].reference(xp, [env[a] for a in node.args], params)
        return env

    # -- the loop ------------------------------------------------------------------------

    def _emit_step(self, e: _Emitter) -> None:
        layout, graph, hidden = self.layout, self.schedule.graph, self.hidden
        for name in graph.states:
            e.var[f"{name}[t-1]"] = e.bind("old", None)
            e.run_args.append((e.var[f"{name}[t-1]"], f"state:{name}"))
        e.per_step.append("s_t = S[t]")
        for node in graph.nodes():
            if node.kind is NodeKind.CONST:
                e.var[node.id] = repr(node.value)
        for node_id in self.schedule.order:
            if node_id in layout.static and graph.node(node_id).kind is NodeKind.OP:
                if self.schedule.sizes[node_id] == "1":
                    e.var[node_id] = e.bind("num", None)
                    e.run_args.append((e.var[node_id], f"number:{node_id}"))
                else:
                    array = e.bind("static", None)
                    e.run_args.append((array, f"static:{node_id}"))
                    e.var[node_id] = f"{array}[t]"
        for name in graph.inputs:
            e.var[name] = "x[t]"

        # Accumulators: group GEMM outputs and standalone buffers; views per linear.
        self.group_buffers = {}
        hoisted_at = 0
        for source, group in layout.groups.items():
            buffer = e.buffer(len(group.members) * hidden)
            name = e.bind("G", buffer)
            self.group_buffers[source] = (name, buffer, hoisted_at)
            hoisted_at += group.accumulators * hidden
        for linear in layout.standalone:
            e.var[linear] = e.bind("acc", e.buffer(hidden))
        for info in layout.linears.values():
            if info.group is not None:
                name = self.group_buffers[info.group][0]
                start = info.column * hidden
                e.var[info.id] = e.bind("v", e.namespace[name][:, start:start + hidden])

        pending = {name: len({s for s, _ in info.matrix}) + len(info.peep)
                   for name, info in layout.linears.items() if name not in layout.static}
        done_activation: set[str] = set()

        def after(available: str | None) -> None:
            """Emit everything that becomes possible once ``available`` is computed."""
            for source, group in layout.groups.items():
                if (available is None and self._at_start(source)) or source == available:
                    self._emit_gemm(e, source, group, pending)
            for name, info in layout.linears.items():
                if name in layout.static:
                    continue
                for operand, param in info.peep:
                    if (available is None and self._at_start(operand)) or operand == available:
                        self._emit_peep(e, name, operand, param)
                        pending[name] -= 1
            for consumer in self._emit_activations(e, pending, done_activation):
                after(consumer)

        for linear in layout.standalone:
            column = layout.hoisted_column(linear) * hidden
            e.body.append(f"copyto({e.var[linear]}, s_t[:, {column}:{column + hidden}])")
        after(None)
        for node_id in self.schedule.order:
            node = graph.node(node_id)
            if node.kind is not NodeKind.OP or node_id in layout.static or \
                    node.op == "linear" or node_id in done_activation:
                continue
            out = e.bind("buf", e.buffer(_width(self.schedule.sizes[node_id], hidden,
                                                 self.input_size)))
            e.var[node_id] = out
            args = [e.var[a] for a in node.args]
            op = OPS[node.op]
            if op.exp_scale is not None:
                e.body.append(f"multiply({args[0]}, {op.exp_scale!r}, out={out}); "
                              f"exp({out}, out={out}); add({out}, 1.0, out={out}); "
                              + op.exp_finish.format(out=out))
            else:
                e.body.append(op.numpy.format(*args, out=out))
            after(node_id)
        for name in graph.states:
            e.body.append(f"copyto({e.var[f'{name}[t-1]']}, {e.var[name]})")
        (output,) = graph.outputs
        e.body.append(f"copyto(Y[t], {e.var[output]})")

    def _at_start(self, node_id: str) -> bool:
        return node_id in self.layout.static or \
            self.schedule.graph.node(node_id).kind is not NodeKind.OP

    def _emit_gemm(self, e: _Emitter, source: str, group: Any, pending: dict[str, int]) -> None:
        hidden = self.hidden
        name, buffer, hoisted_at = self.group_buffers[source]
        stack = []
        for member in group.members:
            (param,) = [p for s, p in self.layout.linears[member].matrix if s == source]
            stack.append(_host(e.weight(param, member)).T)
        weights = e.bind("W", self.xp.asarray(np.ascontiguousarray(np.concatenate(stack, 1))))
        e.body.append(f"matmul({e.var[source]}, {weights}, out={name})")
        if group.accumulators:
            width = group.accumulators * hidden
            acc = e.bind("v", buffer[:, :width])
            e.body.append(f"add({acc}, s_t[:, {hoisted_at}:{hoisted_at + width}], out={acc})")
        for k, member in enumerate(group.members[group.accumulators:], group.accumulators):
            part = e.bind("v", buffer[:, k * hidden:(k + 1) * hidden])
            target = e.var[member]
            e.body.append(f"add({target}, {part}, out={target})")
        for member in group.members:
            pending[member] -= 1

    def _emit_peep(self, e: _Emitter, linear: str, operand: str, param: str) -> None:
        weight = e.bind("p", self.xp.asarray(_host(e.weight(param, linear))))
        tmp = e.bind("tmp", e.buffer(self.hidden))
        target = e.var[linear]
        e.body.append(f"multiply({e.var[operand]}, {weight}, out={tmp}); "
                      f"add({target}, {tmp}, out={target})")

    def _emit_activations(self, e: _Emitter, pending: dict[str, int], done: set[str]
                          ) -> list[str]:
        """Finish every fused activation whose linear just became complete, in runs.

        Returns the activation nodes computed, whose own consumers may now run.
        """
        layout, hidden = self.layout, self.hidden
        ready = [n for n, left in pending.items() if left == 0 and layout.linears[n].activation]
        for name in ready:
            del pending[name]
        runs: list[list[str]] = []
        for name in sorted(ready, key=lambda n: (layout.linears[n].group or n,
                                                 layout.linears[n].column)):
            info = layout.linears[name]
            last = runs[-1][-1] if runs else None
            if last and info.group is not None and layout.linears[last].group == info.group \
                    and layout.linears[last].column + 1 == info.column:
                runs[-1].append(name)
            else:
                runs.append([name])
        finished = []
        for run in runs:
            first = layout.linears[run[0]]
            if first.group is None:
                whole = e.var[run[0]]
            else:
                buffer = e.namespace[self.group_buffers[first.group][0]]
                whole = e.bind("v", buffer[:, first.column * hidden:
                                           (first.column + len(run)) * hidden])
            e.body.append(f"exp({whole}, out={whole}); add({whole}, 1.0, out={whole})")
            for name in run:
                info = layout.linears[name]
                e.body.append(OPS[info.activation].exp_finish.format(out=e.var[name]))
                (consumer,) = self.schedule.graph.graph.successors(name)
                e.var[consumer] = e.var[name]
                done.add(consumer)
                finished.append(consumer)
        return finished

    def _source(self, e: _Emitter) -> str:
        args = ", ".join(["x", "S", "Y", "progress", *(a for a, _ in e.run_args)])
        lines = [f"def steps({args}):", "    for t in range(S.shape[0]):"]
        lines += [f"        {line}" for line in e.per_step + e.body]
        lines += ["        if progress is not None:", "            progress(1)"]
        return "\n".join(lines) + "\n"

    # -- running ---------------------------------------------------------------------------

    def run(self, x: Array, state: Mapping[str, Array],
            progress: Callable[[int], None] | None = None) -> tuple[Array, dict[str, Array]]:
        """Run ``x`` ``(T, B, I)`` from ``state``; return ``y`` and the final states."""
        xp, graph = self.xp, self.schedule.graph
        steps, batch = x.shape[0], x.shape[1]
        static = self._static_values(x)
        rows = steps * batch
        hoisted = xp.empty((rows, self.hoisted_width), dtype=self.dtype)
        hoisted[...] = self.hoisted_bias
        for operand, weights in self.hoisted_weights.items():
            hoisted += static[operand].reshape(rows, -1) @ weights
        hoisted = hoisted.reshape(steps, batch, self.hoisted_width)
        (output,) = graph.outputs
        size = _width(self.schedule.sizes[output], self.hidden, x.shape[2])
        y = xp.empty((steps, batch, size), dtype=self.dtype)
        old = {name: xp.array(state[name], dtype=self.dtype, copy=True) for name in graph.states}
        values = []
        for _argument, what in self._emitter.run_args:
            kind, name = what.split(":", 1)
            values.append(old[name] if kind == "state" else static[name])
        with np.errstate(over="ignore"):  # exp(±large) = inf is exact enough: 1/(1+inf) = 0
            self._steps(x, hoisted, y, progress, *values)
        return y, old


def _width(size: str, hidden: int, input_size: int) -> int:
    return {"H": hidden, "I": input_size, "1": 1}[size]


def _host(array: Array) -> np.ndarray:
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)
