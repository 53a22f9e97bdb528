"""The public face of a compiled cell: its graph, schedule and parameters."""

from __future__ import annotations

from dataclasses import dataclass

from lstm_graph.errors import Diagnostic
from lstm_graph.ir import CellGraph
from lstm_graph.schedule import Schedule


@dataclass(frozen=True)
class Cell:
    """A validated, scheduled cell. Get one with :func:`lstm_graph.load_cell`."""

    graph: CellGraph
    schedule: Schedule
    warnings: list[Diagnostic]

    @property
    def name(self) -> str:
        return self.graph.name

    def params(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, in file order.

        >>> from lstm_graph import load_cell
        >>> load_cell("rnn").params(input_size=3, hidden_size=2)
        {'h.W_x': (2, 3), 'h.W_h': (2, 2), 'h.b': (2,)}
        """
        return self.schedule.param_shapes(input_size, hidden_size)
