"""Cell style (the classic LSTM diagram, redrawn with Olah's symbols).

The memory state is one central "Cell" node: its previous value leaves it on
dashed edges (there when the step starts), its new value enters it and leaves
it on solid green edges, so the viewer sees which valves wait for the new
memory. A self-loop carries the memory to the next step.

As in the classic diagram, every valve takes its inputs (``x_t``, ``h_{t-1}``)
from a small label of its own right beside it, rather than from one shared
node whose edges would cross the whole picture. The old memory leaves the Cell
through one port per reader, down its left side, so each dashed edge can be
followed from the Cell to the valve it feeds; only peepholes and element-wise
reads (the memory pipe) leave the Cell, while a learned layer that weighs the
memory's old value (the GRU's ``h_{t-1}``) reads it from its own label too.
"""

from __future__ import annotations

import html

import graphviz

from lstm_graph.ir import old_id
from lstm_graph.render import palette as P
from lstm_graph.render.draw import Look, Painter, legend, new_digraph
from lstm_graph.render.scene import Scene, VEdge, sink_id

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
    merged = {old_id(memory), sink_id(memory)}
    lit = lit_nodes(scene, look.lit)
    painter = Painter(scene, look, lit)
    dot = new_digraph(scene, "cell", rankdir="LR", nodesep="0.3", ranksep="0.5",
                      newrank="true", splines="spline", forcelabels="true")

    def from_cell(edge: VEdge) -> bool:
        """Old memory read by a peephole or an element-wise op: drawn out of the Cell."""
        return edge.src == old_id(memory) and (edge.peep or scene.nodes[edge.dst].role != "layer")

    sources = {n.id for n in scene.nodes.values() if n.role == "source"}
    cell_reads = [e for e in scene.edges if from_cell(e)]
    stub_reads: dict[str, list[VEdge]] = {}
    for edge in scene.edges:
        if edge.src in sources and not from_cell(edge):
            stub_reads.setdefault(edge.dst, []).append(edge)

    faded = lit is not None and CELL not in lit
    line = P.FADED if faded else P.HIGHLIGHT if lit else P.NEW_STATE
    dot.node(CELL, label=_cell_label(memory, len(cell_reads), line,
                                     P.FADED_FILL if faded else P.MEMORY_FILL,
                                     P.FADED if faded else P.TEXT),
             shape="plain", fontname=P.FONT)
    dot.edge(CELL, CELL, color=P.FADED if faded else P.NEW_STATE, style="dotted",
             arrowsize="0.7", tooltip="the memory, carried to the next step",
             tailport="ne", headport="nw", **painter.mark(CELL, CELL))
    shown_output = memory in graph.outputs  # the memory is also the output: it leaves too
    with dot.subgraph(name="outputs") as row:
        row.attr(rank="max")
        for node in scene.nodes.values():
            if node.role == "sink" and (node.id not in merged or shown_output):
                painter.add_node(row, node)
        row.node("legend", label=legend(look, loop=True), shape="plaintext", fontname=P.FONT)
    for node in scene.nodes.values():
        if node.role not in ("source", "sink"):
            painter.add_node(dot, node, caption="cluster")
    for consumer, reads in stub_reads.items():
        _add_stub(dot, painter, consumer, reads)
    for edge in scene.edges:
        if edge.src in sources and not from_cell(edge):
            continue  # drawn from the consumer's own label
        if from_cell(edge):
            port = f"old{cell_reads.index(edge)}:w"
            # the old memory flows back: it must not pull the Cell leftwards
            painter.add_edge(dot, edge, CELL, edge.dst, tailport=port, constraint="false")
            continue
        src = edge.src
        # Reads of the memory's new value come out of the Cell, like the classic diagram.
        if edge.src == scene.owner.get(memory) and edge.dst != sink_id(memory):
            src = CELL
        painter.add_edge(dot, edge, src, CELL if edge.dst in merged else edge.dst)
        if shown_output and edge.dst == sink_id(memory):
            painter.add_edge(dot, edge, CELL, sink_id(memory))
    return dot


def _cell_label(memory: str, ports: int, line: str, fill: str, text: str) -> str:
    """The Cell: a rounded box with "Cell" and the memory's name, and ``ports`` exits
    for the old memory down its left edge (``old0`` at the top), one per dashed edge."""
    height = 60
    exits = "".join(f'<TR><TD PORT="old{k}" WIDTH="3" HEIGHT="{height // ports}" '
                    'FIXEDSIZE="TRUE"></TD></TR>' for k in range(ports))
    column = ('<TD><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">'
              f"{exits}</TABLE></TD>") if ports else ""
    return (f'<<TABLE BORDER="3" STYLE="ROUNDED" COLOR="{line}" BGCOLOR="{fill}" '
            f'CELLBORDER="0" CELLSPACING="0" CELLPADDING="0"><TR>{column}'
            f'<TD WIDTH="76" HEIGHT="{height}" FIXEDSIZE="TRUE"><FONT COLOR="{text}">'
            f'<B>Cell</B><BR/><FONT POINT-SIZE="11">{html.escape(memory)}</FONT></FONT>'
            "</TD></TR></TABLE>>")


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
