"""The intermediate representation: a cell as a dataflow graph.

A :class:`CellGraph` holds the cell's declarations, its assignments and its
**nodes**:

- ``input`` nodes (``x``, there when the step starts),
- ``old`` nodes (``c[t-1]``: a state's value from the previous step),
- ``const`` nodes (numbers in the source),
- ``op`` nodes (one per operation; an assignment's top op carries its name).

A node's ``args`` are the one record of what it reads. The ``networkx``
graph :attr:`CellGraph.dataflow` is derived from them when the cell is built
and never edited, so the two cannot disagree. Every edge has a kind that says
*when* its value exists: ``old`` (previous step), ``input`` (inputs and
constants) and ``new`` (computed in this step: it must wait for its producer).

Sizes are symbolic (:class:`Size`): the input size I, the hidden size H, or a
single number; they become integers only when a cell is compiled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

import networkx as nx

from lstm_graph.ops import OPS, Op, OpKind, number_label


class NodeKind(str, Enum):
    INPUT = "input"
    OLD = "old"
    CONST = "const"
    OP = "op"


class EdgeKind(str, Enum):
    OLD = "old"
    INPUT = "input"
    NEW = "new"


#: The kind of an edge follows from the kind of the node it leaves.
EDGE_KIND_OF_SOURCE = {
    NodeKind.INPUT: EdgeKind.INPUT,
    NodeKind.CONST: EdgeKind.INPUT,
    NodeKind.OLD: EdgeKind.OLD,
    NodeKind.OP: EdgeKind.NEW,
}


class Size(str, Enum):
    """The symbolic size of a value: the input size, the hidden size, or one number.

    >>> Size.HIDDEN.resolve(input_size=3, hidden_size=8), Size.SCALAR.words
    (8, 'a single number')
    """

    INPUT = "I"
    HIDDEN = "H"
    SCALAR = "1"

    @property
    def words(self) -> str:
        """How a message names the size."""
        return {"I": "the input size I", "H": "the hidden size H", "1": "a single number"}[
            self.value]

    def resolve(self, input_size: int, hidden_size: int) -> int:
        """The size as a number, once the cell's sizes are known."""
        return {"I": input_size, "H": hidden_size, "1": 1}[self.value]


@dataclass(frozen=True, order=True)
class Loc:
    """A 1-based position in a cell file."""

    line: int
    col: int


def old_id(state: str) -> str:
    """Node id of a state's previous-step value: ``old_id("c") == "c[t-1]"``."""
    return f"{state}[t-1]"


@dataclass(frozen=True)
class Node:
    """One node of the graph; ``args`` are node ids in operand order."""

    id: str
    kind: NodeKind
    loc: Loc
    op: str | None = None
    args: tuple[str, ...] = ()
    peep: tuple[bool, ...] = ()  # linear only: operand i has a diagonal weight
    params: tuple[str, ...] = ()  # linear only: one weight per operand, then the bias
    assignment: str | None = None  # the assignment this op or constant belongs to
    value: float | None = None  # const only
    state: str | None = None  # old only: the state it reads
    attrs: tuple[tuple[str, float], ...] = ()  # op only: its attribute values, by name

    @property
    def attributes(self) -> dict[str, float]:
        """The op's attribute values by name (``{"alpha": 0.1}``; empty for most ops)."""
        return dict(self.attrs)

    @property
    def is_linear(self) -> bool:
        """Whether this is a learned layer (``linear(...)``)."""
        return self.op is not None and OPS[self.op].kind is OpKind.LINEAR

    @property
    def operation(self) -> Op:
        """The op-table entry of an op node (a TypeError for other kinds: a bug)."""
        if self.op is None:
            raise TypeError(f"node {self.id!r} is a {self.kind.value} node, not an op")
        return OPS[self.op]

    @property
    def constant(self) -> float:
        """The number of a const node (a TypeError for other kinds: a bug)."""
        if self.value is None:
            raise TypeError(f"node {self.id!r} is a {self.kind.value} node, not a constant")
        return self.value


@dataclass(frozen=True)
class Assignment:
    """One ``name = expression  # caption`` line of a cell file."""

    name: str
    loc: Loc
    index: int  # position in the file: ties in the schedule follow it
    nodes: tuple[str, ...]  # op/const node ids, operands before users; the last is ``name``
    reads: tuple[tuple[str, Loc], ...]  # names read (inputs, states, values) and where
    caption: str | None = None


