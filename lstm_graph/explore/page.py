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
from lstm_graph.explore.data import CHARS, Kept, budget, keep, to_json
from lstm_graph.explore.svg import NodeInfo, embed
from lstm_graph.formats.trace import digest
from lstm_graph.library import load_cell
from lstm_graph.render import STYLES, check_size, classic, palette, pipe, render, to_bytes
from lstm_graph.render.scene import Scene, build_scene, highlighted
from lstm_graph.render.values import bins, placeholder_strips

#: The built-in cell that is the article's (Shi Yan's peephole LSTM).
ARTICLE_CELL = "peephole_lstm"
#: How each style grows a highlight (the Cell, the bus, the input labels).
_LIT = {"pipe": pipe.lit_nodes, "cell": classic.lit_nodes}


@dataclass(frozen=True)
class Run:
    """What a page shows: a cell's trace and what it ran on.

    ``values``: every assignment, ``(T, B, width)`` (``Runner.trace``); ``x``:
    ``(T, B, I)``; ``initial``: each state's start, ``(B, H)``; ``dtype``: the run's;
    ``gradients``: for each state, ``‖∂L/∂s_t‖`` per step and sequence, ``(T, B)``, for
    a loss at the last step of ``x`` (the gradient-flow panel; none: no panel);
    ``total``: the whole run's ``(T, B)`` where ``x`` is the part of it the page keeps
    (:func:`lstm_graph.notebook.page_part`), else None; ``shows``: what of a stack the
    page shows, said above the diagram (``layer 1, reverse direction, of 2 layers,
    bidirectional``); ``reverse``: the run read ``x`` from its last step, so the page's
    step ``t`` is ``x``'s ``T + 1 - t`` (its time control says both).
    """

    cell: Cell
    values: Mapping[str, np.ndarray]
    x: np.ndarray
    initial: Mapping[str, np.ndarray]
    dtype: np.dtype
    gradients: Mapping[str, np.ndarray] | None = None
    total: tuple[int, int] | None = None
    shows: str = ""
    reverse: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """The whole run's steps and sequences."""
        return self.total or (int(self.x.shape[0]), int(self.x.shape[1]))


def kept_of(run: Run, most: int | None = None) -> Kept:
    """What the page of ``run`` keeps of it, with at most ``most`` numbers embedded
    (default: :func:`.data.budget`, a page under 2 MB)."""
    steps, sequences = run.shape
    return keep(steps, sequences, _widths(run), most or budget(run.dtype))


def _widths(run: Run) -> dict[str, int]:
    """The units of each value and input of ``run``, by name."""
    graph = run.cell.graph
    widths = {name: int(run.values[name].shape[2]) for name in graph.assignments}
    widths.update(dict.fromkeys(graph.inputs, int(run.x.shape[2])))
    return widths


def check_drawable(cell: Cell) -> None:
    """Refuse, before a run, a cell whose diagrams are too large for Graphviz to lay out
    (:func:`lstm_graph.render.check_size`): the page draws both styles."""
    for style in STYLES:
        check_size(render(cell, style, stages=True, marks=True),
                   "; the page draws both styles, so it cannot show this cell ('render "
                   "--format dot' writes the diagram's DOT for you to lay out)")


#: The most a page may take. Its numbers take at most :data:`.data.BUDGET_BYTES` of it,
#: and less where its diagrams, script, style and the data of its nodes take more than
#: the rest (a cell of 58 gates: 0.94 MB besides its numbers).
PAGE_BYTES = 2_000_000


def build_page(run: Run, most: int | None = None) -> str:
    """The explorer page of ``run`` as HTML text, with at most ``most`` numbers embedded
    (default: as many as keep the page under :data:`PAGE_BYTES`); what it keeps:
    :func:`page_and_kept`."""
    return page_and_kept(run, most)[0]


