"""Reverse mode as C: a step's backward element-wise work, from the op table's C VJPs.

The forward step's generator (:mod:`~lstm_graph.executors.codegen_c`) writes
each segment of a step once for every dialect; this module writes the same
step **backwards**, in the same vocabulary (typed :class:`~.codegen_c.Binding`
names, the index variables ``b``, ``j`` and ``i = b·H + j``, the dialects'
math placeholders), so the native and CUDA back ends wrap the same text:

- the forward pass keeps, per step, only the values the backward pass reads
  (:func:`plan_tape`): what each op's C VJP form names (``{out}``, ``{0}``, …),
  the states whose old values are read, and the operands of the linears whose
  weight gradients are summed over the steps; one array, a row of ``H``-wide
  columns per sequence;
- each forward segment, backwards (:class:`BackwardSegment`): its ops in reverse
  order, each node's gradient the sum of what its readers passed it (in
  registers within a segment; through a buffer from a later segment or from a
  GEMM), each op passing its operands the op table's ``c_vjp`` forms. A linear
  stores its gradient ``dZ`` (the gradient of its sum) into one per-step array
  of every linear the backward multiplies, and passes ``g ⊙ p`` to a peephole's
  operand; what its matrices pass back (``dZ·W`` to ``h[t-1]``, say) is a GEMM the
  back end runs between segments, and the weight gradients ``Σ_t operandᵀ·dZ_t``
  are GEMMs over every step's rows after the loop;
- what reaches a state's old value is carried to the step before (``CARRY``, two
  slots by step parity: this step's incoming gradient, and the one being summed
  for the step before).

Which nodes pass gradient, and to which operands, is decided as the reference
interpreter's ``backward`` decides it (the values that depend on the input, a
state or a parameter, reached from the output and the states): a node that
receives none passes none, so a NaN in a value no gradient reaches stays out,
as in the reference.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lstm_graph.executors.backends import to_numpy
from lstm_graph.executors.codegen_c import (
    Binding,
    Lifetime,
    Role,
    TapeLayout,
    segments_of,
)
from lstm_graph.executors.interpreter import needs_gradient
from lstm_graph.executors.layout import Layout
from lstm_graph.ir import Node, NodeKind, Size, old_id
from lstm_graph.ops import C_FUNCTIONS
from lstm_graph.schedule import Schedule


def receivers(schedule: Schedule) -> set[str]:
    """The nodes whose gradient the reference backward computes: the output and the
    states, and every operand (depending on the input, a state or a parameter) of a
    node that has one."""
    graph = schedule.graph
    needs = needs_gradient(schedule)
    (output,) = graph.outputs
    found = {output, *graph.states}
    for node_id in reversed(schedule.order):
        node = graph.node(node_id)
        if node_id in found and node.kind is NodeKind.OP:
            found.update(a for a in node.args if a in needs)
    return found


class _Fields(string.Formatter):
    """Fills a C form's fields by calling ``resolve`` for each one it names (so a VJP
    form that reads only ``{out}`` never loads its operands)."""

    def __init__(self, resolve: Callable[[int | str], str]):
        super().__init__()
        self.resolve = resolve

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]
                  ) -> Any:
        return self.resolve(key)


def _fields(form: str) -> set[int | str]:
    """The fields a C form names: operand positions (ints) and names."""
    found: set[int | str] = set()
    for _, name, _, _ in string.Formatter().parse(form):
        if name is not None and name != "":
            found.add(int(name) if name.isdigit() else name)
    return found


def vjp_reads(node: Node, position: int) -> set[str]:
    """The nodes the C VJP form of ``node``'s operand ``position`` reads."""
    form = (node.operation.c_vjp or ())[position]
    reads = set()
    for name in _fields(form):
        if name == "out":
            reads.add(node.id)
        elif isinstance(name, int):
            reads.add(node.args[name])
    return reads


@dataclass(frozen=True)
class Plan:
    """What the backward pass computes for one cell, before any text is written.

    ``linears`` are the linears whose ``dZ`` the backward keeps, in column order
    (each group's accumulators, then the others, then ``per_step_statics``); ``got``
    the nodes that receive a gradient; ``needs`` those that may.
    """

    got: set[str]
    needs: set[str]
    linears: list[str]
    per_step_statics: list[str]


