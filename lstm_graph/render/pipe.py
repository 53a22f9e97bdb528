"""Pipe style (Olah's; the first diagram of Shi Yan's article), one step or unrolled.

The memory state runs as a straight pipe along the top, from ``c_{t-1}`` on
the left through its element-wise ops to ``c_t`` on the right; the learned
layers sit in one row below it in file order. Below them runs the **line** of
the other states, as in Olah's drawing: ``h_{t-1}`` enters from the left, and
``h_t`` leaves to the right along the same line (and, when it is the output,
upwards too). ``x_t`` enters from the bottom and **merges** (concatenation)
with the line into a bus that **forks** (copies) up into every layer that
reads them all. Where learned layers weigh the memory's own old value (the
GRU's ``h_{t-1}``), it comes down the left side onto the line, as in Olah's
GRU, instead of crossing the middle of the drawing from the pipe's start to each
layer; peepholes still look down at the pipe. Other outputs leave at the top
right.

Layout rules, not positions: bottom-to-top ranks, one ``rank=same`` row each
for the inputs, the line and bus, the layers and the pipe; edges that run
down against the ranks (peepholes, reads of the new memory, the new ``h_t``
going to its line) are written upwards with ``dir=back``, so they agree with
the ranks. Captions of pipe ops sit on the pipe segment they start; other
ops' captions label the value leaving them (dot keeps room beside an edge label).

:func:`draw_unrolled` lays ``K`` steps side by side in the same rows: step
``k``'s new memory and new ``h`` are step ``k+1``'s old ones (one node,
``c_t`` between steps ``t`` and ``t+1``), so the pipe and the line run
straight through, and the edges that leave them into the next step are
dashed: old values there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import graphviz

from lstm_graph.ir import EdgeKind, old_id
from lstm_graph.render import palette as P
from lstm_graph.render.draw import LEGEND, Look, Painter, ir_tooltip, legend, new_digraph
from lstm_graph.render.scene import Scene, VEdge, markup, sink_id, step_subscript, subscripted

# Rows from the bottom; an edge from a higher row to a lower one is written reversed.
INPUTS, LINE, LAYERS, FREE, PIPE = range(5)


def draw(scene: Scene, look: Look) -> graphviz.Digraph:
    """One step, as ``look`` says."""
    layout = _Layout(scene, 1, Painter(scene, look, lit_nodes(scene, look.lit)))
    return layout.draw(legend(replace(look, shared_lines=len(_bus(scene)) > 1)))


def draw_unrolled(scene: Scene, steps: int) -> graphviz.Digraph:
    """``steps`` consecutive steps side by side, the pipe and the line running through."""
    layout = _Layout(scene, steps, Painter(scene, Look()))
    return layout.draw(legend(Look()))


def lit_nodes(scene: Scene, lit: frozenset[str] | None) -> set[str] | None:
    """The drawn nodes ``lit`` lights in this style: a lit output's upward copy, the
    memory's old value on the line when a lit layer weighs it, and, where the bus carries
    something lit (a source below the pipe), its junctions from its start up to the last
    lit layer on it (not for a layer lit by what it reads otherwise: a peephole)."""
    if lit is None:
        return None
    bus = _bus(scene)
    markers = {marker(o) for o in scene.graph.outputs if sink_id(o) in lit}
    old = old_id(scene.memory_state())
    down = {_down(scene)} if old in lit and any(
        _via_line(scene, e) and e.dst in lit for e in scene.edges) else set()
    carried = any(source in lit or source in down for source in _line_sources(scene))
    last = max((k for k, layer in enumerate(bus) if layer in lit), default=-1) \
        if carried else -1
    return {*lit, *markers, *down, *(_junction(layer) for layer in bus[: last + 1])}


def marker(output: str) -> str:
    """The upward copy of a state output that leaves along the line (Olah's top ``h_t``)."""
    return f"[out {output}]"


def _junction(layer: str) -> str:
    return f"[bus {layer}]"


def _down(scene: Scene) -> str:
    """The memory's old value brought down the left side onto the line (a junction)."""
    return f"[line {old_id(scene.memory_state())}]"


def _via_line(scene: Scene, edge: VEdge) -> bool:
    """A learned layer weighing the memory's old value: it reads it from the line."""
    return edge.src == old_id(scene.memory_state()) and not edge.peep and \
        scene.nodes[edge.dst].role == "layer"


def _below(scene: Scene, edge: VEdge) -> str:
    """Where ``edge`` comes from below the pipe: the line's copy of the memory for a
    layer that weighs it, else its own source."""
    return _down(scene) if _via_line(scene, edge) else edge.src


def _line_sources(scene: Scene) -> list[str]:
    """Sources below the pipe: the memory's old value on the line (first, where a layer
    weighs it), the inputs, and the other states' old values (the line)."""
    memory = old_id(scene.memory_state())
    down = [_down(scene)] if any(_via_line(scene, e) for e in scene.edges) else []
    return down + [n.id for n in scene.nodes.values()
                   if n.role == "source" and n.id != memory]


def _bus(scene: Scene) -> list[str]:
    """The layers on the bus: each reads every source below the pipe (two or more)."""
    sources = set(_line_sources(scene))
    layers = [n.id for n in scene.nodes.values() if n.role == "layer"]
    return [layer for layer in layers if len(sources) > 1 and
            sources <= {_below(scene, e) for e in scene.edges if e.dst == layer}]


class _Layout:
    """The rows of a pipe-style drawing, filled step by step, then written out."""

    def __init__(self, scene: Scene, steps: int, painter: Painter):
        self.scene = scene
        self.steps = steps
        self.painter = painter
        graph = scene.graph
        memory = scene.memory_state()
        pipe = [scene.owner[n] for n in scene.pipe_path(memory)]
        self.chain = [n for n in (old_id(memory), *pipe, sink_id(memory)) if n in scene.nodes]
        others = [s for s in graph.states if s != memory]
        self.top_sinks = [sink_id(o) for o in graph.outputs if o not in graph.states]
        #: a state output off the pipe leaves upwards too: a second "h_t" on top (in one
        #: step; unrolled, the line between steps is the output)
        self.markers = {o: marker(o) for o in graph.outputs if o in others and steps == 1}
        self.line_sinks = [sink_id(s) for s in others]
        self.line_olds = [old_id(s) for s in others if old_id(s) in scene.nodes]
        sources = _line_sources(scene)
        #: the memory's old value on the line, where layers weigh it
        self.down = [n for n in sources if n == _down(scene)]
        self.inputs = [n for n in sources if n not in (*self.line_olds, *self.down)]
        self.layers = [n.id for n in scene.nodes.values() if n.role == "layer"]
        self.bus = _bus(scene)
        self.row: dict[str, int] = {}
        for row, ids in ((PIPE, [*self.chain, *self.top_sinks, *self.markers.values()]),
                         (LAYERS, self.layers), (LINE, [*self.line_olds, *self.line_sinks]),
                         (INPUTS, self.inputs)):
            self.row.update(dict.fromkeys(ids, row))
        self.rows = {row: graphviz.Digraph(name=name) for row, name in (
            (PIPE, "pipe"), (LAYERS, "layers"), (LINE, "bus"), (INPUTS, "inputs"))}
        for row, rank in ((PIPE, "max"), (LAYERS, "same"), (LINE, "same"), (INPUTS, "min")):
            self.rows[row].attr(rank=rank)
        self.free = graphviz.Digraph(name="free")  # nodes between the rows
        self.edges: list[_Edge] = []

    def name(self, node_id: str, step: int) -> str:
        """The DOT name of ``node_id`` in ``step``: its own in a one-step drawing; else
        suffixed, an old state value being the previous step's new one."""
        if self.steps == 1:
            return node_id
        node = self.scene.nodes.get(node_id)
        if node is not None and node.role == "source" and node.state and step > 0:
            return f"{sink_id(node.state)}@{step - 1}"
        return f"{node_id}@{step}"

    def symbol(self, node_id: str, step: int) -> str | None:
        """Sources and sinks carry their step in the subscript: ``c_{t-1}``, ``x_{t+1}``."""
        node = self.scene.nodes.get(node_id)
        if node is None or node.role not in ("source", "sink"):
            return None
        offset = step - 1 if node.role == "source" and node.state else step
        base = node.state or (node.ir[0] if node.role == "source" else
                              node_id.removesuffix("[t]"))
        return subscripted(base, step_subscript(offset))

    def draw(self, legend_label: str) -> graphviz.Digraph:
        scene = self.scene
        dot = new_digraph(scene, "pipe" if self.steps == 1 else f"unrolled_{self.steps}",
                          rankdir="BT", nodesep="0.35", ranksep="0.4", newrank="true",
                          splines="spline", forcelabels="true")
        for step in range(self.steps):
            self.add_step(step)
        inputs = self.rows[INPUTS]
        inputs.node(LEGEND, label=legend_label, shape="plaintext", fontname=P.FONT)
        last_inputs = [self.name(n, self.steps - 1) for n in self.inputs]
        if last_inputs:
            inputs.edge(last_inputs[-1], LEGEND, style="invis", minlen="3")
        for row in (PIPE, LAYERS, LINE, INPUTS):
            dot.subgraph(self.rows[row])
        dot.subgraph(self.free)
        for edge in self.edges:
            if edge.scene is None:
                dot.edge(edge.tail, edge.head, **edge.attrs)
            else:
                self.painter.add_edge(dot, edge.scene, edge.tail, edge.head, edge.reverse,
                                      carries=edge.carries, **edge.attrs)
        return dot

    def add_step(self, step: int) -> None:
        """Step ``step``'s nodes into the rows, and its edges."""
        scene, painter = self.scene, self.painter
        first = step == 0  # captions once, on the first step

        def name(node_id: str) -> str:
            return self.name(node_id, step)

        for node in scene.nodes.values():
            if node.role == "source" and node.state and not first:
                continue  # the previous step's new value, already drawn
            row = self.row.get(node.id, FREE)
            graph = self.rows[row] if row != FREE else self.free
            extra = {"group": "pipe"} if row == PIPE else {}
            # a pipe op's caption sits on the pipe segment it starts; others leave on an edge
            painter.add_node(graph, node, caption="xlabel" if first and row not in (PIPE, FREE)
                             else None, name=name(node.id), symbol=self.symbol(node.id, step),
                             **extra)
        for output, copy in self.markers.items():
            self.rows[PIPE].node(name(copy), label=f"<{self.symbol(sink_id(output), step)}>",
                                 shape="plaintext", margin="0.02", fontname=P.FONT,
                                 fontcolor=P.FADED if painter.faded(sink_id(output))
                                 else P.TEXT, group="pipe")
        for junction in (*self.down, *(_junction(layer) for layer in self.bus)):
            self.rows[LINE].node(name(junction), shape="point", width="0.07",
                                 color=self._bus_colour(junction, junction)["color"])
        self._order(step, name)
        self._edges(name, first)

    def _order(self, step: int, name: Callable[[str], str]) -> None:
        """Invisible edges that keep each row in step order, left to right."""
        invisible = {"style": "invis", "weight": "10"}
        layers = [name(n) for n in self.layers]
        if step > 0 and self.layers:
            layers.insert(0, self.name(self.layers[-1], step - 1))
        for left, right in zip(layers, layers[1:]):
            self.rows[LAYERS].edge(left, right, **invisible)
        inputs = [name(n) for n in self.inputs]
        if step > 0 and self.inputs:
            inputs.insert(0, self.name(self.inputs[-1], step - 1))
        for left, right in zip(inputs, inputs[1:]):
            self.rows[INPUTS].edge(left, right, style="invis")
        if self.bus:  # the line: old values left of the bus, new values right of it
            for sink in self.line_sinks:
                self.rows[LINE].edge(name(_junction(self.bus[-1])), name(sink), **invisible)
        if self.down:  # the memory comes down onto the line at its far left
            after = [_junction(self.bus[0])] if self.bus else self.line_sinks[:1]
            line = [*self.down, *self.line_olds, *after]
            for left, right in zip(line, line[1:]):
                self.rows[LINE].edge(name(left), name(right), **invisible)
        for top in (*self.top_sinks, *self.markers.values()):  # right of the pipe, not on it
            self.rows[PIPE].edge(name(self.chain[-1]), name(top), style="invis")
        line = [*self.down, *self.line_olds, *self.line_sinks]
        if line and self.inputs:  # the line runs above the inputs, even without a bus
            self.free.edge(name(self.inputs[0]), name(line[0]), style="invis", weight="0")
        # Ops that feed nothing on the pipe row are kept below it: beside the pipe they
        # would pass for part of it.
        feeds_top = {e.src for e in self.scene.edges if self.row.get(e.dst) == PIPE}
        for node in self.scene.nodes.values():
            if node.id not in self.row and node.id not in feeds_top:
                self.free.edge(name(node.id), name(self.chain[-1]), style="invis", weight="0")

    def _bus_colour(self, src: str, dst: str) -> dict[str, str]:
        lit = self.painter.lit
        if lit is None:
            return {"color": P.EDGE, "penwidth": P.EDGE_WIDTH}
        if src in lit and dst in lit:
            return {"color": P.HIGHLIGHT, "penwidth": P.HIGHLIGHT_WIDTH}
        return {"color": P.FADED, "penwidth": P.EDGE_WIDTH}

    def _faded(self, edge: VEdge) -> bool:
        """Whether ``edge`` is faded: under a highlight, one end of it unlit."""
        lit = self.painter.lit
        return lit is not None and not (edge.src in lit and edge.dst in lit)

    def _edges(self, name: Callable[[str], str], captions: bool) -> None:
        """Step edges, written once every node is placed (:meth:`draw`); ``captions``
        labels them with the captions of the ops they leave."""
        scene = self.scene
        pipe_edges = set(zip(self.chain, self.chain[1:]))
        bus, junction = self.bus, {layer: _junction(layer) for layer in self.bus}
        # An op's caption labels one edge leaving it: to its own sink if it has one.
        caption_edge: dict[str, str] = {}
        for edge in scene.edges:
            node = scene.nodes[edge.src]
            if node.role == "op" and node.caption and self.row.get(edge.src) != PIPE and \
                    (edge.src not in caption_edge or edge.dst == sink_id(edge.src)):
                caption_edge[edge.src] = edge.dst
        for before, after in zip(bus, bus[1:]):
            self.edges.append(_Edge(None, name(junction[before]), name(junction[after]), {
                "arrowhead": "none", "weight": "10",
                **self._bus_colour(junction[before], junction[after]),
                **self.painter.mark(junction[before], junction[after])}))
        for layer in bus:
            self.edges.append(_Edge(None, name(junction[layer]), name(layer), {
                "arrowsize": "0.7", "weight": "4", **self._bus_colour(junction[layer], layer),
                **self.painter.mark(junction[layer], layer)}))
        sources = set(_line_sources(scene))
        merged: set[str] = set()  # the sources on the bus (a layer may read one twice: peep)
        for line_copy in self.down:  # the memory's old value, down the left to the line
            carried = [e for e in scene.edges if _via_line(scene, e)]
            memory = old_id(scene.memory_state())
            self.edges.append(_Edge(None, name(line_copy), name(memory), {
                "dir": "back", "arrowtail": "none", "style": P.OLD_STYLE, "weight": "4",
                "tooltip": ir_tooltip(carried), **self._bus_colour(memory, line_copy),
                **self.painter.mark(memory, line_copy)}))
        for edge in scene.edges:
            extra: dict[str, str] = {}
            src = _below(scene, edge)
            if (edge.src, edge.dst) in pipe_edges:
                extra.update(weight="100", penwidth=P.PIPE_WIDTH)
                caption = scene.nodes[edge.src].caption
                if caption and captions:  # a taillabel: a flat edge's label would bend the pipe
                    extra.update(taillabel=_caption(caption, self._faded(edge)),
                                 labelangle="-60", labeldistance="3")
            elif captions and caption_edge.get(edge.src) == edge.dst:
                extra["label"] = _caption(scene.nodes[edge.src].caption or "",
                                          self._faded(edge))
            if edge.dst in junction and src in sources:
                if edge.dst != bus[0] or src in merged:
                    continue  # the bus already carries it: merged once, forked to every layer
                merged.add(src)
                carried = [e for e in scene.edges
                           if _below(scene, e) == src and e.dst in junction]
                extra.update(arrowhead="none", weight="4")
                self.edges.append(_Edge(edge, name(src), name(junction[bus[0]]), extra,
                                        carries=carried))
                continue
            # one that runs down is written upwards, its arrow at its tail
            down = self.row.get(src, LINE if src in self.down else FREE) > \
                self.row.get(edge.dst, FREE)
            if edge.dst in self.line_sinks:
                extra["weight"] = "8"  # the new h right below its producer, at the line's end
            self.edges.append(_Edge(edge, name(src), name(edge.dst), extra, down))
        for output, copy in self.markers.items():
            up = VEdge(scene.owner[output], copy, EdgeKind.NEW, True)
            self.edges.append(_Edge(up, name(up.src), name(copy)))


@dataclass
class _Edge:
    """An edge to write once every node is placed: a scene edge (painted), or a bus
    segment (``scene`` None) with its own attributes."""

    scene: VEdge | None
    tail: str
    head: str
    attrs: dict[str, str] = field(default_factory=dict)
    reverse: bool = False
    carries: list[VEdge] | None = None  # the IR edges a merged line stands for


def _caption(text: str, faded: bool = False) -> str:
    """An edge's caption, faded with its edge under a highlight (as the cell style's)."""
    colour = P.FADED if faded else P.CAPTION
    return f'<<FONT POINT-SIZE="9" COLOR="{colour}">{markup(text)}</FONT>>'
