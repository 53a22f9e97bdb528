"""The op table: every operation a cell can use, defined once.

Each :class:`Op` says how the language spells it, what kind of op it is
(:class:`OpKind`: an infix operator, a copy, an element-wise function, or the
learned ``linear`` layer), how diagrams draw it, what it computes
(``reference``, written against an array namespace ``xp`` so it runs on NumPy,
CuPy and ``array_api_strict``), its vector–Jacobian product (``vjp``, for
gradients, on the same namespace), its C expression for the fused kernels
(CUDA on the GPU, the native step on the CPU), the name ONNX's recurrent
operators give it in their ``activations`` attribute, and its forms elsewhere:
standard ONNX nodes (``onnx_nodes``, what an exported model's Scan computes), a
PyTorch expression (``torch``, what an exported module's ``step`` says) and the
PyTorch spellings ``from-torch`` recognises (``torch_calls``: ``torch.sigmoid``,
``F.sigmoid``, ``Tensor.sigmoid``, ``nn.Sigmoid``). Some functions take
numeric **attributes** (``leaky_relu(v, 0.1)``: alpha), fixed when the cell is
written: every form reads them by name. Adding an element-wise function is one
entry here; the parser, executors, kernel generators, gradients, importers and
renderers all read this table, and none of them names an op but through it.

Semantics every executor shares (the reference interpreter defines them, and
the tests hold every executor to it, NaN pattern included):

- arithmetic is IEEE, element by element, in the run's dtype: NaN and ±inf
  propagate as in NumPy and PyTorch (``inf - inf`` is NaN, ``0 * inf`` is NaN);
- ``sigmoid(±inf)`` is 1 and 0, ``tanh(±inf)`` is ±1, and both are NaN at NaN;
- a comparison with NaN is false, and each function's definition says which
  branch that takes: ``relu(NaN)``, ``leaky_relu(NaN)``, ``elu(NaN)``,
  ``hard_sigmoid(NaN)`` and ``clip(NaN)`` are NaN (as in PyTorch), while
  ``thresholded_relu(NaN)`` is 0 (ONNX's ``x > alpha ? x : 0``);
- a ``linear`` multiplies every term, zeros included, so a NaN or inf in one
  operand reaches every unit of its sequence's row, in every executor alike;
- a function's gradient at NaN and ±inf is what PyTorch's autograd gives its PyTorch
  form (``relu``'s and ``elu``'s pass at NaN; ``softsign``'s is NaN at ±inf);
- a cell is computed as its equations are written, so where an infinity meets a sum
  its NaN-or-±inf pattern is theirs: a fused kernel that regroups them may differ
  (the ``gru``'s weight gradients for an infinite ``grad_y`` are not finite where
  ``nn.GRU``'s are not, but which are NaN and which ±inf differs: ``∂z`` is
  ``g·h[t-1] - g·n`` here, NaN where ``h[t-1]`` is 0, and ``g·(h[t-1] - n)`` there).

>>> OPS["mul"].symbol, OPS["sigmoid"].symbol
('×', 'σ')
>>> sorted(FUNCTIONS)[:4]
['affine', 'clip', 'elu', 'hard_sigmoid']
>>> OPS["leaky_relu"].attributes
(Attribute(name='alpha', default=0.01, least=None),)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

Array = Any
#: An op node's attribute values by name (``{"alpha": 0.1}``); empty for most ops.
Attrs = Mapping[str, float]

#: ``(xp, operands, parameters, attributes) -> value``.
Forward = Callable[[Any, Sequence[Array], Sequence[Array], Attrs], Array]
#: ``(xp, operands, parameters, attributes, value, gradient of the value) -> (gradients of
#: the operands, gradients of the parameters)``: the vector–Jacobian product, for reverse mode.
Vjp = Callable[[Any, Sequence[Array], Sequence[Array], Attrs, Array, Array],
               tuple[list[Array], list[Array]]]


#: ``emit(op_type, inputs, attributes) -> the output's name``: how an ONNX form adds one node.
#: An input is a value's name, or a number (a constant of the model's dtype, made by ``emit``).
OnnxEmit = Callable[[str, Sequence["str | float"], Mapping[str, float]], str]
#: ``(emit, operands, attributes) -> the output's name``: an op as standard ONNX nodes.
OnnxForm = Callable[[OnnxEmit, Sequence[str], Attrs], str]


class OpKind(str, Enum):
    """What role an op plays; code asks this, never the op's name."""

    OPERATOR = "operator"  # infix or prefix arithmetic: + - * and unary -
    COPY = "copy"  # ``a = b``: the value itself
    FUNCTION = "function"  # an element-wise function of one value: sigmoid, relu, clip, ...
    LINEAR = "linear"  # the learned layer: W_a·a + W_b·b + … + bias


@dataclass(frozen=True)
class Attribute:
    """A number a function takes besides its value (``alpha``); ``default`` None: required;
    ``least``: the smallest value it may take (None: any; ``clip``'s threshold is 0 or
    more, as its ONNX and PyTorch forms give another function below that)."""

    name: str
    default: float | None
    least: float | None = None


