"""lstm-graph: recurrent cells as dataflow graphs you can read, run and check.

>>> import lstm_graph
>>> cell = lstm_graph.load_cell("peephole_lstm")
>>> cell.schedule.stages[2]          # the output valve waits for the new memory
('o',)

The names below are imported when first used, so that importing a part (the command
line's entry, :mod:`lstm_graph.errors`) does not import them all (NumPy, networkx, the
executors: half a second).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers ("X as X": re-exported)
    from lstm_graph.cell import Cell as Cell
    from lstm_graph.errors import BackendError as BackendError
    from lstm_graph.errors import CellError as CellError
    from lstm_graph.errors import DataError as DataError
    from lstm_graph.errors import LstmGraphError as LstmGraphError
    from lstm_graph.errors import OutputError as OutputError
    from lstm_graph.errors import RenderError as RenderError
    from lstm_graph.errors import UnknownCellError as UnknownCellError
    from lstm_graph.errors import WeightsError as WeightsError
    from lstm_graph.layers import Stack as Stack
    from lstm_graph.library import builtin_names as builtin_names
    from lstm_graph.library import compile_source as compile_source
    from lstm_graph.library import load_cell as load_cell
    from lstm_graph.models import Model as Model
    from lstm_graph.models import load_model as load_model

#: Each public name's module.
_HOMES = {
    **dict.fromkeys(("BackendError", "CellError", "DataError", "LstmGraphError", "OutputError",
                     "RenderError", "UnknownCellError", "WeightsError"), "lstm_graph.errors"),
    "Cell": "lstm_graph.cell", "Stack": "lstm_graph.layers", "Model": "lstm_graph.models",
    "load_model": "lstm_graph.models", "builtin_names": "lstm_graph.library",
    "compile_source": "lstm_graph.library", "load_cell": "lstm_graph.library",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use; or a part of the package
    (``lstm_graph.cell``, ``lstm_graph.errors``), imported so, as ``import lstm_graph``
    made them reachable when it imported them all."""
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
    elif name.isidentifier() and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'lstm_graph' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
