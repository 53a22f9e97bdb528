"""Read back the nodes and edges of DOT text that lstm-graph wrote (test helper)."""

from __future__ import annotations

import re

_HTML = re.compile(r"(\w+)=<(<.*?>)>(?=[\s\]])")
_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s\]]+)')
_EDGE = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|[^\s"]+) -> ("(?:[^"\\]|\\.)*"|[^\s"]+)'
                   r"(?: \[(.*)\])?$")
_NODE = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|[^\s"\-{}]+) \[(.*)\]$')


def _unquote(text: str) -> str:
    return text[1:-1].replace('\\"', '"') if text.startswith('"') else text


def attributes(text: str) -> dict[str, str]:
    html = {key: value for key, value in _HTML.findall(text)}
    plain = _HTML.sub("", text)
    return {**{k: _unquote(v) for k, v in _ATTR.findall(plain)}, **html}


def edges(source: str) -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for line in source.splitlines():
        match = _EDGE.match(line)
        if match:
            found.append((_unquote(match[1]), _unquote(match[2]), attributes(match[3] or "")))
    return found


def nodes(source: str) -> dict[str, dict[str, str]]:
    found = {}
    for line in source.splitlines():
        if "->" in line or line.strip().startswith(("graph ", "node ", "edge ")):
            continue
        match = _NODE.match(line)
        if match:
            found[_unquote(match[1])] = attributes(match[2])
    return found
