"""The values of one traced step (:mod:`.values`) written as a ``.cell`` and its weights.

Each state's new value is a line named after the state (the language's rule); the
other lines are the values that need a name of their own:

- a value read twice or more (written once, read by name);
- a value the code assigned to a variable (``forgetgate = torch.sigmoid(…)``), named
  after it, so the drawn diagram reads like the code;
- a linear read by anything but one function (``i_n`` in ``tanh(i_n + r * h_n)``), and
  any second linear of a line (at most one per assignment, so its parameters have a
  stable name); an operand of a linear that holds a linear itself.

Everything else is written inline (``sigmoid(linear(x, h[t-1]))``, ``tanh(cy)``). Lines
keep the order the code made their values in, and each caption says which variable and
line (``cy, fast.py:31``: diagrams show it under the value). Numbers are written exactly
(the shortest text that reads back as the same float). Each linear's weights are
recorded in operand order and given the parameter names the parser assigns once the
text is compiled.
"""

from __future__ import annotations

import linecache
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_graph.cell import Cell
from lstm_graph.errors import CellError, inert
from lstm_graph.frontends.torch_fx import SUPPORTED, ConvertError, Step
from lstm_graph.frontends.values import Affine, Apply, Cat, Input, Old, Value
from lstm_graph.language.directives import linear_of
from lstm_graph.language.parser import RESERVED
from lstm_graph.ops import OPS, OpKind, number_text

_ATOM = 9


@dataclass
class Written:
    """A converted cell: its text, compiled, and its weights in the cell's names (in the
    module's dtype, and as computed, in float64, for the check against the module)."""

    text: str
    cell: Cell
    weights: dict[str, np.ndarray]
    exact: dict[str, np.ndarray]
    zero_biases: tuple[str, ...] = ()  # where the module's linears have no bias (file:line)


@dataclass
class _Line:
    order: int
    name: str
    code: str
    caption: str


