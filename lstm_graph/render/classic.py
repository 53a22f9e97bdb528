"""Cell style (the classic LSTM diagram, redrawn with Olah's symbols).

The memory state is one central "Cell" node: its new value enters it and
leaves it on solid green edges, so the viewer sees which valves wait for the
new memory. A dotted green arc carries the memory out of the Cell's top to the
next step, to a label ``c_{t-1}`` above the op that makes the new memory (the
``+`` of the memory pipe): there the step starts, and the old memory leaves it
on dashed edges to the peepholes and the element-wise reads (the memory pipe's
forget product). The old memory so leaves from above the memory pipe, never
across the ``+ → Cell`` edge; a learned layer that weighs the memory's old
value (the GRU's ``h_{t-1}``) reads it from its own label, as in the classic
diagram every valve takes its inputs (``x_t``, ``h_{t-1}``) from a small label of
its own right beside it, rather than from one shared node whose edges would
cross the whole picture.
"""

from __future__ import annotations

import graphviz
import networkx as nx

from lstm_graph.ir import old_id
from lstm_graph.render import palette as P
from lstm_graph.render.draw import LEGEND, Look, Painter, legend, new_digraph
from lstm_graph.render.scene import Scene, VEdge, VNode, markup, sink_id

CELL = "[cell]"  # brackets: no user name can collide


def lit_nodes(scene: Scene, lit: frozenset[str] | None) -> set[str] | None:
    """The drawn nodes ``lit`` lights in this style: the Cell with the memory, and the
    input labels of lit nodes."""
    if lit is None:
        return None
    memory = scene.memory_state()
    cell = {CELL} if lit & {old_id(memory), sink_id(memory)} else set()
    return {*lit, *cell, *(_stub(node) for node in lit)}


def _stub(consumer: str) -> str:
    """The label beside ``consumer`` naming the inputs it reads."""
    return f"[in {consumer}]"


def draw(scene: Scene, look: Look) -> graphviz.Digraph:
    """The cell-style diagram of ``scene``, as ``look`` says."""
    graph = scene.graph
    memory = scene.memory_state()
    old, producer = old_id(memory), scene.owner[memory]
    lit = lit_nodes(scene, look.lit)
    painter = Painter(scene, look, lit)
    loop = old in scene.nodes  # the memory goes round to the next step, which reads it
    dot = new_digraph(scene, "cell", rankdir="LR", nodesep="0.3", ranksep="0.5",
                      newrank="true", splines="spline", forcelabels="true")

    def from_memory(edge: VEdge) -> bool:
        """Old memory read by a peephole or an element-wise op: drawn from ``c_{t-1}``."""
        return edge.src == old and (edge.peep or scene.nodes[edge.dst].role != "layer")

    sources = {n.id for n in scene.nodes.values() if n.role == "source"}
    stub_reads: dict[str, list[VEdge]] = {}
    for edge in scene.edges:
        if edge.src in sources and not from_memory(edge):
            stub_reads.setdefault(edge.dst, []).append(edge)

    faded = lit is not None and CELL not in lit
    line = P.FADED if faded else P.HIGHLIGHT if lit else P.NEW_STATE
    dot.node(CELL, label=_cell_label(memory, line, P.FADED_FILL if faded else P.MEMORY_FILL,
                                     P.FADED if faded else P.TEXT),
             shape="plain", fontname=P.FONT)
    shown_output = memory in graph.outputs  # the memory is also the output: it leaves too
    with dot.subgraph(name="outputs") as row:
        row.attr(rank="max")
        for node in scene.nodes.values():
            if node.role == "sink" and (node.id != sink_id(memory) or shown_output):
                painter.add_node(row, node)
        row.node(LEGEND, label=legend(look, loop=loop), shape="plaintext", fontname=P.FONT)
    for node in scene.nodes.values():
        if node.role not in ("source", "sink") and not (loop and node.id == producer):
            painter.add_node(dot, node, caption="cluster")
    if loop:
        below = _reads_below(scene, [e for e in scene.edges if from_memory(e)])
        _add_loop(dot, painter, scene.nodes[old], producer, below)
    for consumer, reads in stub_reads.items():
        _add_stub(dot, painter, consumer, reads)
    for edge in scene.edges:
        if edge.src in sources and not from_memory(edge):
            continue  # drawn from the consumer's own label
        if from_memory(edge):
            # written as the ranks run (c_{t-1} sits in the producer's rank), unless the
            # reader comes after the new memory (d = h - h[t-1])
            after = edge.ir is not None and nx.has_path(graph.dataflow, memory, edge.ir[1])
            painter.add_edge(dot, edge, reverse=not after)
            continue
        src = edge.src
        # Reads of the memory's new value come out of the Cell, like the classic diagram.
        if edge.src == producer and edge.dst != sink_id(memory):
            src = CELL
        into_cell = edge.dst == sink_id(memory)
        caption = painter.caption(scene.nodes[edge.src]) if loop and into_cell else None
        if caption:  # the memory pipe's caption, on its way into the Cell (see _add_loop)
            painter.add_edge(dot, edge, src, CELL, label=caption)
        else:
            painter.add_edge(dot, edge, src, CELL if into_cell else edge.dst)
        if shown_output and into_cell:
            painter.add_edge(dot, edge, CELL, sink_id(memory))
    return dot