def plan(schedule: Schedule, layout: Layout, per_step_statics: Collection[str] = ()) -> Plan:
    """The backward pass's plan (see :class:`Plan`)."""
    got = receivers(schedule)
    linears = [m for group in layout.groups.values() for m in group.members[:group.accumulators]
               if m in got]
    linears += [n for n in layout.standalone if n in got]
    linears += [n for n in per_step_statics if n in got]
    return Plan(got, needs_gradient(schedule), linears, [n for n in per_step_statics])


def plan_tape(schedule: Schedule, layout: Layout, chosen: Plan, hidden: int) -> TapeLayout:
    """The values the forward pass keeps for the backward pass (see the module docstring):
    every value a VJP form reads, the operands of the linears' weight gradients and
    peepholes that are made in the step (dynamic values, old states, static values the
    step computes), each a column; an old value's column is its state's."""
    graph = schedule.graph
    kept: set[str] = set()

    def keep(node_id: str) -> None:
        node = graph.node(node_id)
        if node.kind is NodeKind.OLD:
            kept.add(str(node.state))
        elif node.kind is NodeKind.OP and (node_id not in layout.static
                                           or node_id in chosen.per_step_statics):
            kept.add(node_id)

    for node_id in schedule.order:
        node = graph.node(node_id)
        if node_id not in chosen.got or node.kind is not NodeKind.OP:
            continue
        if node.is_linear:
            if node_id in chosen.linears:
                for arg in node.args:
                    keep(arg)
            continue
        if node_id in layout.static:
            continue
        for k, arg in enumerate(node.args):
            if arg in chosen.needs:
                for read in vjp_reads(node, k):
                    keep(read)
    order = [*schedule.order, *graph.states]
    columns = {n: k for k, n in enumerate(dict.fromkeys(n for n in order if n in kept))}
    return TapeLayout(columns, hidden)


@dataclass
class BackwardSegment:
    """One forward segment, backwards: the GEMMs that must run before it (into the
    gradients of the values it computed that later segments multiplied), then its
    element-wise work, fused per tile."""

    index: int  # the forward segment's
    gemms: list[str] = field(default_factory=list)  # sources whose dZ·W runs before it
    nodes: list[str] = field(default_factory=list)  # its nodes with a gradient, reversed
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    sums: list[str] = field(default_factory=list)  # running sums (native: per thread)

    @property
    def name(self) -> str:
        return f"lstm_graph_back_{self.index}"


@dataclass
class BackwardKernels:
    """A step backwards: its segments in the order they run, and every array they name.

    ``dz`` is this step's ``dZ`` (a row of ``H``-wide blocks per sequence, one per linear
    of ``columns``) and ``dz_next`` the step after's (read by the GEMMs into the old
    values' carries); ``carry[s]`` holds ``∂L/∂s_t`` at step ``t`` and ``carry_old[s]``
    what this step passes to ``s_{t-1}`` (two slots of one array, by parity); ``adds``
    says, for each group source, whether its GEMM adds to what segments wrote before it.
    ``sum_columns``: where each linear's bias gradient and each peephole's weight
    gradient is summed (``SUMS``, one row per thread).
    """

    segments: list[BackwardSegment]
    bindings: dict[str, Binding]
    hidden: int
    plan: Plan
    tape: TapeLayout
    columns: dict[str, int]
    tape_now: Binding
    tape_old: Binding
    dz: Binding
    dz_next: Binding
    carry: dict[str, Binding]
    carry_old: dict[str, Binding]
    grad_output: Binding | None
    grad_buffers: dict[str, Binding]
    grad_statics: dict[str, Binding]
    adds: dict[str, bool]
    sums: Binding | None
    sum_columns: dict[tuple[str, str], int]

    @property
    def dz_width(self) -> int:
        return len(self.columns) * self.hidden

    def of_role(self, role: Role) -> list[Binding]:
        return [b for b in self.bindings.values() if b.role is role]


