"""Which cells are exactly one of ONNX's recurrent operators, decided from their graphs.

An exported model runs ONNX's ``LSTM``, ``GRU`` or ``RNN`` operator (onnxruntime's
fused kernel) only for a cell that computes exactly what the operator computes; every
other cell becomes a ``Scan`` over its own step. A cell that merely looks like an LSTM
must never get the operator: a wrong number in deployment is the worst defect.

So the decision is structural. Each operator's cell is written by
:meth:`~lstm_graph.formats.recurrent.CellSpec.text` (default activations, with and
without peepholes; the GRU in both reset forms; the RNN with ``tanh`` and ``relu``).
A cell matches one when it computes the same, up to names
(:func:`lstm_graph.equivalence.computes`): another activation, a constant, a gate line
that gives a gate to another assignment, one more term — and the cell is exported as
a ``Scan``.

>>> from lstm_graph.library import load_cell
>>> [match(load_cell(name)) is not None for name in ("lstm", "coupled_lstm", "lstm_proj")]
[True, False, False]
>>> match(load_cell("peephole_lstm")).op_type, match(load_cell("gru")).linear_before_reset
('LSTM', True)
"""

from __future__ import annotations

from dataclasses import dataclass

from lstm_graph.cell import Cell
from lstm_graph.equivalence import computes
from lstm_graph.formats.importers import GATE_ORDER, GateParams, gate_params
from lstm_graph.formats.recurrent import DEFAULT_ACTIVATIONS, RELU, TANH, CellSpec

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
    for spec in CANDIDATES:
        states = computes(graph, spec)
        if states is None or any(mine != role and mine in states
                                 for role, mine in states.items()):
            continue  # a state named as another of the operator's: a reader would swap them
        found = gate_params(graph, spec.family, graph.name)
        gates = tuple((g, found[g]) for g in _onnx_order(spec.family))
        if all(p is not None for _, p in gates):
            return Fused(OPERATORS[spec.family], spec, states,
                         tuple((g, p) for g, p in gates if p is not None))
    return None


def _onnx_order(family: str) -> tuple[str, ...]:
    """ONNX's gate order (the RNN's one gate is its own order)."""
    return GATE_ORDER.get(("onnx", family)) or GATE_ORDER["torch", family]
