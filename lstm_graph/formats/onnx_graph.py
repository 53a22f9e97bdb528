"""What an ONNX model's other nodes do around its recurrent nodes, as far as reading
them needs: the weights they compute from stored tensors, and the reshaping between
the layers of a stack.

Exporters do not always store a recurrent node's weights as the node reads them.
``lstm-graph export`` keeps each parameter under its own name and joins them with
``Concat`` and ``Unsqueeze``; PyTorch's exporter reorders the gates with ``Slice`` and
``Concat`` where it does not fold them. :class:`Constants` computes such values in
NumPy from the stored tensors through :data:`MOVERS`, operators that only move,
select or retype numbers (no arithmetic: a weight read this way is a number the model
stores). A weight that any other node computes, or that depends on a graph input,
is refused by the caller, as before.

Between the layers of a stack, the exporters reshape one layer's output ``Y``
(``(T, D, B, H)``; batch-major: ``(B, T, D, H)``) into the next layer's input
(``(T, B, D·H)``; ``(B, T, D·H)``): ``Transpose`` and ``Reshape``, or ``Squeeze`` for
one direction, the Reshape's shape a constant or (PyTorch's dynamo exporter) computed
from the values' shapes (:data:`SHAPE_OPS`). :func:`chain_to` finds which recurrent
node's output a layer reads through such nodes, and :func:`reads_as_stack` runs them,
shapes computed, on probes of two sizes to check that they do exactly that for any
size; anything else is not a stack this tool runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from lstm_graph.formats.memory import Allocation, allocation, require, size_text

#: Operators whose result is the numbers of their inputs moved, selected or retyped.
MOVERS = frozenset({"Constant", "Identity", "Concat", "Unsqueeze", "Squeeze", "Reshape",
                    "Transpose", "Slice", "Gather", "Cast"})
#: Operators that may stand between a layer's output and the next layer's input.
RESHAPERS = frozenset({"Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze"})
#: Operators that may compute a reshaping's shape from the shapes of the values on the
#: way (``Shape``) and constants, as PyTorch's dynamo exporter writes it (``D·H`` as a
#: ``Mul``). A size taken from a shape may go only where it is moved or multiplied
#: (:data:`SIZE_OPERANDS`); every other operand (an index, a Slice's bounds, axes) is a
#: constant. So every size they make is ``c·T^a·B^b`` for an integer ``c``, and the two
#: probes, whose T are 3 and 5 and B 2 and 3, tell every such size from every other
#: (``(5/3)^a·(3/2)^b = 1`` only for ``a = b = 0``). Sums are not among them
#: (``B + (T - 3)·(T - 5)`` is B at both probes and not at T = 7), nor sizes used as
#: indices or bounds (``min(T, 5)`` as a Slice's end), nor Casts but to int64.
SHAPE_OPS = frozenset({"Constant", "Identity", "Concat", "Unsqueeze", "Squeeze", "Reshape",
                       "Transpose", "Slice", "Gather", "Cast", "Shape", "Mul"})
#: For each of :data:`SHAPE_OPS`, which operands may hold sizes taken from shapes (None:
#: all); the others must be constants.
SIZE_OPERANDS: dict[str, tuple[int, ...] | None] = {
    "Concat": None, "Mul": None, "Identity": (0,), "Unsqueeze": (0,), "Squeeze": (0,),
    "Reshape": (0,), "Transpose": (0,), "Slice": (0,), "Gather": (0,), "Cast": (0,),
    "Constant": (), "Shape": (0,)}
#: The most numbers a size computation may hold at once (a shape has a few).
MAX_SIZES = 64
#: ONNX's number for int64, the one type a size may be cast to.
INT64 = 7
#: The most nodes folded into one value, and the longest chain between two layers.
MAX_NODES = 256
MAX_CHAIN = 16
#: The probes' (steps, batch): two sizes, so that a Reshape to fixed sizes fails one; no
#: size is 1 (a Squeeze without axes would drop it), and one batch is odd.
PROBES = ((3, 2), (5, 3))


def named(node: Any) -> str:
    """A node as messages name it: ``'l0'``, or ``(unnamed)``."""
    return f"'{node.name}'" if node.name else "(unnamed)"


class Unfoldable(Exception):
    """A value that is not computed from stored tensors by :data:`MOVERS` alone; the
    message says which node or input stops it."""


class FromInput(Unfoldable):
    """A value computed from an input of the model (``name``)."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


