"""Turning scene nodes and edges into Graphviz attributes; shared by both styles.

The styles decide where things go; this module decides what they look like,
from the palette, so both styles speak one visual language.
"""

from __future__ import annotations

import html

import graphviz

from lstm_graph.ir import EdgeKind
from lstm_graph.render import palette as P
from lstm_graph.render.scene import Scene, VEdge, VNode


class Painter:
    """Adds scene nodes and edges to a digraph, honouring highlight and --stages."""

    def __init__(self, scene: Scene, lit: set[str] | None, stages: bool):
        self.scene = scene
        self.lit = lit
        self.stages = stages

    def faded(self, node_id: str) -> bool:
        return self.lit is not None and node_id not in self.lit

    def label(self, node: VNode, symbol: str | None = None) -> str:
        """HTML label: the symbol, the stage mark, and (for layers) the caption below."""
        text = symbol or node.symbol
        size = {"layer": 18, "op": 14, "source": 15, "sink": 15, "const": 12}.get(node.role, 14)
        parts = [f'<FONT POINT-SIZE="{size}">{text}</FONT>']
        if self.stages and node.role in ("layer", "op"):
            parts.append(f'<FONT POINT-SIZE="10"> {P.stage_mark(node.stage)}</FONT>')
        if node.caption and node.role == "layer":
            colour = P.FADED if self.faded(node.id) else P.CAPTION
            parts.append(f'<BR/><FONT POINT-SIZE="9" COLOR="{colour}">'
                         f'{html.escape(node.caption)}</FONT>')
        return "<" + "".join(parts) + ">"

    def node_attrs(self, node: VNode) -> dict[str, str]:
        faded = self.faded(node.id)
        lit = self.lit is not None and not faded
        attrs: dict[str, str] = {"label": self.label(node), "fontname": P.FONT,
                                 "fontcolor": P.FADED if faded else P.TEXT}
        if node.role == "layer":
            attrs.update(shape="box", style="rounded,filled", margin="0.12,0.04",
                         fillcolor=P.FADED_FILL if faded else P.LAYER_FILL,
                         color=P.FADED if faded else P.LAYER_LINE)
        elif node.role == "op":
            attrs.update(shape="circle", style="filled", margin="0.02", width="0.42",
                         fillcolor=P.FADED_FILL if faded else P.OP_FILL,
                         color=P.FADED if faded else P.OP_LINE)
        else:
            attrs.update(shape="plaintext", margin="0.02")
        if lit:
            attrs.update(color=P.HIGHLIGHT, penwidth=P.HIGHLIGHT_WIDTH)
        return attrs

    def edge_attrs(self, edge: VEdge, src: str | None = None, dst: str | None = None
                   ) -> dict[str, str]:
        """Dashed exactly for old values, green exactly for a state's new value."""
        src, dst = src or edge.src, dst or edge.dst
        attrs = {
            "color": P.NEW_STATE if edge.state_value else P.EDGE,
            "penwidth": P.EDGE_WIDTH,
            "arrowsize": "0.7",
        }
        if edge.kind is EdgeKind.OLD:
            attrs["style"] = P.OLD_STYLE
        if self.lit is not None:
            if src in self.lit and dst in self.lit:
                attrs["penwidth"] = P.HIGHLIGHT_WIDTH
                if not edge.state_value:
                    attrs["color"] = P.HIGHLIGHT
            else:
                attrs["color"] = P.FADED
        return attrs

    def add_node(self, graph: graphviz.Digraph, node: VNode, caption: str | None = "xlabel",
                 **extra: str) -> None:
        """Add ``node``; an op's caption is placed by ``caption``.

        ``"xlabel"``: Graphviz puts it next to the node, clear of other nodes.
        ``"cluster"``: the label of a borderless cluster around the node, right
        under it; for layouts whose edges enter ops from the sides, where no
        edge can run through it. ``None``: no caption.
        """
        attrs = {**self.node_attrs(node), **extra}
        text = node.caption if node.role == "op" and caption else None
        if text is None:
            graph.node(node.id, **attrs)
            return
        colour = P.FADED if self.faded(node.id) else P.CAPTION
        label = f'<<FONT POINT-SIZE="9" COLOR="{colour}">{html.escape(text)}</FONT>>'
        if caption == "xlabel":
            graph.node(node.id, xlabel=label, **attrs)
            return
        with graph.subgraph(name=f"cluster_caption {node.id}") as box:
            box.attr(label=label, labelloc="b", pencolor="transparent", margin="2")
            box.node(node.id, **attrs)

    def add_edge(self, graph: graphviz.Digraph, edge: VEdge, src: str | None = None,
                 dst: str | None = None, **extra: str) -> None:
        """Draw ``edge`` (between ``src`` and ``dst`` when the style redirects it).

        Its tooltip names the IR edges it draws (``c[t-1] → f.linear``): shown on
        hover in SVG, and how the tests hold every drawn edge to the IR.
        """
        attrs = self.edge_attrs(edge, src, dst)
        if edge.ir:
            attrs["tooltip"] = ir_tooltip([edge])
        graph.edge(src or edge.src, dst or edge.dst, **{**attrs, **extra})


