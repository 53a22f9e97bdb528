"""Directive lines: what a cell says about itself besides its equations.

::

    preset forget: f              # a named highlight (the article's figure sequence)
    preset input: i, g
    gates lstm: i, f, g, o        # PyTorch/ONNX LSTM weights: stacked gate i is held by i, ...
    gates gru: r, z, n = a + b    # the GRU's gate n is split: input half in a, recurrent half in b
    gates lstm: i, f = -, g, o    # gate f's weights are not used (ONNX's input_forget)
    gates lstm: i, f, g, o, proj = h   # and nn.LSTM(proj_size=P)'s projection weight_hr is h's

Highlights (``render --highlight``, the explorer's presets) and weight
importers read these from the cell, so no Python code names a cell's
variables. The parser reads a line's syntax (:func:`parse_line`); the validator
checks it against the assignments (:func:`check`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from lstm_graph.errors import Diagnostic
from lstm_graph.ir import CellGraph, GateMap, GateOwner, Loc, Node, NodeKind, Preset

#: Layers whose weights stack one block per gate, by family, with the gates' names.
#: Each format's stacking order (PyTorch ``ifgo``, ONNX ``iofc``) is the importers' business.
GATE_FAMILIES: dict[str, tuple[str, ...]] = {
    "lstm": ("i", "f", "g", "o"),
    "gru": ("r", "z", "n"),
    "rnn": ("h",),
}
#: What a family's layer may hold besides its gates: PyTorch's LSTM projection
#: (``proj_size``), a ``linear`` of one new value, without bias in PyTorch.
OPTIONAL: dict[str, tuple[str, ...]] = {"lstm": ("proj",)}
#: How a gates line marks a gate whose weights the cell does not use.
UNUSED = "-"
KEYWORDS = ("preset", "gates")

_LINE = re.compile(r"(preset|gates)\s+([^\s:]*)\s*:?")
_NAME = re.compile(r"[^\s,]+")
_GATE = re.compile(r"\s*([^\s=,+]+)\s*(?:=\s*([^\s=,+]+)\s*(?:\+\s*([^\s=,+]+)\s*)?)?$")

Report = Callable[[Loc, str], None]


def parse_line(code: str, line: int, indent: int, error: Report) -> Preset | GateMap | None:
    """A ``preset`` or ``gates`` line (``code`` starts at column ``indent + 1``); None after
    reporting what is wrong with it."""
    match = _LINE.match(code)
    keyword = code.split()[0]
    usage = {"preset": "preset NAME: a, b", "gates": "gates lstm: i, f, g, o"}[keyword]
    where = Loc(line, indent + 1)
    if match is None or not match.group(2) or not match.group(0).endswith(":"):
        error(where, f"'{keyword}' needs a name, a colon and names: {usage}")
        return None
    name = match.group(2)
    name_loc = Loc(line, indent + match.start(2) + 1)
    if not name.isidentifier():
        error(name_loc, f"'{name}' is not a valid name (letters, digits, _)")
        return None
    rest_at = match.end()
    if keyword == "preset":
        items = [(m.group(), Loc(line, indent + rest_at + m.start() + 1))
                 for m in _NAME.finditer(code[rest_at:])]
        bad = [(n, loc) for n, loc in items if not n.isidentifier()]
        for item, loc in bad:
            error(loc, f"'{item}' is not a valid name (letters, digits, _)")
        if not items:
            error(where, f"preset '{name}' names nothing: {usage}")
        if bad or not items:
            return None
        return Preset(name, tuple(n for n, _ in items), where, tuple(loc for _, loc in items))
    owners = []
    offset = rest_at
    for part in code[rest_at:].split(","):
        loc = Loc(line, indent + offset + len(part) - len(part.lstrip()) + 1)
        offset += len(part) + 1
        found = _GATE.match(part)
        names = [n for n in found.groups() if n] if found else []
        unused = found is not None and found.group(2) == UNUSED and found.group(3) is None
        if found is None or not all(n.isidentifier() or (unused and n == UNUSED)
                                    for n in names):
            error(loc, f"'{part.strip()}' is not a gate: write 'g' (held by the assignment g), "
                  "'g = name', 'n = a + b' for a gate split in an input and a recurrent half, "
                  f"or 'g = {UNUSED}' for a gate whose weights the cell does not use")
            return None
        gate, first, second = found.groups()
        if unused:
            owners.append(GateOwner(gate, "", "", loc))
            continue
        owner = first or gate
        owners.append(GateOwner(gate, owner, second or owner, loc))
    return GateMap(name, tuple(owners), where)


def _diag(graph: CellGraph, loc: Loc, message: str) -> Diagnostic:
    return Diagnostic(graph.file, loc.line, loc.col, "error", message)


def linear_of(graph: CellGraph, assignment: str) -> Node | None:
    """The ``linear`` node of an assignment, if it has one (at most one: the language's rule)."""
    for node_id in graph.assignments[assignment].nodes:
        if graph.node(node_id).is_linear:
            return graph.node(node_id)
    return None


def matrix_operands(graph: CellGraph, linear: Node) -> list[Node]:
    """The operands of ``linear`` that have a full weight matrix (not peepholes)."""
    return [graph.node(a) for a, peep in zip(linear.args, linear.peep) if not peep]


def check(graph: CellGraph, did_you_mean: Callable[[str, list[str]], str],
          broken: Collection[str] = ()) -> list[Diagnostic]:
    """Every preset names assignments, among them the value it is named after if any;
    every gates line maps its family's gates onto linears of the right form (the input
    and one state's old value), each held by an assignment of its own. ``broken``: names
    that lines with errors assign (said there): they count as assigned, their forms
    unchecked, so that a directive's own mistakes are said beside those errors."""
    found = []
    names = list(graph.assignments)
    for preset in graph.presets.values():
        if (preset.name in graph.assignments or preset.name in graph.inputs) and \
                preset.name not in preset.assignments:  # 'preset slow: s, slow' widens it
            found.append(_diag(graph, preset.loc, f"preset '{preset.name}' has the name of a "
                               "value of the cell and leaves it out, so a highlight of that "
                               "name would no longer reach it; name the preset otherwise, "
                               f"or list '{preset.name}' in it"))
        for name, loc in zip(preset.assignments, preset.locs):
            if name not in graph.assignments and name not in broken:
                found.append(_diag(graph, loc, f"preset '{preset.name}' names '{name}', which no "
                                   f"line assigns{did_you_mean(name, names)}"))
    for gates in graph.gates.values():
        found += _check_gates(graph, gates, did_you_mean, broken)
    return found


def _check_gates(graph: CellGraph, gates: GateMap, did_you_mean: Callable[[str, list[str]], str],
                 broken: Collection[str]) -> list[Diagnostic]:
    family = GATE_FAMILIES.get(gates.family)
    if family is None:
        return [_diag(graph, gates.loc, f"unknown gate family '{gates.family}'"
                      f"{did_you_mean(gates.family, list(GATE_FAMILIES))}; known: "
                      f"{', '.join(GATE_FAMILIES)}")]
    found = []
    optional = OPTIONAL.get(gates.family, ())
    listed = [owner.gate for owner in gates.owners]
    for owner in gates.owners:
        if owner.gate not in family and owner.gate not in optional:
            found.append(_diag(graph, owner.loc, f"'{owner.gate}' is not a gate of "
                               f"{gates.family}; its gates are "
                               f"{', '.join((*family, *optional))}"))
        elif listed.count(owner.gate) > 1:
            found.append(_diag(graph, owner.loc, f"gate '{owner.gate}' is listed twice"))
        elif owner.unused and owner.gate in optional:
            found.append(_diag(graph, owner.loc, f"'{owner.gate}' is optional: leave it out "
                               f"rather than write '{owner.gate} = {UNUSED}'"))
    missing = [gate for gate in family if gate not in listed]
    if missing:
        found.append(_diag(graph, gates.loc, f"gates {gates.family}: no owner for "
                           f"{', '.join(missing)}; list every gate: {', '.join(family)} "
                           f"(write 'g = {UNUSED}' for one whose weights the cell does not "
                           "use)"))
    held: dict[str, str] = {}  # assignment -> the first gate it holds
    for owner in gates.owners:
        for name in dict.fromkeys((owner.input_owner, owner.recurrent_owner)):
            if owner.unused or name is None:
                continue
            if name in held and held[name] != owner.gate:
                found.append(_diag(graph, owner.loc, f"gate '{owner.gate}': '{name}' holds "
                                   f"gate '{held[name]}' already; each gate's weights need an "
                                   "assignment of their own"))
            held.setdefault(name, owner.gate)
    states: set[str] = set()
    for owner in gates.owners:
        if owner.unused or (owner.gate not in family and owner.gate not in optional):
            continue  # no gate (said above): what holds it is no question
        split = owner.input_owner != owner.recurrent_owner
        role = "projection" if owner.gate in optional else "input half" if split else "gate"
        roles = [(owner.input_owner, role), (owner.recurrent_owner, "recurrent half")] \
            if split else [(owner.input_owner, role)]
        for name, role in roles:
            if name in broken:  # its line has errors of its own
                continue
            if name not in graph.assignments:
                found.append(_diag(graph, owner.loc, f"gate '{owner.gate}': no line assigns "
                                   f"'{name}'{did_you_mean(name, list(graph.assignments))}"))
                continue
            linear = linear_of(graph, name)
            if linear is not None and any(a not in graph.nodes for a in linear.args):
                continue  # it reads a line with errors (said there): its form is unknown
            operands = matrix_operands(graph, linear) if linear else []
            kinds = sorted("input" if node.kind is NodeKind.INPUT else "recurrent"
                           for node in operands)
            want = {"gate": ["input", "recurrent"], "input half": ["input"],
                    "recurrent half": ["recurrent"], "projection": ["recurrent"]}[role]
            if kinds != want or (role == "projection" and linear is not None
                                 and any(linear.peep)):
                shape = {"gate": "linear(x, h[t-1])", "input half": "linear(x)",
                         "recurrent half": "linear(h[t-1])", "projection": "linear(m)"}[role]
                what = ("one value of this step and nothing else" if role == "projection" else
                        "the input and/or one recurrent operand: a state's old value, or an "
                        "expression of it such as r * h[t-1]; peepholes allowed")
                found.append(_diag(graph, owner.loc, f"gate '{owner.gate}': '{name}' must "
                                   f"hold a {shape} ({what}) to take a stacked layer's "
                                   "weights"))
                continue
            if split and role == "input half" and any(linear.peep):  # type: ignore[union-attr]
                found.append(_diag(graph, owner.loc, f"gate '{owner.gate}': the input half "
                                   f"'{name}' may not have peepholes"))
            states |= {node.state for node in operands
                       if node.kind is NodeKind.OLD and node.state is not None}
    if len(states) > 1:
        found.append(_diag(graph, gates.loc, f"gates {gates.family}: the gates read different "
                           f"states ({', '.join(sorted(states))}); a stacked layer has one "
                           "recurrent state"))
    return found
