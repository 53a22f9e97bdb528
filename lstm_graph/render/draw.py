"""Turning scene nodes and edges into Graphviz attributes; shared by both styles.

The styles decide where things go; this module decides what they look like,
from the palette, so both styles speak one visual language. Every caption and
name that reaches an HTML label is escaped here (``# keep <old> & add``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import graphviz

from lstm_graph.errors import RenderError
from lstm_graph.ir import EdgeKind
from lstm_graph.render import palette as P
from lstm_graph.render.scene import Scene, VEdge, VNode, markup
from lstm_graph.render.values import Strip


@dataclass(frozen=True)
class Look:
    """What a diagram shows besides the cell, the same for both styles.

    ``highlight``: the name asked for, ``lit`` the nodes on its path (the rest
    fades), and ``reach`` what that path is, in the legend's words
    (:func:`~lstm_graph.render.scene.path_words`); ``stages``: stage numbers on
    nodes; ``strips``: value strips by node,
    ``values`` saying in the legend what they show ("step 3, sequence 0");
    ``marks``: every edge named ``"A → B"`` by the two nodes whose highlight lights
    it, for a page that highlights paths in the browser as ``--highlight`` does;
    ``gradients``: the size of the gradient each IR edge carried back (at one step),
    and each state's new value under ``(state, sink_id(state))``, drawn as the edge's
    width and a label, ``gradient_note`` saying in the legend which step;
    ``shared_lines``: the style draws lines that stand for several IR edges, which the
    legend then says carry no one size (set by the style, not the caller).
    """

    highlight: str | None = None
    lit: frozenset[str] | None = None
    stages: bool = False
    strips: Mapping[str, Strip] | None = None
    values: str | None = None
    marks: bool = False
    gradients: Mapping[tuple[str, str], float] | None = None
    gradient_note: str | None = None
    reach: str | None = None
    shared_lines: bool = False


class Painter:
    """Adds scene nodes and edges to a digraph, honouring a :class:`Look`; ``lit`` is the
    look's highlight grown by the style (:func:`pipe.lit_nodes`)."""

    def __init__(self, scene: Scene, look: Look, lit: set[str] | None = None):
        self.scene = scene
        self.lit = lit
        self.stages = look.stages
        self._stages = scene.stages() if look.stages else {}
        self.strips = look.strips or {}
        self.marks = look.marks
        self.gradients = look.gradients
        sizes = [v for v in (look.gradients or {}).values() if v > 0]
        self._span = (math.log10(min(sizes)), math.log10(max(sizes))) if sizes else (0.0, 0.0)

    def mark(self, src: str, dst: str) -> dict[str, str]:
        """The attributes that name an edge by the nodes that light it (with ``marks``)."""
        return {"id": f"{src} → {dst}"} if self.marks else {}

    def faded(self, node_id: str) -> bool:
        return self.lit is not None and node_id not in self.lit

    def label(self, node: VNode, symbol: str | None = None, caption: bool = True) -> str:
        """HTML label: the symbol, the stage mark, (for layers) the caption below, and
        the node's value strip when there is one."""
        text = symbol or node.symbol
        size = {"layer": 18, "op": 14, "source": 15, "sink": 15, "const": 12}.get(node.role, 14)
        head = f'<FONT POINT-SIZE="{size}">{text}</FONT>'
        if self.stages and node.role in ("layer", "op"):
            marks = "".join(map(P.stage_mark, self._stages[node.id]))
            head += f'<FONT POINT-SIZE="10"> {marks}</FONT>'
        colour = P.FADED if self.faded(node.id) else P.CAPTION
        below = f'<FONT POINT-SIZE="9" COLOR="{colour}">{markup(node.caption)}</FONT>' \
            if caption and node.caption and node.role == "layer" else None
        strip = self.strips.get(node.id)
        if strip is None:
            return f"<{head}{'<BR/>' + below if below else ''}>"
        rows = [head] + ([below] if below else []) + [strip_table(strip)]
        if strip.note:
            rows.append(f'<FONT POINT-SIZE="8" COLOR="{colour}">{markup(strip.note)}'
                        "</FONT>")
        return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0">'
                + "".join(f"<TR><TD>{row}</TD></TR>" for row in rows) + "</TABLE>>")

    def node_attrs(self, node: VNode, symbol: str | None = None, caption: bool = True
                   ) -> dict[str, str]:
        faded = self.faded(node.id)
        lit = self.lit is not None and not faded
        attrs: dict[str, str] = {"label": self.label(node, symbol, caption), "fontname": P.FONT,
                                 "fontcolor": P.FADED if faded else P.TEXT}
        if node.role == "layer":
            attrs.update(shape="box", style="rounded,filled", margin="0.12,0.04",
                         fillcolor=P.FADED_FILL if faded else P.LAYER_FILL,
                         color=P.FADED if faded else P.LAYER_LINE)
        elif node.role == "op":  # a value strip fits an ellipse better than a circle
            attrs.update(shape="ellipse" if node.id in self.strips else "circle",
                         style="filled", margin="0.02", width="0.42",
                         fillcolor=P.FADED_FILL if faded else P.OP_FILL,
                         color=P.FADED if faded else P.OP_LINE)
        else:
            attrs.update(shape="plaintext", margin="0.02")
        if lit:
            attrs.update(color=P.HIGHLIGHT, penwidth=P.HIGHLIGHT_WIDTH)
        return attrs

    def edge_attrs(self, edge: VEdge, src: str | None = None, dst: str | None = None,
                   shared: bool = False) -> dict[str, str]:
        """Dashed exactly for old values, green exactly for a state's new value; sized by
        its gradient unless ``shared`` (one line for several IR edges: no one edge's size
        is the line's)."""
        src, dst = src or edge.src, dst or edge.dst
        attrs = {
            "color": P.NEW_STATE if edge.state_value else P.EDGE,
            "penwidth": P.EDGE_WIDTH,
            "arrowsize": "0.7",
        }
        if edge.kind is EdgeKind.OLD:
            attrs["style"] = P.OLD_STYLE
        if self.gradients is not None and not shared:
            attrs.update(self._gradient(edge))
        if self.lit is not None:
            if src in self.lit and dst in self.lit:
                attrs["penwidth"] = P.HIGHLIGHT_WIDTH
                if not edge.state_value:
                    attrs["color"] = P.HIGHLIGHT
            else:
                attrs["color"] = P.FADED
        return attrs

    def _gradient(self, edge: VEdge) -> dict[str, str]:
        """An edge's width by the (log) size of the gradient it carried, and that size; an
        IR edge that carried none fades. A drawn-only edge (a state's new value into its
        sink: the memory pipe into the Cell) is sized where ``gradients`` has it by its
        ends, else stays as it is."""
        key = edge.ir or (edge.src, edge.dst)
        if edge.ir is None and key not in (self.gradients or {}):
            return {}
        size = (self.gradients or {}).get(key, 0.0)
        if size <= 0:
            return {"color": P.FADED, "penwidth": "0.8"}
        low, high = self._span
        share = (math.log10(size) - low) / (high - low) if high > low else 1.0
        return {"penwidth": f"{0.8 + 5.2 * share:.2f}", "label":
                f'<<FONT POINT-SIZE="8" COLOR="{P.GRADIENT}">{size:.1e}</FONT>>'}

    def add_node(self, graph: graphviz.Digraph, node: VNode, caption: str | None = "xlabel",
                 name: str | None = None, symbol: str | None = None, **extra: str) -> None:
        """Add ``node`` (as ``name`` when a step of an unrolled chain renames it, with
        ``symbol`` for its text); an op's caption is placed by ``caption``.

        ``"xlabel"``: Graphviz puts it next to the node, clear of other nodes.
        ``"cluster"``: the label of a borderless cluster around the node, right
        under it; for layouts whose edges enter ops from the sides, where no
        edge can run through it. ``None``: no caption (a layer's too).
        """
        name = name or node.id
        attrs = {**self.node_attrs(node, symbol, caption is not None), **extra}
        label = self.caption(node) if caption else None
        if label is None:
            graph.node(name, **attrs)
        elif caption == "xlabel":
            graph.node(name, xlabel=label, **attrs)
        else:
            with graph.subgraph(name=f"cluster_caption {name}") as box:
                box.attr(label=label, labelloc="b", pencolor="transparent", margin="2")
                box.node(name, **attrs)

    def tooltip(self, edges: list[VEdge]) -> str:
        """:func:`ir_tooltip`, each IR edge followed by the gradient it carried where the
        look has them (``h[t-1] → f.linear 5.1e-04``): the shares of a merged line."""
        if self.gradients is None:
            return ir_tooltip(edges)
        return "; ".join(f"{e.ir[0]} → {e.ir[1]} {self.gradients.get(e.ir, 0.0):.1e}"
                         for e in edges if e.ir)

    def caption(self, node: VNode) -> str | None:
        """An op's caption as a small grey label (none for other nodes: a layer's caption
        is inside its box)."""
        if node.role != "op" or not node.caption:
            return None
        colour = P.FADED if self.faded(node.id) else P.CAPTION
        return f'<<FONT POINT-SIZE="9" COLOR="{colour}">{markup(node.caption)}</FONT>>'

    def add_edge(self, graph: graphviz.Digraph, edge: VEdge, src: str | None = None,
                 dst: str | None = None, reverse: bool = False, via: str | None = None,
                 carries: list[VEdge] | None = None, **extra: str) -> None:
        """Draw ``edge`` (between ``src`` and ``dst`` when the style redirects it; from
        ``via`` when a label beside ``dst`` stands for ``src``; standing for all the IR
        edges ``carries`` lists where the style merges them into one line).

        ``reverse`` writes it from ``dst`` to ``src`` with the arrow drawn at its
        tail (``dir=back``): for layouts whose ranks run against the edge. A
        subtracted operand's ``−`` sits by the arrowhead. Its tooltip names the
        IR edges it draws (``c[t-1] → f.linear``), each with the gradient it carried
        where the look has them: shown on hover in SVG, and how the tests hold every
        drawn edge to the IR.
        """
        shared = carries is not None and len(carries) > 1
        attrs = {**self.edge_attrs(edge, src, dst, shared),
                 **self.mark(src or edge.src, dst or edge.dst)}
        if carries is not None or edge.ir:
            attrs["tooltip"] = self.tooltip(carries if carries is not None else [edge])
        if edge.sign:
            attrs["taillabel" if reverse else "headlabel"] = \
                f'<<FONT POINT-SIZE="13" COLOR="{P.OP_LINE}"><B>{edge.sign}</B></FONT>>'
            attrs.update(labeldistance="1.3", labelangle="-50")
        tail, head = via or src or edge.src, dst or edge.dst
        if reverse:
            tail, head = head, tail
            attrs.update(dir="back", arrowtail="normal")
        if "label" in attrs and "label" in extra:  # a caption over the gradient's size
            extra = {**extra, "label": f"<{extra['label'][1:-1]}<BR/>{attrs['label'][1:-1]}>"}
        graph.edge(tail, head, **{**attrs, **extra})


