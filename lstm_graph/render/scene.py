"""What a diagram shows, before any layout: the shared part of both styles.

A :class:`Scene` turns the scheduled IR into visual nodes and edges:

- a ``linear`` and the activation that alone consumes it become one learned
  **layer** (a yellow box labelled σ or tanh); a bare ``linear`` is a box "W";
- every other op is an element-wise **op** (a pink circle); a number it alone
  reads is written inside it, on its side of the operator (``1−`` for ``1 - z``,
  ``−1`` for ``z - 1``), and the operand a ``-`` subtracts is marked on its edge;
- inputs and previous-step values are **sources** (``x_t``, ``h_{t-1}``);
- each state's new value, and the output, leave through a **sink** (``h_t``).

Every visual edge keeps the IR's edge kind (``old`` / ``input`` / ``new``) and
whether it carries a state's new value, so the styles only decide placement.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field, replace

import networkx as nx

from lstm_graph.errors import RenderError
from lstm_graph.ir import CellGraph, EdgeKind, Node, NodeKind, old_id
from lstm_graph.language.parser import did_you_mean
from lstm_graph.ops import number_label
from lstm_graph.schedule import Schedule


@dataclass(frozen=True)
class VNode:
    """One drawn node. ``id`` is its DOT name; ``ir`` the IR nodes it stands for."""

    id: str
    role: str  # "source", "sink", "layer", "op", "const"
    symbol: str  # HTML for the node's main text
    ir: tuple[str, ...]
    stage: int
    caption: str | None = None
    state: str | None = None  # sources and sinks of a state


@dataclass(frozen=True)
class VEdge:
    src: str
    dst: str
    kind: EdgeKind
    state_value: bool  # carries a state's new value (drawn green)
    peep: bool = False
    ir: tuple[str, str] | None = None  # the IR edge it draws, if any
    sign: str | None = None  # "−" on the operand a subtraction takes away


def sink_id(name: str) -> str:
    """DOT name of the node where ``name``'s new value leaves: ``h[t]``."""
    return f"{name}[t]"


def markup(text: str) -> str:
    """``text`` for a Graphviz HTML label: ``<``, ``>``, ``&`` and quotes as entities, and
    each ``\\`` doubled: Graphviz reads ``\\N``, ``\\G`` and their kind in a label, even an
    HTML one and even written ``&#92;N``, as the node's or the graph's name (a caption
    ``# keep \\N`` showed the node's), and ``\\\\`` as one backslash."""
    return html.escape(text).replace("\\", "\\\\")


#: How a function's numbers are named beside its symbol (``lrelu α=0.1``).
_NUMBER_NAMES = {"alpha": "α", "beta": "β"}


def with_numbers(symbol: str, node: Node) -> str:
    """``symbol`` (HTML) and, smaller below it, the numbers the call gives its function
    where they are not the defaults (``leaky_relu(v, 0.1)``: ``lrelu α=0.1``; ``clip``'s
    threshold always): two cells that differ only there are drawn apart."""
    given = node.attributes
    shown = [(a.name, number_label(given[a.name])) for a in node.operation.attributes
             if a.name in given and (a.default is None or
                                     number_label(given[a.name]) != number_label(a.default))]
    if not shown:
        return symbol
    words = " ".join(f"{_NUMBER_NAMES.get(name, name)}={value}" for name, value in shown)
    return f'{symbol}<BR/><FONT POINT-SIZE="9">{markup(words)}</FONT>'


def subscripted(name: str, subscript: str) -> str:
    return f"{markup(name)}<SUB>{subscript}</SUB>"


def step_subscript(offset: int) -> str:
    """The time subscript ``offset`` steps after t: ``t-1``, ``t``, ``t+2``."""
    return "t" if offset == 0 else f"t{offset:+d}"


