"""A compiled cell as a readable PyTorch module: Python source that imports only torch.

``export(runner, "d/cell.py")`` writes two files:

- ``d/cell.py``: one ``nn.Module`` named after the cell (``peephole_lstm`` is
  ``PeepholeLstm``) whose ``step`` is the cell's equations in the schedule's order, a
  comment with each stage and each caption, and whose ``forward(x, state=None)`` runs it
  over time and returns ``(y, final)``, ``final`` a dict of the states; a stack adds a
  second module (``PeepholeLstmStack``) with one cell module per layer and direction.
  ``load()`` returns the module with the exported weights.
- ``d/cell.pt``: its state dict (read back with ``torch.load(weights_only=True)``).

Each parameter ``f.W_x`` is the attribute ``f_W_x`` (:func:`torch_attribute`; in a stack
``l0.f.W_x`` is ``l0.f_W_x``, the attribute of the submodule ``l0``); the module's
docstring lists every one. Each op is written by its ``torch`` form in the op table; a
``linear`` is ``F.linear`` over its operands (the bias in the first) plus ``p * v`` for
each peephole. The module runs under ``torch.jit.script`` and ``torch.compile``.
"""

from __future__ import annotations

import importlib.machinery
import io
import keyword
import os
import re
import sys
import textwrap
import types
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.cell import Runner
from lstm_graph.errors import DataError, OutputError, inert, install_hint
from lstm_graph.export import expected
from lstm_graph.export.onnx_model import _compare, _version, check_exportable, require_copies
from lstm_graph.formats.files import check_output, undone, write_atomic
from lstm_graph.ir import CellGraph, NodeKind, Size
from lstm_graph.ops import OpKind

#: How the module's docstring ends its first line (an earlier export is known by it).
TITLE = "of lstm-graph as a PyTorch module."
#: Names the generated module uses itself: a cell's names are renamed around them.
_TAKEN = frozenset({"self", "torch", "F", "nn", "Tensor", "math", "os", "Dict", "List",
                    "Optional", "Tuple", "state", "ys", "t", "range", "load", "x_seq",
                    "INPUT_SIZE", "HIDDEN_SIZE", "WEIGHTS", "DTYPE", "__debug__"})
#: The longest line the generated code aims for.
WIDTH = 99


def torch_attribute(name: str) -> str:
    """The attribute (state-dict key) an exported module gives the parameter ``name``:
    its dots become underscores, but a stack's unit prefix stays a submodule.

    >>> torch_attribute("f.W_x"), torch_attribute("l0_reverse.f.W_x")
    ('f_W_x', 'l0_reverse.f_W_x')
    """
    head, dot, rest = name.partition(".")
    if dot and re.fullmatch(r"l\d+(_reverse)?", head) and rest.count(".") == 1:
        return f"{head}.{rest.replace('.', '_')}"
    return name.replace(".", "_")


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise DataError(f"exporting to PyTorch needs torch, which is not installed ({err}): "
                        f"{install_hint('import')}") from None
    return torch


def class_name(cell_name: str) -> str:
    """``peephole_lstm`` -> ``PeepholeLstm``: the module's class, in ASCII letters (an
    accented letter as its base letter, not dropped: ``Ünïcode_cell`` was ``NCodeCell``).

    >>> class_name("Ünïcode_cell"), class_name("ℌ_2")
    ('UnicodeCell', 'H2')
    """
    plain = unicodedata.normalize("NFKD", cell_name).encode("ascii", "ignore").decode()
    words = re.findall(r"[A-Za-z0-9]+", plain)
    name = "".join(w[:1].upper() + w[1:] for w in words)
    if not name or name[0].isdigit() or name in _TAKEN or keyword.iskeyword(name):
        name = f"Cell{name}"
    return name


def attributes(graph_params: list[str]) -> dict[str, str]:
    """Every parameter of one cell's unit -> its attribute: :func:`torch_attribute`, with
    a ``p`` before one that would begin with two underscores (Python mangles ``self.__a``
    inside a class, so its state dict's key was another name), made unique (``_``
    appended) in the rare cell where two would coincide.

    >>> attributes(["__a.W_x", "f.W_x"])
    {'__a.W_x': 'p__a_W_x', 'f.W_x': 'f_W_x'}
    """
    found: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(graph_params):  # the same answer whatever order they come in
        attribute = torch_attribute(name)
        attribute = f"p{attribute}" if attribute.startswith("__") else attribute
        while attribute in used:
            attribute += "_"
        used.add(attribute)
        found[name] = attribute
    return {name: found[name] for name in graph_params}


