"""The scheduler: a deterministic execution order, grouped into stages.

A **stage** is a set of assignments that may run at the same time: stage 1
reads only inputs and old values, stage *k* reads something made in stage
*k − 1* (``networkx.topological_generations`` on the assignments). Inside a
stage, assignments keep their file order. For the peephole LSTM::

    stage 1: f, i, g      (old memory c[t-1] only)
    stage 2: c            (the memory pipe)
    stage 3: o            (the output valve waits for the new memory c)
    stage 4: h

The schedule also carries node sizes and the parameter list, the facts both
back ends (executors and renderers) need; :meth:`Schedule.width` is the one
place a value's size becomes a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from lstm_graph.ir import CellGraph, Node, NodeKind, Size
from lstm_graph.language.validate import dependencies
from lstm_graph.ops import OpKind, number_text


@dataclass(frozen=True)
class ParamSpec:
    """A learned parameter: ``f.W_x`` with symbolic shape ``(Size.HIDDEN, Size.INPUT)``."""

    name: str
    shape: tuple[Size, ...]

    def resolve(self, input_size: int, hidden_size: int) -> tuple[int, ...]:
        return tuple(s.resolve(input_size, hidden_size) for s in self.shape)


@dataclass(frozen=True)
class Schedule:
    """An ordered, sized cell graph: what the executor and the renderer consume."""

    graph: CellGraph
    stages: tuple[tuple[str, ...], ...]  # assignment names, stage 1 first
    order: tuple[str, ...]  # op and const node ids in execution order
    sizes: dict[str, Size]  # every node's symbolic size
    params: tuple[ParamSpec, ...]

    def width(self, node_id: str, input_size: int, hidden_size: int) -> int:
        """How many numbers one sequence's value of ``node_id`` holds at one step."""
        return self.sizes[node_id].resolve(input_size, hidden_size)

    _stage_numbers: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        numbers = {name: k for k, names in enumerate(self.stages, 1) for name in names}
        object.__setattr__(self, "_stage_numbers", numbers)

    def stage_of(self, node_id: str) -> int:
        """Stage of a node: 0 for inputs and old values, else its assignment's stage."""
        assignment = self.graph.node(node_id).assignment
        return 0 if assignment is None else self._stage_numbers[assignment]

    def param_shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        return {p.name: p.resolve(input_size, hidden_size) for p in self.params}

    def reads(self, name: str) -> dict[str, list[str]]:
        """What an assignment reads, by edge kind: ``{"input": [..], "old": [..], "new": [..]}``."""
        kinds: dict[str, list[str]] = {"input": [], "old": [], "new": []}
        for read, _loc in self.graph.assignments[name].reads:
            node = self.graph.node(read)
            kind = {NodeKind.INPUT: "input", NodeKind.OLD: "old"}.get(node.kind, "new")
            if read not in kinds[kind]:
                kinds[kind].append(read)
        return kinds

    def waits_for(self, name: str) -> list[str]:
        """The states whose NEW value assignment ``name`` reads: what it must wait for
        (the peephole LSTM's output valve waits for the new memory ``c``)."""
        return [r for r in self.reads(name)["new"] if r in self.graph.states]

    def stage_waits_for(self, stage: int) -> list[str]:
        """The states whose new value some assignment of ``stage`` (1 is the first) reads,
        sorted."""
        return sorted({r for name in self.stages[stage - 1] for r in self.waits_for(name)})

    def expression(self, node_id: str) -> str:
        """Source-like text of an assignment's expression.

        >>> from lstm_graph.library import load_cell
        >>> load_cell("lstm").schedule.expression("c")
        'f * c[t-1] + i * g'
        """
        return self._op_text(node_id, top=True)

    def _op_text(self, node_id: str, top: bool) -> str:
        """The text of ``node_id``'s expression (``top``: as its assignment's own, not as
        its name), built from the leaves up without recursion: one assignment may be a
        chain of hundreds of ops."""
        texts: dict[str, str] = {}
        pending = [(node_id, False)]
        while pending:
            current, ready = pending.pop()
            node = self.graph.node(current)
            if node.kind is NodeKind.CONST and node.value is not None:
                texts[current] = number_text(node.value)
            elif node.kind is not NodeKind.OP or (node.id == node.assignment and not (
                    top and current == node_id)):
                texts[current] = current
            elif ready:
                texts[current] = self._composed(node, [texts[a] for a in node.args])
            else:
                pending.append((current, True))
                pending += [(a, False) for a in node.args if a not in texts]
        return texts[node_id]

    def _composed(self, node: Node, args: list[str]) -> str:
        """An op's text from its arguments' texts, parenthesised where precedence asks."""
        op = node.operation
        if op.kind is OpKind.COPY:
            return args[0]
        if op.kind is OpKind.LINEAR:
            args = [f"peep({a})" if p else a for a, p in zip(args, node.peep)]
            return f"{op.spelling}({', '.join(args)})"
        if op.kind is OpKind.FUNCTION:
            return op.call_text(args[0], node.attributes)
        wrapped = []
        for position, (arg_id, text) in enumerate(zip(node.args, args)):
            arg = self.graph.node(arg_id)
            inner = arg.operation.precedence if arg.assignment == node.assignment \
                and arg.kind is NodeKind.OP and arg.id != arg.assignment else 9
            wrapped.append(f"({text})" if op.wraps(position, inner) else text)
        if op.arity == 1:
            return f"{op.spelling}{wrapped[0]}"
        return f" {op.spelling} ".join(wrapped)

    def to_text(self, nodes: bool = False) -> str:
        """The stages as text (what ``lstm-graph schedule`` prints), each assignment with
        what it reads (``[old …; new …]``) and its caption, both in a column; with
        ``nodes``, every node with its size and what it reads (``(old)``, ``(new)``,
        ``(input)`` or ``(const)``), like a jaxpr."""
        graph = self.graph
        rows = {}
        for names in self.stages:
            for name in names:
                reads = self.reads(name)
                parts = [f"{kind} {', '.join(reads[kind])}" for kind in ("old", "new")
                         if reads[kind]]
                alone = "input only" if reads["input"] else "numbers only"
                rows[name] = (f"  {name} = {self.expression(name)}",
                              f"[{'; '.join(parts) or alone}]")
        code_width = max((len(code) for code, _ in rows.values()), default=0)
        reads_width = max((len(reads) for _, reads in rows.values()), default=0)
        lines = [f"cell {graph.name}", f"  input  {', '.join(f'{n}: I' for n in graph.inputs)}",
                 f"  state  {', '.join(f'{n}: H' for n in graph.states)}",
                 f"  output {', '.join(graph.outputs)}"]
        for number, names in enumerate(self.stages, start=1):
            waits = self.stage_waits_for(number)
            note = f"   (waits for the new {', '.join(waits)})" if waits else ""
            lines.append(f"stage {number}: {', '.join(names)}{note}")
            for name in names:
                code, note_reads = rows[name]
                caption = graph.assignments[name].caption
                line = f"{code:<{code_width}}   {note_reads:<{reads_width}}   # {caption}" \
                    if caption else f"{code:<{code_width}}   {note_reads}"
                lines.append(line.rstrip())
                if nodes:
                    lines += [f"      {self._node_line(n)}"
                              for n in graph.assignments[name].nodes]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_text().rstrip("\n")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython (a notebook) shows a schedule as the ``schedule`` command prints it."""
        printer.text(self.to_text().rstrip("\n"))

    def _node_line(self, node_id: str) -> str:
        graph = self.graph
        node = graph.node(node_id)
        if node.kind is NodeKind.CONST and node.value is not None:
            return f"{node_id}: 1 = {number_text(node.value)}"
        args = ", ".join(f"{a}(const)" if graph.node(a).kind is NodeKind.CONST
                         else f"{a}({graph.edge_kind(a, node_id).value})" for a in node.args)
        params = f"   params {', '.join(node.params)}" if node.params else ""
        values = ", ".join(f"{k}={number_text(v)}" for k, v in node.attrs)
        attrs = f"   {values}" if node.attrs else ""
        return f"{node_id}: {self.sizes[node_id].value} = {node.op}({args}){params}{attrs}"

    def to_json(self, nodes: bool = False) -> dict:
        """Stages, order and reads as plain data (for ``schedule --json``); with ``nodes``,
        every node too, as :meth:`to_text` lists them (``schedule --nodes --json``)."""
        found: dict[str, object] = {
            "cell": self.graph.name,
            "stages": [list(names) for names in self.stages],
            "order": list(self.order),
            "reads": {name: self.reads(name) for names in self.stages for name in names},
            "waits_for_new": {name: self.waits_for(name)
                              for names in self.stages for name in names},
        }
        if nodes:
            found["nodes"] = [self._node_json(n) for names in self.stages for name in names
                              for n in self.graph.assignments[name].nodes]
        return found

    def _node_json(self, node_id: str) -> dict:
        """One node as :meth:`_node_line` writes it: its assignment, size, and (an op) what
        it computes from what, each read with its edge kind (and for a linear, whether it
        is a peephole), its parameters and attributes; (a constant) its value."""
        graph = self.graph
        node = graph.node(node_id)
        found: dict = {"id": node_id, "assignment": node.assignment,
                       "size": self.sizes[node_id].value}
        if node.kind is NodeKind.CONST:
            return {**found, "value": node.value}
        reads = [{"id": a, "kind": "const" if graph.node(a).kind is NodeKind.CONST
                  else graph.edge_kind(a, node_id).value,
                  **({"peep": peep} if node.op == "linear" else {})}
                 for a, peep in zip(node.args, node.peep or (False,) * len(node.args))]
        return {**found, "op": node.op, "reads": reads, "params": list(node.params),
                **({"attrs": dict(node.attrs)} if node.attrs else {})}


def build_schedule(graph: CellGraph, sizes: dict[str, Size]) -> Schedule:
    """Order a validated (acyclic, sized) graph into stages."""
    deps = dependencies(graph.assignments).reverse(copy=True)  # edge b -> a: a waits for b
    index = {name: a.index for name, a in graph.assignments.items()}
    stages = tuple(
        tuple(sorted(generation, key=index.__getitem__))
        for generation in nx.topological_generations(deps)
    )
    order = tuple(node for names in stages for name in names
                  for node in graph.assignments[name].nodes)
    params = []
    for node in graph.linears():
        for arg, peep, param in zip(node.args, node.peep, node.params):
            shape = (Size.HIDDEN,) if peep else (Size.HIDDEN, sizes[arg])
            params.append(ParamSpec(param, shape))
        params.append(ParamSpec(node.params[-1], (Size.HIDDEN,)))
    return Schedule(graph, stages, order, sizes, tuple(params))