@dataclass
class Scene:
    schedule: Schedule
    nodes: dict[str, VNode] = field(default_factory=dict)
    edges: list[VEdge] = field(default_factory=list)
    owner: dict[str, str] = field(default_factory=dict)  # IR node -> visual node
    #: :meth:`pipe_path` by state, kept until a node is added: the styles ask for the
    #: memory's path for every edge they place (a cell of 400 ops took 32 s to draw).
    _paths: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def graph(self) -> CellGraph:
        return self.schedule.graph

    def add(self, node: VNode) -> None:
        self.nodes[node.id] = node
        self._paths.clear()
        for ir_node in node.ir:
            self.owner[ir_node] = node.id

    def memory_state(self) -> str:
        """The state drawn as the memory pipe (or the classic diagram's Cell).

        The first state whose old value reaches its new value through
        element-wise ops only (an LSTM's ``c``, a GRU's ``h``); else the first state.
        """
        states = list(self.graph.states)
        return next((state for state in states if self.pipe_path(state)), states[0])

    def pipe_path(self, state: str) -> list[str]:
        """Op nodes on element-wise paths from ``state[t-1]`` to ``state``, in order."""
        if state not in self._paths:
            self._paths[state] = self._find_pipe_path(state)
        return self._paths[state]

    def _find_pipe_path(self, state: str) -> list[str]:
        graph = self.graph.dataflow
        old = old_id(state)
        if old not in graph:
            return []
        elementwise = [n for n, drawn in self.owner.items() if self.nodes[drawn].role == "op"]
        sub = graph.subgraph([old, *elementwise])
        if state not in sub or not nx.has_path(sub, old, state):
            return []
        on_path = nx.descendants(sub, old) & (nx.ancestors(sub, state) | {state})
        order = {n: i for i, n in enumerate(self.schedule.order)}
        return sorted(on_path, key=order.__getitem__)

    def drawn_values(self) -> dict[str, tuple[str, ...]]:
        """Visual node -> the assignments whose values it draws (its own name first).

        An assignment's value is drawn by the node that owns its top op: a
        layer, an element-wise op, or (a value computed inside another's box) that box.
        """
        drawn: dict[str, list[str]] = {}
        for name in self.graph.assignments:
            drawn.setdefault(self.owner[name], []).append(name)
        return {node: tuple(sorted(names, key=lambda n: n != node))
                for node, names in drawn.items()}

    def stages(self) -> dict[str, tuple[int, ...]]:
        """Layer and op node -> the stages of what it draws, in order: its own and those
        of the values drawn in its box (a layer whose activation is a value of its own
        runs in a later stage than its product: ``(1, 2)``)."""
        drawn = self.drawn_values()
        return {node.id: tuple(sorted({self.schedule.stage_of(v)
                                       for v in drawn.get(node.id, ())} - {0}
                                      | {node.stage}))
                for node in self.nodes.values() if node.role in ("layer", "op")}


def fused_activation(schedule: Schedule, linear: str) -> str | None:
    """The activation drawn in the same box as ``linear``, if any."""
    only = schedule.graph.sole_consumer(linear)
    return only.id if only is not None and only.kind is NodeKind.OP \
        and only.operation.function else None


def build_scene(schedule: Schedule) -> Scene:
    """The visual nodes and edges of a scheduled cell (deterministic order)."""
    scene = Scene(schedule)
    graph = schedule.graph
    captions = {a.name: a.caption for a in graph.assignments.values()}
    for name in graph.inputs:
        scene.add(VNode(name, "source", subscripted(name, "t"), (name,), 0))
    for state in graph.states:
        if old_id(state) in graph.nodes:
            scene.add(VNode(old_id(state), "source", subscripted(state, "t-1"),
                            (old_id(state),), 0, state=state))
    for node_id in schedule.order:
        node = graph.node(node_id)
        if node_id in scene.owner:
            continue
        stage = schedule.stage_of(node_id)
        if node.kind is NodeKind.CONST:
            scene.add(VNode(node_id, "const", number_label(node.constant), (node_id,), stage))
        elif node.is_linear:
            activation = fused_activation(schedule, node_id)
            top = activation or node_id
            symbol = with_numbers(markup(graph.node(activation).operation.symbol),
                                  graph.node(activation)) if activation else "W"
            ir = (node_id, activation) if activation else (node_id,)
            caption = captions.get(top) if graph.node(top).id == graph.node(top).assignment \
                else None
            scene.add(VNode(top, "layer", symbol, ir, stage, caption))
        else:
            caption = captions.get(node_id) if node_id == node.assignment else None
            scene.add(VNode(node_id, "op", with_numbers(markup(node.operation.symbol), node),
                            (node_id,), stage, caption))
    _fold_constants(scene)
    sinks = list(graph.states) + [o for o in graph.outputs if o not in graph.states]
    for name in sinks:
        stage = schedule.stage_of(name) if name in graph.nodes else 0
        scene.add(VNode(sink_id(name), "sink", subscripted(name, "t"), (), stage,
                        state=name if name in graph.states else None))
    for src, dst, kind in graph.edges():
        a, b = scene.owner[src], scene.owner[dst]
        if a == b:
            continue  # inside a layer: linear -> its activation
        node = graph.node(dst)
        # one edge per operand that reads it: p * p is drawn with two arrows into its ×
        for position in (k for k, arg in enumerate(node.args) if arg == src):
            # the subtracted operand, unless a number inside says it
            sign = "−" if node.op == "sub" and position == 1 and \
                scene.owner[node.args[0]] != b else None
            scene.edges.append(VEdge(a, b, kind, src in graph.states,
                                     graph.is_peep(src, dst), (src, dst), sign))
    for name in sinks:
        scene.edges.append(VEdge(scene.owner[name], sink_id(name), EdgeKind.NEW,
                                 name in graph.states))
    return scene