def torch_names(names: list[str]) -> dict[str, str]:
    """Every parameter of a runner (a stack's under their unit prefixes) -> its state-dict
    key in the exported module: :func:`attributes` within each unit."""
    units: dict[str, list[str]] = {}
    for name in names:
        head, dot, rest = name.partition(".")
        prefix = f"{head}." if dot and re.fullmatch(r"l\d+(_reverse)?", head) and \
            rest.count(".") == 1 else ""
        units.setdefault(prefix, []).append(name[len(prefix):])
    return {prefix + name: prefix + attribute for prefix, unit in units.items()
            for name, attribute in attributes(unit).items()}


class _Names:
    """Python names for a cell's values: its own where they are free, else with ``_``."""

    def __init__(self, graph: CellGraph):
        self.of: dict[str, str] = {}
        used: set[str] = set(_TAKEN)
        (x,) = graph.inputs
        for name in [x, *graph.states, *graph.assignments]:
            if name in self.of:
                continue
            py = name
            # forward() holds the states and the output in locals beside its parameter x
            while py in used or (py == "x" and (name in graph.states or name in graph.outputs)):
                py += "_"
            used.add(py)
            self.of[name] = py
        for state in graph.states:
            py = f"{self.of[state]}_prev"
            while py in used:
                py += "_"
            used.add(py)
            self.of[f"{state}[t-1]"] = py
        self.used = used

    def temporary(self, base: str) -> str:
        name = base
        while name in self.used:
            name += "_"
        self.used.add(name)
        return name


_ATOM = 9


def _number(value: float) -> str:
    return repr(float(value))


def _subtracted(code: str) -> str:
    """``a + -0.25`` (a negative number added: ``affine(v, 2, -0.25)``, ``x + -1``) written
    ``a - 0.25``: the same number in IEEE arithmetic, whatever follows the literal (``a +
    (-c) * y`` is ``a - c * y``: negation is exact).

    >>> _subtracted("2.0 * b + -0.25")
    '2.0 * b - 0.25'
    """
    return re.sub(r" \+ -(?=[0-9.])", " - ", code)