def backward_kernels(schedule: Schedule, layout: Layout, hidden: int,
                     per_step_statics: Collection[str] = (), sums: bool = False
                     ) -> BackwardKernels:
    """The backward segments of one step, their bodies and bindings (see the module
    docstring). ``per_step_statics`` are the static values the forward step computes
    at each step (kept on the tape, their gradient a ``dZ`` block); with ``sums``, each
    segment also adds the bias and peephole gradients into a per-thread running sum
    (the host's; a GPU sums ``dZ`` after the loop instead).

    >>> from lstm_graph.library import load_cell
    >>> from lstm_graph.executors.layout import analyse
    >>> cell = load_cell("lstm")
    >>> back = backward_kernels(cell.schedule, analyse(cell.schedule), hidden=8)
    >>> [s.gemms for s in back.segments], sorted(back.tape.columns)
    ([['h[t-1]']], ['c', 'f', 'g', 'h', 'h.tanh', 'i', 'o'])
    """
    graph = schedule.graph
    chosen = plan(schedule, layout, per_step_statics)
    tape = plan_tape(schedule, layout, chosen, hidden)
    got, needs = chosen.got, chosen.needs
    columns = {n: k for k, n in enumerate(chosen.linears)}
    width = len(columns) * hidden
    (output,) = graph.outputs
    bindings: dict[str, Binding] = {}

    def bind(binding: Binding) -> Binding:
        bindings[binding.name] = binding
        return binding

    tape_now = bind(Binding("tape", Role.TAPE, "now", tape.width, Lifetime.RUN, per_step=True,
                            offset=1))
    tape_old = bind(Binding("tape_old", Role.TAPE, "old", tape.width, Lifetime.RUN,
                            per_step=True, alias=tape_now.name))
    dz = bind(Binding("dz", Role.DZ, "now", width, Lifetime.RUN, per_step=True))
    dz_next = bind(Binding("dz_next", Role.DZ, "next", width, Lifetime.RUN, per_step=True,
                           offset=1, alias=dz.name))
    carry = {s: bind(Binding(f"carry_{s}", Role.CARRY, s, hidden, Lifetime.RUN, parity=True))
             for s in graph.states}
    carry_old = {s: bind(Binding(f"carry_old_{s}", Role.CARRY, old_id(s), hidden,
                                 Lifetime.RUN, parity=True, offset=-1, alias=carry[s].name))
                 for s in graph.states}
    grad_output = None
    if output not in layout.static:
        grad_output = bind(Binding("gy", Role.GRAD_OUTPUT, output, hidden, Lifetime.RUN,
                                   per_step=True))
    position = {n: k for k, n in enumerate(schedule.order)}
    segments = segments_of(schedule, layout)
    sources = {s: k for k, segment in enumerate(segments) for s in segment.gemms
               if graph.node(s).kind is NodeKind.OP and s not in layout.static}
    grad_buffers: dict[str, Binding] = {}
    grad_statics: dict[str, Binding] = {}
    statics_read: dict[str, Binding] = {}
    params: dict[str, Binding] = {}
    sum_columns: dict[tuple[str, str], int] = {}
    summed = None
    if sums:
        for linear in chosen.linears:
            node = graph.node(linear)
            sum_columns[linear, node.params[-1]] = len(sum_columns)
            for peep, param in zip(node.peep, node.params):
                if peep:
                    sum_columns[linear, param] = len(sum_columns)
        summed = bind(Binding("sums", Role.SUMS, "", len(sum_columns) * hidden, Lifetime.RUN))
    written: set[str] = set()  # gradient buffers, dZ blocks and static gradients set so far
    last_written: dict[str, BackwardSegment] = {}  # a static linear's dZ: its last writer
    adds: dict[str, bool] = {}
    backward: list[BackwardSegment] = []
    first = True
    for segment in reversed(segments):
        out = BackwardSegment(segment.index)
        out.gemms = [s for s, k in sources.items() if k == segment.index + 1 and s in needs]
        if segment.index == len(segments) - 1:  # the old values' GEMMs: for the step before
            out.gemms = [s for s in layout.groups if graph.node(s).kind is NodeKind.OLD] \
                + out.gemms
        for source in out.gemms:  # a GEMM into a value's gradient: what later reads take
            if graph.node(source).kind is NodeKind.OP:
                adds[source] = source in written
                written.add(source)
                if source not in grad_buffers:
                    grad_buffers[source] = bind(Binding(f"grad_{len(grad_buffers)}",
                                                        Role.GRAD_BUFFER, source, hidden))
        reads: list[str] = []
        loaded: dict[str, str] = {}
        body: list[str] = []
        contributions: dict[str, list[str]] = {}

        def use(name: str, reads: list[str] = reads) -> str:
            if name not in reads:
                reads.append(name)
            return name

        def value(node_id: str, body: list[str] = body, loaded: dict[str, str] = loaded
                  ) -> str:
            node = graph.node(node_id)
            if node.kind is NodeKind.CONST:
                return f"((T){node.value!r})"
            if node_id in loaded:
                return loaded[node_id]
            if node.kind is NodeKind.OLD:
                state = str(node.state)
                where = f"{use(tape_old.name)}[b * {tape.width} + {tape.column(state)} + j]"
                var = f"o_{state}"
            elif node_id in tape.columns:
                where = f"{use(tape_now.name)}[b * {tape.width} + {tape.column(node_id)} + j]"
                var = f"v{position[node_id]}"
            else:  # a static value made before the loop
                if node_id not in statics_read:
                    scalar = schedule.sizes[node_id] is Size.SCALAR
                    statics_read[node_id] = bind(Binding(
                        f"b_static_{len(statics_read)}", Role.STATIC, node_id,
                        1 if scalar else hidden, Lifetime.RUN, per_step=not scalar,
                        scalar=scalar))
                binding = statics_read[node_id]
                where = f"{use(binding.name)}[{'0' if binding.scalar else 'i'}]"
                var = f"v{position[node_id]}"
            body.append(f"const T {var} = {where};")
            loaded[node_id] = var
            return var

        def diagonal(name: str) -> str:
            if name not in params:
                params[name] = bind(Binding(f"b_param_{len(params)}", Role.PARAM, name, hidden,
                                            Lifetime.WEIGHTS))
            return f"{use(params[name].name)}[j]"

        def contribute(node_id: str, expression: str,
                       contributions: dict[str, list[str]] = contributions) -> None:
            contributions.setdefault(node_id, []).append(expression)

        nodes = [n for n in reversed(segment.nodes) if n in got]
        out.nodes = nodes
        if first:  # a state made before the loop: its carry is its value's gradient here
            for state in graph.states:
                if state in layout.static:
                    contribute(state, f"{use(carry[state].name)}[i]")
        for node_id in nodes:
            node = graph.node(node_id)
            terms = []
            if node_id == output and grad_output is not None:
                terms.append(f"{use(grad_output.name)}[i]")
            if node_id in graph.states:
                terms.append(f"{use(carry[node_id].name)}[i]")
            terms += contributions.pop(node_id, [])
            if node_id in written:
                terms.append(f"{use(grad_buffers[node_id].name)}[i]")
            gradient = f"g{position[node_id]}"
            body.append(f"const T {gradient} = {' + '.join(terms) or '(T)0'};  // {node_id}")
            if node.is_linear:
                if node_id in columns:
                    body.append(f"{dz.name}[b * {width} + {columns[node_id] * hidden} + j] = "
                                f"{gradient};")
                    if dz.name not in out.outputs:
                        out.outputs.append(dz.name)
                    if summed is not None:
                        column = sum_columns[node_id, node.params[-1]] * hidden
                        out.sums.append(f"{summed.name}[{column} + j] += {gradient};")
                for arg, peep, name in zip(node.args, node.peep, node.params):
                    if not peep:
                        continue
                    if arg in needs:
                        contribute(arg, f"({gradient} * {diagonal(name)})")
                    if summed is not None:
                        column = sum_columns[node_id, name] * hidden
                        out.sums.append(f"{summed.name}[{column} + j] += {gradient} * "
                                        f"{value(arg)};")
                continue
            forms = node.operation.c_vjp or ()
            for k, arg in enumerate(node.args):
                if arg not in needs:
                    continue

                def resolve(key: int | str, node: Node = node, gradient: str = gradient) -> str:
                    if key == "g":
                        return gradient
                    if key == "out":
                        return value(node.id)
                    if isinstance(key, int):
                        return value(node.args[key])
                    if key in C_FUNCTIONS:
                        return "{" + key + "}"
                    return repr(node.attributes[key])

                contribute(arg, _Fields(resolve).format(forms[k]))
        # what this segment passes to values made before it, or in earlier steps
        for node_id, terms in contributions.items():
            node = graph.node(node_id)
            total = " + ".join(terms)
            if node.kind is NodeKind.OLD:
                continue
            if node_id in layout.static and node_id not in columns:
                target = grad_statics.get(node_id) or bind(Binding(
                    f"grad_static_{len(grad_statics)}", Role.GRAD_STATIC, node_id, hidden,
                    Lifetime.RUN, per_step=True))
                grad_statics[node_id] = target
                where = f"{target.name}[i]"
            elif node_id in layout.static:  # a static linear the step computes: its dZ
                where = f"{dz.name}[b * {width} + {columns[node_id] * hidden} + j]"
                target = dz
                last_written[node_id] = out
            else:  # a value of an earlier segment
                target = grad_buffers.get(node_id) or bind(Binding(
                    f"grad_{len(grad_buffers)}", Role.GRAD_BUFFER, node_id, hidden))
                grad_buffers[node_id] = target
                where = f"{target.name}[i]"
            body.append(f"{where} {'+=' if node_id in written else '='} {total};")
            written.add(node_id)
            if target.name not in out.outputs:
                out.outputs.append(target.name)
        for state in graph.states:
            terms = contributions.get(old_id(state), [])
            if first or terms:
                total = " + ".join(terms) or "(T)0"
                body.append(f"{carry_old[state].name}[i] {'=' if first else '+='} {total};")
                out.outputs.append(carry_old[state].name)
        first = False
        out.body = body
        out.inputs = reads
        backward.append(out)
    if summed is not None:  # a static linear's bias: summed where its dZ is last written
        for linear, last in last_written.items():
            column = sum_columns[linear, graph.node(linear).params[-1]] * hidden
            last.sums.append(f"{summed.name}[{column} + j] += "
                             f"{dz.name}[b * {width} + {columns[linear] * hidden} + j];")
    for out in backward:
        if out.sums and summed is not None:
            out.outputs.append(summed.name)
        out.inputs = [r for r in out.inputs if r not in out.outputs]
    return BackwardKernels(backward, bindings, hidden, chosen, tape, columns, tape_now,
                           tape_old, dz, dz_next, carry, carry_old, grad_output, grad_buffers,
                           grad_statics, adds, summed, sum_columns)