def ir_tooltip(edges: list[VEdge]) -> str:
    """``"x → f.linear; x → i.linear"``: the IR edges a drawn edge stands for."""
    return "; ".join(f"{e.ir[0]} → {e.ir[1]}" for e in edges if e.ir)


def legend(loop: bool = False) -> str:
    """The legend as an HTML table label (a plaintext node); ``loop`` adds the Cell's loop."""
    rows = [
        (f'<FONT COLOR="{P.EDGE}">╌╌╌▸</FONT>', "previous step (old)"),
        (f'<FONT COLOR="{P.NEW_STATE}">━━━▸</FONT>', "new state value (this step)"),
        (f'<FONT COLOR="{P.EDGE}">━━━▸</FONT>', "computed this step"),
    ]
    if loop:
        rows.append((f'<FONT COLOR="{P.NEW_STATE}">┈┈┈▸</FONT>', "memory, to the next step"))
    cells = "".join(
        f'<TR><TD ALIGN="LEFT">{sample}</TD><TD ALIGN="LEFT">'
        f'<FONT POINT-SIZE="9">{text}</FONT></TD></TR>'
        for sample, text in rows
    )
    swatches = (
        f'<TR><TD BGCOLOR="{P.LAYER_FILL}" BORDER="1" COLOR="{P.LAYER_LINE}">'
        f'<FONT POINT-SIZE="9">σ</FONT></TD><TD ALIGN="LEFT"><FONT POINT-SIZE="9">'
        f'learned layer</FONT></TD></TR>'
        f'<TR><TD BGCOLOR="{P.OP_FILL}" BORDER="1" COLOR="{P.OP_LINE}" STYLE="ROUNDED">'
        f'<FONT POINT-SIZE="9">×</FONT></TD><TD ALIGN="LEFT"><FONT POINT-SIZE="9">'
        f'element-wise</FONT></TD></TR>'
    )
    return (f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1">'
            f'{cells}{swatches}</TABLE>>')


def new_digraph(scene: Scene, style: str, **graph_attrs: str) -> graphviz.Digraph:
    attrs = {"fontname": P.FONT, "bgcolor": "white", "pad": "0.2", **graph_attrs}
    graph = graphviz.Digraph(f"{scene.graph.name}_{style}", graph_attr=attrs,
                             node_attr={"fontname": P.FONT},
                             edge_attr={"fontname": P.FONT})
    graph.attr(label=f"<<FONT POINT-SIZE=\"12\">{html.escape(scene.graph.name)}</FONT>>",
               labelloc="t", labeljust="l")
    return graph