class _Step:
    """The body of ``step``: one line per assignment (and a temporary where an op's form
    reads its operand twice)."""

    def __init__(self, graph: CellGraph, params: Mapping[str, str]):
        self.graph = graph
        (self.input,) = graph.inputs
        self.names = _Names(graph)
        self.params = params
        self.lines: list[str] = []

    def value(self, node_id: str, assignment: str) -> tuple[str, int]:
        """The expression of a node inside ``assignment``'s line, and its precedence."""
        node = self.graph.node(node_id)
        if node.kind is NodeKind.CONST:
            text = _number(float(node.value or 0.0))
            return text, _ATOM if not text.startswith("-") else 3
        if node.kind is not NodeKind.OP or node.assignment != assignment or \
                (node.id == node.assignment and node.id != assignment):
            return self.names.of[node.id], _ATOM
        op = node.operation
        if op.kind is OpKind.LINEAR:
            return self._linear(node_id, assignment)
        args = [self.value(a, assignment) for a in node.args]
        template = str(op.torch)
        attrs = {k: _number(v) for k, v in node.attributes.items()}
        if op.kind is OpKind.OPERATOR:
            wrapped = []
            for position, (text, prec) in enumerate(args):
                wrapped.append(f"({text})" if op.wraps(position, prec) else text)
            return _subtracted(template.format(*wrapped, **attrs)), op.precedence
        if op.kind is OpKind.COPY:
            return args[0]
        texts = []
        for k, (text, prec) in enumerate(args):
            if self._constant(node.args[k]):  # torch's functions take tensors, not floats;
                # new_full, not new_tensor: torch.jit.script knows no Tensor.new_tensor
                text, prec = f"{self.names.of[self.input]}.new_full((), {text})", _ATOM
            if template.count(f"{{{k}}}") > 1 and not text.isidentifier():
                temporary = self.names.temporary(f"{assignment}_{op.name}_arg")
                self.lines.append(f"{temporary} = {text}")
                text, prec = temporary, _ATOM
            clean = all(_clean_slot(template, m.start(), m.end())
                        for m in re.finditer(re.escape(f"{{{k}}}"), template))
            texts.append(text if clean or prec == _ATOM else f"({text})")
        result = _subtracted(template.format(*texts, **attrs))
        return result, _ATOM if _is_call(template) else 0

    def _constant(self, node_id: str) -> bool:
        """Whether a node is a number, or operators over numbers, or a copy of one (an
        assignment ``k = 2``): a Python float here."""
        node = self.graph.node(node_id)
        return node.kind is NodeKind.CONST or (
            node.kind is NodeKind.OP
            and node.operation.kind in (OpKind.OPERATOR, OpKind.COPY)
            and all(self._constant(a) for a in node.args))

    def _linear(self, node_id: str, assignment: str) -> tuple[str, int]:
        node = self.graph.node(node_id)
        *weights, bias = node.params
        terms = []
        bias_given = False
        for arg, peep, weight in zip(node.args, node.peep, weights):
            text, prec = self.value(arg, assignment)
            if peep:
                terms.append(f"self.{self.params[weight]} * "
                             f"{text if prec >= 2 else f'({text})'}")
            elif not bias_given:
                terms.insert(0, f"F.linear({text}, self.{self.params[weight]}, "
                                f"self.{self.params[bias]})")
                bias_given = True
            else:
                terms.append(f"F.linear({text}, self.{self.params[weight]})")
        if not bias_given:
            terms.insert(0, f"self.{self.params[bias]}")
        return " + ".join(terms), _ATOM if len(terms) == 1 else 1

    def assignment(self, name: str) -> None:
        text, _ = self.value(name, name)
        self.lines.append(f"{self.names.of[name]} = {text}")


def _clean_slot(template: str, start: int, end: int) -> bool:
    """Whether ``{k}`` at ``start:end`` is a whole call argument (no parentheses needed)."""
    before = template[:start].rstrip()
    after = template[end:].lstrip()
    return before.endswith(("(", ",")) and after.startswith((")", ","))


def _is_call(template: str) -> bool:
    """Whether a form is one call, ``name(...)`` from start to end."""
    match = re.match(r"[\w.]+\(", template)
    if match is None or not template.endswith(")"):
        return False
    depth = 0
    for k, char in enumerate(template):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and k >= match.end() - 1:
            return k == len(template) - 1
    return False


def _code_lines(code: str, indent: int) -> list[str]:
    """One statement (or comment) at ``indent``, broken to fit :data:`WIDTH`. A comment is
    wrapped at its spaces, each line a comment (a long caption broken inside its
    parentheses made a line of code of its words). A statement breaks inside
    parentheses, brackets or braces: before a ``+``, ``-``, ``*`` or ``/``, or after a
    comma, of the outermost group that has such a place on the line (so that the line
    after it starts as far left as it can), the continuation aligned under the group's
    first character (as a formatter would). An assignment too long whose value has an
    operator outside any parentheses has its value put in parentheses, so that it may
    break there."""
    if code.startswith("#"):
        return [" " * indent + "# " + line for line in textwrap.wrap(
            code[1:].strip(), WIDTH - indent - 2, break_long_words=False,
            break_on_hyphens=False)] or [" " * indent + "#"]
    assignment = re.fullmatch(r"(\w+ = )(.+)", code)
    if indent + len(code) > WIDTH and assignment and _top_level_operator(assignment[2]):
        code = f"{assignment[1]}({assignment[2]})"
    sums = _groups_with_sums(code)
    out: list[str] = []
    opens: list[tuple[int, int]] = []  # the open parentheses: their columns and places
    start, column0, k = 0, indent, 0
    best: tuple[int, int, list[tuple[int, int]]] | None = None  # break, continue, opens
    while k < len(code):
        column = column0 + k - start
        if column >= WIDTH and best is not None:
            at, continuation, opens = best[0], best[1], list(best[2])
            out.append(" " * column0 + code[start:at].rstrip())
            while code[at] == " ":
                at += 1
            start, column0, k, best = at, continuation, at, None
            continue
        char = code[k]
        if char in "([{":
            opens.append((column, k))
        elif char in ")]}" and opens:
            opens.pop()
        elif opens and opens[-1][0] + 1 < column and code.startswith(_OPERATORS, k) \
                and (code[k + 1] in "+-" or opens[-1][1] not in sums) \
                and (best is None or len(opens) <= len(best[2])):
            best = (k + 1, opens[-1][0] + 1, list(opens))
        elif opens and opens[-1][0] + 1 < column + 2 and code.startswith(", ", k) \
                and (best is None or len(opens) <= len(best[2])):
            best = (k + 2, opens[-1][0] + 1, list(opens))
        k += 1
    out.append(" " * column0 + code[start:])
    return out