# -- the GEMMs between and after the segments ------------------------------------------------

@dataclass(frozen=True)
class Run:
    """Consecutive blocks of ``dZ`` (``first``, ``count`` linears)."""

    first: int
    count: int


def runs_of(blocks: Collection[int]) -> list[Run]:
    """``dZ`` blocks as runs of neighbours, in ascending order."""
    runs: list[Run] = []
    for block in sorted(blocks):
        if runs and runs[-1].first + runs[-1].count == block:
            runs[-1] = Run(runs[-1].first, runs[-1].count + 1)
        else:
            runs.append(Run(block, 1))
    return runs


@dataclass(frozen=True)
class Product:
    """A GEMM with ``dZ``: the gradient ``operand`` receives from ``linears`` (one or two
    runs of ``dZ`` blocks) through their matrices, ``out (+)= dZ[:, runs] · W`` (``W``:
    their weights for ``operand`` stacked, :func:`stacked`), or, for a weight gradient,
    ``out (+)= operandᵀ · dZ[:, run]``. ``out`` and ``dz`` are binding (or argument)
    names; ``size`` is the operand's width."""

    out: str
    dz: str
    runs: tuple[Run, ...]
    linears: tuple[str, ...]
    operand: str
    size: int
    add: bool


def readers(kernels: BackwardKernels, schedule: Schedule, operand: str) -> list[str]:
    """The linears of ``dZ`` that multiply ``operand`` by a matrix, in block order."""
    graph = schedule.graph
    return [n for n in kernels.columns
            if any(a == operand and not p for a, p in zip(graph.node(n).args, graph.node(n).peep))]


