"""The CuPy plan: cuBLAS GEMMs and one generated, fused element-wise kernel per segment.

The layout (hoisting, gate fusion) is the NumPy plan's (:mod:`lstm_graph.layout`).
What differs is the element-wise work of a step: instead of one call per op,
it is generated from the graph as CUDA C for ``cupy.ElementwiseKernel``, one
thread per ``(batch, hidden)`` element, every value a register. A step is

    GEMMs of the operands available at its start → kernel 1 → [GEMM of a value
    kernel 1 made → kernel 2 → …]

so a kernel boundary appears only where a linear multiplies a matrix with a
value computed earlier in the same step (none of the built-in cells does).
Nothing in the time loop waits for the GPU: no host copies, no syncs.

The generated source is deterministic and is tested as text on the CPU
(:func:`kernel_segments`); it runs only where CuPy and a GPU are present.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lstm_graph.ir import NodeKind
from lstm_graph.layout import Layout, analyse, pack_group, pack_hoisted, unscaled
from lstm_graph.ops import OPS
from lstm_graph.plan import hoist, static_values
from lstm_graph.schedule import Schedule

Array = Any


@dataclass
class Segment:
    """One fused kernel and the GEMMs that run just before it."""

    index: int
    gemms: list[str] = field(default_factory=list)  # group sources
    nodes: list[str] = field(default_factory=list)  # dynamic op nodes it computes
    inputs: list[str] = field(default_factory=list)  # raw read-only arrays, by name
    outputs: list[str] = field(default_factory=list)  # raw arrays it writes (or reads+writes)
    body: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"lstm_graph_step_{self.index}"

    def source(self) -> str:
        return "\n".join(self.body)


def _segments(schedule: Schedule, layout: Layout) -> tuple[list[Segment], dict[str, int]]:
    """Cut the dynamic ops into segments; a segment ends where a GEMM needs one of its values."""
    graph = schedule.graph
    dynamic = [n for n in schedule.order
               if graph.node(n).kind is NodeKind.OP and n not in layout.static]
    segments = [Segment(0)]
    segment_of: dict[str, int] = {}
    for source in layout.groups:
        if source not in segment_of and (source in layout.static or
                                         graph.node(source).kind is not NodeKind.OP):
            segments[0].gemms.append(source)
    for node_id in dynamic:
        info = layout.linears.get(node_id)
        for source in dict.fromkeys(s for s, _ in (info.matrix if info else [])):
            if source in segment_of and not any(source in s.gemms for s in segments):
                if segment_of[source] == len(segments) - 1:
                    segments.append(Segment(len(segments)))
                segments[segment_of[source] + 1].gemms.append(source)
        segment_of[node_id] = len(segments) - 1
        segments[-1].nodes.append(node_id)
    return segments, segment_of


@dataclass
class Kernels:
    """A step's fused kernels and what each generated array name holds."""

    segments: list[Segment]
    #: array name -> (kind, key): ("param", name), ("static", node), ("buffer", node),
    #: ("state", name), ("group", source), ("hoisted", ""), ("bias", ""), ("output", "")
    bindings: dict[str, tuple[str, str]]

    def source(self) -> str:
        return "\n\n".join(f"// {s.name}: after the GEMMs of {', '.join(s.gemms) or 'none'}\n"
                            + s.source() for s in self.segments)


def kernel_segments(schedule: Schedule, layout: Layout, hidden: int) -> Kernels:
    """The fused kernels of one step, with every shape baked in as a constant.

    >>> from lstm_graph.library import load_cell
    >>> cell = load_cell("peephole_lstm")
    >>> kernels = kernel_segments(cell.schedule, analyse(cell.schedule), hidden=8)
    >>> len(kernels.segments), kernels.segments[0].gemms
    (1, ['h[t-1]'])
    """
    graph = schedule.graph
    segments, segment_of = _segments(schedule, layout)
    last = len(segments) - 1
    bindings: dict[str, tuple[str, str]] = {"S": ("hoisted", ""), "S_bias": ("bias", ""),
                                            "y": ("output", "")}
    generated: dict[tuple[str, str], str] = {}

    def name_of(kind: str, key: str) -> str:
        if (kind, key) not in generated:
            generated[kind, key] = f"{kind}_{len(generated)}"
            bindings[generated[kind, key]] = (kind, key)
        return generated[kind, key]

    for k, source in enumerate(layout.groups):
        bindings[f"G_{k}"] = ("group", source)
    for state in graph.states:
        bindings[f"old_{state}"] = ("state", state)
    group_index = {source: k for k, source in enumerate(layout.groups)}
    widths = {source: len(g.members) * hidden for source, g in layout.groups.items()}
    hoisted_width = len(layout.hoisted) * hidden
    position = {n: k for k, n in enumerate(schedule.order)}
    states = list(graph.states)
    (output,) = graph.outputs
    stored = {n for n in segment_of
              if any(segment_of.get(c, last) > segment_of[n] for c in graph.graph.successors(n))
              or any(n in s.gemms for s in segments)
              or (n in (*states, output) and segment_of[n] < last)}

    for segment in segments:
        local: set[str] = set()
        reads: list[str] = []
        body = [f"const int b = i / {hidden};", f"const int j = i % {hidden};"]

        def use(array: str, reads: list[str] = reads) -> str:
            if array not in reads:
                reads.append(array)
            return array

        def value(node_id: str, local: set[str] = local) -> str:
            node = graph.node(node_id)
            if node.kind is NodeKind.CONST:
                return f"((T){node.value!r})"
            if node.kind is NodeKind.OLD:
                return f"{use('old_' + node.state)}[i]"
            if node_id in layout.static:
                index = "0" if schedule.sizes[node_id] == "1" else "i"
                return f"{use(name_of('static', node_id))}[{index}]"
            if node_id in local:
                return f"v{position[node_id]}"
            return f"{use(name_of('buffer', node_id))}[i]"

        for node_id in segment.nodes:
            node = graph.node(node_id)
            var = f"v{position[node_id]}"
            if node.op == "linear":
                info = layout.linears[node_id]
                terms = []
                if node_id in layout.hoisted:
                    column = layout.hoisted_column(node_id) * hidden
                    terms.append(f"{use('S')}[b * {hoisted_width} + {column} + j] + "
                                 f"{use('S_bias')}[{column} + j]")
                for source in dict.fromkeys(s for s, _ in info.matrix):
                    column = layout.groups[source].members.index(node_id) * hidden
                    terms.append(f"{use(f'G_{group_index[source]}')}"
                                 f"[b * {widths[source]} + {column} + j]")
                for operand, param in info.peep:
                    terms.append(f"{use(name_of('param', param))}[j] * {value(operand)}")
                expression = " + ".join(terms)
            else:
                expression = OPS[node.op].c.format(*(value(a) for a in node.args))
            body.append(f"T {var} = {expression};  // {node_id}")
            local.add(node_id)
            if node_id in stored:
                buffer = name_of("buffer", node_id)
                body.append(f"{buffer}[i] = {var};")
                segment.outputs.append(buffer)
        if segment.index == last:
            finals = [(state, value(state)) for state in states]
            y_value = value(output)
            for state, expression in finals:  # every old value is read before any is written
                body.append(f"const T new_{state} = {expression};")
            body += [f"old_{state}[i] = new_{state};" for state in states]
            body.append(f"y[i] = {y_value};")
            segment.outputs += [f"old_{state}" for state in states] + ["y"]
        segment.inputs = [r for r in reads if r not in segment.outputs]
        segment.body = body
    return Kernels(segments, bindings)


