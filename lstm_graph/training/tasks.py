"""Tasks to train a cell on: the adding problem, the copy task, or a user's own data.

A :class:`Task` makes batches ``(x, target)`` from a seeded generator and says
how its loss is counted and what a memoryless guess scores (the baseline a
trained cell must beat):

- **adding** (Hochreiter & Schmidhuber 1997): two channels, random values in
  [0, 1) and a marker that is 1 at two positions (one in each half); the target
  is the sum of the two marked values, read at the last step. Guessing 1 gives
  the baseline mean squared error 1/6 ≈ 0.167.
- **copy** (as in Arjovsky et al. 2016): ten symbols from an alphabet of eight,
  then ``length`` blanks with a delimiter at the last one, then the cell must
  repeat the symbols. Inputs and targets are one-hot; the loss is the
  cross-entropy over every step; the baseline (blanks, then a uniform guess over
  the alphabet) is ``10·ln 8 / T``.
- **a file**: an ``.npz`` with ``x`` of shape ``(T, N, I)`` and ``y`` of shape
  ``(N, O)`` (a target read at the last step) or ``(T, N, O)`` (one every step),
  mean squared error; the baseline is predicting ``y``'s mean. A tenth of the
  sequences (at least one, chosen the same way every time) is held out: training
  never draws them, and the loss is measured on them.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstm_graph.checks import whole
from lstm_graph.errors import DataError, inert
from lstm_graph.formats.arrays import open_npz
from lstm_graph.formats.memory import Allocation, allocation, require
from lstm_graph.language.parser import did_you_mean

#: How a task's loss is counted: squared error at the last step or every step, or
#: cross-entropy every step.
LOSSES = ("mse_last", "mse_steps", "ce_steps")
#: The copy task's symbols to remember and its alphabet (blank is 0, the delimiter K+1).
COPY_SYMBOLS, COPY_ALPHABET = 10, 8


@dataclass(frozen=True)
class Task:
    """What to learn: batches of ``(x (T, B, I), target)``, a loss, a baseline."""

    name: str
    length: int  # T
    input_size: int
    output_size: int
    loss: str  # one of LOSSES
    baseline: float
    sample: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    largest: float = 1.0  # the largest magnitude in x and the targets
    largest_in: str = "the task"  # where it is, as a message names it (a file's x or y)
    stored: tuple[Allocation, ...] = ()  # the data it holds (a file's x and y)
    #: Batches to measure the loss on, of sequences ``sample`` never gives (a file's
    #: held-out tenth); None: ``sample``'s own, whose sequences are new each time.
    held_out: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]] | None = None
    #: What tells this task's data from other data of the same name (a file's SHA-256 of
    #: its arrays; "" where the name and length say it all): a checkpoint records it.
    digest: str = ""


def adding(length: int = 50) -> Task:
    """The adding problem with sequences of ``length`` steps."""
    length = whole(length, "the adding problem's length")
    if length < 2:
        raise DataError(f"the adding problem needs sequences of at least 2 steps, not {length}")

    def sample(rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        values = rng.random((length, batch))
        half = length // 2
        first = rng.integers(0, half, size=batch)
        second = rng.integers(half, length, size=batch)
        markers = np.zeros((length, batch))
        markers[first, np.arange(batch)] = 1.0
        markers[second, np.arange(batch)] = 1.0
        x = np.stack([values, markers], axis=-1)
        target = (values[first, np.arange(batch)] + values[second, np.arange(batch)])[:, None]
        return x, target

    return Task("adding", length, 2, 1, "mse_last", 1 / 6, sample)


def copy(delay: int = 20) -> Task:
    """The copy task: remember ten symbols over ``delay`` blank steps."""
    delay = whole(delay, "the copy task's delay")
    if delay < 1:
        raise DataError(f"the copy task needs a delay of at least 1 step, not {delay}")
    length = COPY_SYMBOLS + delay + COPY_SYMBOLS
    classes = COPY_ALPHABET + 2  # blank, the symbols, the delimiter

    def sample(rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        symbols = rng.integers(1, COPY_ALPHABET + 1, size=(COPY_SYMBOLS, batch))
        inputs = np.zeros((length, batch), dtype=np.int64)
        inputs[:COPY_SYMBOLS] = symbols
        inputs[COPY_SYMBOLS + delay - 1] = COPY_ALPHABET + 1
        targets = np.zeros((length, batch), dtype=np.int64)
        targets[-COPY_SYMBOLS:] = symbols
        return np.eye(classes)[inputs], targets

    baseline = COPY_SYMBOLS * math.log(COPY_ALPHABET) / length
    return Task(f"copy{delay}", length, classes, COPY_ALPHABET + 1, "ce_steps", baseline, sample)


#: The largest magnitude a task file's targets may have: a difference of two such numbers
#: squared (a squared error) stays within float64.
_SQUARED_MOST = math.sqrt(float(np.finfo(np.float64).max)) / 2
#: Numbers checked at a time for NaN and infinity (the check makes one boolean per number).
_BLOCK = 1 << 20


def from_file(path: str | os.PathLike[str]) -> Task:
    """A user's ``.npz`` of ``x`` ``(T, N, I)`` and ``y`` ``(N, O)`` or ``(T, N, O)``: names,
    shapes and dtypes checked by the headers, then read once ``x`` and ``y`` and what is
    made of them (``y`` in float64 for the baseline) fit in memory. ``x`` stays in its own
    dtype: a batch is converted as it is drawn."""
    path = Path(path)
    stored = open_npz(path, expected="an .npz of x and y (numpy.savez(path, x=…, y=…))")
    missing = [k for k in ("x", "y") if k not in stored]
    if missing:
        raise DataError(f"{path}: a task file holds arrays x (T, N, I) and y (N, O) or "
                        f"(T, N, O); it has no {', '.join(missing)} (it holds "
                        f"{', '.join(stored) or 'nothing'})")
    x_stored, y_stored = stored["x"], stored["y"]
    for name, value in (("x", x_stored), ("y", y_stored)):
        if value.dtype.kind not in "fiu":
            raise DataError(f"{path}: {name} must hold finite real numbers "
                            f"(it has dtype {value.dtype})")
    x_shape, y_shape = x_stored.shape, y_stored.shape
    if len(x_shape) != 3 or min(x_shape) < 1:
        raise DataError(f"{path}: x has shape {x_shape}; expected (T, N, I)")
    steps, count = x_shape[:2]
    if len(y_shape) == 2 and y_shape[0] == count:
        loss = "mse_last"
    elif len(y_shape) == 3 and y_shape[:2] == (steps, count):
        loss = "mse_steps"
    else:
        raise DataError(f"{path}: y has shape {y_shape}; with x of shape {x_shape} expected "
                        f"({count}, O) or ({steps}, {count}, O)")
    if y_shape[-1] < 1:
        raise DataError(f"{path}: y has shape {y_shape}: no outputs to learn (O is 0)")
    if count < 2:
        raise DataError(f"{path}: x holds one sequence; a task file needs at least 2, as a "
                        "tenth of them (at least one) is held out to measure the loss on")
    held_arrays = (allocation(f"{path}: x", x_shape, x_stored.dtype),
                   allocation(f"{path}: y in float64", y_shape, np.float64))
    # the names of the arrays held name the file
    require([*held_arrays, allocation("y as stored, and its deviations", (2, *y_shape),
                                      np.float64)], "reading the task")
    x = x_stored.read()
    y = y_stored.read().astype(np.float64)
    for name, array in (("x", x), ("y", y)):
        flat = array.reshape(-1)
        if not all(np.isfinite(flat[k:k + _BLOCK]).all() for k in range(0, flat.size, _BLOCK)):
            raise DataError(f"{path}: {name} must hold finite real numbers "
                            f"(it holds NaN or infinity)")
    targets = max(abs(float(y.max())), abs(float(y.min())))
    if targets > _SQUARED_MOST:
        raise DataError(f"{path}: y holds {targets:.3g}, whose squared errors would overflow "
                        "even float64; scale y down")
    inputs = max(abs(float(x.max())), abs(float(x.min())))
    largest, largest_in = (inputs, f"{path}: x") if inputs >= targets else (targets, f"{path}: y")
    with np.errstate(over="ignore"):
        baseline = float(np.mean((y - y.mean(axis=-2 if loss == "mse_last" else (0, 1))) ** 2))
    if not math.isfinite(baseline):  # each squared error fits; their sum does not
        raise DataError(f"{path}: y holds {targets:.3g}: the mean of its squared deviations "
                        "overflows float64; scale y down")
    if baseline == 0:
        raise DataError(f"{path}: y is the same in every sequence, so there is nothing to learn "
                        "(predicting its mean is exact)")

    # the same split for every run and seed (a sweep compares cells on one held-out set)
    order = np.random.default_rng(0).permutation(count)
    held, kept = np.sort(order[:max(1, count // 10)]), np.sort(order[max(1, count // 10):])

    def rows(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[:, chosen], (y[chosen] if loss == "mse_last" else y[:, chosen])

    def sample(rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        return rows(kept[rng.integers(0, kept.size, size=batch)])

    def held_out(rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Every held-out sequence, or ``batch`` of them where there are more."""
        return rows(held if held.size <= batch else
                    np.sort(rng.choice(held, size=batch, replace=False)))

    digest = hashlib.sha256()
    for array in (x, y):  # x as stored, y as read in float64: shapes, dtypes, then numbers
        digest.update(f"{array.shape} {array.dtype.str};".encode())
        digest.update(np.ascontiguousarray(array).data)
    return Task(path.stem, steps, x_shape[2], y_shape[-1], loss, baseline, sample, largest,
                largest_in, stored=held_arrays, held_out=held_out, digest=digest.hexdigest())


def named(spec: str, length: int) -> Task:
    """``adding``, ``copy`` (with ``length`` steps or delay), or the path of a task file."""
    if spec == "adding":
        return adding(length)
    if spec == "copy":
        return copy(length)
    path = Path(spec)
    if path.suffix.lower() == ".npz" or path.exists():
        return from_file(path)
    close = did_you_mean(spec, ["adding", "copy"])
    raise DataError(f"unknown task '{inert(spec)}'{close}: use adding, copy, or the path of "
                    "an .npz file holding x (T, N, I) and y (N, O) or (T, N, O)")
