"""Which cells are exactly one of ONNX's recurrent operators, decided from their graphs.

An exported model runs ONNX's ``LSTM``, ``GRU`` or ``RNN`` operator (onnxruntime's
fused kernel) only for a cell that computes exactly what the operator computes; every
other cell becomes a ``Scan`` over its own step. A cell that merely looks like an LSTM
must never get the operator: a wrong number in deployment is the worst defect.

So the decision is structural. Each operator's cell is written by
:meth:`~lstm_graph.formats.recurrent.CellSpec.text` (default activations, with and
without peepholes; the GRU in both reset forms; the RNN with ``tanh`` and ``relu``).
A cell matches one when its ``gates`` line names the same family and every state's new
value and the output are the same expression as the operator cell's, up to names:
assignments are looked through (so ``c = f * c[t-1] + i * g`` and ``cy = …`` are alike),
``+`` and ``*`` may swap their operands, each ``linear`` is identified by the gate (and
half) its ``gates`` line gives it, and its operands by what they are (``x``, the old
value of the state in the operator's role, an expression). Anything else — another
activation, a constant, a gate line that gives a gate to another assignment, one more
term — differs, and the cell is exported as a ``Scan``.

>>> from lstm_graph.library import load_cell
>>> [match(load_cell(name)) is not None for name in ("lstm", "coupled_lstm", "lstm_proj")]
[True, False, False]
>>> match(load_cell("peephole_lstm")).op_type, match(load_cell("gru")).linear_before_reset
('LSTM', True)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

from lstm_graph.cell import Cell
from lstm_graph.formats.importers import GATE_ORDER, GateParams, gate_params
from lstm_graph.formats.recurrent import DEFAULT_ACTIVATIONS, RELU, TANH, CellSpec
from lstm_graph.ir import CellGraph, NodeKind
from lstm_graph.ops import OpKind

#: The operator each family runs as.
OPERATORS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}

#: Every operator cell a cell may be exactly: ``CellSpec`` arguments.
CANDIDATES: tuple[CellSpec, ...] = (
    CellSpec("lstm", DEFAULT_ACTIVATIONS["lstm"]),
    CellSpec("lstm", DEFAULT_ACTIVATIONS["lstm"], peepholes=True),
    CellSpec("gru", DEFAULT_ACTIVATIONS["gru"], linear_before_reset=True),
    CellSpec("gru", DEFAULT_ACTIVATIONS["gru"], linear_before_reset=False),
    CellSpec("rnn", (TANH,)),
    CellSpec("rnn", (RELU,)),
)
#: A cell with more nodes than this is not compared (the operator cells have about 25).
MOST_NODES = 200


@dataclass(frozen=True)
class Fused:
    """How a cell runs as an ONNX operator: its type and attributes, which of the cell's
    states plays each of the operator's (``h``, and ``c`` for an LSTM), and where each
    stacked gate's parameters are (in the operator's gate order)."""

    op_type: str
    spec: CellSpec
    states: dict[str, str]  # the operator's state -> the cell's
    gates: tuple[tuple[str, GateParams], ...]  # ONNX's gate order

    @property
    def activations(self) -> list[str]:
        """ONNX's ``activations`` attribute for one direction."""
        return [str(a.op.onnx) for a in self.spec.activations]

    @property
    def linear_before_reset(self) -> bool:
        return self.spec.linear_before_reset

    @property
    def peepholes(self) -> tuple[str, ...]:
        """The peephole parameters in ONNX's ``P`` order (``i, o, f``); empty without."""
        if not self.spec.peepholes:
            return ()
        by_gate = dict(self.gates)
        return tuple(str(by_gate[g].peep) for g in GATE_ORDER["onnx", "lstm_peepholes"])


def match(cell: Cell) -> Fused | None:
    """The ONNX operator ``cell`` is exactly, or None (see the module docstring)."""
    graph = cell.graph
    if len(graph.nodes) > MOST_NODES or len(graph.outputs) != 1:
        return None
    for spec in CANDIDATES:
        if spec.family not in graph.gates:
            continue
        reference = _reference(spec).graph
        if len(reference.states) != len(graph.states):
            continue
        for order in itertools.permutations(graph.states):
            states = dict(zip(reference.states, order))
            if _same(graph, reference, spec.family, states):
                found = gate_params(graph, spec.family, graph.name)
                gates = tuple((g, found[g]) for g in _onnx_order(spec.family))
                if any(p is None for _, p in gates):
                    continue
                return Fused(OPERATORS[spec.family], spec, states,
                             tuple((g, p) for g, p in gates if p is not None))
    return None


def _onnx_order(family: str) -> tuple[str, ...]:
    """ONNX's gate order (the RNN's one gate is its own order)."""
    return GATE_ORDER.get(("onnx", family)) or GATE_ORDER["torch", family]


@cache
def _reference(spec: CellSpec) -> Cell:
    from lstm_graph.library import compile_source

    return compile_source(spec.text("reference", "ONNX"), "<reference>")


def _same(graph: CellGraph, reference: CellGraph, family: str, states: dict[str, str]) -> bool:
    """Whether ``graph`` computes what ``reference`` does, ``states`` mapping each of the
    reference's states to one of ``graph``'s."""
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