def strip_table(strip: Strip) -> str:
    """A strip as a one-row HTML table of coloured cells inside a thin frame."""
    cells = "".join(f'<TD WIDTH="{strip.cell_width}" HEIGHT="{strip.height}" '
                    f'FIXEDSIZE="TRUE" BGCOLOR="{colour}"></TD>' for colour in strip.colours)
    width = strip.cell_width * len(strip.colours) + 2
    return (f'<TABLE BORDER="1" COLOR="{P.CAPTION}" CELLBORDER="0" CELLSPACING="0" '
            f'CELLPADDING="0" WIDTH="{width}" HEIGHT="{strip.height + 2}" FIXEDSIZE="TRUE">'
            f"<TR>{cells}</TR></TABLE>")


def ir_tooltip(edges: list[VEdge]) -> str:
    """``"x → f.linear; x → i.linear"``: the IR edges a drawn edge stands for."""
    return "; ".join(f"{e.ir[0]} → {e.ir[1]}" for e in edges if e.ir)


#: The legend's node name: in brackets, which no name in a cell can hold (a value named
#: ``legend`` was drawn as the legend's table, and the table as that value).
LEGEND = "[legend]"


def legend(look: Look, loop: bool = False) -> str:
    """The legend as an HTML table label (a plaintext node).

    ``loop`` adds the Cell's loop; the look, rows for what it shows: the
    highlight colour, the circled stage numbers, the value scale.
    """
    highlight, stages, values = look.highlight, look.stages, look.values

    def row(sample: str, text: str) -> str:
        return (f'<TR><TD ALIGN="LEFT">{sample}</TD><TD ALIGN="LEFT">'
                f'<FONT POINT-SIZE="9">{text}</FONT></TD></TR>')

    rows = [
        row(f'<FONT COLOR="{P.EDGE}">╌╌╌▸</FONT>', "previous step (old)"),
        row(f'<FONT COLOR="{P.NEW_STATE}">━━━▸</FONT>', "new state value (this step)"),
        row(f'<FONT COLOR="{P.EDGE}">━━━▸</FONT>', "computed this step"),
    ]
    if loop:
        rows.append(row(f'<FONT COLOR="{P.NEW_STATE}">┈┈┈▸</FONT>', "memory, to the next step"))
    if highlight is not None:
        rows.append(row(f'<FONT COLOR="{P.HIGHLIGHT}">━━━▸</FONT>',
                        f"path of {markup(highlight)}: "
                        f"{markup(look.reach or 'what feeds it and what it feeds')}"))
    if stages:
        rows.append(row(f'<FONT POINT-SIZE="10">{P.stage_mark(1)}{P.stage_mark(2)}</FONT>',
                        "stage: runs after every lower stage"))
    if look.gradient_note is not None:
        rows.append(row(f'<FONT COLOR="{P.GRADIENT}">1e-3</FONT> ━━━▸',
                        "width and label: the gradient the edge carried back "
                        f"({markup(look.gradient_note)})"))
        if look.shared_lines:
            rows.append(row(f'<FONT COLOR="{P.EDGE}">━━━</FONT>',
                            "one line into several layers: no size of its own; each "
                            "layer's share in its tooltip (the cell style draws them apart)"))
    rows += [
        f'<TR><TD BGCOLOR="{P.LAYER_FILL}" BORDER="1" COLOR="{P.LAYER_LINE}">'
        f'<FONT POINT-SIZE="9">σ</FONT></TD><TD ALIGN="LEFT"><FONT POINT-SIZE="9">'
        f'learned layer</FONT></TD></TR>',
        f'<TR><TD BGCOLOR="{P.OP_FILL}" BORDER="1" COLOR="{P.OP_LINE}" STYLE="ROUNDED">'
        f'<FONT POINT-SIZE="9">×</FONT></TD><TD ALIGN="LEFT"><FONT POINT-SIZE="9">'
        f'element-wise</FONT></TD></TR>',
    ]
    if values is not None:
        scale = "".join(f'<TD WIDTH="5" HEIGHT="7" FIXEDSIZE="TRUE" BGCOLOR="{P.heat(v / 4)}">'
                        "</TD>" for v in range(-4, 5))
        rows.append(
            f'<TR><TD><TABLE BORDER="1" COLOR="{P.CAPTION}" CELLBORDER="0" CELLSPACING="0" '
            f'CELLPADDING="0"><TR>{scale}</TR></TABLE></TD><TD ALIGN="LEFT">'
            f'<FONT POINT-SIZE="9">−1 … 0 … +1, per unit ({markup(values)})</FONT>'
            "</TD></TR>")
    return (f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1">'
            f'{"".join(rows)}</TABLE>>')