def _reads_below(scene: Scene, reads: list[VEdge]) -> bool:
    """Whether the old memory's ``reads`` lie mostly below the op that makes the new
    memory: whether they feed its later operands (the GRU's ``z * h[t-1]``), which dot
    draws below the earlier ones, as it keeps the order of a node's inputs."""
    graph = scene.graph
    memory = scene.memory_state()
    args = graph.node(memory).args
    feeds = []
    for edge in reads:
        reader = edge.ir[1] if edge.ir else edge.dst
        fed = [k for k, arg in enumerate(args)
               if reader == arg or nx.has_path(graph.dataflow, reader, arg)]
        if fed:
            feeds.append(fed[0])
    return bool(feeds) and 2 * sum(feeds) > len(feeds) * (len(args) - 1)


def _add_loop(dot: graphviz.Digraph, painter: Painter, old: VNode, producer: str,
              below: bool) -> None:
    """The label ``c_{t-1}`` in the rank of the memory's ``producer``, on the side of its
    readers (``below`` it or above), and the dotted arc that carries the memory from the
    Cell's top to it: the next step."""
    made = painter.scene.nodes[producer]
    # an op's caption goes on its edge into the Cell: the cluster that would hold it under
    # the op would keep a flat edge from ordering the two; a layer's is in its box
    painter.add_node(dot, made, caption=None if made.role == "op" else "cluster")
    painter.add_node(dot, old)
    with dot.subgraph(name="memory") as rank:
        rank.attr(rank="same")
        rank.node(old.id)
        rank.node(producer)
        # in LR, a flat edge's tail is drawn above its head
        rank.edge(*((producer, old.id) if below else (old.id, producer)), style="invis")
    faded = painter.faded(CELL) or painter.faded(old.id)
    colour = P.FADED if faded else P.NEW_STATE
    dot.edge(old.id, CELL, color=colour, style="dotted", penwidth=P.EDGE_WIDTH,
             arrowsize="0.7", dir="back", arrowtail="normal",
             headport="s" if below else "n",
             label=f'<<FONT POINT-SIZE="9" COLOR="{colour}">to the next step</FONT>>',
             tooltip="the memory, carried to the next step", **painter.mark(CELL, old.id))


#: The Cell's width in points: 76, or wider for a long memory name (about 7 points a
#: character at 11 points: a name of 12 or more ran past the box onto the edges).
CELL_WIDTH, CELL_CHAR = 76, 7


def _cell_label(memory: str, line: str, fill: str, text: str) -> str:
    """The Cell: a rounded box with "Cell" and the memory's name."""
    width = max(CELL_WIDTH, CELL_CHAR * len(memory) + 12)
    return (f'<<TABLE BORDER="3" STYLE="ROUNDED" COLOR="{line}" BGCOLOR="{fill}" '
            'CELLBORDER="0" CELLSPACING="0" CELLPADDING="0"><TR>'
            f'<TD WIDTH="{width}" HEIGHT="60" FIXEDSIZE="TRUE">'
            f'<FONT COLOR="{text}"><B>Cell</B><BR/><FONT POINT-SIZE="11">'
            f"{markup(memory)}</FONT></FONT></TD></TR></TABLE>>")


def _add_stub(dot: graphviz.Digraph, painter: Painter, consumer: str, reads: list[VEdge]
              ) -> None:
    """The label beside ``consumer`` with one row (and port) per input it reads, and its
    edges: solid for the input, dashed for old values, each to ``consumer``."""
    scene, name = painter.scene, _stub(consumer)
    rows = []
    for k, edge in enumerate(reads):
        lit = not painter.faded(edge.src) and not painter.faded(consumer)
        colour = P.TEXT if lit else P.FADED
        rows.append(f'<TR><TD PORT="p{k}" ALIGN="RIGHT"><FONT POINT-SIZE="12" '
                    f'COLOR="{colour}">{scene.nodes[edge.src].symbol}</FONT></TD></TR>')
    dot.node(name, label='<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" '
             f'CELLPADDING="1">{"".join(rows)}</TABLE>>', shape="plaintext", margin="0",
             fontname=P.FONT)
    for k, edge in enumerate(reads):
        painter.add_edge(dot, edge, via=name, tailport=f"p{k}:e")
