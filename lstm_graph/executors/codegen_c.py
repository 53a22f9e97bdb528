"""One C code generator for a step's element-wise work; CUDA and native C are dialects.

A step of a compiled cell is GEMMs (the per-step linears, see
:mod:`~lstm_graph.executors.layout`) and element-wise work. This module writes
the element-wise work as C from the op table, **once**, for both back ends:
every value is a register, one pass over the step's ``(batch, hidden)``
elements computes every op. A step is cut into **segments**::

    GEMMs of the values there at its start → segment 0 → [GEMM of a value segment 0
    made → segment 1 → …]

so a segment ends only where a linear multiplies a matrix with a value computed
earlier in the same step (none of the built-in cells does).

The body of a segment (:class:`Segment.body`) is the same text in every
dialect: it reads and writes arrays through typed :class:`Binding` names
with the index variables ``b`` (the sequence), ``j`` (the hidden unit) and
``i = b·H + j``, all ``ptrdiff_t``. A :class:`Dialect` supplies what differs,
in the way tinygrad's renderers share one C-style renderer: the names of the
math functions (the op table's ``{exp}``, ``{tanh}`` and ``{log}`` placeholders), the
preamble, and how ``b``, ``j`` and ``i`` come to be (a CUDA thread per
element, or loops in a host function). No back end edits another's text.

Sizes: every dynamic value (one that depends on a state) has the hidden size
H, because states do and the validator admits element-wise ops only between
equal sizes; so the element loop covers ``(batch, H)``. A static value (one
that reads only the input and constants) of another size is computed before
the loop (:func:`~lstm_graph.executors.prepare.static_values`), and a static
output (of size I, say) is copied into ``y`` there, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from lstm_graph.executors.layout import Layout
from lstm_graph.ir import NodeKind, Size
from lstm_graph.ops import C_FUNCTIONS
from lstm_graph.schedule import Schedule


class Role(str, Enum):
    """What an array a kernel reads or writes holds."""

    HOISTED = "hoisted"  # S: every dynamic linear's hoisted part at this step, (B, hoisted)
    BIAS = "bias"  # S_bias: the hoisted linears' biases, (hoisted,)
    GROUP = "group"  # G_k: the per-step GEMM output of group k, (B, members·H)
    PARAM = "param"  # a peephole's diagonal weight, (H,)
    STATIC = "static"  # a static value at this step, (B, H); a static number, (1,)
    BUFFER = "buffer"  # a dynamic value kept from one segment to a later one, (B, H)
    STATE = "state"  # a state: its old value on entry, its new value on exit, (B, H)
    OUTPUT = "output"  # y at this step, (B, H)
    TRACE = "trace"  # an assignment's value at this step, kept for a trace, (B, H)


@dataclass(frozen=True)
class Binding:
    """One array name of the generated code: its role and what it holds.

    ``key`` is the node, parameter, state or group source (empty for S,
    S_bias and y); ``per_step`` arrays hold all steps and advance by one step's
    slice each step; a ``scalar`` static value is one number for every element.
    """

    name: str
    role: Role
    key: str = ""
    per_step: bool = False
    scalar: bool = False


@dataclass
class Segment:
    """One fused pass over the step's elements and the GEMMs that run just before it."""

    index: int
    gemms: list[str] = field(default_factory=list)  # group sources
    nodes: list[str] = field(default_factory=list)  # dynamic op nodes it computes
    inputs: list[str] = field(default_factory=list)  # binding names it only reads
    outputs: list[str] = field(default_factory=list)  # binding names it writes
    body: list[str] = field(default_factory=list)  # dialect-neutral statements

    @property
    def name(self) -> str:
        return f"lstm_graph_step_{self.index}"


@dataclass
class StepKernels:
    """A step's segments and every array name their bodies use."""

    segments: list[Segment]
    bindings: dict[str, Binding]
    hidden: int

    def binding_of(self, role: Role, key: str) -> Binding:
        """The binding of ``role`` holding ``key`` (the buffer of a node, say)."""
        return next(b for b in self.bindings.values() if b.role is role and b.key == key)

    def of_role(self, role: Role) -> list[Binding]:
        return [b for b in self.bindings.values() if b.role is role]


def _segments(schedule: Schedule, layout: Layout) -> tuple[list[Segment], dict[str, int]]:
    """Cut the dynamic ops into segments; a segment ends where a GEMM needs one of its values."""
    graph = schedule.graph
    dynamic = [n for n in schedule.order
               if graph.node(n).kind is NodeKind.OP and n not in layout.static]
    segments = [Segment(0)]
    segment_of: dict[str, int] = {}
    for source in layout.groups:
        if source in layout.static or graph.node(source).kind is not NodeKind.OP:
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