class CudaPlan:
    """A compiled executor for CuPy, with the contract of :class:`lstm_graph.plan.Plan`."""

    kind = "cuda"

    def __init__(self, schedule: Schedule, xp: Any, params: Mapping[str, Array], batch: int,
                 input_size: int, hidden: int, dtype: np.dtype):
        self.schedule, self.xp, self.params = schedule, xp, params
        self.batch, self.input_size, self.hidden, self.dtype = batch, input_size, hidden, dtype
        self.layout = analyse(schedule)
        self.kernels = kernel_segments(schedule, self.layout, hidden)
        self.source = self.kernels.source()
        bias, stacks = pack_hoisted(self.layout, params, hidden, dtype, unscaled)
        self.hoisted_bias = xp.asarray(bias)
        self.hoisted_weights = {op: xp.asarray(w) for op, w in stacks.items()}
        self.group_weights = {s: xp.asarray(pack_group(self.layout, s, params, dtype, unscaled))
                              for s in self.layout.groups}
        self.buffers = {name: xp.empty((batch, hidden), dtype=dtype)
                        for name, (kind, _) in self.kernels.bindings.items() if kind == "buffer"}
        self.compiled = [
            xp.ElementwiseKernel(", ".join(f"raw T {a}" for a in s.inputs),
                                 ", ".join(f"raw T {a}" for a in s.outputs), s.source(), s.name)
            for s in self.kernels.segments
        ]

    def run(self, x: Array, state: Mapping[str, Array],
            progress: Callable[[int], None] | None = None) -> tuple[Array, dict[str, Array]]:
        """Run ``x`` ``(T, B, I)`` from ``state``; return ``y`` and the final states."""
        xp, graph, layout = self.xp, self.schedule.graph, self.layout
        steps, batch = x.shape[0], x.shape[1]
        static = static_values(self.schedule, layout, xp, self.params, x, self.dtype)
        hoisted = hoist(xp, static, self.hoisted_weights, self.hoisted_bias, steps, batch,
                        add_bias=False)
        y = xp.empty((steps, batch, self.hidden), dtype=self.dtype)
        old = {s: xp.array(state[s], dtype=self.dtype, copy=True) for s in graph.states}
        group_out = {s: xp.empty((batch, len(g.members) * self.hidden), dtype=self.dtype)
                     for s, g in layout.groups.items()}
        fixed: dict[str, Any] = {"S_bias": self.hoisted_bias}
        per_step: dict[str, Any] = {"S": hoisted, "y": y}
        for name, (kind, key) in self.kernels.bindings.items():
            if kind == "param":
                fixed[name] = self.params[key]
            elif kind == "state":
                fixed[name] = old[key]
            elif kind == "group":
                fixed[name] = group_out[key]
            elif kind == "buffer":
                fixed[name] = self.buffers[name]
            elif kind == "static":
                scalar = self.schedule.sizes[key] == "1"
                (fixed if scalar else per_step)[name] = static[key].reshape(-1) if scalar \
                    else static[key]
        operand = {s: old[graph.node(s).state] if graph.node(s).kind is NodeKind.OLD
                   else self.buffers[_buffer(self.kernels, s)] for s in layout.groups}
        for t in range(steps):
            arrays = {**fixed, **{name: array[t] for name, array in per_step.items()}}
            for segment, kernel in zip(self.kernels.segments, self.compiled):
                for source in segment.gemms:
                    xp.matmul(operand[source], self.group_weights[source],
                              out=group_out[source])
                kernel(*(arrays[a] for a in (*segment.inputs, *segment.outputs)),
                       size=batch * self.hidden)
            if progress is not None:
                progress(1)
        return y, old


def _buffer(kernels: Kernels, node_id: str) -> str:
    return next(n for n, b in kernels.bindings.items() if b == ("buffer", node_id))