def _groups_with_sums(code: str) -> set[int]:
    """The places of the parentheses (brackets, braces) in ``code`` inside which, and
    outside any inner ones, a ``+`` or ``-`` adds or subtracts: a line breaks there before
    one of those, not before a ``*`` or ``/`` (``2.0 * tanh(…)`` stays whole in
    ``(2.0 * tanh(…) - 0.25)``)."""
    found: set[int] = set()
    opens: list[int] = []
    for k, char in enumerate(code):
        if char in "([{":
            opens.append(k)
        elif char in ")]}" and opens:
            opens.pop()
        elif opens and code.startswith((" + ", " - "), k):
            found.add(opens[-1])
    return found


#: The binary operators a long line may break before.
_OPERATORS = (" + ", " - ", " * ", " / ")


def _top_level_operator(code: str) -> bool:
    """Whether ``code`` has a binary operator outside any parentheses or brackets."""
    depth = 0
    for k, char in enumerate(code):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if depth == 0 and code.startswith(_OPERATORS, k):
            return True
    return False


def _docstring(text: str, indent: int) -> list[str]:
    """``text`` as a docstring at ``indent``, wrapped to fit :data:`WIDTH`."""
    lines = textwrap.wrap(text, WIDTH - indent - 6, break_long_words=False,
                          break_on_hyphens=False)
    lines[0] = '"""' + lines[0]
    if indent + len(lines[-1]) + 3 <= WIDTH:
        lines[-1] += '"""'
    else:
        lines.append('"""')
    return [" " * indent + line for line in lines]


def _quoted(text: str) -> str:
    """A string literal in double quotes that reads back as ``text``."""
    return '"' + inert(text, quotes=True) + '"'