class Constants:
    """The values of a graph that its stored tensors determine (see the module
    docstring); ``read(tensor, name)`` reads a stored tensor (its checks, external data
    rules and all)."""

    def __init__(self, graph: Any, read: Callable[[Any, str], np.ndarray], source: str):
        self.stored = {t.name: t for t in graph.initializer}
        self.made_by = {out: node for node in graph.node for out in node.output if out}
        made = sum(1 for node in graph.node for out in node.output if out)
        if made != len(self.made_by):
            raise Unfoldable("two of its nodes compute values of one name, which no valid "
                             "model does")
        self.inputs = {value.name for value in graph.input} - set(self.stored)
        self.read, self.source = read, source
        #: The most bytes one computed value may hold: moving numbers makes no more of
        #: them than the model stores (twice, for a tensor used twice over), so a Concat
        #: or Gather beyond that is no weight an exporter wrote.
        self.stored_bytes = sum(_declared_bytes(t) for t in [
            *graph.initializer, *(t for node in graph.node for t in _held_tensor(node))])
        self.most = 2 * self.stored_bytes + (1 << 20)
        self._values: dict[str, np.ndarray] = {}
        self._held: list[Allocation] = []  # every value computed so far
        #: The nodes folded so far (their first output names them).
        self.folded: set[str] = set()

    def parts(self, name: str) -> list[Any]:
        """The stored tensors ``name`` is computed from; :class:`Unfoldable` where a node on
        the way is not a mover, a graph input feeds it, or the nodes compute it from itself
        (a cycle, which no valid model has)."""
        tensors: list[Any] = []
        nodes: list[Any] = []
        done: set[str] = set()
        path: set[str] = set()

        def visit(current: str) -> None:
            if not current or current in done:
                return
            if current in path:
                raise Unfoldable("the model's nodes compute it from itself (a cycle)")
            path.add(current)
            if current in self.stored:
                tensors.append(self.stored[current])
            elif current in self.made_by:
                node = self.made_by[current]
                if node.op_type not in MOVERS or node.domain not in ("", "ai.onnx"):
                    raise Unfoldable(f"the {node.op_type} node {named(node)} computes it")
                nodes.append(node)
                if len(nodes) > MAX_NODES:
                    raise Unfoldable(f"more than {MAX_NODES} nodes compute it")
                tensors.extend(_held_tensor(node))
                for operand in node.input:
                    visit(operand)
            elif current in self.inputs:
                raise FromInput(f"it depends on '{current}', an input of the model", current)
            else:
                raise Unfoldable(f"it depends on '{current}', which the model neither stores "
                                 "nor computes")
            path.discard(current)
            done.add(current)

        visit(name)
        return tensors

    def value(self, name: str) -> np.ndarray:
        """The value of ``name`` (after :meth:`parts` found it computable). A Concat or
        Gather, whose result may be larger than its operands, is refused before it is made
        where it would hold more than :attr:`most` bytes, or every value made so far and it
        would not fit in memory."""
        if name not in self._values:
            if name in self.stored:
                self._values[name] = self.read(self.stored[name], name)
            else:
                node = self.made_by[name]
                held = _held_tensor(node)
                if held:  # a Constant's tensor: read as a stored tensor is
                    self._values[name] = self.read(held[0], name)
                else:
                    args = [self.value(i) if i else None for i in node.input]
                    shape = _grown_shape(node, args)
                    if shape is not None:
                        made = allocation(f"the value '{name}'", shape,
                                          args[0].dtype if args[0] is not None else np.float64)
                        if made.nbytes > self.most:
                            raise Unfoldable(
                                f"the {node.op_type} node {named(node)} would make "
                                f"{size_text(made.nbytes)} of numbers where the model stores "
                                f"{size_text(self.stored_bytes)}: more than moving them "
                                "makes")
                        self._held.append(made)
                        require(self._held, "the model's computed tensors", self.source)
                    self._values[name] = apply(node, args)
                self.folded.add(node.output[0])
        return self._values[name]

    def zeros(self, name: str) -> bool:
        """Whether ``name`` is zeros whatever the model's inputs: a ``ConstantOfShape`` of
        0 (as PyTorch's exporter makes the initial states, shaped after the input), or a
        stored 0 through ``Expand`` (its dynamo exporter), through :data:`MOVERS` that
        take its numbers (their other operands may depend on the input: they only shape
        or select). The nodes of the numbers' way count as :attr:`folded` where it is."""
        found: dict[str, bool] = {}
        nodes: list[Any] = []

        def visit(current: str) -> bool:
            if current in found:
                return found[current]
            found[current] = False  # a cycle through it: not zeros
            if current in self.stored:  # a stored 0 (a dynamo export's, to Expand)
                found[current] = _zero(self.read(self.stored[current], current))
                return found[current]
            node = self.made_by.get(current)
            if node is None or node.domain not in ("", "ai.onnx") or len(found) > MAX_NODES:
                return False
            if _held_tensor(node):
                result = _zero(self.read(_held_tensor(node)[0], current))
            elif node.op_type == "ConstantOfShape":
                held = [a.t for a in node.attribute if a.name == "value"]
                result = not held or _zero(self.read(held[0], current))
            elif node.op_type == "Concat":
                result = all([visit(part) for part in node.input if part])
            elif node.op_type in (MOVERS | {"Expand"}) - {"Constant"} and node.input:
                result = visit(node.input[0])
            else:
                result = False
            found[current] = result
            nodes.append(node)
            return result

        if not visit(name):
            return False
        self.folded.update(node.output[0] for node in nodes)
        return True


    def zeros_shape(self, name: str) -> tuple[int | None, ...] | None:
        """The dims of zeros ``name`` (:meth:`zeros`) that the model fixes, ``None`` where
        an input's shape gives one (the batch) or the way is not one followed here; None
        where even the count of dims is not known. A state whose dims the node's are not
        makes a model onnxruntime refuses: run, it computed other numbers (PyTorch's
        dynamo export of ``nn.LSTM(proj_size=P)`` writes zeros of H units for a node of
        P)."""
        if name in self.stored:
            return tuple(int(d) for d in self.stored[name].dims)
        node = self.made_by.get(name)
        if node is None:
            return None
        if _held_tensor(node):
            return tuple(int(d) for d in _held_tensor(node)[0].dims)
        if node.op_type == "ConstantOfShape" and node.input:
            return self._vector(node.input[0])
        if node.op_type == "Expand" and len(node.input) == 2:
            wanted, base = self._vector(node.input[1]), self.zeros_shape(node.input[0])
            if wanted is None or base is None or len(base) > len(wanted):
                return None
            base = (1,) * (len(wanted) - len(base)) + base
            return tuple(w if w not in (None, 1) else b if b != 1 else w
                         for w, b in zip(wanted, base))
        if node.op_type == "Identity" and node.input:
            return self.zeros_shape(node.input[0])
        if node.op_type == "Slice" and len(node.input) >= 3:  # a stack's state, per layer
            return self._sliced(node)
        return None

    def _sliced(self, node: Any) -> tuple[int | None, ...] | None:
        """The dims of a ``Slice`` of zeros whose bounds the model fixes (a dim it cuts
        whose size or bounds are not known here is None)."""
        dims = self.zeros_shape(node.input[0])
        bounds = [self._vector(part) if k < len(node.input) and part else None
                  for k, part in enumerate(node.input[1:5])]
        starts, ends, axes, steps = (bounds + [None] * 4)[:4]
        if dims is None or starts is None or ends is None or len(starts) != len(ends):
            return None
        axes = axes if len(node.input) > 3 and node.input[3] else tuple(range(len(starts)))
        if axes is None or len(axes) != len(starts) or \
                (steps is not None and any(step != 1 for step in steps)):
            return None
        out = list(dims)
        for start, end, axis in zip(starts, ends, axes):
            if axis is None or not -len(dims) <= axis < len(dims):
                return None
            size = dims[axis]
            if size is None or start is None or end is None:
                out[axis] = None
                continue
            first = min(max(start + size if start < 0 else start, 0), size)
            last = min(max(end + size if end < 0 else end, 0), size)
            out[axis] = max(last - first, 0)
        return tuple(out)

    def _vector(self, name: str, depth: int = 0) -> tuple[int | None, ...] | None:
        """The numbers of a 1-D shape vector, ``None`` for one an input's shape gives
        (``Shape`` of it, ``Gather``-ed); None where its length is not known."""
        if depth > 16:
            return None
        if name in self.stored:
            return tuple(int(v) for v in self.read(self.stored[name], name).reshape(-1))
        node = self.made_by.get(name)
        if node is None:
            return None
        if _held_tensor(node):
            return tuple(int(v) for v in self.read(_held_tensor(node)[0], name).reshape(-1))
        if node.op_type == "Concat":
            parts = [self._vector(part, depth + 1) for part in node.input if part]
            return None if any(p is None for p in parts) else \
                tuple(d for part in parts for d in part or ())
        if node.op_type == "Shape":
            start = next((a.i for a in node.attribute if a.name == "start"), None)
            end = next((a.i for a in node.attribute if a.name == "end"), None)
            return (None,) * (end - start) if start is not None and end is not None and \
                0 <= start < end else None
        if node.op_type in ("Gather", "Unsqueeze", "Cast", "Identity") and node.input:
            inner = self._vector(node.input[0], depth + 1)
            if node.op_type == "Gather":  # one number of a shape: its value unknown here
                return (None,) if inner is not None else None
            return inner
        return None


