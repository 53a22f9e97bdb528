"""What a PyTorch or ONNX recurrent layer file says, before it becomes a runner.

A file holding a layer (an ``nn.LSTM`` state dict, an ONNX model with one
``LSTM`` node) says three things: which **cell** computes one step (the family,
its activations, a clip, peepholes, ...: :class:`CellSpec`), the **shape** of
the stack (layers, directions, batch-first), and the **weights** of each
layer and direction, stacked gate by gate in the format's own order
(:class:`StackedWeights`). The readers (:mod:`.torch_layers`,
:mod:`.onnx_layers`) fill a :class:`LayerFile`; :mod:`lstm_graph.models` turns
it into a runner, translating the weights into the cell's names.

:meth:`CellSpec.text` writes the cell as ``.cell`` text, so that what runs is a
cell like any other: it validates, schedules, draws and explains itself. Where
a built-in cell computes exactly the same thing it is used instead
(:meth:`CellSpec.builtin`), captions and presets included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lstm_graph.errors import inert
from lstm_graph.ops import ONNX_ACTIVATIONS, OPS, Op, number_text

#: The state a family's layer carries from step to step, besides its output ``h``.
FAMILY_STATES: dict[str, tuple[str, ...]] = {"lstm": ("c", "h"), "gru": ("h",), "rnn": ("h",)}


@dataclass(frozen=True)
class Activation:
    """An element-wise function of the op table with its attribute values."""

    op: Op
    attrs: tuple[tuple[str, float], ...] = ()  # by name, in the op's order

    def call(self, value: str) -> str:
        """The function applied to ``value``, as a cell file writes it."""
        return self.op.call_text(value, dict(self.attrs))

    @property
    def plain(self) -> str:
        """How messages name it: ``sigmoid``, ``leaky_relu(alpha=0.1)``."""
        values = ", ".join(f"{k}={v:g}" for k, v in self.attrs)
        return f"{self.op.spelling}({values})" if values else self.op.spelling


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _activation(data: Any) -> Activation:
    """An activation as :meth:`CellSpec.as_data` writes it: ``[op name, {attribute:
    value}]``, an ONNX activation with attributes it takes."""
    if not isinstance(data, list) or len(data) != 2 or not isinstance(data[1], dict):
        raise ValueError("an activation is [name, attributes]")
    op = OPS.get(data[0]) if isinstance(data[0], str) else None
    if op is None or op not in ONNX_ACTIVATIONS.values():
        raise ValueError(f"{data[0]!r} is no activation of ONNX's recurrent layers")
    names = [a.name for a in op.attributes]
    if set(data[1]) != set(names) or not all(map(_finite, data[1].values())):
        raise ValueError(f"{op.spelling} takes the attributes {names}, each finite")
    return Activation(op, tuple((k, float(data[1][k])) for k in names if k in data[1]))


SIGMOID, TANH, RELU = (Activation(OPS[name]) for name in ("sigmoid", "tanh", "relu"))
#: Each family's activations when a file names none: LSTM f, g, h; GRU f, g; RNN f.
DEFAULT_ACTIVATIONS: dict[str, tuple[Activation, ...]] = {
    "lstm": (SIGMOID, TANH, TANH), "gru": (SIGMOID, TANH), "rnn": (TANH,)}


@dataclass(frozen=True)
class CellSpec:
    """The cell of one direction of a PyTorch or ONNX recurrent layer.

    ``activations`` are ONNX's ``f, g, h`` for an LSTM (valves, new memory,
    output), ``f, g`` for a GRU, ``f`` for an RNN; ``clip`` bounds every
    pre-activation (ONNX's cell clip); ``input_forget`` couples the forget valve
    to the input valve (``f = 1 - i``); ``linear_before_reset`` says whether the
    GRU's reset valve scales the recurrent linear's result (PyTorch, ONNX's
    ``linear_before_reset=1``) or ``h[t-1]`` before it (ONNX's default);
    ``projection`` is PyTorch's ``proj_size``.
    """

    family: str
    activations: tuple[Activation, ...]
    clip: float | None = None
    input_forget: bool = False
    peepholes: bool = False
    linear_before_reset: bool = True
    projection: bool = False

    def builtin(self) -> str | None:
        """The built-in cell that computes exactly this one, if any."""
        if self.clip is not None or self.input_forget \
                or self.activations[1:] != DEFAULT_ACTIVATIONS[self.family][1:]:
            return None
        first = self.activations[0]
        if self.family == "rnn":
            return {SIGMOID: None, TANH: "rnn", RELU: "rnn_relu"}.get(first)
        if first != SIGMOID or (self.peepholes and self.projection):
            return None
        if self.family == "gru":
            return "gru" if self.linear_before_reset else "gru_cho"
        return "peephole_lstm" if self.peepholes else "lstm_proj" if self.projection else "lstm"

    def describe(self) -> str:
        """The attributes that made the cell, for its file's comment and for messages."""
        parts = [f"activations {', '.join(a.plain for a in self.activations)}"]
        if self.clip is not None:
            parts.append(f"clip {self.clip:g}")
        if self.input_forget:
            parts.append("input_forget")
        if self.peepholes:
            parts.append("peepholes")
        if self.family == "gru":
            parts.append(f"linear_before_reset={int(self.linear_before_reset)}")
        if self.projection:
            parts.append("projection")
        return "; ".join(parts)

    def as_data(self) -> dict[str, Any]:
        """The spec as JSON's data (floats exact: JSON writes Python's shortest repr)."""
        return {"family": self.family, "clip": self.clip, "input_forget": self.input_forget,
                "peepholes": self.peepholes, "linear_before_reset": self.linear_before_reset,
                "projection": self.projection,
                "activations": [[a.op.name, dict(a.attrs)] for a in self.activations]}

    @classmethod
    def from_data(cls, data: Any) -> CellSpec:
        """The spec :meth:`as_data` gave; ValueError for anything else (each field's type,
        a family, activations ONNX's recurrent layers take, their attributes)."""
        if not isinstance(data, dict) or set(data) != {
                "family", "clip", "input_forget", "peepholes", "linear_before_reset",
                "projection", "activations"}:
            raise ValueError("a cell's fields are missing or extra")
        family, clip, activations = data["family"], data["clip"], data["activations"]
        flags = [data[k] for k in ("input_forget", "peepholes", "linear_before_reset",
                                   "projection")]
        if not isinstance(family, str) or family not in FAMILY_STATES \
                or not all(isinstance(f, bool) for f in flags) \
                or not (clip is None or _finite(clip) and clip > 0) \
                or not isinstance(activations, list) \
                or len(activations) != len(DEFAULT_ACTIVATIONS[family]):
            raise ValueError(f"not a {family} cell's fields")
        return cls(family, tuple(_activation(a) for a in activations),
                   None if clip is None else float(clip), *flags)

    def text(self, name: str, origin: str) -> str:
        """The cell as ``.cell`` text; ``origin`` says where it comes from (a comment)."""
        lines = {"lstm": self._lstm, "gru": self._gru, "rnn": self._rnn}[self.family]()
        directives = [code for code, caption in lines if caption is None]
        assignments = [(code, caption) for code, caption in lines if caption is not None]
        width = max(len(code) for code, _ in assignments)
        return "\n".join([
            f"# {inert(origin)}: {self.describe()}.",
            "# Written by lstm-graph from the file's attributes: each line is the operator's",
            "# equation for one gate.",
            f"cell {name}", "input x", f"state {', '.join(FAMILY_STATES[self.family])}",
            "output h", "", *directives, "",
            *(f"{code:<{width}}   # {caption}" for code, caption in assignments)]) + "\n"

    def _pre(self, activation: Activation, linear: str) -> str:
        """``activation`` of a pre-activation, clipped first when the layer clips."""
        return activation.call(f"clip({linear}, {number_text(self.clip)})" if self.clip is not None
                               else linear)

    def _lstm(self) -> list[tuple[str, str | None]]:
        """Directive lines (caption None), then assignments with their captions."""
        f, g, h = self.activations
        peep_old = ", peep(c[t-1])" if self.peepholes else ""
        peep_new = ", peep(c)" if self.peepholes else ""
        forget = ("f = 1 - i", "forget valve: 1 - i (input_forget)") if self.input_forget \
            else (f"f = {self._pre(f, f'linear(x, h[t-1]{peep_old})')}", "forget valve")
        lines: list[tuple[str, str | None]] = [
            ("preset forget: f", None), ("preset input: i, g", None),
            ("preset memory: c", None), ("preset output: o, h", None),
            (f"gates lstm: i, f{' = -' if self.input_forget else ''}, g, o"
             f"{', proj = h' if self.projection else ''}", None),
            (f"i = {self._pre(f, f'linear(x, h[t-1]{peep_old})')}",
             "new memory valve (the input gate)"),
            forget,
            (f"g = {self._pre(g, 'linear(x, h[t-1])')}", "new memory"),
            ("c = f * c[t-1] + i * g", "memory pipe"),
            (f"o = {self._pre(f, f'linear(x, h[t-1]{peep_new})')}",
             "output valve: reads the NEW memory" if self.peepholes else "output valve"),
        ]
        if self.projection:
            lines += [(f"m = o * {h.call('c')}", "output before the projection"),
                      ("h = linear(m)", "projection")]
        else:
            lines.append((f"h = o * {h.call('c')}", "output"))
        return lines

    def _gru(self) -> list[tuple[str, str | None]]:
        f, g = self.activations
        lines: list[tuple[str, str | None]] = [
            ("preset reset: r", None), ("preset update: z", None),
            ("preset candidate: n", None), ("preset memory: h", None),
            (f"r = {self._pre(f, 'linear(x, h[t-1])')}", "reset valve"),
            (f"z = {self._pre(f, 'linear(x, h[t-1])')}", "update valve")]
        if self.linear_before_reset:
            lines = [("gates gru: r, z, n = a + b", None), *lines,
                     ("a = linear(x)", "candidate from the input"),
                     ("b = linear(h[t-1])", "candidate from the old state"),
                     (f"n = {self._pre(g, 'a + r * b')}", "new memory")]
        else:
            lines = [("gates gru: r, z, n", None), *lines,
                     (f"n = {self._pre(g, 'linear(x, r * h[t-1])')}",
                      "new memory: the reset valve scales h[t-1] first")]
        lines.append(("h = (1 - z) * n + z * h[t-1]", "memory pipe"))
        return lines

    def _rnn(self) -> list[tuple[str, str | None]]:
        (f,) = self.activations
        return [("gates rnn: h", None), (f"h = {self._pre(f, 'linear(x, h[t-1])')}", "output")]


@dataclass(frozen=True)
class StackedWeights:
    """One layer and direction as a format stacks it: every gate's block of rows in the
    format's gate order (``GATE_ORDER[format, family]``); ``peep`` is ONNX's ``P``
    (``i, o, f``), ``proj`` PyTorch's ``weight_hr`` ``(P, H)``."""

    w_x: np.ndarray
    w_h: np.ndarray
    b_x: np.ndarray
    b_h: np.ndarray
    peep: np.ndarray | None = None
    proj: np.ndarray | None = None


@dataclass(frozen=True)
class LayerFile:
    """Everything a PyTorch or ONNX layer file holds, read and checked.

    ``cells`` holds one :class:`CellSpec` per direction (one when both directions
    compute alike); ``units`` the weights of every layer and direction in PyTorch's
    ``h_n`` order (layer by layer, forward before reverse); ``state`` the initial
    states a model stores, ``(L·D, B, H)`` by state name; ``lengths`` its stored
    sequence lengths; ``notes`` what the user must be told (one line each).
    """

    source: str
    format: str  # "torch" or "onnx"
    family: str
    name: str  # the node's or the layer's name in the file
    cells: tuple[CellSpec, ...]
    layers: int
    direction: str
    batch_first: bool
    units: tuple[StackedWeights, ...]
    state: dict[str, np.ndarray] = field(default_factory=dict)
    lengths: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    @property
    def stored_dtypes(self) -> frozenset[np.dtype]:
        """The precision the file stores its weight matrices in (its biases are summed in
        float64 when translated)."""
        return frozenset(w.dtype for unit in self.units for w in (unit.w_x, unit.w_h))

    @property
    def hidden_size(self) -> int:
        return int(self.units[0].w_h.shape[0]) // GATES[self.family]

    @property
    def input_size(self) -> int:
        return int(self.units[0].w_x.shape[1])

    @property
    def proj_size(self) -> int | None:
        proj = self.units[0].proj
        return None if proj is None else int(proj.shape[0])


#: Each family's gates, stacked in its layers' weights (``W`` is ``(GATES·H, I)``).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