def source(runner: Runner, weights_file: str, module: str = "cell") -> str:
    """The module's Python source (see the module docstring), written to be imported as
    ``module``."""
    check_exportable(runner)
    unit = runner.units[0]
    cells = {id(u.cell): u.cell for u in runner.units}
    if len(cells) > 1:
        raise DataError("the two directions of this runner compute different cells (an ONNX "
                        "model's activations); export to ONNX instead")
    cell = unit.cell
    graph, schedule = cell.graph, cell.schedule
    params = attributes([p.name for p in schedule.params])
    step = _Step(graph, params)
    names = step.names
    (x,) = graph.inputs
    (output,) = graph.outputs
    states = list(graph.states)
    cls = class_name(cell.name)
    returns = [names.of[s] for s in states]
    if output not in graph.states:
        returns.append(names.of[output])
    body: list[str] = []
    for number, stage in enumerate(schedule.stages, start=1):
        waits = sorted({r for n in stage for r in schedule.reads(n)["new"] if r in graph.states})
        note = f" (waits for the new {', '.join(waits)})" if waits else ""
        body.append(f"# stage {number}: {', '.join(stage)}{note}")
        for name in stage:
            caption = graph.assignments[name].caption
            if caption:
                body.append(f"# {inert(caption)}")
            step.lines = []
            step.assignment(name)
            body += step.lines
    tuple_type = "Tensor" if len(returns) == 1 else \
        f"Tuple[{', '.join(['Tensor'] * len(returns))}]"
    signature = ", ".join(["self", f"{names.of[x]}: Tensor",
                           *(f"{names.of[f'{s}[t-1]']}: Tensor" for s in states)])
    shown = inert(cell.name, quotes=True)
    lines = [f'"""{cls}: the cell \'{shown}\' {TITLE}', ""]
    lines += _doc(runner, cls, module)
    lines += ['"""', "", "import math", "import os",
              "from typing import Dict, List, Optional, Tuple", "", "import torch",
              "import torch.nn.functional as F", "from torch import Tensor, nn", "",
              f"INPUT_SIZE = {runner.input_size}", f"HIDDEN_SIZE = {runner.hidden_size}",
              f"WEIGHTS = {_quoted(weights_file)}",
              f"DTYPE = torch.{np.dtype(runner.dtype).name}  # the exported weights'", "", ""]
    lines += [f"class {cls}(nn.Module):",
              f'    """The cell \'{shown}\' over time: ``step`` is one step, '
              "``forward`` a sequence.",
              "",
              "    States start at zero unless ``forward`` is given them; x is time-major "
              "(T, B, I).",
              '    """', "",
              "    def __init__(self, input_size: int = INPUT_SIZE, "
              "hidden_size: int = HIDDEN_SIZE) -> None:",
              "        super().__init__()",
              "        self.input_size = input_size",
              "        self.hidden_size = hidden_size"]
    for spec in schedule.params:
        dims = ", ".join({Size.HIDDEN: "hidden_size", Size.INPUT: "input_size",
                          Size.SCALAR: "1"}[s] for s in spec.shape)
        lines.append(f"        self.{params[spec.name]} = nn.Parameter(torch.empty({dims}))")
    lines += ["        self.reset_parameters()", "",
              "    def reset_parameters(self) -> None:",
              '        """Uniform in ±1/√H, as PyTorch\'s recurrent layers (and lstm-graph) '
              'start."""',
              "        bound = 1.0 / math.sqrt(self.hidden_size)",
              "        for weight in self.parameters():",
              "            nn.init.uniform_(weight, -bound, bound)", "",
              *_code_lines(f"def step({signature}) -> {tuple_type}:", 4),
              *_docstring(f"One step: the new {', '.join(returns)} from {names.of[x]} and "
                          f"the old {', '.join(names.of[s] for s in states)}.", 8)]
    for line in body:
        lines += _code_lines(line, 8)
    lines += [f"        return {', '.join(returns)}", "",
              "    def forward(self, x: Tensor, state: Optional[Dict[str, Tensor]] = None",
              "                ) -> Tuple[Tensor, Dict[str, Tensor]]:",
              '        """y (T, B, O) and the final states from x (T, B, I) and the initial '
              'states',
              '        (zeros for any not given)."""']
    backwards = runner.stack.single and runner.stack.direction == "reverse"
    for s in states:
        lines.append(f"        {names.of[s]} = self.initial(x, state, {_quoted(s)})")
    if backwards:
        lines.append("        x = torch.flip(x, [0])  # the reverse direction: last step first")
    finals = "{" + ", ".join(f"{_quoted(s)}: {names.of[s]}" for s in states) + "}"
    lines += ["        ys: List[Tensor] = []", "        for t in range(x.shape[0]):",
              *_code_lines(f"{', '.join(returns)} = self.step(x[t], "
                           f"{', '.join(names.of[s] for s in states)})", 12),
              f"            ys.append({names.of[output]})",
              *_code_lines(f"return torch.flip(torch.stack(ys), [0]), {finals}" if backwards
                           else f"return torch.stack(ys), {finals}", 8), "",
              "    def initial(self, x: Tensor, state: Optional[Dict[str, Tensor]], "
              "name: str) -> Tensor:",
              '        """A state\'s value at the start: given, or zeros (B, H)."""',
              "        if state is not None and name in state:",
              "            return state[name]",
              "        return x.new_zeros([x.shape[1], self.hidden_size])"]
    top = cls
    if not runner.stack.single:
        top = f"{cls}Stack"
        lines += ["", ""] + _stack(runner, cls, top)
    lines += ["", "", f"def load(path: Optional[str] = None) -> {top}:",
              '    """The module with the exported weights: WEIGHTS beside this file, or '
              '``path``."""',
              f"    model = {top}().to(DTYPE)",
              "    if path is None:",
              "        path = os.path.join(os.path.dirname(os.path.realpath(__file__)), WEIGHTS)",
              "    model.load_state_dict(torch.load(path, weights_only=True))",
              "    return model", ""]
    return "\n".join(lines)