def _zero(value: np.ndarray) -> bool:
    """Whether ``value`` holds floating-point zeros that an initial state may be made of
    (an empty, integer or more than 3-dimensional tensor is no recurrent node's state:
    onnxruntime refuses such a model)."""
    return value.size > 0 and value.dtype.kind == "f" and value.ndim <= 3 and \
        not np.any(value)


def _declared_bytes(tensor: Any) -> int:
    """The bytes a stored tensor's dims and data type declare (0 for a type that holds no
    numbers here)."""
    from onnx import helper

    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 0
    return int(np.prod([max(int(d), 0) for d in tensor.dims], dtype=np.float64)) * itemsize


def _held_tensor(node: Any) -> list[Any]:
    """A Constant node's tensor value (none for its other kinds, or another node)."""
    if node.op_type != "Constant":
        return []
    return [a.t for a in node.attribute if a.name == "value" and a.HasField("t")]


def _grown_shape(node: Any, args: Sequence[np.ndarray | None]) -> tuple[int, ...] | None:
    """The shape of a Concat's or Gather's result, which may hold more numbers than its
    operands (None for the other movers, which hold at most as many, and where the
    operands do not say)."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    present = [a for a in args if a is not None]
    try:
        if node.op_type == "Concat" and present:
            axis = int(attrs["axis"]) % present[0].ndim
            shape = list(present[0].shape)
            shape[axis] = sum(a.shape[axis] for a in present)
            return tuple(shape)
        if node.op_type == "Gather" and len(present) == 2:
            data, indices = present
            axis = int(attrs.get("axis", 0)) % data.ndim
            return (*data.shape[:axis], *np.shape(indices), *data.shape[axis + 1:])
    except (KeyError, ValueError, ZeroDivisionError):
        return None
    return None


def apply(node: Any, args: Sequence[np.ndarray | None]) -> np.ndarray:
    """The one output of a :data:`MOVERS` node for its inputs ``args`` (None: omitted), in
    any opset's form (operands that became inputs are read from either place);
    :class:`Unfoldable` for a form of it that is not read here."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op, x = node.op_type, args[0] if args else None

    def given(k: int, attribute: str) -> Any:
        """An operand that is an input from some opset on and an attribute before it."""
        if k < len(args) and args[k] is not None:
            return [int(v) for v in np.asarray(args[k]).reshape(-1)]
        return attrs.get(attribute)

    try:
        if op == "Constant":
            return _constant(attrs, node)
        if x is None:
            raise Unfoldable(f"the {op} node {named(node)} has no first input")
        if op == "Identity":
            return x
        if op == "Concat":
            return np.concatenate([a for a in args if a is not None], axis=int(attrs["axis"]))
        if op == "Transpose":
            return np.transpose(x, attrs.get("perm"))
        if op == "Unsqueeze":
            axes = given(1, "axes")
            rank = x.ndim + len(axes)
            for axis in sorted(_axes(axes, rank, node)):
                x = np.expand_dims(x, axis)
            return x
        if op == "Squeeze":
            axes = given(1, "axes")
            if axes is None:
                return np.squeeze(x)
            return np.squeeze(x, axis=tuple(_axes(axes, x.ndim, node)))
        if op == "Reshape":
            shape = [int(v) for v in np.asarray(args[1]).reshape(-1)]
            if not attrs.get("allowzero", 0):
                shape = [x.shape[k] if v == 0 else v for k, v in enumerate(shape)]
            return np.reshape(x, shape)
        if op == "Slice":
            return _slice(x, given(1, "starts"), given(2, "ends"), given(3, "axes"),
                          given(4, "steps"), node)
        if op == "Gather":
            indices = np.asarray(args[1])
            if indices.dtype.kind not in "iu":
                raise Unfoldable(f"the Gather node {named(node)} has indices of "
                                 f"{indices.dtype}")
            return np.take(x, indices, axis=int(attrs.get("axis", 0)))
        if op == "Cast":
            return x.astype(helper.tensor_dtype_to_np_dtype(int(attrs["to"])))
    except Unfoldable:
        raise
    except (KeyError, ValueError, IndexError, TypeError) as err:
        raise Unfoldable(f"the {op} node {named(node)} cannot be read ({err})") from None
    raise Unfoldable(f"the {op} node {named(node)} is not one lstm-graph reads")