def _fold_constants(scene: Scene) -> None:
    """Write a number into the element-wise op that alone reads it (``1−`` for ``1 - z``).

    A constant drawn as a node of its own floats wherever the layout puts it,
    far from its edge; inside its op it cannot, and its side of the symbol says
    which operand it is. Only one number per op is folded.
    """
    graph = scene.graph
    for const in [n for n in scene.nodes.values() if n.role == "const"]:
        (node_id,) = const.ir
        consumers = graph.consumers(node_id)
        if len(consumers) != 1 or scene.owner[consumers[0]] != consumers[0]:
            continue
        op = scene.nodes[consumers[0]]
        args = graph.node(op.id).args
        if op.role != "op" or len(args) != 2 or \
                sum(graph.node(a).kind is NodeKind.CONST for a in args) != 1:
            continue
        symbol = f"{const.symbol}{op.symbol}" if args[0] == node_id else \
            f"{op.symbol}{const.symbol}"
        del scene.nodes[const.id]
        scene.add(replace(op, symbol=symbol, ir=(*op.ir, node_id)))


def _targets(graph: CellGraph, target: str) -> tuple[str, ...]:
    """The names a highlight of ``target`` starts from: a preset's assignments, or
    ``target`` itself (an assignment or node name); else a :class:`RenderError`."""
    if target in graph.presets:
        return graph.presets[target].assignments
    if target in graph.nodes or target in graph.assignments:
        return (target,)
    presets = f"its presets {', '.join(graph.presets)} or " if graph.presets else ""
    close = did_you_mean(target, [*graph.presets, *graph.assignments])
    raise RenderError(f"nothing named '{target}' to highlight in cell '{graph.name}'{close}; "
                      f"choose {presets}one of its names: {', '.join(graph.assignments)}")


def path_words(graph: CellGraph, target: str) -> str:
    """What :func:`highlighted` lights for ``target``, in the legend's words.

    A state's new value ends the step, so the path of a target that is only states
    (the LSTMs' ``memory`` preset: ``c``) is what makes it, as in the article's figure
    of the memory being formed; what reads the new memory in this step lies on other
    paths (the ``output`` preset). Any other target also lights what it feeds, up to
    the new states.

    >>> from lstm_graph.library import load_cell
    >>> graph = load_cell("peephole_lstm").graph
    >>> path_words(graph, "memory")
    'what makes c (a new state ends the step)'
    >>> path_words(graph, "o")
    'what feeds o and what it feeds, up to the new states'
    >>> path_words(graph, "c[t-1]")  # nothing in the step feeds an input or an old value
    'what c[t-1] feeds, up to the new states'
    """
    names = _targets(graph, target)
    listed = ", ".join(names)
    if all(name in graph.states for name in names):
        return f"what makes {listed} (a new state ends the step)"
    they = "it feeds" if len(names) == 1 else "they feed"
    if all(name in graph.nodes and graph.node(name).kind in (NodeKind.INPUT, NodeKind.OLD)
           for name in names):
        return f"what {listed} {they.split()[1]}, up to the new states"
    return f"what feeds {listed} and what {they}, up to the new states"


def highlighted(scene: Scene, target: str) -> set[str]:
    """Visual nodes on ``target``'s path (see :func:`path_words`): what feeds it and what
    it feeds, up to the states' new values, which end it.

    ``target`` is an assignment or node name, or one of the cell's presets (its
    ``preset`` lines: the built-in LSTMs have forget, input, memory, output).
    """
    graph = scene.graph
    names = _targets(graph, target)
    ir = graph.dataflow
    marked: set[str] = set()
    for name in names:
        nodes = set(graph.assignments[name].nodes) if name in graph.assignments else {name}
        marked |= nodes
        # Up to what feeds it, down to the states it changes; a state's new value is a
        # boundary (the memory): crossed upwards only when it is the target itself.
        for step in (ir.predecessors, ir.successors):
            seen, frontier = set(nodes), list(nodes)
            while frontier:
                node = frontier.pop()
                if node in graph.states and (step == ir.successors or node not in nodes):
                    continue
                for other in step(node):
                    if other not in seen:
                        seen.add(other)
                        frontier.append(other)
            marked |= seen
    visual = {scene.owner[n] for n in marked if n in scene.owner}
    visual |= {sink_id(n) for n in (*graph.states, *graph.outputs) if n in marked}
    return visual