def _doc(runner: Runner, cls: str, module: str) -> list[str]:
    """The module docstring's body: what it is, how to use it, the parameter names."""
    cell = runner.cell
    stack = "" if runner.stack.single else f" ({runner.stack.describe()}: {cls}Stack)"
    keys = torch_names(list(runner.weights))
    rows = [(name, keys[name], str(tuple(value.shape))) for name, value in runner.weights.items()]
    width = max((len(r[0]) for r in rows), default=0)
    width2 = max((len(r[1]) for r in rows), default=0)
    top = cls if runner.stack.single else f"{cls}Stack"
    module = inert(module, quotes=True)
    written = f"Written by lstm-graph {_version()} from {inert(cell.graph.file, quotes=True)}"
    rest = f"{stack}; it needs only torch."
    return [*([written + rest] if len(written + rest) <= WIDTH else [written, rest.strip()]),
            "",
            f"    import {module}",
            f"    model = {module}.load()  # the exported weights, WEIGHTS beside this file",
            "    y, final = model(x)  # x (T, B, I) -> y (T, B, O), final {state: value}",
            "",
            f"{top}() without load() starts from fresh weights (uniform in ±1/√H).",
            "",
            *(["The parameters, as lstm-graph names them, and here:", "",
               *(f"    {a:<{width}}  {b:<{width2}}  {shape}" for a, b, shape in rows)]
              if rows else ["The cell has no parameters."])]


def _stack(runner: Runner, cls: str, top: str) -> list[str]:
    """The stack module: one cell module per layer and direction, run layer by layer."""
    stack = runner.stack
    cell = runner.cell
    (output,) = cell.graph.outputs
    size = cell.schedule.sizes[output]
    lines = [f"class {top}(nn.Module):",
             f'    """{stack.describe()}, of {cls}: y is (T, B, D·O), the forward half',
             "    first; each state is (L·D, B, H) in PyTorch's h_n order.\"\"\"", "",
             "    def __init__(self, input_size: int = INPUT_SIZE, "
             "hidden_size: int = HIDDEN_SIZE) -> None:",
             "        super().__init__()",
             "        width = input_size"]
    for layer in range(stack.layers):
        if layer:
            grown = {Size.HIDDEN: "hidden_size", Size.INPUT: "width", Size.SCALAR: "1"}[size]
            lines.append(f"        width = {stack.directions} * {grown}")
        for (k, reverse) in stack.units:
            if k == layer:
                lines.append(f"        self.{stack.prefix(k, reverse)[:-1]} = "
                             f"{cls}(width, hidden_size)")
    lines += ["", "    def forward(self, x: Tensor, state: Optional[Dict[str, Tensor]] = None",
              "                ) -> Tuple[Tensor, Dict[str, Tensor]]:",
              '        """y and the final states from x (T, B, I) and the initial states '
              '(L·D, B, H)."""',
              "        finals: List[Dict[str, Tensor]] = []"]
    for layer in range(stack.layers):
        lines.append(f"        # layer {layer + 1}")
        ys = []
        for index, (k, reverse) in enumerate(stack.units):
            if k != layer:
                continue
            unit = stack.prefix(k, reverse)[:-1]
            if reverse:
                lines.append(f"        y_{unit}, final = self.{unit}(torch.flip(x, [0]), "
                             f"unit_state(state, {index}))")
                ys.append(f"torch.flip(y_{unit}, [0])")
            else:
                lines.append(f"        y_{unit}, final = self.{unit}(x, unit_state(state, "
                             f"{index}))")
                ys.append(f"y_{unit}")
            lines.append("        finals.append(final)")
        lines.append(f"        x = {ys[0]}" if len(ys) == 1 else
                     f"        x = torch.cat([{', '.join(ys)}], -1)")
    lines += ["        return x, stack_states(finals)", "", "",
              "def unit_state(state: Optional[Dict[str, Tensor]], unit: int"
              ") -> Optional[Dict[str, Tensor]]:",
              '    """One unit\'s initial states out of the stack\'s (L·D, B, H)."""',
              "    if state is None:",
              "        return None",
              "    mine: Dict[str, Tensor] = {}",
              "    for name, value in state.items():",
              "        mine[name] = value[unit]",
              "    return mine", "", "",
              "def stack_states(finals: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:",
              '    """Every unit\'s final states as (L·D, B, H), in PyTorch\'s h_n order."""',
              "    out: Dict[str, Tensor] = {}",
              "    for name in finals[0].keys():",
              "        out[name] = torch.stack([final[name] for final in finals])",
              "    return out"]
    return lines