def _constant(attrs: dict[str, Any], node: Any) -> np.ndarray:
    """A Constant node's value of numbers given as attributes (a tensor value is read as a
    stored tensor is: :meth:`Constants.value`)."""
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        if name in attrs:
            return np.asarray(attrs[name], dtype=dtype)
    raise Unfoldable(f"the Constant node {named(node)} holds a kind of value lstm-graph does "
                     "not read")


def _axes(axes: Sequence[int], rank: int, node: Any) -> list[int]:
    """``axes`` of a tensor of ``rank`` dimensions, counted from 0: each in ``[-rank,
    rank)`` and none twice, as the operators require (a model breaking that is refused,
    as onnxruntime refuses it, not read with the axes wrapped)."""
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise Unfoldable(f"the {node.op_type} node {named(node)} has the axes {list(axes)}, "
                         f"not distinct axes of a tensor of rank {rank}")
    return [a % rank for a in axes]


def _slice(x: np.ndarray, starts: list[int], ends: list[int], axes: list[int] | None,
           steps: list[int] | None, node: Any) -> np.ndarray:
    """ONNX's Slice: Python's slicing clamps out-of-range ends as the operator does."""
    axes = list(range(len(starts))) if axes is None else _axes(axes, x.ndim, node)
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise Unfoldable(f"the Slice node {named(node)} has starts, ends, axes and steps of "
                         "different lengths, or a step of 0")
    where = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        where[axis] = slice(start, end, step)
    return x[tuple(where)]