def page_and_kept(run: Run, most: int | None = None) -> tuple[str, Kept]:
    """:func:`build_page` and what the page keeps of the run. Without ``most``, the
    numbers get :func:`.data.budget`, lowered by what the rest of the page takes past
    its share, so that the page stays under :data:`PAGE_BYTES`, unless its diagrams and
    the data of the paths they light take more on their own (many gates with long names):
    the page says so then."""
    page, kept = _page(run, most)
    if most is not None:
        return page, kept
    numbers, chars, widths = budget(run.dtype), CHARS[str(run.dtype)], _widths(run)
    for _ in range(4):
        excess = len(page.encode("utf-8")) - PAGE_BYTES
        if excess <= 0:
            return page, kept
        fewer = max(1, min(numbers, kept.numbers(widths)) - excess // chars - 1000)  # a margin
        if kept_of(run, fewer) == kept:
            break  # no fewer numbers to keep: the rest of the page is what weighs
        numbers = fewer
        page, kept = _page(run, numbers)
    if len(page.encode("utf-8")) <= PAGE_BYTES:
        return page, kept
    return _page(run, numbers, heavy=True)


def _page(run: Run, most: int | None, heavy: bool = False) -> tuple[str, Kept]:
    """The page with at most ``most`` numbers, and what it keeps; ``heavy``: a page over
    :data:`PAGE_BYTES` with the fewest numbers it may hold, which its note says."""
    cell = run.cell
    graph, scene = cell.graph, build_scene(cell.schedule)
    steps, sequences = run.shape
    widths = {name: int(run.values[name].shape[2]) for name in graph.assignments}
    kept = kept_of(run, most)

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
        svgs[style] = embed(to_bytes(dot, "svg").decode("utf-8"), style,
                            _node_info(scene))
    data = {
        "cell": cell.name,
        "stages": [list(names) for names in cell.schedule.stages],
        "waits": [cell.schedule.stage_waits_for(k)
                  for k in range(1, len(cell.schedule.stages) + 1)],
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
        "subsampled": kept.sentence(steps, sequences, heavy),
        "shows": run.shows,
        "reverse": run.reverse,
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
        "NOTE": html.escape(" ".join(filter(None, (run.shows, kept.sentence(
            steps, sequences, heavy))))),
        "STAGENOTE": html.escape(stage_note(cell)),
        "CSS": _asset("explorer.css"),
        "JS": _asset("explorer.js"),
        "DATA": to_json(data, arrays, run.dtype),
        "PIPE": svgs["pipe"],
        "CELLSVG": svgs["cell"],
    }
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts[m.group(1)],
                  _asset("explorer.html")), kept


def stage_note(cell: Cell) -> str:
    """The stage player's note: what a stage is, and what this cell's schedule shows (which
    stages wait for a state's new value); the article's point is named as such only on
    the article's own cell (its equations, whatever the file's name or layout).

    >>> from lstm_graph.library import load_cell
    >>> print(stage_note(load_cell("gru")))  # doctest: +NORMALIZE_WHITESPACE
    A stage runs once every stage before it is done: it reads values they made. In this
    cell no stage reads a state's new value: every state is read as the step found it
    (h[t-1]). Why the order of a step matters is the subject of Shi Yan's “Understanding
    LSTM and its diagrams” (2016).
    """
    schedule, states = cell.schedule, cell.graph.states
    waits = [(f"stage {number} ({', '.join(names)})", ", ".join(read))  # the new states read
             for number, names in enumerate(schedule.stages, start=1)
             if (read := schedule.stage_waits_for(number))]
    base = "A stage runs once every stage before it is done: it reads values they made."
    if len(waits) == 1:
        (stage, new), = waits
        said = (f"In this cell {stage} waits for the new {new}: it reads the value this "
                "step makes, not the old one.")
    elif waits:
        (stage, new), *rest = waits
        others = ", and ".join(f"{more} for the new {also}" for more, also in rest)
        said = (f"In this cell {stage} waits for the new {new}, and {others}: each reads "
                "the value this step makes, not the old one.")
    else:
        olds = ", ".join(f"{state}[t-1]" for state in states)
        said = ("In this cell no stage reads a state's new value: every state is read as "
                f"the step found it ({olds}).")
    if digest(cell.schedule) == digest(load_cell(ARTICLE_CELL).schedule):
        article = ("This is the peephole LSTM of Shi Yan's “Understanding LSTM and its "
                   "diagrams” (2016), and that wait is its point: the output valve must "
                   "wait for the new memory, which the classic diagram hides.")
    else:
        article = ("Why the order of a step matters is the subject of Shi Yan's "
                   "“Understanding LSTM and its diagrams” (2016).")
    return f"{base} {said} {article}"


def _asset(name: str) -> str:
    return resources.files("lstm_graph.explore").joinpath("assets").joinpath(name).read_text(
        "utf-8")


def _node_info(scene: Scene) -> dict[str, NodeInfo]:
    """The values and stages of every drawn node the page tags (by DOT name)."""
    drawn, stages = scene.drawn_values(), scene.stages()
    return {node: NodeInfo(drawn.get(node, ()), stages.get(node, ())) for node in scene.nodes}


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