class Diagram(graphviz.Digraph):
    """A diagram lstm-graph drew: a ``graphviz.Digraph`` whose pictures are made by
    lstm-graph's own run of ``dot`` (:func:`lstm_graph.render.to_bytes`: the ``dot`` of a
    ``PATH`` entry no other user may write, after the diagram's size is checked, within
    bounds of memory and time), not by the ``graphviz`` package's, which runs the first
    ``dot`` on ``PATH`` and waits for it without a bound. A notebook shows it through
    :meth:`pipe`, and shows the reason as text where it cannot be drawn; the package's
    :meth:`render`, :meth:`view` and :meth:`unflatten`, which would run that other
    ``dot``, are refused (``lstm_graph.render.save`` writes a picture)."""

    def pipe(self, format: str | None = None, renderer: str | None = None,  # noqa: A002
             formatter: str | None = None, neato_no_op: bool | int | None = None,
             quiet: bool = False, *, engine: str | None = None, encoding: str | None = None
             ) -> bytes | str:
        """The diagram as ``format`` (``svg``, ``png``, ``pdf`` or ``dot``; by default its
        ``.format``, as graphviz's), text where ``encoding`` is given; Graphviz's other
        renderers, formatters and engines are refused, not passed to a ``dot`` run some
        other way."""
        from lstm_graph.render import to_bytes

        if renderer or formatter or neato_no_op or engine not in (None, "dot"):
            raise RenderError("lstm-graph lays its diagrams out with dot and its own "
                              "settings: give a format alone")
        data = to_bytes(self, format or self.format)
        return data.decode(encoding) if encoding else data

    def _repr_mimebundle_(self, include: Iterable[str] | None = None,
                          exclude: Iterable[str] | None = None, **_: Any
                          ) -> dict[str, bytes | str]:
        try:
            bundle: dict[str, bytes | str] = super()._repr_mimebundle_(include, exclude)
        except RenderError as err:  # too large, or no dot: the reason, not a traceback
            return {"text/plain": str(err)}
        return bundle

    def render(self, *args: Any, **kwargs: Any) -> str:
        raise RenderError("a diagram of lstm-graph is written by lstm_graph.render.save("
                          "diagram, 'cell.svg', 'svg') (svg, png, pdf or dot), which runs "
                          "dot within its bounds; its .source is the DOT text")

    def view(self, *args: Any, **kwargs: Any) -> str:
        return self.render()

    def unflatten(self, *args: Any, **kwargs: Any) -> Any:
        raise RenderError("lstm-graph lays its diagrams out with dot and its own settings; "
                          "graphviz's unflatten, which would run the first unflatten and dot "
                          "on PATH, is not offered: its .source is the DOT text")


def new_digraph(scene: Scene, style: str, **graph_attrs: str) -> graphviz.Digraph:
    attrs = {"fontname": P.FONT, "bgcolor": "white", "pad": "0.2", **graph_attrs}
    graph = Diagram(f"{scene.graph.name}_{style}", graph_attr=attrs,
                             node_attr={"fontname": P.FONT},
                             edge_attr={"fontname": P.FONT})
    graph.attr(label=f"<<FONT POINT-SIZE=\"12\">{markup(scene.graph.name)}</FONT>>",
               labelloc="t", labeljust="l")
    return graph
