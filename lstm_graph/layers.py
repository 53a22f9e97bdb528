"""Recurrent layers as PyTorch and ONNX have them, for any cell: stacks, directions,
sequence lengths.

A layer runs one cell over a sequence. PyTorch's ``nn.LSTM(num_layers=L,
bidirectional=True)`` and ONNX's ``LSTM(direction="bidirectional")`` are
**units** of such layers (:class:`Stack`): ``L`` layers, each one or two
directions; layer ``k > 0`` reads what layer ``k - 1`` wrote, the forward
direction's output then the reverse direction's on the last axis. The units are
numbered as PyTorch numbers ``h_n``: layer by layer, forward before reverse.

Every unit runs through the executor contract, so every executor runs every
layer; this module only orders the work:

- **reverse**: the sequence time-reversed, run forward, and its output reversed
  back;
- **sequence lengths** (:class:`Packing`): as PyTorch's packed sequences and ONNX's
  ``sequence_lens`` define them, a sequence ends at its own length: its output is
  zero after it, its final state is the one at its own last step, and the reverse
  direction starts at its own last step. The sequences are sorted longest first, so
  that at every step the ones still going are the first rows of the batch; the run
  is cut into **windows** of steps over which the same rows go on, and each window
  runs those rows alone (an executor runs the first ``B`` rows of its buffers). So
  nothing is computed for a sequence that has ended, and nothing it would compute
  can reach another's numbers or gradients;
- **projection** (PyTorch's ``proj_size``): the cell runs at the hidden size and its
  output state is cut to the projection's width between units (see the ``lstm_proj``
  cell, whose projection weights are padded with zeros).

Gradients go back the same way: through the windows in reverse, each window's state
gradient passed to the window before, and through the layers from the top, each
unit's input gradient split between the two directions of the layer below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_graph.errors import DataError
from lstm_graph.executors.contract import Array, Executor, Gradients, Progress

DIRECTIONS = ("forward", "reverse", "bidirectional")
#: The most layers a stack may have (PyTorch sets no bound; a deeper stack is a mistake).
MAX_LAYERS = 64


@dataclass(frozen=True)
class Stack:
    """The shape of a recurrent layer: how many layers, which directions, and the width the
    output state is cut to (PyTorch's ``proj_size``; None: none)."""

    layers: int = 1
    direction: str = "forward"
    proj: int | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise DataError(f"unknown direction {self.direction!r}; choose one of "
                            f"{', '.join(DIRECTIONS)}")
        if not 1 <= self.layers <= MAX_LAYERS:
            raise DataError(f"layers must be between 1 and {MAX_LAYERS}, not {self.layers}")
        if self.proj is not None and self.proj < 1:
            raise DataError(f"a projection needs at least one unit, not {self.proj}")

    @property
    def directions(self) -> int:
        """D: 2 for a bidirectional layer, else 1."""
        return 2 if self.direction == "bidirectional" else 1

    @property
    def units(self) -> list[tuple[int, bool]]:
        """``(layer, reverse)`` of every unit, in PyTorch's ``h_n`` order."""
        if self.direction == "bidirectional":
            return [(k, reverse) for k in range(self.layers) for reverse in (False, True)]
        return [(k, self.direction == "reverse") for k in range(self.layers)]

    @property
    def single(self) -> bool:
        """One layer, one direction: parameter names and state shapes as a plain cell's."""
        return self.layers == 1 and self.direction != "bidirectional"

    def prefix(self, layer: int, reverse: bool) -> str:
        """How a unit's parameter names begin: ``""`` for a single unit, else ``l0.``,
        ``l0_reverse.``, ``l1.``, … (PyTorch's ``weight_ih_l0_reverse``, as a prefix)."""
        if self.single:
            return ""
        return f"l{layer}{'_reverse' if reverse and self.direction == 'bidirectional' else ''}."

    def describe(self) -> str:
        """``2 layers, bidirectional`` for messages and summaries."""
        layers = f"{self.layers} layer{'s' if self.layers > 1 else ''}"
        proj = f", projected to {self.proj}" if self.proj is not None else ""
        return f"{layers}, {self.direction}{proj}"


def infer_stack(names: Sequence[str]) -> tuple[int, str] | None:
    """``(layers, direction)`` that parameter names in our stacked form say (``l0.f.W_x``,
    ``l1_reverse.f.W_x``), or None when they are a single unit's (``f.W_x``).

    >>> infer_stack(["l0.h.W_x", "l0_reverse.h.W_x", "l1.h.W_x", "l1_reverse.h.W_x"])
    (2, 'bidirectional')
    >>> infer_stack(["h.W_x", "h.b"]) is None
    True
    """
    layers: set[int] = set()
    reverse = False
    for name in names:
        head, dot, _ = name.partition(".")
        rest = head[1:].removesuffix("_reverse")
        if not (dot and head.startswith("l") and rest.isdigit()):
            return None
        layers.add(int(rest))
        reverse |= head.endswith("_reverse")
    if not layers:
        return None
    return max(layers) + 1, "bidirectional" if reverse else "forward"


# -- sequence lengths ----------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """Steps ``start <= t < stop`` run the first ``rows`` sequences (longest first); those
    from ``ending`` on end at ``stop``."""

    start: int
    stop: int
    rows: int
    ending: int


@dataclass(frozen=True)
class Packing:
    """A batch of sequences of different lengths, sorted longest first (PyTorch's
    ``pack_padded_sequence`` order): sorted row ``b`` is sequence ``order[b]``."""

    order: np.ndarray
    lengths: np.ndarray  # sorted, longest first
    steps: int  # T of x
    windows: tuple[Window, ...]

    @classmethod
    def of(cls, lengths: np.ndarray, steps: int) -> Packing:
        """The packing of ``lengths`` (checked by :func:`check_lengths`) for ``steps``."""
        order = np.argsort(-lengths, kind="stable")
        ordered = lengths[order]
        windows, start = [], 0
        for stop in sorted(set(ordered.tolist())):
            rows = int(np.count_nonzero(ordered >= stop))
            ending = int(np.count_nonzero(ordered > stop))
            windows.append(Window(start, int(stop), rows, ending))
            start = int(stop)
        return cls(order, ordered, steps, tuple(windows))

    @property
    def longest(self) -> int:
        return int(self.lengths[0])

    @property
    def given(self) -> np.ndarray:
        """The lengths in the order of ``x``'s sequences (unsorted)."""
        given = np.empty_like(self.lengths)
        given[self.order] = self.lengths
        return given

    def _source_steps(self, reverse: bool) -> np.ndarray:
        """``(T', B)``: which step of the original sequence sorted row ``b`` reads at its
        step ``t`` (its own last step first when reversed); 0 past its length."""
        t = np.arange(self.longest)[:, None]
        steps = self.lengths[None, :] - 1 - t if reverse else np.broadcast_to(
            t, (self.longest, len(self.lengths)))
        return np.where(t < self.lengths[None, :], steps, 0)

    def gather(self, x: Array, xp: Any, reverse: bool) -> Array:
        """``x`` (T, B, ·) sorted, cut to the longest length, each sequence reversed
        within its own length when ``reverse``; zeros past a sequence's length."""
        steps = xp.asarray(self._source_steps(reverse))
        rows = xp.asarray(np.broadcast_to(self.order[None, :], steps.shape))
        found = x[steps, rows]
        valid = xp.asarray(np.arange(self.longest)[:, None] < self.lengths[None, :])
        return xp.where(valid[..., None], found, xp.zeros_like(found))

    def scatter(self, sorted_values: Array, xp: Any, reverse: bool) -> Array:
        """The inverse of :meth:`gather`: ``(T, B, ·)`` in the original order and steps,
        zero past each sequence's length."""
        steps = self._source_steps(reverse)
        valid = np.arange(self.longest)[:, None] < self.lengths[None, :]
        t, b = np.nonzero(valid)
        out = xp.zeros((self.steps, len(self.order), *sorted_values.shape[2:]),
                       dtype=sorted_values.dtype)
        out[xp.asarray(steps[t, b]), xp.asarray(self.order[b])] = sorted_values[
            xp.asarray(t), xp.asarray(b)]
        return out

    def sort_rows(self, value: Array, xp: Any) -> Array:
        """A ``(B, ·)`` array in the sorted order (a copy)."""
        return value[xp.asarray(self.order)]

    def unsort_rows(self, value: Array, xp: Any) -> Array:
        """A sorted ``(B, ·)`` array back in the original order."""
        out = xp.empty_like(value)
        out[xp.asarray(self.order)] = value
        return out


def check_lengths(lengths: Any, batch: int, steps: int) -> np.ndarray:
    """``lengths`` as an int64 array of shape ``(B,)``, each between 1 and ``T``; a
    :class:`DataError` naming the first offending value otherwise."""
    try:
        array = np.asarray(lengths)
    except (TypeError, ValueError) as err:
        raise DataError(f"lengths is not an array of integers ({err})") from None
    if array.dtype.kind == "f" and array.ndim == 1:  # whole floats pass; name one that is not
        broken = np.flatnonzero(~np.isfinite(array) | (array != np.round(array)))
        if broken.size:
            raise DataError(f"lengths holds {array[broken[0]]:g} at index {broken[0]}: give "
                            "whole numbers of steps (int32 or int64)")
    elif array.dtype.kind not in "iuf":  # text, objects, booleans: of any shape
        raise DataError(f"lengths has dtype {array.dtype}; give whole numbers of steps "
                        "(int32 or int64)")
    if array.shape != (batch,):
        raise DataError(f"lengths has shape {array.shape}, but x holds {batch} sequence"
                        f"{'s' if batch != 1 else ''}: give one length per sequence, shape "
                        f"({batch},)")
    for index, value in enumerate(array.tolist()):  # whole floats compared before int64
        if not 1 <= value <= steps:
            why = "a length counts steps: it is never negative" if value < 0 else \
                "every sequence needs at least one step" if value < 1 else \
                f"x has {steps} step{'s' if steps != 1 else ''}"
            shown = value if isinstance(value, int) else f"{value:g}"
            raise DataError(f"lengths holds {shown} at index {index}: {why}")
    return array.astype(np.int64)


# -- one unit: a cell over a sequence, in one direction ------------------------------------

#: An executor for the batch size of a run (a unit keeps them, built on first use).
Compiled = Callable[[int], Executor]


def run_unit(compiled: Compiled, x: Array, start: Mapping[str, Array], xp: Any,
             reverse: bool, packing: Packing | None, progress: Progress | None = None
             ) -> tuple[Array, dict[str, Array]]:
    """One unit over ``x`` (T, B, I) from ``start``: its output ``(T, B, O)`` and final
    states, as the module docstring says."""
    executor = compiled(x.shape[1])
    if packing is None:
        y, final = executor.run(x[::-1] if reverse else x, start, progress)
        return (y[::-1] if reverse else y), final
    xs = packing.gather(x, xp, reverse)
    state = {name: packing.sort_rows(value, xp) for name, value in start.items()}
    finals = {name: xp.empty_like(value) for name, value in state.items()}
    pieces = []
    for window in packing.windows:
        y, final = executor.run(xs[window.start:window.stop, :window.rows],
                                {name: value[:window.rows] for name, value in state.items()},
                                progress)
        pieces.append((window, y))
        for name, value in final.items():
            state[name][:window.rows] = value
            finals[name][window.ending:window.rows] = value[window.ending:]
    y_sorted = _assemble(pieces, packing, xp)
    return packing.scatter(y_sorted, xp, reverse), \
        {name: packing.unsort_rows(value, xp) for name, value in finals.items()}


def _assemble(pieces: list[tuple[Window, Array]], packing: Packing, xp: Any) -> Array:
    """The windows' outputs in one sorted ``(T', B, ·)`` array, zeros where a row ended."""
    first = pieces[0][1]
    out = xp.zeros((packing.longest, len(packing.order), *first.shape[2:]), dtype=first.dtype)
    for window, value in pieces:
        out[window.start:window.stop, :window.rows] = value
    return out


def trace_unit(compiled: Compiled, x: Array, start: Mapping[str, Array], xp: Any,
               reverse: bool, packing: Packing | None, progress: Progress | None = None
               ) -> dict[str, Array]:
    """Every assignment's value at every step of one unit, ``{name: (T, B, width)}``, at
    the step of ``x`` that computed it; zero where a sequence had ended."""
    executor = compiled(x.shape[1])
    if packing is None:
        values = executor.trace(x[::-1] if reverse else x, start, progress)
        return {name: value[::-1] if reverse else value for name, value in values.items()}
    xs = packing.gather(x, xp, reverse)
    state = {name: packing.sort_rows(value, xp) for name, value in start.items()}
    pieces: dict[str, list[tuple[Window, Array]]] = {}
    for window in packing.windows:
        values = executor.trace(xs[window.start:window.stop, :window.rows],
                                {name: value[:window.rows] for name, value in state.items()},
                                progress)
        for name, value in values.items():
            pieces.setdefault(name, []).append((window, value))
        for name in state:
            state[name][:window.rows] = values[name][-1]
    return {name: packing.scatter(_assemble(found, packing, xp), xp, reverse)
            for name, found in pieces.items()}


def grad_unit(compiled: Compiled, x: Array, start: Mapping[str, Array], grad_y: Array,
              grad_final: Mapping[str, Array], xp: Any, reverse: bool,
              packing: Packing | None) -> Gradients:
    """One unit's gradients (see :class:`~lstm_graph.executors.contract.Gradients`), with
    ``x``, ``grad_y`` and ``y`` in the original step order."""
    executor = compiled(x.shape[1])
    if packing is None:
        if not reverse:
            return executor.grad(x, start, grad_y, grad_final)
        found = executor.grad(x[::-1], start, grad_y[::-1], grad_final)
        return Gradients(found.x[::-1], found.weights, found.state, found.y[::-1], found.final)
    xs = packing.gather(x, xp, reverse)
    gys = packing.gather(grad_y, xp, reverse)
    state = {name: packing.sort_rows(value, xp) for name, value in start.items()}
    starts = []
    for window in packing.windows:  # forward, keeping where each window starts
        starts.append({name: value[:window.rows].copy() for name, value in state.items()})
        _, final = executor.run(xs[window.start:window.stop, :window.rows], starts[-1])
        for name, value in final.items():
            state[name][:window.rows] = value
    ends = {name: packing.sort_rows(value, xp) for name, value in grad_final.items()}
    carry: dict[str, Array] = {}
    weights: dict[str, Array] = {}
    grad_x, ys, finals = [], [], {name: xp.empty_like(value) for name, value in state.items()}
    for window, begin in zip(reversed(packing.windows), reversed(starts)):
        rows, ending = window.rows, window.ending
        at_end = {}
        for name in state:  # what reaches each row's state at the window's last step
            value = xp.zeros_like(begin[name])
            if ending and name in carry:
                value[:ending] = carry[name][:ending]
            if name in ends:
                value[ending:] = ends[name][ending:rows]
            at_end[name] = value
        found = executor.grad(xs[window.start:window.stop, :rows], begin,
                              gys[window.start:window.stop, :rows], at_end)
        grad_x.append((window, found.x))
        ys.append((window, found.y))
        for name, value in found.final.items():
            finals[name][ending:rows] = value[ending:]
        for name, value in found.weights.items():
            weights[name] = weights[name] + value if name in weights else value
        carry = found.state
    return Gradients(packing.scatter(_assemble(grad_x[::-1], packing, xp), xp, reverse),
                     weights, {name: packing.unsort_rows(value, xp)
                               for name, value in carry.items()},
                     packing.scatter(_assemble(ys[::-1], packing, xp), xp, reverse),
                     {name: packing.unsort_rows(value, xp) for name, value in finals.items()})
