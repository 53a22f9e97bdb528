"""Whether two cells compute the same thing, up to names: a structural comparison.

Two graphs compute alike when every state's new value and the output are the same
expression: assignments are looked through (``c = f * c[t-1] + i * g`` and
``cy = …`` are alike), ``+`` and ``*`` may swap their operands, each ``linear`` is
identified by the gate (and half) its ``gates`` line gives it, and its operands by
what they are (``x``, the old value of the state in the same role, an expression).
Anything else — another activation or attribute, a constant, one more term — differs.

Used where a wrong match would be a silent wrong number: a model file's weights
given to another cell (:func:`~lstm_graph.formats.importers.check_cell`), and the
export of a cell as ONNX's fused operator (:mod:`lstm_graph.export.fused`).

>>> from lstm_graph.formats.recurrent import CellSpec, DEFAULT_ACTIVATIONS
>>> from lstm_graph.language.parser import parse
>>> lstm = CellSpec("lstm", DEFAULT_ACTIVATIONS["lstm"])
>>> computes(spec_graph(lstm), lstm) is not None
True
"""

from __future__ import annotations

import itertools
from functools import cache

from lstm_graph.errors import CellError
from lstm_graph.formats.recurrent import CellSpec
from lstm_graph.ir import CellGraph, NodeKind
from lstm_graph.language.parser import parse
from lstm_graph.language.validate import validate
from lstm_graph.ops import OpKind

#: A cell with more nodes than this is not compared (the operators' cells have about 25).
MOST_NODES = 200


@cache
def spec_graph(spec: CellSpec) -> CellGraph:
    """The graph of what ``spec`` (an ONNX or PyTorch layer's cell) computes."""
    parsed = parse(spec.text("reference", "its layer"), "<reference>")
    _, found = validate(parsed.graph, parsed.assigned, False, parsed.broken)
    if parsed.refused or any(d.severity == "error" for d in [*parsed.diagnostics, *found]):
        raise CellError([*parsed.diagnostics, *found])  # our own text: a bug if it happens
    return parsed.graph


def computes(graph: CellGraph, spec: CellSpec) -> dict[str, str] | None:
    """Whether ``graph`` computes what ``spec``'s cell does: the state of ``graph`` that
    plays each of the spec cell's states, or None."""
    reference = spec_graph(spec)
    if len(graph.nodes) > MOST_NODES or len(graph.outputs) != 1 \
            or spec.family not in graph.gates or len(reference.states) != len(graph.states):
        return None
    for order in itertools.permutations(graph.states):
        states = dict(zip(reference.states, order))
        if same(graph, reference, spec.family, states):
            return states
    return None


def same(graph: CellGraph, reference: CellGraph, family: str, states: dict[str, str]) -> bool:
    """Whether ``graph`` computes what ``reference`` does, ``states`` mapping each of the
    reference's states to one of ``graph``'s; linears named by ``family``'s gates line."""
    table: dict[tuple[object, ...], int] = {}
    theirs = _Canon(reference, family, {s: s for s in reference.states}, table)
    ours = _Canon(graph, family, {mine: ref for ref, mine in states.items()}, table)
    (ref_out,) = reference.outputs
    (out,) = graph.outputs
    return ours.of(out) == theirs.of(ref_out) and all(
        ours.of(mine) == theirs.of(ref) for ref, mine in states.items())


class _Canon:
    """Hash-consed canonical forms of a graph's nodes (each an int of a table both graphs
    share), so equal structure is equal numbers, in time linear in the nodes."""

    def __init__(self, graph: CellGraph, family: str, states: dict[str, str],
                 table: dict[tuple[object, ...], int]):
        self.graph, self.states, self.table = graph, states, table
        self.memo: dict[str, int] = {}
        self.owners: dict[str, str] = {}
        gates = graph.gates.get(family)
        for owner in gates.owners if gates is not None else ():
            if owner.unused:
                continue
            if owner.input_owner == owner.recurrent_owner:
                self.owners[owner.input_owner] = f"{owner.gate}:both"
            else:
                self.owners[owner.input_owner] = f"{owner.gate}:input"
                self.owners[owner.recurrent_owner] = f"{owner.gate}:recurrent"

    def _intern(self, key: tuple[object, ...]) -> int:
        return self.table.setdefault(key, len(self.table))

    def of(self, node_id: str) -> int:
        if node_id not in self.memo:
            self.memo[node_id] = self._compute(node_id)
        return self.memo[node_id]

    def _compute(self, node_id: str) -> int:
        node = self.graph.node(node_id)
        if node.kind is NodeKind.INPUT:
            return self._intern(("input",))
        if node.kind is NodeKind.OLD:
            return self._intern(("old", self.states.get(str(node.state), "?")))
        if node.kind is NodeKind.CONST:
            return self._intern(("const", node.value))
        op = node.operation
        args = [self.of(a) for a in node.args]
        if op.kind is OpKind.COPY:
            return args[0]
        if op.kind is OpKind.LINEAR:
            owner = self.owners.get(str(node.assignment), f"free:{node.assignment}")
            operands = sorted(zip(args, node.peep))
            return self._intern(("linear", owner, tuple(operands)))
        if op.name in ("add", "mul"):
            args = sorted(args)
        return self._intern(("op", op.name, node.attrs, tuple(args)))
