"""How a compiled plan lays out a cell's linears: hoisting and gate fusion.

Backend-neutral analysis shared by the compiled plans (NumPy, native C and
CUDA; the reference interpreter does none of this):

- **static** nodes read only the input and constants: they are computed for
  all time steps at once, before the time loop;
- every linear's static part (its operands that are static, plus its bias)
  goes into one hoisted GEMM over all ``T·B`` rows, ``S = X·Wᵀ + b``;
- linears that multiply the same per-step operand (say ``h[t-1]``) share one
  GEMM per step (gate fusion); each linear **accumulates** in the first such
  group whose operand is available, and the hoisted part is added to a
  group's accumulators with one add, because ``S`` lists them in the same
  column order;
- in a group, columns are ordered by (stage, activation, file order), so
  linears whose activation can run together sit side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lstm_graph.ir import NodeKind
from lstm_graph.ops import FAST_FORMS
from lstm_graph.schedule import Schedule

#: Activations the NumPy plan computes in its fast forms, fused with their linear.
FUSABLE_ACTIVATIONS = tuple(FAST_FORMS["exp"].scale)


@dataclass
class LinearInfo:
    """One linear node as the plan sees it."""

    id: str
    stage: int
    static: list[tuple[str, str]]  # (operand node, weight name), hoisted
    matrix: list[tuple[str, str]]  # (operand node, weight name), a GEMM per step
    peep: list[tuple[str, str]]  # (operand node, diagonal weight name)
    bias: str
    activation: str | None  # its only consumer, when that is sigmoid or tanh
    group: str | None = None  # operand whose GEMM holds its accumulator
    column: int = 0  # first column of its accumulator, in units of H


@dataclass
class Group:
    """Linears sharing one per-step GEMM ``G = source · Wᵀ``."""

    source: str
    members: list[str] = field(default_factory=list)  # column order, accumulators first
    accumulators: int = 0  # how many leading members accumulate here


@dataclass
class Layout:
    """Where each linear's terms are computed, and in which column order."""

    static: set[str]  # node ids computable before the loop
    linears: dict[str, LinearInfo]
    groups: dict[str, Group]  # by source node, in the order their GEMMs run
    hoisted: list[str]  # dynamic linears, in the column order of S
    standalone: list[str]  # dynamic linears without a GEMM (peepholes only)

    def hoisted_column(self, linear: str) -> int:
        """Block index of ``linear`` in the hoisted GEMM's output."""
        return self._hoisted_at[linear]

    _hoisted_at: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._hoisted_at = {name: k for k, name in enumerate(self.hoisted)}


def _static_nodes(schedule: Schedule) -> set[str]:
    graph = schedule.graph
    static = {n.id for n in graph.nodes.values()
              if n.kind in (NodeKind.INPUT, NodeKind.CONST)}
    for node_id in schedule.order:
        node = graph.node(node_id)
        if node.kind is NodeKind.OP and all(a in static for a in node.args):
            static.add(node_id)
    return static


def analyse(schedule: Schedule) -> Layout:
    """The layout of a scheduled cell (deterministic: file order breaks every tie)."""
    graph = schedule.graph
    static = _static_nodes(schedule)
    position = {node_id: i for i, node_id in enumerate(schedule.order)}
    linears: dict[str, LinearInfo] = {}
    for node in graph.linears():
        only = None if node.id in static else graph.sole_consumer(node.id)
        kind = only.op if only is not None and only.op in FUSABLE_ACTIVATIONS else None
        info = LinearInfo(node.id, schedule.stage_of(node.id), [], [], [], node.params[-1], kind)
        for arg, peep, param in zip(node.args, node.peep, node.params):
            target = info.peep if peep else info.static if arg in static else info.matrix
            target.append((arg, param))
        linears[node.id] = info

    node_rank = {node_id: i for i, node_id in enumerate(graph.nodes)}

    def available(source: str) -> tuple[int, int]:  # old and static values: at step start
        is_op = graph.node(source).kind is NodeKind.OP and source not in static
        return (position[source] if is_op else -1, node_rank[source])

    sources = sorted({s for info in linears.values() for s, _ in info.matrix}, key=available)
    groups = {source: Group(source) for source in sources}
    source_rank = {source: i for i, source in enumerate(sources)}
    for info in linears.values():
        if info.matrix:
            info.group = min((s for s, _ in info.matrix), key=source_rank.__getitem__)
    rank = {name: i for i, name in enumerate(linears)}

    def order_key(name: str) -> tuple:
        info = linears[name]
        return (info.stage, FUSABLE_ACTIVATIONS.index(info.activation)
                if info.activation else len(FUSABLE_ACTIVATIONS), rank[name])

    users: dict[str, list[str]] = {source: [] for source in sources}
    for name, info in linears.items():
        for source in dict.fromkeys(s for s, _ in info.matrix):
            users[source].append(name)
    for source, group in groups.items():
        members = users[source]
        accumulators = sorted((n for n in members if linears[n].group == source), key=order_key)
        others = sorted((n for n in members if linears[n].group != source), key=order_key)
        group.members = accumulators + others
        group.accumulators = len(accumulators)
        for column, name in enumerate(accumulators):
            linears[name].column = column
    standalone = sorted((n for n, info in linears.items()
                         if not info.matrix and n not in static), key=order_key)
    hoisted = [n for g in groups.values() for n in g.members[: g.accumulators]]
    hoisted += standalone
    return Layout(static, linears, groups, hoisted, standalone)
