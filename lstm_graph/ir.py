"""The intermediate representation: a cell as a dataflow graph.

A :class:`CellGraph` holds a ``networkx.DiGraph`` whose nodes are

- ``input`` nodes (``x``, there when the step starts),
- ``old`` nodes (``c[t-1]``: a state's value from the previous step),
- ``const`` nodes (numbers in the source),
- ``op`` nodes (one per operation; an assignment's top op carries its name).

Every edge has a kind that says *when* its value exists (DESIGN.md §2):
``old`` (previous step), ``input`` (inputs and constants) and ``new``
(computed in this step: it must wait for its producer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

import networkx as nx

from lstm_graph.ops import OPS


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
    assignment: str | None = None  # the assignment this op belongs to
    value: float | None = None  # const only
    state: str | None = None  # old only: the state it reads


@dataclass(frozen=True)
class Assignment:
    """One ``name = expression  # caption`` line of a cell file."""

    name: str
    loc: Loc
    index: int  # position in the file: ties in the schedule follow it
    nodes: tuple[str, ...]  # op/const node ids, operands before users; the last is ``name``
    reads: tuple[tuple[str, Loc], ...]  # names read (inputs, states, values) and where
    caption: str | None = None


@dataclass
class CellGraph:
    """A parsed cell: its declarations, assignments and dataflow graph."""

    name: str
    file: str
    inputs: dict[str, Loc]
    states: dict[str, Loc]
    outputs: dict[str, Loc]
    assignments: dict[str, Assignment]
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    #: Every name some line assigns, even where that line has errors.
    targets: set[str] = field(default_factory=set)

    def node(self, node_id: str) -> Node:
        return self.graph.nodes[node_id]["node"]

    def nodes(self) -> Iterator[Node]:
        for node_id in self.graph.nodes:
            yield self.node(node_id)

    def edges(self) -> Iterator[tuple[str, str, EdgeKind]]:
        """``(source, target, kind)`` for every edge, in insertion order."""
        yield from self.graph.edges(data="kind")

    def add_node(self, node: Node) -> None:
        self.graph.add_node(node.id, node=node)

    def add_edge(self, src: str, dst: str, peep: bool = False) -> None:
        kind = EDGE_KIND_OF_SOURCE[self.node(src).kind]
        self.graph.add_edge(src, dst, kind=kind, peep=peep)

    def edge_kind(self, src: str, dst: str) -> EdgeKind:
        return self.graph.edges[src, dst]["kind"]

    def linears(self) -> Iterator[Node]:
        """Linear nodes, in file order."""
        for assignment in self.assignments.values():
            for node_id in assignment.nodes:
                node = self.node(node_id)
                if node.op == "linear":
                    yield node

    def sole_consumer(self, node_id: str) -> Node | None:
        """The one node that reads ``node_id``, when its value is needed nowhere else.

        None if several nodes read it, or if it is a state or an output (whose
        value is kept). Executors fuse such a linear with its activation;
        diagrams draw them as one learned layer.
        """
        consumers = list(self.graph.successors(node_id))
        if len(consumers) != 1 or node_id in self.states or node_id in self.outputs:
            return None
        return self.node(consumers[0])

    def describe(self, node_id: str) -> str:
        """How a message names a node: ``'f'``, ``c[t-1]``, ``the '*' in 'c'``."""
        node = self.node(node_id)
        if node.kind is NodeKind.CONST:
            return f"the constant {node.value:g}"
        if node.kind is not NodeKind.OP or node.id == node.assignment:
            return f"'{node.id}'"
        spelling = OPS[node.op].spelling
        shown = f"{spelling}(…)" if spelling.isidentifier() else f"'{spelling}'"
        return f"the {shown} in '{node.assignment}'"
