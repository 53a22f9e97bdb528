"""The explorer: a cell's run on its own diagram, as one self-contained, offline HTML page.

From Python (``lstm-graph explore`` does the same from the command line)::

    cell = lstm_graph.load_cell("gru")
    runner = cell.compile(input_size=2, hidden_size=3, seed=0)
    x = numpy.ones((4, 1, 2), "float32")
    page = build_page(Run(cell, runner.trace(x), x, {"h": numpy.zeros((1, 3), "float32")},
                          runner.dtype))

See :mod:`.page` (what the page holds), :mod:`.data` (its JSON and size budget)
and :mod:`.svg` (how the diagrams are embedded).
"""

from lstm_graph.explore.page import Run, build_page, kept_of

__all__ = ["Run", "build_page", "kept_of"]