def state_dict(runner: Runner) -> dict[str, Any]:
    """The module's state dict: every parameter under its attribute, as a tensor."""
    torch = _torch()
    keys = torch_names(list(runner.weights))
    return {keys[name]: torch.from_numpy(np.array(value, dtype=runner.dtype))
            for name, value in runner.weights.items()}


def load_source(text: str, name: str = "lstm_graph_exported") -> types.ModuleType:
    """The generated source as a module, without a file (to check it before writing)."""
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    exec(compile(text, module.__file__, "exec"), module.__dict__)  # our own generated code
    return module


def verify(runner: Runner, text: str, weights: Mapping[str, Any], steps: int = 3,
           batch: int = 2) -> None:
    """Run the generated module on a seeded input against ``runner``; a DataError if
    they differ (nothing is written)."""
    torch = _torch()
    x = np.random.default_rng(0).standard_normal((steps, batch, runner.input_size)) \
        .astype(runner.dtype)
    want_y, want = expected(runner, x)
    try:
        module = load_source(text)
        top = [v for k, v in vars(module).items() if isinstance(v, type)
               and issubclass(v, torch.nn.Module) and v.__module__ == module.__name__][-1]
        model = top().to(module.DTYPE)
        model.load_state_dict(weights)
        with torch.no_grad():
            y, final = model(torch.from_numpy(x))
    except MemoryError:
        raise
    except Exception as err:  # our generated code failing is ours to report, not a user's
        raise DataError(f"the exported module failed its check ({type(err).__name__}: "
                        f"{err}); nothing was written (a bug in lstm-graph's export: please "
                        "report it)") from None
    _compare("y", y.numpy(), np.asarray(want_y), runner.dtype)
    for name, value in want.items():
        _compare(f"final {name}", final[name].numpy(), np.asarray(value), runner.dtype)


def shadowed(path: Path) -> set[str]:
    """Names the module at ``path`` may not take: Python's own modules, and every module
    loaded now but an earlier export to ``path`` itself: PyTorch and what it loads among
    them (``torch.py``, ``math.py`` or ``numpy.py`` beside a script is what the script
    imports: with ``numpy.py``, ``import torch`` crashed); and ``path``'s own name where
    a module of that name is installed (``onnx.py`` hid onnx from lstm-graph itself run
    there, ``sympy.py`` hid sympy from ``torch.compile``), found on the path Python
    searches but for the current directory, where the export itself may be."""
    ours = os.path.realpath(path)
    loaded = {name.partition(".")[0] for name, module in list(sys.modules.items())
              if os.path.realpath(getattr(module, "__file__", None) or "") != ours}
    here = os.path.realpath(os.getcwd())
    search = [entry for entry in sys.path if entry and os.path.realpath(entry) != here]
    try:
        found = importlib.machinery.PathFinder.find_spec(path.stem, search)
    except (ImportError, ValueError, OSError):  # a broken entry on the path: none found there
        found = None
    installed = {path.stem} if found is not None and (
        found.origin is None or os.path.realpath(found.origin) != ours) else set()
    return (set(sys.stdlib_module_names) | loaded | installed) - {"__main__"}


#: Copies of the weights a PyTorch export holds at once, with and without its check (the
#: state dict, its bytes, the module loaded from them, the runner's executors): measured
#: 4.0 and 3.9 at H = 3000 (see :data:`~.onnx_model.ONNX_COPIES`).
TORCH_COPIES = {True: 5, False: 4}