@dataclass(frozen=True)
class TorchCall:
    """One way PyTorch code spells an op, as ``lstm-graph from-torch`` recognises it.

    ``name`` is ``torch.NAME``, ``F.NAME`` (``torch.nn.functional``), ``Tensor.NAME`` (a
    method), ``nn.NAME`` (a module, whose numbers are its attributes) or ``operator.NAME``
    (what Python's ``+``, ``-``, ``*`` become when traced). ``numbers`` are the call's
    parameters after its operands, in PyTorch's order, with their defaults (None:
    required); ``attrs`` turns their values (by PyTorch's names) into the op's attributes,
    raising ValueError, in words, for values the op does not compute (a ``beta`` of
    ``softplus`` other than 1). ``swapped``: the operands come in the other order
    (``torch.rsub(a, b)`` is ``b - a``). ``differs``: where PyTorch's call computes
    otherwise than the op, said as a warning when it is converted (empty: nowhere).
    """

    name: str
    numbers: tuple[tuple[str, Any], ...] = ()
    attrs: Callable[[Mapping[str, Any]], dict[str, float]] | None = None
    swapped: bool = False
    differs: str = ""


def _same(*names: str) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """Attributes read as PyTorch's numbers of the same position: ``alpha <- negative_slope``
    for ``_same("alpha=negative_slope")``, ``alpha`` for ``_same("alpha")``."""
    pairs = [name.partition("=") for name in names]
    return lambda given: {ours: float(given[theirs or ours]) for ours, _, theirs in pairs}


def _no_numbers(given: Mapping[str, Any]) -> dict[str, float]:
    return {}


def _symmetric(low: str, high: str) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """``clip``'s threshold from PyTorch's bounds, which must be ``-t`` and ``t``."""
    def attrs(given: Mapping[str, Any]) -> dict[str, float]:
        lo, hi = given[low], given[high]
        for bound in (lo, hi):
            try:
                float(0 if bound is None else bound)
            except (TypeError, ValueError, RuntimeError):  # a tensor of several numbers
                raise ValueError(f"clip takes one number for every unit's bounds; {low} and "
                                 f"{high} must be numbers, not one bound per unit") from None
        if lo is None or hi is None or float(lo) != -float(hi) or float(hi) < 0:
            raise ValueError(f"clip bounds a value to [-t, t]; {low}={lo}, {high}={hi} is not "
                             "such a range")
        if not math.isfinite(float(hi)):
            raise ValueError(f"{low}={lo}, {high}={hi} leaves every value as it is; leave "
                             "the clip out")
        return {"threshold": float(hi)}
    return attrs


#: Where ``exp(v)`` overflows in float32: PyTorch's softplus, ``log1p(exp(v))`` below its
#: threshold, is infinity from there up to the threshold.
EXP_OVERFLOWS_FLOAT32 = math.log(3.4028234663852886e38)  # float32's largest: 88.72


