"""What a traced PyTorch cell computes, as values of one step (the importer's middle).

The importer (:mod:`.torch_fx`) walks a ``torch.fx`` graph and gives every node a value:

- a **concrete** tensor or number (parameters, constants, anything computed from them
  alone: ``self.weight_ih.t()``, ``self.b_ih + self.b_hh``), kept as it is;
- a **symbolic** :class:`Value`: one ``(B, width)`` tensor of the step, built from the
  input (:class:`Input`), the states' old values (:class:`Old`), element-wise ops of the
  op table (:class:`Apply`), **affine forms** (:class:`Affine`: ``Σ v_k·W_kᵀ + Σ p_k ⊙ v_k
  + b``, what a ``linear`` is) and concatenations of values (:class:`Cat`, which only a
  linear may read).

Affine forms are what let fused gate matrices come apart: ``x @ W.t() + b`` is one
affine form of width ``4H``; ``chunk`` and slices cut its rows, ``+`` of two forms adds
their terms, a form of a :class:`Cat` splits its matrix by the parts' columns, and a
form of a form multiplies the matrices out. So ``gates.chunk(4, 1)`` of
``self.lin(torch.cat([x, h], 1))`` becomes four linears of ``x`` and ``h[t-1]``, each
with its own rows and columns of the one weight matrix. Element-wise ops are pushed
under a slice (``sigmoid(z)[:, :H]`` is ``sigmoid(z[:, :H])``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

_ORDER = itertools.count()


@dataclass(frozen=True)
class Where:
    """Where the code made a value: its file, line, and the variable it was assigned to
    (None when the statement assigns no plain name)."""

    file: str
    line: int
    name: str | None = None


@dataclass(eq=False)
class Value:
    """A ``(B, width)`` tensor of one step; ``where`` says where the code made it."""

    width: int
    where: Where | None = field(default=None, kw_only=True)
    #: The order values were made in (the cell's lines follow the code's).
    order: int = field(default_factory=lambda: next(_ORDER), kw_only=True)
    #: The fx node that made it (a fallback name for a line).
    label: str = field(default="", kw_only=True)


@dataclass(eq=False)
class Input(Value):
    """The step's input ``x_t``."""


@dataclass(eq=False)
class Old(Value):
    """A state's value from the previous step (``c[t-1]``)."""

    state: str = ""


@dataclass(eq=False)
class Apply(Value):
    """An op of the op table (not ``linear``) over values and numbers."""

    op: str = ""
    args: tuple[Value | float, ...] = ()
    attrs: tuple[tuple[str, float], ...] = ()


@dataclass(eq=False)
class Affine(Value):
    """``Σ v·Wᵀ + Σ p ⊙ v + bias``: a ``linear`` (weights in float64, exact products of
    the module's own)."""

    terms: tuple[tuple[Value, np.ndarray], ...] = ()  # (operand, W of (width, operand width))
    peeps: tuple[tuple[Value, np.ndarray], ...] = ()  # (operand, p of (width,))
    bias: np.ndarray | None = None


@dataclass(eq=False)
class Cat(Value):
    """Values side by side (``torch.cat([x, h], 1)``): only a linear may read it."""

    parts: tuple[Value, ...] = ()


def affine(value: Value, weight: np.ndarray, bias: np.ndarray | None) -> Affine:
    """``value @ weight.T + bias`` as an affine form (a Cat's parts each take their
    columns; an affine form's matrices are multiplied out)."""
    width = weight.shape[0]
    if isinstance(value, Cat):
        total: Affine | None = None
        start = 0
        for part in value.parts:
            piece = affine(part, weight[:, start:start + part.width], None)
            total = piece if total is None else add_affine(total, piece)
            start += part.width
        assert total is not None
        return with_bias(total, bias)
    if isinstance(value, Affine):
        terms = tuple((v, weight @ w) for v, w in value.terms)
        terms += tuple((v, weight * p[None, :]) for v, p in value.peeps)
        inner = None if value.bias is None else weight @ value.bias
        return with_bias(Affine(width, terms=_merge(terms)), _plus(inner, bias))
    return Affine(width, terms=((value, weight),), bias=bias)