def step_kernels(schedule: Schedule, layout: Layout, hidden: int, trace: bool = False,
                 folded: Collection[str] = ()) -> StepKernels:
    """The segments of one step, their bodies and bindings, every shape baked in.

    With ``trace``, each segment also stores every assignment it computes into a
    per-step ``TRACE`` array (a separate build: the untraced step stores nothing).
    ``folded`` linears have their hoisted product (not their bias) in their group's
    GEMM output already, so their body reads no ``S`` (the native executor's per-step
    GEMMs multiply ``[x_t, h_{t-1}]`` at once; the CUDA plan folds none).

    >>> from lstm_graph.library import load_cell
    >>> from lstm_graph.executors.layout import analyse
    >>> cell = load_cell("peephole_lstm")
    >>> kernels = step_kernels(cell.schedule, analyse(cell.schedule), hidden=8)
    >>> len(kernels.segments), kernels.segments[0].gemms
    (1, ['h[t-1]'])
    """
    graph = schedule.graph
    segments, segment_of = _segments(schedule, layout)
    last = len(segments) - 1
    bindings: dict[str, Binding] = {"S": Binding("S", Role.HOISTED, per_step=True),
                                    "S_bias": Binding("S_bias", Role.BIAS)}
    (output,) = graph.outputs
    if output not in layout.static:
        bindings["y"] = Binding("y", Role.OUTPUT, per_step=True)
    for k, source in enumerate(layout.groups):
        bindings[f"G_{k}"] = Binding(f"G_{k}", Role.GROUP, source)
    for state in graph.states:
        bindings[f"old_{state}"] = Binding(f"old_{state}", Role.STATE, state)
    generated: dict[tuple[Role, str], str] = {}

    def name_of(role: Role, key: str) -> str:
        if (role, key) not in generated:
            name = f"{role.value}_{len(generated)}"
            generated[role, key] = name
            scalar = role is Role.STATIC and schedule.sizes[key] is Size.SCALAR
            per_step = role is Role.TRACE or (role is Role.STATIC and not scalar)
            bindings[name] = Binding(name, role, key, per_step=per_step, scalar=scalar)
        return generated[role, key]

    group_index = {source: k for k, source in enumerate(layout.groups)}
    widths = {source: len(g.members) * hidden for source, g in layout.groups.items()}
    hoisted_width = len(layout.hoisted) * hidden
    position = {n: k for k, n in enumerate(schedule.order)}
    states = list(graph.states)
    stored = {n for n in segment_of
              if any(segment_of.get(c, last) > segment_of[n] for c in graph.consumers(n))
              or any(n in s.gemms for s in segments)
              or (n in (*states, output) and segment_of[n] < last)}

    for segment in segments:
        local: set[str] = set()
        reads: list[str] = []

        def use(array: str, reads: list[str] = reads) -> str:
            if array not in reads:
                reads.append(array)
            return array

        def value(node_id: str, local: set[str] = local) -> str:
            node = graph.node(node_id)
            if node.kind is NodeKind.CONST:
                return f"((T){node.value!r})"
            if node.kind is NodeKind.OLD:
                return f"{use('old_' + str(node.state))}[i]"
            if node_id in layout.static:
                name = name_of(Role.STATIC, node_id)
                return f"{use(name)}[{'0' if bindings[name].scalar else 'i'}]"
            if node_id in local:
                return f"v{position[node_id]}"
            return f"{use(name_of(Role.BUFFER, node_id))}[i]"

        body: list[str] = []
        for node_id in segment.nodes:
            node = graph.node(node_id)
            var = f"v{position[node_id]}"
            if node.is_linear:
                info = layout.linears[node_id]
                terms = []
                if node_id in layout.hoisted:
                    column = layout.hoisted_column(node_id) * hidden
                    hoisted = "" if node_id in folded else \
                        f"{use('S')}[b * {hoisted_width} + {column} + j] + "
                    terms.append(f"{hoisted}{use('S_bias')}[{column} + j]")
                for source in dict.fromkeys(s for s, _ in info.matrix):
                    column = layout.groups[source].members.index(node_id) * hidden
                    terms.append(f"{use(f'G_{group_index[source]}')}"
                                 f"[b * {widths[source]} + {column} + j]")
                for operand, param in info.peep:
                    terms.append(f"{use(name_of(Role.PARAM, param))}[j] * {value(operand)}")
                expression = " + ".join(terms)
            else:
                template = node.operation.c or ""
                expression = template.format(*(value(a) for a in node.args),
                                             **{f: "{" + f + "}" for f in C_FUNCTIONS},
                                             **{k: repr(v) for k, v in node.attrs})
            body.append(f"T {var} = {expression};  // {node_id}")
            local.add(node_id)
            if trace and node_id == node.assignment:
                recorded = name_of(Role.TRACE, node_id)
                body.append(f"{recorded}[i] = {var};")
                segment.outputs.append(recorded)
            if node_id in stored:
                buffer = name_of(Role.BUFFER, node_id)
                body.append(f"{buffer}[i] = {var};")
                segment.outputs.append(buffer)
        if segment.index == last:
            finals = [(state, value(state)) for state in states]
            y_value = value(output) if "y" in bindings else None
            for state, expression in finals:  # every old value is read before any is written
                body.append(f"const T new_{state} = {expression};")
            body += [f"old_{state}[i] = new_{state};" for state in states]
            segment.outputs += [f"old_{state}" for state in states]
            if y_value is not None:
                body.append(f"y[i] = {y_value};")
                segment.outputs.append("y")
        segment.inputs = [r for r in reads if r not in segment.outputs]
        segment.body = body
    return StepKernels(segments, bindings, hidden)


# -- dialects ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Dialect:
    """What one C-style target needs besides the shared body: the names of the math
    functions for a dtype and the text that must come first. Each back end wraps
    :meth:`body` in its own launch or loop (``b``, ``j`` and ``i`` defined)."""

    name: str
    functions: Callable[[np.dtype], dict[str, str]]
    preamble: Callable[[np.dtype], str] = lambda dtype: ""

    def body(self, segment: Segment, dtype: np.dtype, indent: str = "") -> list[str]:
        """The segment's statements with this dialect's function names filled in."""
        names = self.functions(dtype)
        return [indent + (line.format(**names) if "{" in line else line)
                for line in segment.body]


#: CUDA C++ for CuPy's ``ElementwiseKernel``: ``T`` is CuPy's type parameter, and CUDA's
#: C++ math overloads ``exp``, ``tanh`` and ``log`` for float and double.
CUDA = Dialect("cuda", lambda dtype: {"exp": "exp", "tanh": "tanh", "log": "log"})

C_TYPES = {np.dtype("float32"): "float", np.dtype("float64"): "double"}
