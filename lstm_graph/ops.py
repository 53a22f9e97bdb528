"""The op table: every operation a cell can use, defined once.

Each :class:`Op` says how the language spells it, how diagrams draw it, what
it computes (``reference``, written against an array namespace ``xp`` so it
runs on NumPy, CuPy and ``array_api_strict``), its vector–Jacobian product
(``vjp``, for gradients, on the same namespace), and its C expression for the
fused kernels (CUDA on the GPU, the native step on the CPU). Adding an
element-wise function is one entry here; the parser, executors, kernel
generators, gradients and renderers all read this table.

Semantics every executor shares (the reference interpreter defines them, and
the tests hold every executor to it, NaN pattern included):

- arithmetic is IEEE, element by element, in the run's dtype: NaN and ±inf
  propagate as in NumPy and PyTorch (``inf - inf`` is NaN, ``0 * inf`` is NaN);
- ``sigmoid(±inf)`` is 1 and 0, ``tanh(±inf)`` is ±1, and both are NaN at NaN;
- ``relu(NaN)`` is NaN (as ``torch.relu`` and ``numpy.maximum``), ``relu(inf)`` is inf;
- a ``linear`` multiplies every term, zeros included, so a NaN or inf in one
  operand reaches every unit of its sequence's row, in every executor alike.

>>> OPS["mul"].symbol, OPS["sigmoid"].symbol
('×', 'σ')
>>> sorted(FUNCTIONS)
['relu', 'sigmoid', 'tanh']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Array = Any


#: ``(xp, operands, parameters) -> value``.
Forward = Callable[[Any, Sequence[Array], Sequence[Array]], Array]
#: ``(xp, operands, parameters, value, gradient of the value) -> (gradients of the operands,
#: gradients of the parameters)``: the vector–Jacobian product, for reverse mode.
Vjp = Callable[[Any, Sequence[Array], Sequence[Array], Array, Array],
               tuple[list[Array], list[Array]]]


def _linear(xp: Any, args: Sequence[Array], params: Sequence[Array]) -> Array:
    """``W_a·a + W_b·b + … + bias``; a 1-D parameter is a diagonal (peephole) weight."""
    *weights, bias = params
    total = bias
    for value, weight in zip(args, weights):
        total = total + (value * weight if weight.ndim == 1 else value @ weight.T)
    return total


def _linear_vjp(xp: Any, args: Sequence[Array], params: Sequence[Array], out: Array,
                grad: Array) -> tuple[list[Array], list[Array]]:
    """Operands get ``g·W`` (``g ⊙ p`` for a peephole); weights ``gᵀ·a`` (``Σ_b g ⊙ a``);
    the bias ``Σ_b g``: sums over the batch, the rows of ``g``."""
    *weights, _ = params
    grad_args = [grad * w if w.ndim == 1 else grad @ w for w in weights]
    grad_params = [xp.sum(grad * a, axis=0) if w.ndim == 1 else grad.T @ a
                   for a, w in zip(args, weights)]
    return grad_args, [*grad_params, xp.sum(grad, axis=0)]


def _sigmoid(xp: Any, args: Sequence[Array], params: Sequence[Array]) -> Array:
    """Logistic function without overflow: exp only ever sees -|v|."""
    (v,) = args
    e = xp.exp(-xp.abs(v))
    s = 1 / (1 + e)
    return xp.where(v >= 0, s, e * s)


def _relu(xp: Any, args: Sequence[Array], params: Sequence[Array]) -> Array:
    """``max(v, 0)``; NaN fails ``v < 0`` and so passes through, as in PyTorch."""
    (v,) = args
    return xp.where(v < 0, xp.zeros_like(v), v)


@dataclass(frozen=True)
class Op:
    """One operation: its spelling, its picture, its meaning and its derivative."""

    name: str
    spelling: str  # how a .cell file writes it: "*", "sigmoid", "linear", …
    arity: int  # number of operands; -1 for any number (linear)
    symbol: str  # label in diagrams
    learned: bool  # a learned layer (owns parameters; drawn as a yellow box)
    reference: Forward
    vjp: Vjp
    #: C expression over the operands {0}, {1} (CUDA and C99 alike): T is the element
    #: type, and math functions are named by placeholders a dialect fills ({exp}, {tanh}).
    c: str | None
    numpy: str | None = None  # the NumPy plan's statement(s) writing {out} from {0}, {1}


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op("add", "+", 2, "+", False, lambda xp, a, p: a[0] + a[1],
           lambda xp, a, p, out, g: ([g, g], []),
           "({0} + {1})", "add({0}, {1}, out={out})"),
        Op("sub", "-", 2, "−", False, lambda xp, a, p: a[0] - a[1],
           lambda xp, a, p, out, g: ([g, -g], []),
           "({0} - {1})", "subtract({0}, {1}, out={out})"),
        Op("mul", "*", 2, "×", False, lambda xp, a, p: a[0] * a[1],
           lambda xp, a, p, out, g: ([g * a[1], g * a[0]], []),
           "({0} * {1})", "multiply({0}, {1}, out={out})"),
        Op("neg", "-", 1, "−", False, lambda xp, a, p: -a[0],
           lambda xp, a, p, out, g: ([-g], []),
           "(-{0})", "negative({0}, out={out})"),
        Op("copy", "=", 1, "=", False, lambda xp, a, p: a[0],
           lambda xp, a, p, out, g: ([g], []),
           "{0}", "copyto({out}, {0})"),
        Op("sigmoid", "sigmoid", 1, "σ", False, _sigmoid,
           lambda xp, a, p, out, g: ([g * out * (1 - out)], []),
           "((T)1 / ((T)1 + {exp}(-{0})))"),
        Op("tanh", "tanh", 1, "tanh", False, lambda xp, a, p: xp.tanh(a[0]),
           lambda xp, a, p, out, g: ([g * (1 - out * out)], []),
           "{tanh}({0})"),
        # As PyTorch: the gradient passes where the value is positive (not at NaN).
        Op("relu", "relu", 1, "relu", False, _relu,
           lambda xp, a, p, out, g: ([xp.where(out > 0, g, xp.zeros_like(g))], []),
           "({0} < (T)0 ? (T)0 : {0})", "maximum({0}, 0.0, out={out})"),
        Op("linear", "linear", -1, "W", True, _linear, _linear_vjp, None),
    )
}

#: The math functions C forms may call, by placeholder; each C dialect names them.
C_FUNCTIONS = ("exp", "tanh")


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
FUNCTIONS: dict[str, Op] = {
    op.spelling: op for op in OPS.values() if op.arity == 1 and op.spelling.isidentifier()
}
#: Binary operators by spelling.
BINARY: dict[str, Op] = {op.spelling: op for op in OPS.values() if op.arity == 2}
#: Unary operators by spelling.
UNARY: dict[str, Op] = {"-": OPS["neg"]}
#: Every name a .cell file may call, for "unknown function" messages.
CALLABLE_NAMES: tuple[str, ...] = tuple(sorted([*FUNCTIONS, "linear", "peep"]))
