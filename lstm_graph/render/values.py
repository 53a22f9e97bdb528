"""Values on a diagram: each value node's numbers at one step, as a heat strip.

A :class:`Strip` is what a node shows under its symbol: one coloured cell per
hidden unit (units binned into at most :data:`MAX_CELLS` cells, each the mean
of its units) on the value scale of :mod:`palette`, and a note (the mean).
``render --trace`` bakes the colours of one step into the diagram; the
explorer page draws the same strips with placeholder colours
(:func:`placeholder_strips`) and recolours them at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lstm_graph.errors import DataError
from lstm_graph.formats.trace import LENGTHS, missing_values
from lstm_graph.render import palette as P
from lstm_graph.render.scene import Scene

#: The most cells a strip has; wider values are binned (contiguous units, mean).
MAX_CELLS = 32
#: Placeholder colours of the explorer's strips: cell k is ``#fdfdKK`` (hex).
PLACEHOLDER = "#fdfd{:02x}"


@dataclass(frozen=True)
class Strip:
    """A value node's heat strip: cell colours, left to right, and a note under it."""

    colours: tuple[str, ...]
    note: str | None = None
    width: int = 48  # points, about: each cell is a whole number of points, at least 2
    height: int = 7

    @property
    def cell_width(self) -> int:
        """Points per cell."""
        return max(2, self.width // len(self.colours))


def bins(width: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of the units each strip cell shows, as ``numpy.array_split`` cuts.

    >>> bins(3), bins(70)[:2]
    ([(0, 1), (1, 2), (2, 3)], [(0, 3), (3, 6)])
    """
    cells = min(width, MAX_CELLS)
    size, extra = divmod(width, cells)
    edges = [0]
    for k in range(cells):
        edges.append(edges[-1] + size + (k < extra))
    return list(zip(edges, edges[1:]))


def strip(value: np.ndarray) -> Strip:
    """The strip of one sequence's value at one step (a 1-D array)."""
    with np.errstate(all="ignore"):
        cells = [float(np.mean(value[a:b])) for a, b in bins(len(value))]
        mean = float(np.mean(value))
    return Strip(tuple(P.heat(v) for v in cells), f"mean {mean:+.3g}")


def strips_at(scene: Scene, trace: Mapping[str, np.ndarray], step: int, batch: int = 0,
              source: str = "the trace") -> dict[str, Strip]:
    """Every value node's strip at ``step`` (1-based) of sequence ``batch`` of ``trace``.

    ``trace`` maps assignment names to arrays ``(T, B, width)`` (``trace --out``);
    a value missing from it, a step or sequence out of range is a :class:`DataError`.
    """
    missing = [name for name in scene.graph.assignments if name not in trace]
    if missing:
        raise missing_values(source, scene.graph.name, missing, trace)
    strips = {}
    for node, names in scene.drawn_values().items():
        value = np.asarray(trace[names[0]])
        if value.ndim != 3:
            raise DataError(f"{source}: '{names[0]}' has shape {value.shape}; expected "
                            "(T, B, width) as 'lstm-graph trace' writes it")
        steps, sequences = value.shape[:2]
        if not 1 <= step <= steps:
            raise DataError(f"{source} holds steps 1 to {steps}; there is no step {step}")
        if not 0 <= batch < sequences:
            raise DataError(f"{source} holds sequences 0 to {sequences - 1}; there is no "
                            f"sequence {batch}")
        ended = _length(trace, batch)
        if ended is not None and step > ended:  # zeros, not values: f = σ(…) is never 0
            raise DataError(f"{source}: sequence {batch} ended at step {ended} (its length); "
                            f"past it the trace holds zeros, not values: give a step from 1 "
                            f"to {ended}")
        strips[node] = strip(value[step - 1, batch])
    return strips


def _length(trace: Mapping[str, np.ndarray], batch: int) -> int | None:
    """Sequence ``batch``'s length where the trace records lengths, else None."""
    lengths = trace.get(LENGTHS)
    return None if lengths is None else int(np.asarray(lengths)[batch])


def placeholder_strips(scene: Scene, widths: Mapping[str, int]) -> dict[str, Strip]:
    """Every value node's strip with placeholder colours (``#fdfd00``, ``#fdfd01``, …),
    for a page to find in the SVG and colour (larger than on paper: a page scales the
    diagram down); ``widths``: each assignment's width."""
    return {node: Strip(tuple(PLACEHOLDER.format(k) for k in range(len(bins(
        widths[names[0]])))), width=64, height=10)
            for node, names in scene.drawn_values().items()}