def unimportable(path: Path) -> str | None:
    """Why Python could not import a module from ``path`` by its name, or None.

    >>> unimportable(Path("my-lstm.py"))[:47]
    "'my-lstm' cannot be imported as a Python module"
    >>> unimportable(Path("my_lstm.py")) is None
    True
    >>> unimportable(Path("ℌ.py"))
    "'import ℌ' looks for H.py (Python reads a name in its NFKC form); name the file H.py"
    """
    stem = path.stem
    read = unicodedata.normalize("NFKC", stem)
    if not stem.isidentifier() or keyword.iskeyword(read):
        return (f"'{stem}' cannot be imported as a Python module; name the file as an "
                "identifier (cell.py, my_lstm.py)")
    if read != stem:
        return (f"'import {stem}' looks for {read}.py (Python reads a name in its NFKC form); "
                f"name the file {read}.py")
    return None


def weights_beside(path: Path) -> Path:
    """Where the state dict of a module written to ``path`` goes: beside the file the
    module is written into (a link's target, as an output's link is followed), with its
    stem, where ``load()`` looks for it through any link to the module."""
    return (Path(os.path.realpath(path)) if path.is_symlink() else path).with_suffix(".pt")


#: The most of a module read to tell whether it is an earlier export's.
_MODULE_BYTES = 1 << 22


def _earlier_export(path: Path, weights_path: Path) -> bool:
    """Whether ``weights_path`` is the state dict of an earlier export to ``path``: a
    regular file (not a link) beside a module lstm-graph wrote that loads it by name."""
    if weights_path.is_symlink() or not weights_path.is_file() or not path.is_file():
        return False  # a module that is a FIFO is not read: that would wait for a writer
    try:
        with open(path, "rb") as module:
            text = module.read(_MODULE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return TITLE in text.split("\n", 1)[0] and \
        f"WEIGHTS = {_quoted(weights_path.name)}" in text


def export(runner: Runner, path: str | Path, check: bool = True) -> tuple[Path, Path]:
    """Write the module to ``path`` (``.py``) and its state dict beside it (``.pt``, the
    same stem); both whole or not at all. Returns the two paths."""
    require_copies(runner, TORCH_COPIES[check], "the PyTorch export")
    torch = _torch()  # imported before the module's name is checked against what is loaded
    path = Path(path)
    if path.suffix != ".py":
        raise OutputError(f"{path}: the module is Python source; name it .py")
    problem = unimportable(path)
    if problem:
        raise OutputError(f"{path}: {problem}")
    if path.stem in shadowed(path):
        whose = "PyTorch" if path.stem == "torch" else "the module"
        raise OutputError(f"{path}: a module named '{path.stem}' would hide {whose} of that "
                          "name (installed here, or loaded by PyTorch or Python) from itself "
                          "and from every script beside it; name it otherwise (my_lstm.py)")
    weights_path = weights_beside(path)
    text = source(runner, weights_path.name, path.stem)
    weights = state_dict(runner)
    if check:
        verify(runner, text, weights)
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    for each in (path, weights_path):
        check_output(each)
    if os.path.lexists(weights_path) and not _earlier_export(path, weights_path):
        what = "a link" if weights_path.is_symlink() else "a file"
        raise OutputError(f"{weights_path}: the state dict's place beside {path.name} holds "
                          f"{what} lstm-graph did not write there (no module of an earlier "
                          "export beside it reads it); it is left alone: name the module "
                          "otherwise, or move it")
    # an earlier export's state dict, put back if the module cannot be written: a new .pt
    # beside an old .py would load new weights into old equations without a word
    existed = os.path.lexists(weights_path)
    previous = weights_path.read_bytes() if existed and weights_path.is_file() else None
    write_atomic(weights_path, buffer.getvalue())
    try:
        write_atomic(path, text.encode("utf-8"))
    except BaseException:
        if previous is not None:
            write_atomic(weights_path, previous)
        elif not existed:  # ours alone: a special file or a link there was written through
            weights_path.unlink(missing_ok=True)
        undone(weights_path)
        raise
    return path, weights_path