def _float32(value: float) -> float:
    """``value`` rounded to float32 (infinity past its range)."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def _softplus_attrs(given: Mapping[str, Any]) -> dict[str, float]:
    # PyTorch's softplus is linear past its threshold: within 2e-9 of log(1 + e^v) from 20
    # on; below it, log1p(exp(v)), which overflows in float32 past 88.72
    beta, threshold = float(given["beta"]), float(given["threshold"])
    # compared as float32 compares it: 88.7228390 rounds up to 88.72283936, where exp(v)
    # is infinity already
    if beta != 1 or not 20 <= _float32(threshold) < _float32(EXP_OVERFLOWS_FLOAT32):
        why = f"beta={given['beta']} is not 1" if beta != 1 else \
            f"threshold={given['threshold']} is below 20" if threshold < 20 else \
            (f"with threshold={given['threshold']} PyTorch's is infinity for v from "
             f"{EXP_OVERFLOWS_FLOAT32:.2f} (float32) up to it, where exp(v) overflows")
        raise ValueError(f"softplus here is log(1 + exp(v)), finite everywhere: beta must be "
                         f"1 and threshold from 20 to {EXP_OVERFLOWS_FLOAT32:.2f}; {why}")
    return {}


def _threshold_attrs(given: Mapping[str, Any]) -> dict[str, float]:
    if float(given["value"]) != 0:
        raise ValueError(f"thresholded_relu gives 0 below its threshold; value="
                         f"{given['value']} is not 0")
    return {"alpha": float(given["threshold"])}


def _calls(*names: str, numbers: tuple[tuple[str, Any], ...] = (),
           attrs: Callable[[Mapping[str, Any]], dict[str, float]] = _no_numbers,
           differs: str = "") -> tuple[TorchCall, ...]:
    """The same call under several names (``torch.tanh``, ``F.tanh``, ``Tensor.tanh``)."""
    return tuple(TorchCall(name, numbers, attrs, differs=differs) for name in names)


_INPLACE = (("inplace", False),)


def _unit_alpha(given: Mapping[str, Any]) -> dict[str, float]:
    """``torch.add(a, b, alpha=...)`` adds ``alpha · b``: only 1 is the plain sum."""
    if float(given["alpha"]) != 1:
        alpha = given["alpha"]
        raise ValueError(f"alpha={alpha} scales the second operand; write the product out "
                         f"(torch.add(a, b, alpha={alpha}) as a + {alpha} * b, torch.sub as "
                         f"a - {alpha} * b)")
    return {}


def _not_training(given: Mapping[str, Any]) -> dict[str, float]:
    """Dropout is the value itself, but only when not training (``module.eval()``)."""
    if given["training"] and float(given["p"]) != 0:
        raise ValueError("dropout while training drops units at random, which a cell's "
                         "equations cannot; it is the value itself in eval mode, which the "
                         "module is traced in, but F.dropout trains unless told: pass "
                         "training=self.training")
    return {}


def _onnx(op_type: str) -> OnnxForm:
    """An op that is one ONNX node of ``op_type``. (The others are written with standard
    nodes onnxruntime runs in float32 and float64 alike, their numbers as constants of the
    model's dtype: an ONNX attribute is a float32.)"""
    return lambda emit, a, attrs: emit(op_type, a, {})


def _linear(xp: Any, args: Sequence[Array], params: Sequence[Array], attrs: Attrs) -> Array:
    """``W_a·a + W_b·b + … + bias``; a 1-D parameter is a diagonal (peephole) weight."""
    *weights, bias = params
    total = bias
    for value, weight in zip(args, weights):
        total = total + (value * weight if weight.ndim == 1 else value @ weight.T)
    return total


def _linear_vjp(xp: Any, args: Sequence[Array], params: Sequence[Array], attrs: Attrs,
                out: Array, grad: Array) -> tuple[list[Array], list[Array]]:
    """Operands get ``g·W`` (``g ⊙ p`` for a peephole); weights ``gᵀ·a`` (``Σ_b g ⊙ a``);
    the bias ``Σ_b g``: sums over the batch, the rows of ``g``."""
    *weights, _ = params
    grad_args = [grad * w if w.ndim == 1 else grad @ w for w in weights]
    grad_params = [xp.sum(grad * a, axis=0) if w.ndim == 1 else grad.T @ a
                   for a, w in zip(args, weights)]
    return grad_args, [*grad_params, xp.sum(grad, axis=0)]


def _sigmoid(xp: Any, v: Array) -> Array:
    """Logistic function without overflow: exp only ever sees -|v|."""
    e = xp.exp(-xp.abs(v))
    s = 1 / (1 + e)
    return xp.where(v >= 0, s, e * s)


def _unary(forward: Callable[..., Array]) -> Forward:
    """A function of one value and its attributes as a :data:`Forward`."""
    return lambda xp, a, p, attrs: forward(xp, a[0], **attrs)


def _unary_vjp(vjp: Callable[..., Array]) -> Vjp:
    """``vjp(xp, v, out, g, **attrs)`` (the gradient of the one operand) as a :data:`Vjp`."""
    return lambda xp, a, p, attrs, out, g: ([vjp(xp, a[0], out, g, **attrs)], [])


def _where0(xp: Any, keep: Array, g: Array) -> Array:
    """``g`` where ``keep``, else 0 (never ``0 · g``: a NaN gradient elsewhere stays out)."""
    return xp.where(keep, g, xp.zeros_like(g))


def _clip(xp: Any, v: Array, threshold: float) -> Array:
    return xp.where(v < -threshold, xp.full_like(v, -threshold),
                    xp.where(v > threshold, xp.full_like(v, threshold), v))


def _hard_sigmoid(xp: Any, v: Array, alpha: float, beta: float) -> Array:
    z = alpha * v + beta
    return xp.where(z < 0, xp.zeros_like(z), xp.where(z > 1, xp.ones_like(z), z))


def _elu(xp: Any, v: Array, alpha: float) -> Array:
    # exp sees min(v, 0) only: the branch not taken never overflows
    return xp.where(v >= 0, v, alpha * (xp.exp(xp.minimum(v, xp.zeros_like(v))) - 1))


def _softplus(xp: Any, v: Array) -> Array:
    """``log(1 + exp(v))`` without overflow: ``max(v, 0) + log1p(exp(-|v|))``."""
    return xp.where(v > 0, v, xp.zeros_like(v)) + xp.log1p(xp.exp(-xp.abs(v)))


def number_text(value: float) -> str:
    """A number as a cell file (or generated code) writes it: short (``0.1``, ``3``,
    ``1e-05``) yet exact, the text reading back as the same float.

    >>> number_text(3.0), number_text(0.1), number_text(1 / 6)
    ('3', '0.1', '0.16666666666666666')
    """
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def number_label(value: float) -> str:
    """A number as diagrams and messages show it: the shortest decimal that reads back as
    ``value``, as a float32 where ``value`` is one exactly (an ONNX model's 0.2 is
    0.20000000298… as a float64: ``0.2``), else as the float64 (``0.1234567``, not the
    ``0.123457`` of ``:g``, which drew two cells differing there alike). Code and cell
    files take :func:`number_text`, which reads back as the float64.

    >>> number_label(0.1234567), number_label(1234567.0), number_label(0.2), number_label(1e-7)
    ('0.1234567', '1234567', '0.2', '1e-07')
    >>> number_label(float.fromhex("0x1.99999ap-3"))  # 0.2 as a float32
    '0.2'

    """
    if not math.isfinite(value):
        return f"{value:g}"
    if abs(value) <= _FLOAT32_MAX and _as_float32(value) == value:
        return next(text for digits in range(1, 10)
                    if _as_float32(float(text := f"{value:.{digits}g}")) == value)
    return next(text for digits in range(1, 18) if float(text := f"{value:.{digits}g}") == value)


#: The largest float32.
_FLOAT32_MAX = float.fromhex("0x1.fffffep+127")


def _as_float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (``value`` within its range)."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


@dataclass(frozen=True)
class Op:
    """One operation: its spelling, its role, its picture, its meaning and its derivative."""

    name: str
    spelling: str  # how a .cell file writes it: "*", "sigmoid", "linear", …
    kind: OpKind
    arity: int  # number of operands; -1 for any number (linear)
    symbol: str  # label in diagrams
    reference: Forward
    vjp: Vjp
    #: C expression over the operands {0}, {1} and the attributes {alpha}, … (CUDA and C99
    #: alike): T is the element type, and math functions are named by placeholders a
    #: dialect fills ({exp}, {tanh}, {log1p}: :data:`C_FUNCTIONS`).
    c: str | None
    #: The vector–Jacobian product in C, one expression per operand: the gradient that
    #: operand receives, over the value's gradient {g}, the value {out}, the operands {0},
    #: {1} and the attributes, with the math placeholders of ``c`` (the compiled backward
    #: passes of the native and CUDA executors; ``linear``'s is structural: None).
    c_vjp: tuple[str, ...] | None = None
    #: The NumPy plan's statement(s) writing {out} from {0}, {1}; None: the plan calls
    #: ``reference``.
    numpy: str | None = None
    attributes: tuple[Attribute, ...] = ()
    #: How tightly an operator binds when a schedule prints an expression (higher: tighter).
    precedence: int = 9
    #: The name in ONNX's ``activations`` attribute of the LSTM, GRU and RNN operators, whose
    #: ``activation_alpha`` and ``activation_beta`` are this op's first two attributes.
    onnx: str | None = None
    #: The op as standard ONNX nodes (what an exported model's Scan body computes); None for
    #: the learned layer, which the exporter writes as Gemm nodes over its parameters.
    onnx_nodes: OnnxForm | None = None
    #: The op as a PyTorch expression over {0}, {1} and the attributes ({alpha}), as an
    #: exported module writes it (``torch`` and ``F`` for ``torch.nn.functional`` in scope).
    torch: str | None = None
    #: How PyTorch code spells the op (what ``from-torch`` recognises).
    torch_calls: tuple[TorchCall, ...] = ()

    @property
    def learned(self) -> bool:
        """A learned layer (owns parameters; drawn as a yellow box)."""
        return self.kind is OpKind.LINEAR

    def wraps(self, position: int, inner: int) -> bool:
        """Whether this operator, written infix, puts its operand at ``position`` whose own
        precedence is ``inner`` in parentheses: a looser one always, and one as tight on
        its right, since the text is read from the left and floating point's ``+`` and
        ``*`` are not associative (``a + (b - c)`` is not ``a + b - c``: with ``b = 3e8``,
        ``a = 0.07``, ``c = b`` in float32, 0.07 against 0).

        >>> add = OPS["add"]
        >>> add.wraps(0, add.precedence), add.wraps(1, add.precedence), add.wraps(1, 9)
        (False, True, False)
        """
        return inner < self.precedence or (position > 0 and inner == self.precedence)

    @property
    def function(self) -> bool:
        """An element-wise function of one value (drawn in its linear's box when it alone
        reads it)."""
        return self.kind is OpKind.FUNCTION

    def attrs(self, given: Sequence[float] = (), named: Mapping[str, float] | None = None
              ) -> dict[str, float]:
        """Attribute values by name: ``given`` in order, then ``named`` by name (as the
        usage writes them: ``leaky_relu(v, alpha=0.1)``), then the defaults (a ValueError
        names an unknown or twice-given one, the first required one missing, or says
        there are too many)."""
        named = named or {}
        names = [a.name for a in self.attributes]
        for key in named:
            unknown = self.unknown(key)
            if unknown:
                raise ValueError(unknown)
            if names.index(key) < len(given):
                raise ValueError(f"{self.spelling}()'s {key} is given twice, in its place and "
                                 f"by name: {self.usage}")
        if len(given) > len(self.attributes):
            if not self.attributes:
                raise ValueError(f"{self.spelling}() takes 1 argument, got {len(given) + 1}")
            numbers = len(self.attributes)
            raise ValueError(f"{self.spelling}() takes a value and at most {numbers} "
                             f"number{'s' if numbers > 1 else ''}, got {len(given) + 1} "
                             f"arguments: {self.usage}")
        found = {}
        for k, attribute in enumerate(self.attributes):
            value = given[k] if k < len(given) else named.get(attribute.name,
                                                              attribute.default)
            if value is None:
                raise ValueError(f"{self.spelling}() needs its {attribute.name}: "
                                 f"{self.usage}")
            if attribute.least is not None and value < attribute.least:
                raise ValueError(f"{self.spelling}()'s {attribute.name} is {value:g}; it must "
                                 f"be {attribute.least:g} or more: {self.usage}")
            found[attribute.name] = float(value)
        return found

    def unknown(self, key: str) -> str | None:
        """Why ``key`` names none of this function's numbers, or None where it names one."""
        names = [a.name for a in self.attributes]
        if key in names:
            return None
        takes = f"its numbers are {', '.join(names)}" if names else "it takes a value only"
        return f"{self.spelling}() has no number '{key}'; {takes}: {self.usage}"

    @property
    def usage(self) -> str:
        """How a call is written: ``leaky_relu(v, alpha=0.01)``, ``clip(v, threshold)``."""
        parts = ["v", *(a.name if a.default is None else f"{a.name}={a.default:g}"
                        for a in self.attributes)]
        return f"{self.spelling}({', '.join(parts)})"

    def call_text(self, value: str, attrs: Attrs) -> str:
        """The call as a cell file writes it: attributes up to the last one that is not its
        default (``hard_sigmoid(v, 0.2, 0.6)``, ``leaky_relu(v)``)."""
        values = [attrs[a.name] for a in self.attributes]
        keep = max((k + 1 for k, a in enumerate(self.attributes)
                    if a.default is None or values[k] != a.default), default=0)
        return f"{self.spelling}({', '.join([value, *map(number_text, values[:keep])])})"


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op("add", "+", OpKind.OPERATOR, 2, "+", lambda xp, a, p, attrs: a[0] + a[1],
           lambda xp, a, p, attrs, out, g: ([g, g], []),
           "({0} + {1})", ("{g}", "{g}"), "add({0}, {1}, out={out})", precedence=1,
           onnx_nodes=_onnx("Add"), torch="{0} + {1}",
           torch_calls=_calls("operator.add", "Tensor.add", "torch.add",
                              numbers=(("alpha", 1),), attrs=_unit_alpha)),
        Op("sub", "-", OpKind.OPERATOR, 2, "−", lambda xp, a, p, attrs: a[0] - a[1],
           lambda xp, a, p, attrs, out, g: ([g, -g], []),
           "({0} - {1})", ("{g}", "(-{g})"), "subtract({0}, {1}, out={out})", precedence=1,
           onnx_nodes=_onnx("Sub"), torch="{0} - {1}",
           torch_calls=(*_calls("operator.sub", "Tensor.sub", "torch.sub", "torch.subtract",
                                numbers=(("alpha", 1),), attrs=_unit_alpha),
                        TorchCall("torch.rsub", (("alpha", 1),), _unit_alpha, swapped=True))),
        Op("mul", "*", OpKind.OPERATOR, 2, "×", lambda xp, a, p, attrs: a[0] * a[1],
           lambda xp, a, p, attrs, out, g: ([g * a[1], g * a[0]], []),
           "({0} * {1})", ("({g} * {1})", "({g} * {0})"), "multiply({0}, {1}, out={out})",
           precedence=2,
           onnx_nodes=_onnx("Mul"), torch="{0} * {1}",
           torch_calls=_calls("operator.mul", "Tensor.mul", "torch.mul",
                              "torch.multiply")),
        Op("neg", "-", OpKind.OPERATOR, 1, "−", lambda xp, a, p, attrs: -a[0],
           lambda xp, a, p, attrs, out, g: ([-g], []),
           "(-{0})", ("(-{g})",), "negative({0}, out={out})", precedence=3,
           onnx_nodes=_onnx("Neg"), torch="-{0}",
           torch_calls=_calls("operator.neg", "Tensor.neg", "torch.neg", "torch.negative")),
        Op("copy", "=", OpKind.COPY, 1, "=", lambda xp, a, p, attrs: a[0],
           lambda xp, a, p, attrs, out, g: ([g], []),
           "{0}", ("{g}",), "copyto({out}, {0})", onnx_nodes=_onnx("Identity"), torch="{0}",
           torch_calls=(*_calls("nn.Identity", "Tensor.contiguous", "Tensor.clone"),
                        *_calls("F.dropout", "nn.Dropout",
                                numbers=(("p", 0.5), ("training", True), *_INPLACE),
                                attrs=_not_training))),
        Op("sigmoid", "sigmoid", OpKind.FUNCTION, 1, "σ", _unary(_sigmoid),
           _unary_vjp(lambda xp, v, out, g: g * out * (1 - out)),
           "((T)1 / ((T)1 + {exp}(-{0})))", ("({g} * {out} * ((T)1 - {out}))",), onnx="Sigmoid",
           onnx_nodes=_onnx("Sigmoid"),
           torch="torch.sigmoid({0})",
           torch_calls=_calls("torch.sigmoid", "F.sigmoid", "Tensor.sigmoid", "nn.Sigmoid",
                              "torch.special.expit")),
        Op("tanh", "tanh", OpKind.FUNCTION, 1, "tanh", _unary(lambda xp, v: xp.tanh(v)),
           _unary_vjp(lambda xp, v, out, g: g * (1 - out * out)),
           "{tanh}({0})", ("({g} * ((T)1 - {out} * {out}))",), onnx="Tanh",
           onnx_nodes=_onnx("Tanh"), torch="torch.tanh({0})",
           torch_calls=_calls("torch.tanh", "F.tanh", "Tensor.tanh", "nn.Tanh")),
        # As PyTorch's threshold_backward: no gradient where the value is 0 (or below),
        # and the gradient passes at NaN.
        Op("relu", "relu", OpKind.FUNCTION, 1, "relu",
           _unary(lambda xp, v: xp.where(v < 0, xp.zeros_like(v), v)),
           _unary_vjp(lambda xp, v, out, g: _where0(xp, ~(out <= 0), g)),
           "({0} < (T)0 ? (T)0 : {0})", ("({out} <= (T)0 ? (T)0 : {g})",),
           "maximum({0}, 0.0, out={out})", onnx="Relu",
           onnx_nodes=_onnx("Relu"), torch="torch.relu({0})",
           torch_calls=(*_calls("torch.relu", "Tensor.relu"),
                        *_calls("F.relu", "nn.ReLU", numbers=_INPLACE))),
        Op("leaky_relu", "leaky_relu", OpKind.FUNCTION, 1, "lrelu",
           _unary(lambda xp, v, alpha: xp.where(v < 0, alpha * v, v)),
           _unary_vjp(lambda xp, v, out, g, alpha: xp.where(v > 0, g, alpha * g)),
           "({0} < (T)0 ? (T){alpha} * {0} : {0})", ("({0} > (T)0 ? {g} : (T){alpha} * {g})",),
           attributes=(Attribute("alpha", 0.01),), onnx="LeakyRelu",
           onnx_nodes=lambda emit, a, attrs: emit("Where", [
               emit("Less", [a[0], 0.0], {}), emit("Mul", [attrs["alpha"], a[0]], {}), a[0]],
               {}),
           torch="F.leaky_relu({0}, {alpha})",
           torch_calls=_calls("F.leaky_relu", "nn.LeakyReLU",
                              numbers=(("negative_slope", 0.01), *_INPLACE),
                              attrs=_same("alpha=negative_slope"))),
        Op("thresholded_relu", "thresholded_relu", OpKind.FUNCTION, 1, "threlu",
           _unary(lambda xp, v, alpha: xp.where(v > alpha, v, xp.zeros_like(v))),
           _unary_vjp(lambda xp, v, out, g, alpha: _where0(xp, v > alpha, g)),
           "({0} > (T){alpha} ? {0} : (T)0)", ("({0} > (T){alpha} ? {g} : (T)0)",),
           attributes=(Attribute("alpha", 1.0),), onnx="ThresholdedRelu",
           onnx_nodes=lambda emit, a, attrs: emit("Where", [
               emit("Greater", [a[0], attrs["alpha"]], {}), a[0], 0.0], {}),
           torch="torch.where({0} > {alpha}, {0}, torch.zeros_like({0}))",
           torch_calls=_calls("F.threshold", "nn.Threshold",
                              numbers=(("threshold", None), ("value", None), *_INPLACE),
                              attrs=_threshold_attrs,
                              differs="PyTorch's threshold keeps a NaN, where "
                              "thresholded_relu (ONNX's ThresholdedRelu) gives 0; the cell "
                              "computes as the module wherever no NaN reaches it")),
        Op("elu", "elu", OpKind.FUNCTION, 1, "elu", _unary(_elu),
           _unary_vjp(lambda xp, v, out, g, alpha: xp.where(  # at NaN g passes, as PyTorch's
               v <= 0, g * (alpha * xp.exp(xp.minimum(v, xp.zeros_like(v)))), g)),
           "({0} >= (T)0 ? {0} : (T){alpha} * ({exp}({0} > (T)0 ? (T)0 : {0}) - (T)1))",
           ("({0} <= (T)0 ? {g} * ((T){alpha} * {exp}({0} > (T)0 ? (T)0 : {0})) : {g})",),
           attributes=(Attribute("alpha", 1.0),), onnx="Elu",
           onnx_nodes=lambda emit, a, attrs: emit("Where", [
               emit("Less", [a[0], 0.0], {}), emit("Mul", [attrs["alpha"], emit(
                   "Sub", [emit("Exp", [emit("Min", [a[0], 0.0], {})], {}), 1.0], {})], {}),
               a[0]], {}),
           torch="F.elu({0}, {alpha})",
           torch_calls=_calls("F.elu", "nn.ELU", numbers=(("alpha", 1.0), *_INPLACE),
                              attrs=_same("alpha"))),
        Op("hard_sigmoid", "hard_sigmoid", OpKind.FUNCTION, 1, "hσ", _unary(_hard_sigmoid),
           # as torch.clamp, which the PyTorch export writes: the gradient passes inside
           # the bounds, the bounds included (F.hardsigmoid's passes strictly inside)
           _unary_vjp(lambda xp, v, out, g, alpha, beta: _where0(
               xp, (alpha * v + beta >= 0) & (alpha * v + beta <= 1), alpha * g)),
           "((T){alpha} * {0} + (T){beta} < (T)0 ? (T)0 : (T){alpha} * {0} + (T){beta} > (T)1"
           " ? (T)1 : (T){alpha} * {0} + (T){beta})",
           ("((T){alpha} * {0} + (T){beta} >= (T)0 && (T){alpha} * {0} + (T){beta} <= (T)1 ? "
            "(T){alpha} * {g} : (T)0)",),
           attributes=(Attribute("alpha", 0.2), Attribute("beta", 0.5)), onnx="HardSigmoid",
           onnx_nodes=lambda emit, a, attrs: emit("Clip", [emit("Add", [emit(
               "Mul", [attrs["alpha"], a[0]], {}), attrs["beta"]], {}), 0.0, 1.0], {}),
           torch="torch.clamp({alpha} * {0} + {beta}, 0.0, 1.0)",
           torch_calls=_calls("F.hardsigmoid", "nn.Hardsigmoid", numbers=_INPLACE,
                              attrs=lambda given: {"alpha": 1 / 6, "beta": 0.5})),
        Op("scaled_tanh", "scaled_tanh", OpKind.FUNCTION, 1, "α·tanh",
           _unary(lambda xp, v, alpha, beta: alpha * xp.tanh(beta * v)),
           _unary_vjp(lambda xp, v, out, g, alpha, beta: g * (alpha * beta) * (
               1 - xp.tanh(beta * v) * xp.tanh(beta * v))),
           "((T){alpha} * {tanh}((T){beta} * {0}))",
           ("({g} * (T)({alpha} * {beta}) * ((T)1 - {tanh}((T){beta} * {0}) * "
            "{tanh}((T){beta} * {0})))",),
           attributes=(Attribute("alpha", 1.0), Attribute("beta", 1.0)), onnx="ScaledTanh",
           onnx_nodes=lambda emit, a, attrs: emit("Mul", [attrs["alpha"], emit(
               "Tanh", [emit("Mul", [attrs["beta"], a[0]], {})], {})], {}),
           torch="{alpha} * torch.tanh({beta} * {0})"),
        Op("affine", "affine", OpKind.FUNCTION, 1, "αx+β",
           _unary(lambda xp, v, alpha, beta: alpha * v + beta),
           _unary_vjp(lambda xp, v, out, g, alpha, beta: alpha * g),
           "((T){alpha} * {0} + (T){beta})", ("((T){alpha} * {g})",),
           attributes=(Attribute("alpha", 1.0), Attribute("beta", 0.0)), onnx="Affine",
           onnx_nodes=lambda emit, a, attrs: emit("Add", [emit(
               "Mul", [attrs["alpha"], a[0]], {}), attrs["beta"]], {}),
           torch="{alpha} * {0} + {beta}"),
        Op("softsign", "softsign", OpKind.FUNCTION, 1, "softsign",
           _unary(lambda xp, v: v / (1 + xp.abs(v))),
           # NaN where the value is (at ±inf, inf / inf), as PyTorch's autograd gives it
           _unary_vjp(lambda xp, v, out, g: xp.where(
               xp.isnan(out), out, g / ((1 + xp.abs(v)) * (1 + xp.abs(v))))),
           "({0} / ((T)1 + ({0} < (T)0 ? -{0} : {0})))",
           ("({out} != {out} ? {out} : {g} / (((T)1 + ({0} < (T)0 ? -{0} : {0})) * "
            "((T)1 + ({0} < (T)0 ? -{0} : {0}))))",), onnx="Softsign",
           onnx_nodes=lambda emit, a, attrs: emit("Div", [a[0], emit(
               "Add", [1.0, emit("Abs", [a[0]], {})], {})], {}),
           torch="F.softsign({0})",
           torch_calls=_calls("F.softsign", "nn.Softsign")),
        Op("softplus", "softplus", OpKind.FUNCTION, 1, "softplus", _unary(_softplus),
           _unary_vjp(lambda xp, v, out, g: g * _sigmoid(xp, v)),
           "(({0} > (T)0 ? {0} : (T)0) + {log1p}({exp}({0} < (T)0 ? {0} : -{0})))",
           ("({g} * ({0} >= (T)0 ? (T)1 / ((T)1 + {exp}(-{0})) : "
            "{exp}({0}) * ((T)1 / ((T)1 + {exp}({0})))))",),
           # max(v, 0) + log(1 + e^-|v|) (onnxruntime's Softplus has no float64 kernel)
           onnx="Softplus", onnx_nodes=lambda emit, a, attrs: emit("Add", [
               emit("Relu", [a[0]], {}), emit("Log", [emit("Add", [1.0, emit("Exp", [emit(
                   "Neg", [emit("Abs", [a[0]], {})], {})], {})], {})], {})], {}),
           # log(e^v + e^0): the same overflow-free sum, where F.softplus turns linear at 20
           torch="torch.logaddexp({0}, torch.zeros_like({0}))",
           torch_calls=_calls("F.softplus", "nn.Softplus",
                              numbers=(("beta", 1.0), ("threshold", 20.0)),
                              attrs=_softplus_attrs)),
        # ONNX's cell clip: bounds a pre-activation to [-threshold, threshold]; as PyTorch's
        # clamp, the gradient passes inside the bounds, the bounds included.
        Op("clip", "clip", OpKind.FUNCTION, 1, "clip", _unary(_clip),
           _unary_vjp(lambda xp, v, out, g, threshold: _where0(
               xp, (v >= -threshold) & (v <= threshold), g)),
           "({0} < -(T){threshold} ? -(T){threshold} : {0} > (T){threshold} ? "
           "(T){threshold} : {0})",
           ("({0} >= -(T){threshold} && {0} <= (T){threshold} ? {g} : (T)0)",),
           attributes=(Attribute("threshold", None, least=0.0),),
           onnx_nodes=lambda emit, a, attrs: emit(
               "Clip", [a[0], -attrs["threshold"], attrs["threshold"]], {}),
           torch="torch.clamp({0}, -{threshold}, {threshold})",
           torch_calls=(*_calls("torch.clamp", "Tensor.clamp", "torch.clip", "Tensor.clip",
                                numbers=(("min", None), ("max", None)),
                                attrs=_symmetric("min", "max")),
                        *_calls("F.hardtanh", "nn.Hardtanh",
                                numbers=(("min_val", -1.0), ("max_val", 1.0), *_INPLACE),
                                attrs=_symmetric("min_val", "max_val")))),
        Op("linear", "linear", OpKind.LINEAR, -1, "W", _linear, _linear_vjp, None),
    )
}