@dataclass(frozen=True)
class Preset:
    """A ``preset NAME: a, b`` line: a named highlight (the article's figure sequence)."""

    name: str
    assignments: tuple[str, ...]
    loc: Loc
    locs: tuple[Loc, ...]  # where each assignment is named


@dataclass(frozen=True)
class GateOwner:
    """Who holds one stacked gate of a PyTorch/ONNX layer in this cell.

    ``input_owner``'s linear takes the gate's input weights and bias;
    ``recurrent_owner``'s its recurrent weights. They differ only for a gate
    split in two (the GRU's ``n = a + b``, whose reset valve scales one half).
    Both are empty for a gate the cell does not use (``f = -``: ONNX's
    ``input_forget`` computes the forget valve as ``1 - i`` and ignores its weights).
    """

    gate: str
    input_owner: str
    recurrent_owner: str
    loc: Loc

    @property
    def unused(self) -> bool:
        """Whether this cell ignores the gate's weights."""
        return not self.input_owner


@dataclass(frozen=True)
class GateMap:
    """A ``gates FAMILY: i, f, g, o`` line: how this cell takes stacked-gate weights."""

    family: str
    owners: tuple[GateOwner, ...]
    loc: Loc


@dataclass
class CellGraph:
    """A parsed cell: its declarations, assignments, nodes and directives.

    ``dataflow`` is derived from the nodes' ``args`` when the graph is made;
    an argument naming no node (after a parse error) draws no edge.
    """

    name: str
    file: str
    inputs: dict[str, Loc]
    states: dict[str, Loc]
    outputs: dict[str, Loc]
    assignments: dict[str, Assignment]
    nodes: Mapping[str, Node]
    presets: dict[str, Preset] = field(default_factory=dict)
    gates: dict[str, GateMap] = field(default_factory=dict)
    dataflow: nx.DiGraph = field(init=False, repr=False)

    def __post_init__(self) -> None:
        dataflow = nx.DiGraph()
        for node_id in self.nodes:
            dataflow.add_node(node_id)
        for node in self.nodes.values():
            for arg, peep in zip(node.args, node.peep or (False,) * len(node.args)):
                if arg in self.nodes:
                    kind = EDGE_KIND_OF_SOURCE[self.nodes[arg].kind]
                    dataflow.add_edge(arg, node.id, kind=kind, peep=peep)
        self.dataflow = dataflow

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def edges(self) -> Iterator[tuple[str, str, EdgeKind]]:
        """``(source, target, kind)`` for every edge, grouped by source in node order."""
        yield from self.dataflow.edges(data="kind")

    def edge_kind(self, src: str, dst: str) -> EdgeKind:
        kind: EdgeKind = self.dataflow.edges[src, dst]["kind"]
        return kind

    def is_peep(self, src: str, dst: str) -> bool:
        """Whether ``dst`` reads ``src`` through a diagonal (peephole) weight."""
        peep: bool = self.dataflow.edges[src, dst]["peep"]
        return peep

    def consumers(self, node_id: str) -> list[str]:
        """The nodes that read ``node_id``, in node order."""
        return list(self.dataflow.successors(node_id))

    def linears(self) -> Iterator[Node]:
        """Linear nodes, in file order."""
        for assignment in self.assignments.values():
            for node_id in assignment.nodes:
                node = self.node(node_id)
                if node.is_linear:
                    yield node

    def sole_consumer(self, node_id: str) -> Node | None:
        """The one node that reads ``node_id``, when its value is needed nowhere else.

        None if several nodes read it, or if it is a state or an output (whose
        value is kept). Executors fuse such a linear with its activation;
        diagrams draw them as one learned layer.
        """
        consumers = self.consumers(node_id)
        if len(consumers) != 1 or node_id in self.states or node_id in self.outputs:
            return None
        return self.node(consumers[0])

    def describe(self, node_id: str) -> str:
        """How a message names a node: ``'f'``, ``c[t-1]``, ``the '*' in 'c'``."""
        node = self.node(node_id)
        if node.kind is NodeKind.CONST:
            return f"the constant {number_label(node.constant)}"
        if node.kind is not NodeKind.OP or node.id == node.assignment:
            return f"'{node.id}'"
        spelling = node.operation.spelling
        shown = f"{spelling}(…)" if spelling.isidentifier() else f"'{spelling}'"
        return f"the {shown} in '{node.assignment}'"