@dataclass
class _Writer:
    step: Step
    input_name: str
    states: list[str]
    hidden_size: int
    lines: dict[int, _Line] = field(default_factory=dict)  # by id of the value
    names: dict[int, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)  # line -> arrays
    zero_biases: list[str] = field(default_factory=list)  # lines: a cell's linear has one
    uses: Counter[int] = field(default_factory=Counter)
    sole_reader: dict[int, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.used = {*RESERVED, self.input_name, *self.states}
        seen: set[int] = set()
        stack: list[Value] = [self.step.output, *self.step.states]
        while stack:
            value = stack.pop()
            if id(value) in seen:
                continue
            seen.add(id(value))
            for operand in _operands(value):
                self.uses[id(operand)] += 1
                self.sole_reader[id(operand)] = value
                stack.append(operand)

    # -- names --

    def _fresh(self, base: str) -> str:
        base = base if base.isidentifier() else "v"
        name, k = base, 2
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def _caption(self, value: Value, name: str) -> str:
        where = value.where
        if where is None or not where.file:
            return ""
        return inert(f"{where.name or name}, {Path(where.file).name}:{where.line}")

    # -- lines --

    def reserve(self, value: Value, name: str) -> None:
        """Give ``value`` the line ``name`` before anything reads it (states, the output)."""
        self.names[id(value)] = name

    def line(self, value: Value) -> str:
        """The name of the line holding ``value``, written on first need."""
        if id(value) in self.lines:
            return self.lines[id(value)].name
        name = self.names.get(id(value))
        if name is None:
            name = self._fresh(_name_of(value))
            self.names[id(value)] = name
        self.lines[id(value)] = _Line(value.order, name, "", "")  # reads of it: by name
        code, _, _ = self.expr(value, owner=name, top=True)
        self.lines[id(value)] = _Line(value.order, name, code, self._caption(value, name))
        return name

    def own_line(self, value: Value) -> bool:
        """Whether ``value`` gets a line of its own (see the module docstring)."""
        if isinstance(value, (Input, Old)):
            return False
        if self.uses[id(value)] > 1:
            return True
        if isinstance(value, Affine):
            reader = self.sole_reader.get(id(value))
            return not (isinstance(reader, Apply) and OPS[reader.op].function)
        if _layer(value) and self.uses[id(value.args[0])] == 1:  # type: ignore[attr-defined]
            return True
        return value.where is not None and value.where.name is not None

    def expr(self, value: Value | float, owner: str, top: bool = False, linears: int = 0
             ) -> tuple[str, int, int]:
        """``value`` as text in the line ``owner``: ``(text, precedence, linears in it)``;
        ``linears`` already in the line before it."""
        if not isinstance(value, Value):
            text = number_text(float(value))
            return text, (3 if text.startswith("-") else _ATOM), 0
        if isinstance(value, Input):
            return self.input_name, _ATOM, 0
        if isinstance(value, Old):
            return f"{value.state}[t-1]", _ATOM, 0
        if not top and (id(value) in self.names or self.own_line(value)):
            return self.line(value), _ATOM, 0
        if isinstance(value, Affine):
            if linears:  # a second linear in one line: its own
                return self.line(value), _ATOM, 0
            return self._linear(value, owner), _ATOM, 1
        if isinstance(value, Cat):
            raise ConvertError("a torch.cat is read by something other than a linear")
        assert isinstance(value, Apply)
        op = OPS[value.op]
        texts = []
        count = linears
        for arg in value.args:
            text, prec, found = self.expr(arg, owner, linears=count)
            count += found
            texts.append((text, prec))
        if op.kind is OpKind.FUNCTION:
            return op.call_text(texts[0][0], dict(value.attrs)), _ATOM, count - linears
        if op.arity == 1:
            text, prec = texts[0]
            return f"-{text if prec >= op.precedence else f'({text})'}", op.precedence, \
                count - linears
        wrapped = []
        for position, (text, prec) in enumerate(texts):
            wrapped.append(f"({text})" if op.wraps(position, prec) else text)
        return f" {op.spelling} ".join(wrapped), op.precedence, count - linears

    def _linear(self, form: Affine, owner: str) -> str:
        """``linear(a, b, peep(c))`` for the line ``owner``, its weights recorded."""
        operands, arrays = [], []
        for operand, weight in form.terms:
            operands.append(self._operand(operand, owner))
            arrays.append(weight)
        for operand, weight in form.peeps:
            operands.append(f"peep({self._operand(operand, owner)})")
            arrays.append(weight)
        arrays.append(form.bias if form.bias is not None else np.zeros(form.width))
        if form.bias is None:
            where = form.where
            self.zero_biases.append(f"{Path(where.file).name}:{where.line}"
                                    if where and where.file else owner)
        if form.width != self.hidden_size:
            where = form.where
            place = f"{where.file}:{where.line}: error: " if where and where.file else ""
            text = f"\n    {linecache.getline(where.file, where.line).strip()}" \
                if where and where.file else ""
            advice = "cut it into gates first (chunk, split, [:, a:b])" \
                if form.width % self.hidden_size == 0 else \
                "a projection to another size is not a linear a cell can hold"
            raise ConvertError(f"{place}a linear of {form.width} units is used whole, but a "
                               f"cell's linears have the hidden size H={self.hidden_size}; "
                               f"{advice}{text}\n{SUPPORTED}")
        self.weights[owner] = arrays
        return f"linear({', '.join(operands)})"

    def _operand(self, value: Value, owner: str) -> str:
        """An operand of a linear: a name, or an expression (any linear in it is given a
        line of its own: ``linears=1``)."""
        text, _, _ = self.expr(value, owner, linears=1)
        return text


def _layer(value: Value) -> bool:
    """A function of a linear (``sigmoid(linear(x, h[t-1]))``): one layer of the diagram."""
    return isinstance(value, Apply) and OPS[value.op].function and \
        isinstance(value.args[0], Affine)


def _name_of(value: Value) -> str:
    """What a line is called: the variable the code gave the value; for a layer without
    one, its linear's (``i`` of ``i, f, g, o = z.split(H, 1)`` for ``i.sigmoid()``); else
    the fx node's name (``add_3``)."""
    if value.where is not None and value.where.name:
        return value.where.name
    if _layer(value):
        inner = value.args[0]  # type: ignore[attr-defined]
        if isinstance(inner, Value) and inner.where is not None and inner.where.name:
            return inner.where.name
    return value.label or "v"


def _operands(value: Value) -> list[Value]:
    if isinstance(value, Apply):
        return [a for a in value.args if isinstance(a, Value)]
    if isinstance(value, Affine):
        return [v for v, _ in value.terms] + [v for v, _ in value.peeps]
    if isinstance(value, Cat):
        return list(value.parts)
    return []


def write(step: Step, cell_name: str, input_name: str, states: Sequence[str],
          hidden_size: int, header: Sequence[str], file: str, dtype: np.dtype) -> Written:
    """The cell ``step`` computes, as text (compiled and checked) and weights."""
    from lstm_graph.library import compile_source

    writer = _Writer(step, input_name, list(states), hidden_size)
    copies: list[tuple[str, Value]] = []
    for state, value in zip(states, step.states):
        if id(value) in writer.names or isinstance(value, (Input, Old)):
            copies.append((state, value))  # a state that is another's value, or unchanged
        else:
            writer.reserve(value, state)
    if id(step.output) not in writer.names and not isinstance(step.output, (Input, Old)):
        where = step.output.where
        writer.reserve(step.output, writer._fresh(where.name if where and where.name
                                                  else "out"))
    for value in [*step.states, step.output]:
        if id(value) in writer.names:
            writer.line(value)
    rows = list(writer.lines.values())
    for state, value in copies:
        text, _, _ = writer.expr(value, state)
        rows.append(_Line(value.order, state, text, writer._caption(value, state)))
    output = writer.names.get(id(step.output))
    if output is None:  # the output is x or an old state: a line of its own copies it
        output = writer._fresh("out")
        text, _, _ = writer.expr(step.output, output)
        rows.append(_Line(step.output.order, output, text, ""))
    lines = sorted(rows, key=lambda line: line.order)
    width = max(len(f"{line.name} = {line.code}") for line in lines)
    body = [f"{f'{line.name} = {line.code}':<{width}}   # {line.caption}".rstrip()
            if line.caption else f"{line.name} = {line.code}" for line in lines]
    text = "\n".join([*(f"# {h}" for h in header), f"cell {cell_name}",
                      f"input {input_name}", f"state {', '.join(states)}",
                      f"output {output}", "", *body]) + "\n"
    try:
        cell = compile_source(text, file, cell_name)
    except CellError as err:
        raise ConvertError(f"the converted cell does not validate, a bug in from-torch "
                           f"(please report it):\n{err}\n--- the cell ---\n{text}") from None
    exact: dict[str, np.ndarray] = {}
    for name, arrays in writer.weights.items():
        node = linear_of(cell.graph, name)
        if node is None or len(node.params) != len(arrays):
            raise ConvertError(f"the converted line '{name}' lost its linear, a bug in "
                               "from-torch (please report it)")
        for param, array in zip(node.params, arrays):
            exact[param] = np.ascontiguousarray(array, dtype=np.float64)
    weights = {name: array.astype(dtype) for name, array in exact.items()}
    return Written(text, cell, weights, exact, tuple(writer.zero_biases))
