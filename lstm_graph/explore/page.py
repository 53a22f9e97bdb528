"""The explorer page: one self-contained HTML file that shows a cell run on its diagram.

:func:`build_page` draws the cell in both styles with our renderer (stage
numbers, placeholder value strips, edges named for highlighting), embeds the
SVG Graphviz makes (:mod:`.svg`), the trace as JSON (:mod:`.data`) and the
page's own stylesheet and script (``assets/``), and returns the HTML. Nothing
on the page is fetched: no fonts, scripts, styles or images from anywhere, so
it opens from disk, offline, in any current browser. The same inputs give the
same bytes.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import numpy as np

from lstm_graph.cell import Cell
from lstm_graph.explore.data import budget, keep, to_json
from lstm_graph.explore.svg import NodeInfo, embed
from lstm_graph.render import STYLES, check_size, classic, palette, pipe, render, to_bytes
from lstm_graph.render.scene import Scene, build_scene, highlighted
from lstm_graph.render.values import bins, placeholder_strips

#: How each style grows a highlight (the Cell, the bus, the input labels).
_LIT = {"pipe": pipe.lit_nodes, "cell": classic.lit_nodes}


@dataclass(frozen=True)
class Run:
    """What a page shows: a cell's trace and what it ran on.

    ``values``: every assignment, ``(T, B, width)`` (``Runner.trace``); ``x``:
    ``(T, B, I)``; ``initial``: each state's start, ``(B, H)``; ``dtype``: the run's;
    ``gradients``: for each state, ``‖∂L/∂s_t‖`` per step and sequence, ``(T, B)``, for
    a loss at the last step (the gradient-flow panel; none: no panel).
    """

    cell: Cell
    values: Mapping[str, np.ndarray]
    x: np.ndarray
    initial: Mapping[str, np.ndarray]
    dtype: np.dtype
    gradients: Mapping[str, np.ndarray] | None = None


def check_drawable(cell: Cell) -> None:
    """Refuse, before a run, a cell whose diagrams are too large for Graphviz to lay out
    (:func:`lstm_graph.render.check_size`): the page draws both styles."""
    for style in STYLES:
        check_size(render(cell, style, stages=True, marks=True))


def build_page(run: Run, most: int | None = None) -> str:
    """The explorer page of ``run`` as HTML text, with at most ``most`` numbers embedded
    (default: :func:`.data.budget`, a page under 2 MB)."""
    cell = run.cell
    graph, scene = cell.graph, build_scene(cell.schedule)
    steps, sequences, inputs = run.x.shape
    widths = {name: int(run.values[name].shape[2]) for name in graph.assignments}
    kept = keep(steps, sequences, [*widths.values(), inputs], most or budget(run.dtype))

    def cut(array: np.ndarray) -> np.ndarray:
        """The kept part of a (T, B, width) or (B, width) array."""
        units = slice(None, kept.units)
        if array.ndim == 2:
            return array[: kept.sequences, units]
        return array[: kept.steps, : kept.sequences, units]

    values = {name: cut(np.asarray(run.values[name])) for name in graph.assignments}
    shown = {name: int(value.shape[2]) for name, value in values.items()}
    strips = placeholder_strips(scene, shown)
    svgs = {}
    for style in STYLES:
        dot = render(cell, style, stages=True, strips=strips, values="the step shown",
                     marks=True)
        svgs[style] = embed(to_bytes(dot, "svg").decode("utf-8"), style, _node_info(scene))
    data = {
        "cell": cell.name,
        "stages": [list(names) for names in cell.schedule.stages],
        "waits": [sorted({read for name in names for read in cell.schedule.reads(name)["new"]
                          if read in graph.states}) for names in cell.schedule.stages],
        "states": list(graph.states),
        "output": next(iter(graph.outputs)),
        "memory": scene.memory_state(),
        "dtype": str(run.dtype),
        "numbers": "the shortest decimal that reads back as the same "
                   f"{run.dtype} value; NaN is null, ±infinity ±1e999",
        "shape": {"steps": steps, "sequences": sequences},
        "steps": list(range(1, kept.steps + 1)),
        "batch": list(range(kept.sequences)),
        "kept": {"steps": kept.steps, "sequences": kept.sequences, "units": kept.units},
        "subsampled": kept.sentence(steps, sequences),
        "widths": widths,
        "assignments": {name: {"expression": cell.schedule.expression(name),
                               "caption": a.caption or "",
                               "stage": cell.schedule.stage_of(name)}
                        for name, a in graph.assignments.items()},
        "strips": {name: bins(width) for name, width in shown.items()},
        "scale": {"stops": list(palette.HEAT_STOPS), "range": palette.HEAT_RANGE,
                  "nan": palette.NAN_FILL},
        "lit": {style: _paths(scene, style) for style in STYLES},
        "presets": {name: {"names": list(p.assignments),
                           "lit": {style: sorted(_LIT[style](scene, frozenset(
                               highlighted(scene, name))) or ()) for style in STYLES}}
                    for name, p in graph.presets.items()},
    }
    arrays = {"values": values,
              "input": {name: cut(run.x) for name in graph.inputs},
              "initial": {name: cut(np.asarray(run.initial[name])) for name in graph.states},
              "gradients": {name: np.asarray(norms)[: kept.steps, : kept.sequences]
                            for name, norms in (run.gradients or {}).items()}}
    parts = {
        "TITLE": html.escape(f"{cell.name} · lstm-graph explorer"),
        "CELL": html.escape(cell.name),
        "NOTE": html.escape(kept.sentence(steps, sequences) or ""),
        "CSS": _asset("explorer.css"),
        "JS": _asset("explorer.js"),
        "DATA": to_json(data, arrays, run.dtype),
        "PIPE": svgs["pipe"],
        "CELLSVG": svgs["cell"],
    }
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts[m.group(1)], _asset("explorer.html"))


def _asset(name: str) -> str:
    return resources.files("lstm_graph.explore").joinpath("assets").joinpath(name).read_text(
        "utf-8")


def _node_info(scene: Scene) -> dict[str, NodeInfo]:
    """The values and stage of every drawn node the page tags (by DOT name)."""
    drawn = scene.drawn_values()
    return {node.id: NodeInfo(drawn.get(node.id, ()),
                              node.stage if node.role in ("layer", "op") else None)
            for node in scene.nodes.values()}


def _paths(scene: Scene, style: str) -> dict[str, list[str]]:
    """For every node a click can highlight from: the drawn nodes its path lights in
    ``style`` (the walks of ``render --highlight``)."""
    graph = scene.graph
    memory = scene.memory_state()
    targets = {node.id: node.id.removesuffix("[t]") if node.role == "sink" else node.id
               for node in scene.nodes.values()}
    if style == "cell":
        targets[classic.CELL] = memory
    else:
        targets.update({pipe.marker(o): o for o in graph.outputs
                        if o in graph.states and o != memory})
    return {node: sorted(_LIT[style](scene, frozenset(highlighted(scene, target))) or ())
            for node, target in targets.items()}