class Chain(NamedTuple):
    """The nodes between a value and the output it is computed from: ``nodes`` on the
    numbers' way (last first; each reads the one before as its first input), ``shaping``
    the nodes that compute their other operands (shapes, axes) from constants and the
    shapes of the values on the way."""

    start: str
    nodes: list[Any]
    shaping: list[Any]


def chain_to(x_name: str, constants: Constants, ends: set[str]) -> Chain | None:
    """The output in ``ends`` that ``x_name`` is computed from through :data:`RESHAPERS`,
    each reading the one before as its first input, their other operands constant or
    (a Reshape's shape) computed by :data:`SHAPE_OPS` from constants and the shapes of
    the values on that way (see :data:`SHAPE_OPS`); None where it is not."""
    nodes: list[Any] = []
    current = x_name
    while current not in ends:
        node = constants.made_by.get(current)
        if node is None or node.op_type not in RESHAPERS or len(nodes) >= MAX_CHAIN or \
                not _has_axes(node):
            return None
        nodes.append(node)
        current = node.input[0]
    way = {current, *(node.output[0] for node in nodes)}
    shaping: dict[int, Any] = {}
    judged: dict[str, bool] = {}  # each value once (a cycle through one: not sized)

    def constant(name: str) -> bool:
        try:
            constants.parts(name)
        except Unfoldable:
            return False
        return True

    def sized(name: str) -> bool:
        """Whether ``name`` is a constant or sizes taken from the way's shapes."""
        if not name or name in constants.stored:
            return True
        if name not in judged:
            judged[name] = False
            node = constants.made_by.get(name)
            if node is None or node.op_type not in SHAPE_OPS or len(shaping) > MAX_NODES \
                    or node.domain not in ("", "ai.onnx") or name in way or \
                    not _has_axes(node) or (node.op_type == "Cast" and _cast_to(node) != INT64):
                return False
            shaping[id(node)] = node
            free = SIZE_OPERANDS[node.op_type]
            if node.op_type == "Shape":
                judged[name] = node.input[0] in way or constant(node.input[0])
            else:
                judged[name] = all([sized(operand) if free is None or k in free else
                                    constant(operand)
                                    for k, operand in enumerate(node.input) if operand])
        return judged[name]

    for node in nodes:
        for k, operand in enumerate(node.input[1:], 1):
            if operand and not (sized(operand) if node.op_type == "Reshape" and k == 1
                                else constant(operand)):
                return None
    return Chain(current, nodes, list(shaping.values()))