#: The math functions C forms may call, by placeholder; each C dialect names them.
C_FUNCTIONS = ("exp", "tanh", "log1p")
#: The one learned layer (its own syntax: ``linear(a, peep(b))``).
LINEAR = OPS["linear"]
#: Ops by their name in ONNX's ``activations`` attribute.
ONNX_ACTIVATIONS: dict[str, Op] = {op.onnx: op for op in OPS.values() if op.onnx}


@dataclass(frozen=True)
class FastForm:
    """A way for the NumPy plan to compute sigmoid and tanh with few, fast calls.

    A run of adjacent pre-activations ``z`` is first scaled (folded into the
    weights of the linear feeding it: a power of two, so exact), then ``core``
    runs once over the whole run, then each activation's ``finish``.
    """

    core: str  # statements from {src} into {out}
    scale: dict[str, float]
    finish: dict[str, str]  # statements on {out}


FAST_FORMS: dict[str, FastForm] = {
    # NumPy's float32 exp is about twice as fast as its tanh: best for large steps.
    # sigmoid(z) = 1 / (1 + exp(-z)); tanh(z) = 2 / (1 + exp(-2z)) - 1
    "exp": FastForm(
        "exp({src}, out={out}); add({out}, 1.0, out={out})",
        {"sigmoid": -1.0, "tanh": -2.0},
        {"sigmoid": "reciprocal({out}, out={out})",
         "tanh": "divide(2.0, {out}, out={out}); subtract({out}, 1.0, out={out})"},
    ),
    # Fewest calls: best where each call's overhead outweighs its arithmetic.
    # sigmoid(z) = 1/2 + tanh(z / 2) / 2
    "tanh": FastForm(
        "tanh({src}, out={out})",
        {"sigmoid": 0.5, "tanh": 1.0},
        {"sigmoid": "multiply({out}, 0.5, out={out}); add({out}, 0.5, out={out})", "tanh": ""},
    ),
}

#: Functions a .cell file may call on a value (``linear`` and ``peep`` are syntax of their own).
FUNCTIONS: dict[str, Op] = {op.spelling: op for op in OPS.values() if op.function}
#: Binary operators by spelling.
BINARY: dict[str, Op] = {op.spelling: op for op in OPS.values()
                         if op.kind is OpKind.OPERATOR and op.arity == 2}
#: Unary operators by spelling.
UNARY: dict[str, Op] = {op.spelling: op for op in OPS.values()
                        if op.kind is OpKind.OPERATOR and op.arity == 1}
#: Every name a .cell file may call, for "unknown function" messages.
CALLABLE_NAMES: tuple[str, ...] = tuple(sorted([*FUNCTIONS, "linear", "peep"]))
