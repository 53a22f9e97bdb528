"""Parameters: random initialisation, ``.npz`` files, and checking them against a cell.

Parameter names are the ones the cell language gives (``f.W_x``, ``f.W_h``,
``f.p_c``, ``f.b``; see ``lstm-graph params``). Files from other frameworks
are translated into these names by :mod:`lstm_graph.formats.importers`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from lstm_graph.errors import DataError, WeightsError
from lstm_graph.formats.arrays import StoredArray
from lstm_graph.formats.memory import allocation, require
from lstm_graph.ir import Size
from lstm_graph.schedule import Schedule


def random_weights(schedule: Schedule, input_size: int, hidden_size: int, seed: int | None,
                   dtype: np.dtype | str = "float32") -> dict[str, np.ndarray]:
    """Uniform in ±1/√H, as PyTorch initialises its recurrent layers; seeded, in file order.

    Refused before anything is drawn when the weights would not fit in memory.
    """
    check_sizes(input_size, hidden_size)
    shapes = schedule.param_shapes(input_size, hidden_size)
    largest = max(shapes, key=lambda name: math.prod(shapes[name]), default=None)
    drawn = [] if largest is None else \
        [allocation(f"{largest} as drawn (float64)", shapes[largest], np.float64)]
    require([*(allocation(name, shape, dtype) for name, shape in shapes.items()), *drawn],
            f"the weights with I={input_size}, H={hidden_size}")
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(hidden_size)
    return {name: rng.uniform(-bound, bound, size=shape).astype(dtype)
            for name, shape in shapes.items()}


def check_sizes(input_size: int, hidden_size: int) -> None:
    """Both sizes at least 1: a cell with no inputs or no hidden units computes nothing."""
    for what, symbol, size in (("input", "I", input_size), ("hidden", "H", hidden_size)):
        if size < 1:
            raise DataError(f"the {what} size {symbol} is {size}; it must be at least 1")


def infer_sizes(schedule: Schedule, weights: Mapping[str, Any], source: str = "the weights"
                ) -> tuple[int | None, int | None]:
    """``(input_size, hidden_size)`` read off the weights' shapes (input size None if unused):
    each the size most of the parameters that show it agree on (the first seen of equals),
    so that one array of a wrong shape is the one the check of the weights blames. A cell
    without parameters shows neither."""
    if not schedule.params:
        return None, None
    votes: dict[Size, Counter[int]] = {Size.HIDDEN: Counter(), Size.INPUT: Counter()}
    seen: dict[tuple[Size, int], str] = {}
    for spec in schedule.params:
        shape = getattr(weights.get(spec.name), "shape", None)
        if shape is None or len(shape) != len(spec.shape):
            continue
        for symbol, size in zip(spec.shape, shape):
            if symbol in votes:
                votes[symbol][int(size)] += 1
                seen.setdefault((symbol, int(size)), f"{spec.name} has shape {tuple(shape)}")
    if not votes[Size.HIDDEN]:
        names = sorted(map(str, weights))
        held = ", ".join(names[:12]) + (f", … ({len(names)} names)" if len(names) > 12 else "") \
            if names else "nothing"
        raise WeightsError(f"{source} does not fit cell '{schedule.graph.name}': none of its "
                           f"parameters ({', '.join(p.name for p in schedule.params)}) is "
                           f"there; it holds {held} (weights of another cell?)")
    hidden = votes[Size.HIDDEN].most_common(1)[0][0]
    input_size = votes[Size.INPUT].most_common(1)[0][0] if votes[Size.INPUT] else None
    for symbol, size in ((Size.HIDDEN, hidden), (Size.INPUT, input_size)):
        if size is not None and size < 1:
            raise WeightsError(f"{source}: {seen[symbol, size]}, so {symbol.words} is 0; a "
                               "cell needs at least one")
    return input_size, hidden


def check_weights(schedule: Schedule, weights: Mapping[str, Any], input_size: int,
                  hidden_size: int, dtype: np.dtype | str, source: str = "the weights",
                  owned: bool = False) -> dict[str, np.ndarray]:
    """The weights as arrays of ``dtype``, or an error naming what does not fit; copies of
    the caller's arrays unless ``owned`` (read from a file, and so the runner's alone).

    Every parameter of the cell must be present with its exact shape, and
    nothing else may be (a stray name usually means a different cell); this is
    checked on shapes and dtypes alone, so arrays still in a file
    (:class:`~lstm_graph.formats.arrays.StoredArray`) are read only once all fit,
    and only if they fit in memory. Values must be finite and small enough
    that no sum of the cell's linears overflows ``dtype`` for operands of size
    at most 1 (what sigmoid and tanh give).
    """
    dtype = np.dtype(dtype)
    expected = schedule.param_shapes(input_size, hidden_size)
    missing = [name for name in expected if name not in weights]
    extra = sorted(map(str, (name for name in weights if name not in expected)))
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"not parameters of this cell: {', '.join(extra)}")
    found: dict[str, StoredArray | np.ndarray] = {}
    for name, shape in expected.items():
        if name not in weights:
            continue
        value = weights[name]
        if not isinstance(value, (StoredArray, np.ndarray)):
            try:
                value = np.asarray(value)
            except (TypeError, ValueError) as err:
                problems.append(f"{name} is not an array of numbers ({err})")
                continue
        if value.dtype.kind not in "fiu":
            problems.append(f"{name} has dtype {value.dtype}; parameters are real numbers")
        elif tuple(value.shape) != shape:
            problems.append(f"{name} has shape {tuple(value.shape)}, the cell needs {shape} "
                            f"(I={input_size}, H={hidden_size})")
        else:
            found[name] = value
    if problems:
        raise WeightsError(f"{source} does not fit cell '{schedule.graph.name}': "
                           + "; ".join(problems))
    require([allocation(name, shape, dtype) for name, shape in expected.items()]
            + [allocation(f"{name} as stored", v.shape, v.dtype) for name, v in found.items()
               if isinstance(v, StoredArray)], "the weights", source)
    terms = _terms(schedule, input_size, hidden_size)
    checked = {}
    for name, value in found.items():
        array = value.read() if isinstance(value, StoredArray) else value
        problem = _value_problem(name, array, dtype, terms[name])
        if problem:
            problems.append(problem)
        else:
            # the caller's arrays are copied: a runner's weights are its own (a change to
            # the caller's array, an optimiser's step on the PyTorch model whose state dict
            # was given, must not reach it); what was read from a file is already
            fresh = owned or isinstance(value, StoredArray)
            checked[name] = array.astype(dtype, copy=not fresh)
    if problems:
        more = f"; and {len(problems) - 3} more parameters" if len(problems) > 4 else ""
        raise WeightsError(f"{source} does not fit cell '{schedule.graph.name}': "
                           + "; ".join(problems[:3] if more else problems) + more)
    return checked


def _terms(schedule: Schedule, input_size: int, hidden_size: int) -> dict[str, int]:
    """For each parameter, how many products its linear adds up for one output."""
    terms = {}
    for node in schedule.graph.linears():
        count = 1 + sum(1 if peep else schedule.width(arg, input_size, hidden_size)
                        for arg, peep in zip(node.args, node.peep))
        terms.update(dict.fromkeys(node.params, count))
    return terms


def _value_problem(name: str, array: np.ndarray, dtype: np.dtype, terms: int) -> str | None:
    """What is wrong with a parameter's values in a run of ``dtype``, if anything."""
    if array.size == 0:
        return None
    if not np.all(np.isfinite(array)):
        return f"{name} holds NaN or infinity"
    largest = max(abs(float(array.max())), abs(float(array.min())))
    limit = float(np.finfo(dtype).max)
    if largest > limit:
        return (f"{name} holds {largest:.3g}, too large for {dtype} (the largest is about "
                f"{limit:.2g}); run in float64 (--dtype float64)")
    if largest * terms > limit:
        return (f"{name} holds {largest:.3g}: its linear adds up {terms} such terms, so even "
                f"operands of size 1 could overflow {dtype} (the largest is about "
                f"{limit:.2g})")
    return None
