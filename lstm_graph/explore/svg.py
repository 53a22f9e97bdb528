"""Graphviz's SVG made fit to sit inline in the explorer page, deterministically.

Graphviz writes a stand-alone document: an XML prolog, a doctype, comments,
namespace declarations (web addresses, which an HTML parser does not need for
inline SVG), ``<title>`` elements and the ``xlink:title`` of an edge's link (which
browsers show as tooltips: DOT names, ``c[t-1] → c.mul``), and ids
(``node1``, ``edge1``) that two diagrams on one page would share. :func:`embed`
removes the first five, prefixes every id with the style, keeps the drawing's own
size as its largest (``max-width``, :data:`ZOOM`), and tags what the page's script
works on:

- every node: ``data-id`` (its DOT name, what a click highlights from); a value
  node also ``data-node`` (the assignment it draws) and ``data-values`` (every
  assignment it draws), a staged node ``data-stage`` (the stages of what it draws,
  space-separated);
- every edge: ``data-a`` and ``data-b``, the two nodes whose highlight lights it
  (from the ``id`` the renderer's ``marks`` gave it);
- a node's outline (the first thing Graphviz draws of it): ``class="shape"``;
- the cells of the value strips (drawn with placeholder colours ``#fdfdKK``):
  ``class="u" data-u="K"``, painted white until the script colours them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass

from lstm_graph.render.values import PLACEHOLDER

_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_COMMENT = re.compile(r"<!--.*?-->\n?", re.S)
_SIZE = re.compile(r'(<svg\b[^>]*?) width="([0-9.]+)pt" height="[^"]*"')
#: The most a diagram is enlarged beyond its own size (a small cell's diagram stretched
#: to a wide window had legend text three times its size).
ZOOM = 1.4
_NAMESPACES = re.compile(r' xmlns(?::xlink)?="[^"]*"')
_GROUP = re.compile(r'<g id="([^"]*)" class="(node|edge|cluster)">\n<title>(.*?)</title>\n')
_TITLE = re.compile(r"<title>.*?</title>\n?")
_LINK_TITLE = re.compile(r' xlink:title="[^"]*"')
_ID = re.compile(r' id="([^"]*)"')
_SHAPE = re.compile(r'(class="node"[^>]*>\n<(?:ellipse|path|polygon)) ')
_CELL = re.compile('<polygon fill="' + PLACEHOLDER.replace("{:02x}", "([0-9a-f]{2})") + '"')


@dataclass(frozen=True)
class NodeInfo:
    """What the page knows of one drawn node (by DOT name)."""

    values: tuple[str, ...] = ()  # the assignments it draws, its own first
    #: the stages its values are computed in, lit by the stage player (a box that draws a
    #: linear and the activation of it computes in both: it lit in the first alone)
    stages: tuple[int, ...] = ()


def embed(svg: str, style: str, info: Mapping[str, NodeInfo]) -> str:
    """``svg`` (Graphviz's output for ``style``) ready to inline; see the module doc."""
    svg = _COMMENT.sub("", _PROLOG.sub("", svg, count=1))
    svg = _SIZE.sub(lambda m: f'{m.group(1)} class="diagram" data-style="{style}" '
                    f'style="max-width: {float(m.group(2)) * 4 / 3 * ZOOM:.0f}px"', svg,
                    count=1)  # its points as CSS pixels, enlarged at most ZOOM times
    svg = _NAMESPACES.sub("", svg, count=2)  # HTML puts inline <svg> in its namespace itself
    edges = 0

    def group(match: re.Match[str]) -> str:
        nonlocal edges
        graphviz_id, kind, title = match.groups()
        if kind == "edge":
            edges += 1
            ends = html.unescape(graphviz_id).split(" → ")
            marks = "".join(f' data-{end}="{html.escape(name)}"'
                            for end, name in zip("ab", ends)) if len(ends) == 2 else ""
            return f'<g id="{style}-e{edges}" class="edge"{marks}>\n'
        if kind == "cluster":
            return f'<g id="{style}-{graphviz_id}" class="cluster">\n'
        name = html.unescape(title)
        attrs = f' data-id="{html.escape(name)}"'
        node = info.get(name, NodeInfo())
        if node.values:
            attrs += (f' data-node="{html.escape(node.values[0])}" '
                      f'data-values="{html.escape(" ".join(node.values))}"')
        if node.stages:
            attrs += f' data-stage="{" ".join(map(str, node.stages))}"'
        return f'<g id="{style}-{graphviz_id}" class="node"{attrs}>\n'

    svg = _SHAPE.sub(r'\1 class="shape" ', _GROUP.sub(group, svg))
    svg = _TITLE.sub("", svg)  # the graph's own title
    svg = _LINK_TITLE.sub("", svg)  # an edge's tooltip: the DOT names of what it carries
    svg = _ID.sub(lambda m: m.group(0) if m.group(1).startswith(f"{style}-") else
                  "" if m.group(1).startswith("a_") else f' id="{style}-{m.group(1)}"', svg)
    return _CELL.sub(lambda m: f'<polygon class="u" data-u="{int(m.group(1), 16)}" '
                     'fill="#ffffff"', svg)
