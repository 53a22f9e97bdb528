"""Cell style (the classic LSTM diagram, redrawn with Olah's symbols).

The memory state is one central "Cell" node: its previous value leaves it on
dashed edges (there when the step starts), its new value enters it and leaves
it on solid green edges, so the viewer sees which valves wait for the new
memory. A self-loop carries the memory to the next step.
"""

from __future__ import annotations

import html

import graphviz

from lstm_graph.ir import old_id
from lstm_graph.render import palette as P
from lstm_graph.render.draw import Painter, legend, new_digraph
from lstm_graph.render.scene import Scene, sink_id

CELL = "[cell]"  # brackets: no user name can collide


def draw(scene: Scene, lit: set[str] | None = None, stages: bool = False) -> graphviz.Digraph:
    graph = scene.graph
    memory = scene.memory_state()
    merged = {old_id(memory), sink_id(memory)}
    if lit is not None and lit & merged:
        lit = lit | {CELL}
    painter = Painter(scene, lit, stages)
    dot = new_digraph(scene, "cell", rankdir="LR", nodesep="0.3", ranksep="0.5",
                      newrank="true", splines="spline", forcelabels="true")

    def place(node_id: str) -> str:
        """Where an edge end is drawn: the memory's old value and sink are the Cell."""
        return CELL if node_id in merged else node_id

    faded = lit is not None and CELL not in lit
    dot.node(CELL, label=f'<<B>Cell</B><BR/><FONT POINT-SIZE="11">{html.escape(memory)}</FONT>>',
             shape="box", style="rounded,filled", width="1.1", height="0.9",
             fillcolor=P.FADED_FILL if faded else P.MEMORY_FILL,
             color=P.FADED if faded else P.HIGHLIGHT if lit else P.NEW_STATE, penwidth="2.5",
             fontcolor=P.FADED if faded else P.TEXT, fontname=P.FONT)
    dot.edge(CELL, CELL, color=P.FADED if faded else P.NEW_STATE, style="dotted",
             arrowsize="0.7", tooltip="the memory, carried to the next step")
    with dot.subgraph(name="inputs") as row:
        row.attr(rank="min")
        for node in scene.nodes.values():
            if node.role == "source" and node.id not in merged:
                painter.add_node(row, node)
    shown_output = memory in graph.outputs  # the memory is also the output: it leaves too
    with dot.subgraph(name="outputs") as row:
        row.attr(rank="max")
        for node in scene.nodes.values():
            if node.role == "sink" and (node.id not in merged or shown_output):
                painter.add_node(row, node)
        row.node("legend", label=legend(loop=True), shape="plaintext", fontname=P.FONT)
    for node in scene.nodes.values():
        if node.role not in ("source", "sink"):
            painter.add_node(dot, node, caption="cluster")
    for edge in scene.edges:
        src = place(edge.src)
        # Reads of the memory's new value come out of the Cell, like the classic diagram.
        if edge.src == scene.owner.get(memory) and edge.dst != sink_id(memory):
            src = CELL
        extra = {"constraint": "false"} if src == CELL and edge.src != scene.owner.get(
            memory) else {}  # old memory flows back: it must not pull the Cell leftwards
        painter.add_edge(dot, edge, src, place(edge.dst), **extra)
        if shown_output and edge.dst == sink_id(memory):
            painter.add_edge(dot, edge, CELL, sink_id(memory))
    return dot
