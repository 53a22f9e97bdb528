"""Diagrams of a cell, in two styles, from the same schedule.

>>> import lstm_graph
>>> dot = render(lstm_graph.load_cell("peephole_lstm"), "cell")
>>> dot.source.count("style=dashed") > 0
True

``render`` returns a ``graphviz.Digraph`` (a notebook shows it inline) and
never runs Graphviz; :func:`save` writes DOT text itself, and runs ``dot`` only
for SVG, PNG and PDF. :func:`unrolled` draws several steps side by side; value
strips from a trace come from :mod:`lstm_graph.render.values`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import graphviz

from lstm_graph.cell import Cell
from lstm_graph.errors import RenderError
from lstm_graph.formats.files import write_atomic
from lstm_graph.render import classic, pipe
from lstm_graph.render.draw import Look
from lstm_graph.render.scene import build_scene, highlighted, path_words
from lstm_graph.render.values import Strip

STYLES = {"pipe": pipe.draw, "cell": classic.draw}
#: The most steps an unrolled drawing shows.
MAX_UNROLL = 8
FORMATS = ("svg", "png", "pdf", "dot")
HOW_TO_INSTALL_DOT = ("Graphviz's 'dot' program is not installed. Install it (Debian/Ubuntu: "
                      "apt-get install graphviz; macOS: brew install graphviz; see "
                      "https://graphviz.org/download/), or use --format dot, which needs no "
                      "program.")


def render(cell: Cell, style: str = "pipe", highlight: str | None = None,
           stages: bool = False, strips: Mapping[str, Strip] | None = None,
           values: str | None = None, marks: bool = False,
           gradients: Mapping[tuple[str, str], float] | None = None,
           gradient_note: str | None = None) -> graphviz.Digraph:
    """The diagram of ``cell`` in ``style`` ("pipe" or "cell").

    ``highlight`` names a node, an assignment or one of the cell's presets whose
    path is drawn in colour while the rest fades;
    ``stages`` writes each node's stage number on it; ``strips`` (see
    :mod:`lstm_graph.render.values`) draws values on the value nodes, and
    ``values`` says in the legend what they are ("step 3, sequence 0"); ``marks``
    names each edge ``"A → B"`` by the two nodes whose highlight lights it (for the
    explorer page, which highlights paths in the browser); ``gradients`` maps IR
    edges to the size of the gradient they carried (from ``runner.grad(...,
    record=True)``), drawn as edge widths and labels, ``gradient_note`` saying which
    step in the legend.
    """
    if style not in STYLES:
        raise RenderError(f"unknown style '{style}'; choose one of {', '.join(STYLES)}")
    scene = build_scene(cell.schedule)
    lit = frozenset(highlighted(scene, highlight)) if highlight else None
    reach = path_words(scene.graph, highlight) if highlight else None
    return STYLES[style](scene, Look(highlight, lit, stages, strips, values, marks, gradients,
                                     gradient_note, reach))


def unrolled(cell: Cell, steps: int) -> graphviz.Digraph:
    """``steps`` consecutive steps of ``cell`` side by side (pipe style): the memory pipe
    and the other states' line run straight through, labelled ``c_{t-1}, c_t, c_{t+1}…``.
    """
    if not 1 <= steps <= MAX_UNROLL:
        raise RenderError(f"cannot unroll {steps} steps; draw 1 to {MAX_UNROLL}")
    return pipe.draw_unrolled(build_scene(cell.schedule), steps)


def to_bytes(dot: graphviz.Digraph, fmt: str) -> bytes:
    """The diagram as ``fmt`` bytes; DOT without running anything."""
    if fmt == "dot":
        return str(dot.source).encode("utf-8")
    if fmt not in FORMATS:
        raise RenderError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    try:
        return bytes(dot.pipe(format=fmt))
    except graphviz.ExecutableNotFound:
        raise RenderError(HOW_TO_INSTALL_DOT) from None
    except graphviz.CalledProcessError as err:
        raise RenderError(f"Graphviz failed: {err.stderr.decode(errors='replace').strip()}") \
            from None


def save(dot: graphviz.Digraph, path: str | Path, fmt: str) -> Path:
    """Write the diagram to ``path`` whole or not at all."""
    return write_atomic(path, to_bytes(dot, fmt))


def gallery() -> dict[str, tuple[str, str, str | None]]:
    """The files of ``diagrams/`` without extension: name -> (cell, style, highlight).

    Every built-in cell in both styles, and the article's figure sequence (the
    peephole LSTM's presets, one highlight each).
    """
    from lstm_graph.library import builtin_names, load_cell

    entries: dict[str, tuple[str, str, str | None]] = {}
    for name in builtin_names():
        for style in STYLES:
            entries[f"{name}.{style}"] = (name, style, None)
    for preset in load_cell("peephole_lstm").graph.presets:
        for style in STYLES:
            entries[f"peephole_lstm.{preset}.{style}"] = ("peephole_lstm", style, preset)
    return entries