def _products(kernels: BackwardKernels, schedule: Schedule, operand: str, out: str, dz: str,
              size: int, add: bool, pairs: bool = True) -> list[Product]:
    """The products of ``operand``'s readers: one per run (or per two runs, ``pairs``:
    the micro-kernels take two operands side by side), the later ones adding."""
    columns = kernels.columns
    mine = readers(kernels, schedule, operand)
    runs = runs_of([columns[n] for n in mine])
    step = 2 if pairs else 1
    found = []
    for k in range(0, len(runs), step):
        group = tuple(runs[k:k + step])
        linears = tuple(n for n in mine if any(r.first <= columns[n] < r.first + r.count
                                               for r in group))
        found.append(Product(out, dz, group, linears, operand, size, add or k > 0))
    return found


def step_products(kernels: BackwardKernels, schedule: Schedule) -> list[list[Product]]:
    """Per backward segment, the GEMMs that run before it: a state's old value gets the
    next step's ``dZ·W`` into its carry (the first segment's, the step after's GEMM
    running at the start of this step), a value of the step its readers' into its
    gradient buffer."""
    graph, hidden = schedule.graph, kernels.hidden
    found = []
    for segment in kernels.segments:
        mine: list[Product] = []
        for source in segment.gemms:
            node = graph.node(source)
            if node.kind is NodeKind.OLD:
                mine += _products(kernels, schedule, source,
                                  kernels.carry[str(node.state)].name, kernels.dz_next.name,
                                  hidden, True)
            else:
                mine += _products(kernels, schedule, source, kernels.grad_buffers[source].name,
                                  kernels.dz.name, hidden, kernels.adds[source])
        found.append(mine)
    return found