def _has_axes(node: Any) -> bool:
    """False for a Squeeze that names no axes (it drops every axis of size 1, which a size
    of 1 would be)."""
    return node.op_type != "Squeeze" or (len(node.input) > 1 and bool(node.input[1])) or \
        any(a.name == "axes" for a in node.attribute)


def _cast_to(node: Any) -> int:
    """The data type a Cast node makes (ONNX's number: :data:`INT64`, …)."""
    return next((int(a.i) for a in node.attribute if a.name == "to"), 0)


def reads_as_stack(chain: Chain, constants: Constants, directions: int, hidden: int,
                   batch_major: bool) -> bool:
    """Whether ``chain`` turns a layer's output ``Y`` into the next layer's input as a
    stack does (see the module docstring), on every probe."""
    def stacked(steps: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (batch, steps, directions, hidden) if batch_major else \
            (steps, directions, batch, hidden)
        value = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
        return value, (value.reshape(batch, steps, -1) if batch_major else
                       value.transpose(0, 2, 1, 3).reshape(steps, batch, -1))

    return _maps(chain, constants, stacked)


def swaps_time_and_batch(chain: Chain, constants: Constants, width: int) -> bool:
    """Whether ``chain`` swaps the first two axes of the model's
    input ``(·, ·, I)``: a batch-major input into the time-major one a layer of layout 0
    reads (PyTorch's exporter does so for ``batch_first=True``), or the other way round
    for layout 1; on every probe."""
    def swapped(steps: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        value = np.arange(batch * steps * width, dtype=np.float64).reshape(batch, steps, width)
        return value, value.transpose(1, 0, 2)

    return bool(chain.nodes) and _maps(chain, constants, swapped)


def keeps_layout(chain: Chain, constants: Constants, width: int) -> bool:
    """Whether ``chain`` gives the model's input ``(·, ·, I)`` back as it was (nodes that
    only rename or reshape it to itself), on every probe."""
    def same(steps: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        value = np.arange(steps * batch * width, dtype=np.float64).reshape(steps, batch, width)
        return value, value

    return _maps(chain, constants, same)


def _maps(chain: Chain, constants: Constants,
          probe: Callable[[int, int], tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether ``chain`` gives, for each of :data:`PROBES`, the second array
    ``probe(steps, batch)`` makes from the first (its shaping nodes computed from the
    probe's shapes)."""
    for steps, batch in PROBES:
        value, want = probe(steps, batch)
        known: dict[str, np.ndarray] = {chain.start: value}
        try:
            for node in reversed(chain.nodes):
                known[node.output[0]] = apply(node, [
                    known[node.input[0]],
                    *(_shaping(i, known, constants, chain) if i else None
                      for i in node.input[1:])])
        except Unfoldable:
            return False
        found = known[chain.nodes[0].output[0]] if chain.nodes else value
        if found.shape != want.shape or not np.array_equal(found, want):
            return False
    return True


def _shaping(name: str, known: dict[str, np.ndarray], constants: Constants,
             chain: Chain, busy: frozenset[str] = frozenset()) -> np.ndarray:
    """An operand of a node of ``chain`` on a probe: a constant, or computed by its
    shaping nodes from constants and the shapes of the values ``known`` on the way (at
    most :data:`MAX_SIZES` numbers at each, and none computed from itself)."""
    if name in known:
        return known[name]
    if name in busy:
        raise Unfoldable(f"'{name}' is computed from itself (a cycle)")
    busy = busy | {name}
    node = constants.made_by.get(name)
    if node is None or node.op_type == "Constant":
        return constants.value(name)
    if node.op_type == "Shape":
        attrs = {a.name: a.i for a in node.attribute}
        shape = _shaping(node.input[0], known, constants, chain, busy).shape
        found = np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))],
                         dtype=np.int64)
    else:
        args = [_shaping(i, known, constants, chain, busy) if i else None
                for i in node.input]
        present = [a for a in args if a is not None]
        if any(a.size > MAX_SIZES or a.ndim > 1 or a.dtype.kind not in "iu" for a in present):
            raise Unfoldable(f"the {node.op_type} node {named(node)} computes a shape from "
                             f"more than {MAX_SIZES} integers in a row, or from other numbers")
        grown = _grown_shape(node, args)
        if grown is not None and int(np.prod(grown)) > MAX_SIZES:
            raise Unfoldable(f"the {node.op_type} node {named(node)} would make more than "
                             f"{MAX_SIZES} sizes")
        if node.op_type == "Mul":
            left, right = (args + [None, None])[:2]
            if left is None or right is None or left.size * right.size > MAX_SIZES:
                raise Unfoldable(f"the Mul node {named(node)} does not multiply two short "
                                 "rows of sizes")
            found = np.multiply(left, right)
        else:
            found = apply(node, args)
    known[name] = found
    return found
