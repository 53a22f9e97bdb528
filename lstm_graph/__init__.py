"""lstm-graph: recurrent cells as dataflow graphs you can read, run and check.

>>> import lstm_graph
>>> cell = lstm_graph.load_cell("peephole_lstm")
>>> cell.schedule.stages[2]          # the output valve waits for the new memory
('o',)
"""

from lstm_graph.cell import Cell
from lstm_graph.errors import (
    BackendError,
    CellError,
    DataError,
    LstmGraphError,
    OutputError,
    RenderError,
    UnknownCellError,
    WeightsError,
)
from lstm_graph.layers import Stack
from lstm_graph.library import builtin_names, compile_source, load_cell
from lstm_graph.models import Model, load_model

__all__ = [
    "BackendError", "Cell", "CellError", "DataError", "LstmGraphError", "Model", "OutputError",
    "RenderError", "Stack", "UnknownCellError", "WeightsError", "builtin_names",
    "compile_source", "load_cell", "load_model",
]