def weight_products(kernels: BackwardKernels, schedule: Schedule, input_size: int
                    ) -> list[Product]:
    """Every matrix's weight gradient over every step's rows, ``operandᵀ · dZ[:, run]``,
    one per run of the readers' blocks (``out``: ``W_k``)."""
    graph, columns = schedule.graph, kernels.columns
    operands = dict.fromkeys(a for n in columns for a, p in
                             zip(graph.node(n).args, graph.node(n).peep) if not p)
    found: list[Product] = []
    for operand in operands:
        size = schedule.width(operand, input_size, kernels.hidden)
        for product in _products(kernels, schedule, operand, "", kernels.dz.name, size, False,
                                 pairs=False):
            found.append(Product(f"W_{len(found)}", product.dz, product.runs, product.linears,
                                 operand, size, False))
    return found


def static_products(kernels: BackwardKernels, schedule: Schedule, layout: Layout,
                    input_size: int) -> list[Product]:
    """The static operands' gradients (``∂L/∂x``) over every step's rows, ``dZ · W``: into
    the static value's per-step gradient where the steps wrote one, else into ``D_k``."""
    graph, columns = schedule.graph, kernels.columns
    operands = dict.fromkeys(a for n in columns for a, p in
                             zip(graph.node(n).args, graph.node(n).peep)
                             if not p and a in layout.static and a in kernels.plan.needs)
    found: list[Product] = []
    for k, operand in enumerate(operands):
        size = schedule.width(operand, input_size, kernels.hidden)
        written = operand in kernels.grad_statics
        out = kernels.grad_statics[operand].name if written else f"D_{k}"
        found += _products(kernels, schedule, operand, out, kernels.dz.name, size, written)
    return found


def stacked(schedule: Schedule, params: Mapping[str, Any], product: Product, dtype: Any
            ) -> Any:
    """The weights with which ``product``'s linears multiply its operand, stacked in block
    order: ``(linears·H, size)``, a host array."""
    graph = schedule.graph
    blocks = []
    for linear in product.linears:
        node = graph.node(linear)
        (param,) = [p for a, peep, p in zip(node.args, node.peep, node.params)
                    if a == product.operand and not peep]
        blocks.append(to_numpy(params[param]))
    return np.ascontiguousarray(np.concatenate(blocks), dtype=dtype)


def weight_of(schedule: Schedule, linear: str, operand: str) -> str:
    """The parameter with which ``linear`` multiplies ``operand`` by a matrix."""
    node = schedule.graph.node(linear)
    (param,) = [p for a, peep, p in zip(node.args, node.peep, node.params)
                if a == operand and not peep]
    return param

