"""Pipe style (Olah's; the first diagram of Shi Yan's article).

The memory state runs as a straight pipe along the top, from ``c_{t-1}`` on
the left through its element-wise ops to ``c_t`` on the right; the learned
layers sit in one row below it in file order; ``h_{t-1}`` and ``x_t`` enter
at the bottom, **merge** (concatenation) and run along a bus that **forks**
(copies) up into every layer that reads them all; other outputs leave at the
top right. Layout rules, not positions: bottom-to-top ranks, one
``rank=same`` row each for the inputs, the bus, the layers and the pipe;
edges that run down from the pipe (peepholes, reads of the new memory) are
written upwards with ``dir=back``, so they agree with the ranks. Captions of
pipe ops sit on the pipe segment they start; other ops' captions label the
value leaving them (dot keeps room beside an edge label).
"""

from __future__ import annotations

import graphviz

from lstm_graph.ir import old_id
from lstm_graph.render import palette as P
from lstm_graph.render.draw import Painter, ir_tooltip, legend, new_digraph
from lstm_graph.render.scene import Scene, sink_id


def draw(scene: Scene, lit: set[str] | None = None, stages: bool = False) -> graphviz.Digraph:
    graph = scene.graph
    painter = Painter(scene, lit, stages)
    dot = new_digraph(scene, "pipe", rankdir="BT", nodesep="0.35", ranksep="0.45",
                      newrank="true", splines="spline", forcelabels="true")
    memory = scene.memory_state()
    pipe = [scene.owner[n] for n in scene.pipe_path(memory)]
    top = [n for n in (old_id(memory), *pipe, sink_id(memory)) if n in scene.nodes]
    top += [sink_id(n) for n in (*graph.states, *graph.outputs)
            if sink_id(n) in scene.nodes and sink_id(n) not in top]
    bottom = [n for n in scene.nodes.values() if n.role == "source" and n.id not in top]
    layers = [n for n in scene.nodes.values() if n.role == "layer"]
    sources = {n.id for n in bottom}
    reads = {layer.id: {e.src for e in scene.edges if e.dst == layer.id} for layer in layers}
    # The bus: one junction per layer that reads every bottom source.
    bus = [layer.id for layer in layers if len(sources) > 1 and sources <= reads[layer.id]]
    junction = {layer: f"[bus {layer}]" for layer in bus}
    if lit is not None:  # the bus is lit from its start up to the last lit layer on it
        last = max((k for k, layer in enumerate(bus) if layer in lit), default=-1)
        lit = lit | {junction[layer] for layer in bus[: last + 1]}
        painter.lit = lit

    def bus_colour(src: str, dst: str) -> dict[str, str]:
        if lit is None:
            return {"color": P.EDGE, "penwidth": P.EDGE_WIDTH}
        if src in lit and dst in lit:
            return {"color": P.HIGHLIGHT, "penwidth": P.HIGHLIGHT_WIDTH}
        return {"color": P.FADED, "penwidth": P.EDGE_WIDTH}

    with dot.subgraph(name="pipe") as row:
        row.attr(rank="max")
        for node_id in top:
            # a pipe op's caption sits on the pipe segment it starts (see below)
            painter.add_node(row, scene.nodes[node_id], caption=None, group="pipe")
    with dot.subgraph(name="layers") as row:
        row.attr(rank="same")
        for node in layers:
            painter.add_node(row, node)
        for left, right in zip(layers, layers[1:]):
            row.edge(left.id, right.id, style="invis", weight="10")
    with dot.subgraph(name="bus") as row:
        row.attr(rank="same")
        for layer in bus:
            row.node(junction[layer], shape="point", width="0.07",
                     color=bus_colour(junction[layer], junction[layer])["color"])
    with dot.subgraph(name="inputs") as row:
        row.attr(rank="min")
        for node in bottom:
            painter.add_node(row, node)
        row.node("legend", label=legend(), shape="plaintext", fontname=P.FONT)
        for left, right in zip(bottom, bottom[1:]):
            row.edge(left.id, right.id, style="invis")
        if bottom:
            row.edge(bottom[-1].id, "legend", style="invis", minlen="3")
    for node in scene.nodes.values():
        if node.id not in top and node.role not in ("layer", "source"):
            painter.add_node(dot, node, caption=None)  # captioned on its way out, below

    on_pipe = set(top)
    pipe_edges = set(zip(top, top[1:]))
    # An op's caption labels one edge leaving it: to its own sink if it has one.
    caption_edge: dict[str, str] = {}
    for edge in scene.edges:
        node = scene.nodes[edge.src]
        if node.role == "op" and node.caption and edge.src not in on_pipe and \
                (edge.src not in caption_edge or edge.dst == sink_id(edge.src)):
            caption_edge[edge.src] = edge.dst
    for before, after in zip(bus, bus[1:]):
        dot.edge(junction[before], junction[after], arrowhead="none", weight="10",
                 **bus_colour(junction[before], junction[after]))
    for layer in bus:
        dot.edge(junction[layer], layer, arrowsize="0.7", **bus_colour(junction[layer], layer))
    for edge in scene.edges:
        extra: dict[str, str] = {}
        if (edge.src, edge.dst) in pipe_edges:
            extra.update(weight="100", penwidth=P.PIPE_WIDTH)
            caption = scene.nodes[edge.src].caption
            if caption:  # a taillabel: a flat edge's label would add a rank and bend the pipe
                extra.update(taillabel=f'<<FONT POINT-SIZE="9" COLOR="{P.CAPTION}">{caption}'
                                       '</FONT>>', labelangle="-90", labeldistance="2.2")
        elif edge.src in on_pipe and edge.dst not in on_pipe:
            # Runs down from the pipe: written upwards with the arrow drawn at its tail,
            # so it agrees with the ranks (constraint=false would let dot fold the pipe).
            painter.add_edge(dot, edge, edge.dst, edge.src, dir="back", arrowtail="normal")
            continue
        if edge.src in caption_edge and caption_edge[edge.src] == edge.dst:
            caption = scene.nodes[edge.src].caption  # it names the value: on its way out
            extra["label"] = f'<<FONT POINT-SIZE="9" COLOR="{P.CAPTION}">{caption}</FONT>>'
        if edge.dst in junction and edge.src in sources:
            if edge.dst != bus[0]:
                continue  # the bus already carries it: merged once, forked to every layer
            carried = [e for e in scene.edges if e.src == edge.src and e.dst in junction]
            painter.add_edge(dot, edge, dst=junction[bus[0]], arrowhead="none",
                             tooltip=ir_tooltip(carried))
            continue
        painter.add_edge(dot, edge, **extra)
    return dot