def _plus(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a + b


def _merge(pairs: tuple[tuple[Value, np.ndarray], ...]) -> tuple[tuple[Value, np.ndarray], ...]:
    """Terms of the same operand added together, first appearance first."""
    found: dict[int, tuple[Value, np.ndarray]] = {}
    for value, weight in pairs:
        key = id(value)
        found[key] = (value, found[key][1] + weight) if key in found else (value, weight)
    return tuple(found.values())


def with_bias(form: Affine, bias: np.ndarray | None) -> Affine:
    return Affine(form.width, terms=form.terms, peeps=form.peeps, bias=_plus(form.bias, bias))


def add_affine(a: Affine, b: Affine, sign: float = 1.0) -> Affine:
    """``a + sign · b``."""
    terms = _merge(a.terms + tuple((v, sign * w) for v, w in b.terms))
    peeps = _merge(a.peeps + tuple((v, sign * p) for v, p in b.peeps))
    bias = _plus(a.bias, None if b.bias is None else sign * b.bias)
    return Affine(a.width, terms=terms, peeps=peeps, bias=bias)


def scale_affine(form: Affine, factor: np.ndarray) -> Affine:
    """``form ⊙ factor`` (a vector over the units): each unit's row scaled."""
    return Affine(form.width, terms=tuple((v, factor[:, None] * w) for v, w in form.terms),
                  peeps=tuple((v, factor * p) for v, p in form.peeps),
                  bias=None if form.bias is None else factor * form.bias)


def of_input_size(value: Value) -> bool:
    """Whether ``value`` has the input's size I in a cell (``x``, ``tanh(x)``, ``p ⊙ x``),
    not the states' H: the language keeps the two apart even where they are equal."""
    if isinstance(value, Input):
        return True
    if isinstance(value, Apply):
        return any(of_input_size(a) for a in value.args if isinstance(a, Value))
    if isinstance(value, Affine):
        return not value.terms and any(of_input_size(v) for v, _ in value.peeps)
    return False


def cut(value: Value, start: int, stop: int) -> Value | None:
    """Units ``start:stop`` of ``value`` (a new value, named where the code cuts it; one
    inside it keeps the fx node name of what it was cut from: an unnamed line was called
    ``v``, whatever the code's own ``v`` was), or None where no value of the language is
    that (a slice of the input or of a state)."""
    if start == 0 and stop == value.width:
        return value
    width = stop - start
    if isinstance(value, Affine):
        # an element-wise weight's operand is cut with it where it can be (a linear's
        # value), else the weight is a matrix's rows, diag(p)[start:stop] (x, a state)
        peeps, terms = [], list(value.terms)
        for v, p in value.peeps:
            piece = cut(v, start, stop)
            if piece is None:
                terms.append((v, np.diag(p)))
            else:
                peeps.append((piece, p[start:stop]))
        return Affine(width, terms=_merge(tuple((v, w[start:stop]) for v, w in terms)),
                      peeps=_merge(tuple(peeps)),
                      bias=None if value.bias is None else value.bias[start:stop],
                      label=value.label)
    if isinstance(value, Cat):
        parts: list[Value] = []
        offset = 0
        for part in value.parts:
            lo, hi = max(start - offset, 0), min(stop - offset, part.width)
            if lo < hi:
                piece = cut(part, lo, hi)
                if piece is None:
                    return None
                parts.append(piece)
            offset += part.width
        return parts[0] if len(parts) == 1 else Cat(width, parts=tuple(parts),
                                                    label=value.label)
    if isinstance(value, Apply):
        args: list[Value | float] = []
        for arg in value.args:
            if isinstance(arg, Value):
                piece = cut(arg, start, stop) if arg.width == value.width else None
                if piece is None:
                    return None
                args.append(piece)
            else:
                args.append(arg)
        return Apply(width, op=value.op, args=tuple(args), attrs=value.attrs,
                     label=value.label)
    return None
