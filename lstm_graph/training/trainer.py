"""Training a cell: a linear readout, Adam with gradient clipping, checkpoints that resume.

A training step draws a batch from the task (seeded by the step number, so a
resumed run sees exactly the batches an uninterrupted one would), runs the cell
forward and backward through the executor the registry picks, as every gradient
is computed (the native step's backward pass compiled to C where a compiler is
found: :meth:`~lstm_graph.executors.contract.Executor.forward`, then
``backward``), puts a linear readout ``o = y·Rᵀ + r`` on the cell's output, and
updates every parameter with Adam after clipping the global gradient norm, both
in one pass over the weights (:mod:`~lstm_graph.training.fused`). The cell's parameters keep their
names (``f.W_x`` …); the readout's are ``readout.W`` and ``readout.b``.

A checkpoint (an ``.npz``, written whole or not at all) holds the parameters,
Adam's moments, the step and the loss history; :func:`train` with
``resume=True`` continues from it, once every part of it is checked (shapes, real
and finite numbers, counters that agree), and :func:`train` given ``stop`` ends at a
step's end with a checkpoint when ``stop()`` says so (the command line's SIGTERM).

Every array training holds (the task's data and the batches made from it, the
weights, their gradients, Adam's moments, what the backward pass keeps, the
held-out batch and its run, the loss history) is sized by :func:`allocations`
and refused before anything is drawn or run when it would not fit in memory
(:mod:`lstm_graph.formats.memory`).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lstm_graph.cell import Cell
from lstm_graph.checks import run_allocations, whole, work_allocations
from lstm_graph.errors import (
    DataError,
    LstmGraphError,
    LstmGraphWarning,
    WeightsError,
    inert,
)
from lstm_graph.executors import registry
from lstm_graph.executors.backends import DTYPES
from lstm_graph.executors.contract import Executor, Spec
from lstm_graph.formats.arrays import open_npz
from lstm_graph.formats.files import check_output, write_npz
from lstm_graph.formats.memory import Allocation, allocation, require
from lstm_graph.formats.trace import digest
from lstm_graph.training.fused import adam_step
from lstm_graph.training.tasks import Task

#: Called after each step with the step number (from 1) and its training loss.
Report = Callable[[int, float], None]
#: Sequences in the held-out batch the evaluation loss is measured on.
EVAL_BATCH = 512


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) on a dict of NumPy arrays, updated in place."""

    lr: float = 2e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0

    def update(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray],
               max_norm: float = 0.0) -> float:
        """One step on every parameter of ``grads``, in place, after clipping their global
        norm to ``max_norm`` (0: not clipped), in one fused pass over the weights
        (:func:`~lstm_graph.training.fused.adam_step`); returns the norm before clipping."""
        self.steps += 1
        names = list(grads)
        dtype = params[names[0]].dtype
        grad = [np.ascontiguousarray(grads[name], dtype=dtype) for name in names]
        for moments in (self.m, self.v):
            for name in names:
                if name not in moments:
                    moments[name] = np.zeros_like(params[name])
        m, v = [self.m[name] for name in names], [self.v[name] for name in names]
        return adam_step([params[name] for name in names], grad, m, v, self.lr, self.beta1,
                         self.beta2, self.eps, self.steps, max_norm)


def _log_softmax(out: np.ndarray) -> np.ndarray:
    """``log(softmax(out))`` over the last axis, one array made (``out`` is kept)."""
    log_p: np.ndarray = out - out.max(axis=-1, keepdims=True)
    log_p -= np.log(np.sum(np.exp(log_p), axis=-1, keepdims=True))
    return log_p


def task_loss(task: Task, out: np.ndarray, target: np.ndarray) -> float:
    """The task's loss on the readout ``out``, without its gradient: what the held-out
    evaluation needs (its gradient took as much memory again, for nobody)."""
    if task.loss == "ce_steps":
        chosen = np.take_along_axis(_log_softmax(out), target[..., None], axis=-1)
        return float(-chosen.sum() / target.size)
    return float(np.mean((out - target) ** 2))


def loss_and_gradient(task: Task, out: np.ndarray, target: np.ndarray
                      ) -> tuple[float, np.ndarray]:
    """The task's loss on the readout ``out`` and its gradient with respect to ``out``."""
    if task.loss == "ce_steps":  # out (T, B, classes), target (T, B) class numbers
        log_p = _log_softmax(out)
        chosen = np.take_along_axis(log_p, target[..., None], axis=-1)[..., 0]
        count = target.size
        grad = np.exp(log_p)
        np.put_along_axis(grad, target[..., None],
                          np.take_along_axis(grad, target[..., None], axis=-1) - 1, axis=-1)
        return float(-chosen.sum() / count), grad / count
    error = out - target
    return float(np.mean(error ** 2)), 2 * error / error.size


class History:
    """``(step, loss)`` pairs in a float64 array that grows in place (16 bytes a step, not
    the hundred of a Python tuple): ``rows()`` is the filled part, ``(n, 2)``."""

    def __init__(self, rows: np.ndarray | None = None):
        self._data = np.zeros((16, 2)) if rows is None or not len(rows) else rows
        self._size = 0 if rows is None else len(rows)

    def append(self, step: int, loss: float) -> None:
        if self._size == len(self._data):
            grown = np.zeros((2 * len(self._data), 2))
            grown[:self._size] = self._data
            self._data = grown
        self._data[self._size] = (step, loss)
        self._size += 1

    def rows(self) -> np.ndarray:
        return self._data[:self._size]

    def __len__(self) -> int:
        return self._size


@dataclass
class Trained:
    """What :func:`train` returns: the parameters and how the losses went (``losses`` and
    ``evals``: float64 arrays of ``(step, loss)`` rows)."""

    weights: dict[str, np.ndarray]  # the cell's, in its names
    readout: dict[str, np.ndarray]  # readout.W (O, H), readout.b (O,)
    losses: np.ndarray  # (steps, 2): step, training loss
    evals: np.ndarray  # (n, 2): step, loss on the held-out batch
    baseline: float
    seconds: float  # in the training steps (not the executor's compiling, before them)
    steps: int
    resumed_from: int = 0  # the step of the checkpoint a resumed run began at (0: none)


class Stopped(Exception):
    """Training stopped early when asked (:func:`train`'s ``stop``), at the end of ``step``,
    with a checkpoint written there when there is a ``checkpoint``."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"stopped at step {step}")
        self.step, self.checkpoint = step, checkpoint


class Trainer:
    """The training of one cell on one task (see the module docstring)."""

    def __init__(self, cell: Cell, task: Task, hidden_size: int, batch: int = 64,
                 lr: float = 2e-3, max_norm: float = 1.0, seed: int = 0,
                 dtype: str = "float32"):
        self.cell, self.task, self.hidden, self.batch = cell, task, hidden_size, batch
        self.max_norm, self.seed, self.dtype = max_norm, seed, np.dtype(dtype)
        (output,) = cell.graph.outputs
        self.width = cell.schedule.width(output, task.input_size, hidden_size)
        rng = np.random.default_rng([seed, 1])
        bound = 1 / math.sqrt(self.width)
        self.params = cell.random_weights(task.input_size, hidden_size, seed, self.dtype.name)
        taken = [name for name in self.params if name.startswith("readout.")]
        if taken:  # the readout's own parameters would replace them, or be dropped with them
            raise DataError(f"cell '{cell.name}' has a value named readout, whose parameters "
                            f"({', '.join(taken)}) would be taken for the trainer's readout "
                            "(readout.W, readout.b); rename the value")
        self.params["readout.W"] = rng.uniform(-bound, bound, (task.output_size, self.width)) \
            .astype(self.dtype)
        self.params["readout.b"] = np.zeros(task.output_size, dtype=self.dtype)
        self.adam = Adam(lr)
        self.losses = History()
        self.evals = History()
        self.step = 0
        self.seconds = 0.0
        self._eval = (task.held_out or task.sample)(np.random.default_rng([seed, 2**31]),
                                                    EVAL_BATCH)
        spec = Spec(cell.schedule, np, self._cell_params(), batch, task.input_size, hidden_size,
                    self.dtype)
        #: What runs the cell forward and backward: the registry's choice for ``plan``.
        self.executor: Executor = registry.build("plan", spec, "numpy", work="grad")
        self._grad_y: np.ndarray | None = None  # the loss's gradient on y, kept step to step
        # one step of zeros through both passes, so that the executor's code is compiled (or
        # loaded) now and ``seconds`` counts training only (a sweep's first run on a worker
        # took 1.3-2.1 s more than the same run after it)
        warm = self.executor.forward(np.zeros((1, batch, task.input_size), dtype=self.dtype),
                                     self._zeros(batch))
        self.executor.backward(warm, np.zeros_like(warm.y), {})

    def _cell_params(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.params.items() if not k.startswith("readout.")}

    def _readout(self, y: np.ndarray) -> np.ndarray:
        used = y[-1] if self.task.loss == "mse_last" else y
        return np.asarray(used @ self.params["readout.W"].T + self.params["readout.b"])

    def evaluate(self) -> float:
        """The loss on the held-out batch (the same every time), run by the default executor."""
        x, target = self._eval
        cell_params = {k: v for k, v in self.params.items() if not k.startswith("readout.")}
        # sizes given, not read off the weights: a cell may have none (only the readout learns)
        run = self.cell.compile(input_size=self.task.input_size, hidden_size=self.hidden,
                                weights=cell_params or None, dtype=self.dtype.name)
        y, _ = run(x.astype(self.dtype))
        return task_loss(self.task, self._readout(np.asarray(y)), target)

    def _zeros(self, batch: int) -> dict[str, np.ndarray]:
        return {s: np.zeros((batch, self.hidden), dtype=self.dtype) for s in self.cell.graph.states}

    def train_step(self) -> float:
        """One step of Adam on a fresh batch; returns its loss."""
        began = time.perf_counter()
        self.step += 1
        x, target = self.task.sample(np.random.default_rng([self.seed, self.step]), self.batch)
        executor = self.executor
        executor.update(self._cell_params())  # after Adam's last step, or a checkpoint's
        tape = executor.forward(x.astype(self.dtype), self._zeros(self.batch))
        out = self._readout(tape.y)
        loss, grad_out = loss_and_gradient(self.task, out, target)
        readout = self.params["readout.W"]
        if self._grad_y is None or self._grad_y.shape != tape.y.shape:
            self._grad_y = np.zeros_like(tape.y)
        grad_y = self._grad_y  # only its last step is written for a loss at the last step
        if self.task.loss == "mse_last":
            grad_y[-1] = grad_out @ readout
            used = tape.y[-1]
        else:
            grad_y[...] = grad_out @ readout
            used = tape.y.reshape(-1, self.width)
            grad_out = grad_out.reshape(-1, grad_out.shape[-1])
        grads = dict(executor.backward(tape, grad_y, {}).weights)
        grads["readout.W"] = grad_out.T @ used
        grads["readout.b"] = grad_out.sum(axis=0)
        self.adam.update(self.params, grads, self.max_norm)
        self.losses.append(self.step, loss)
        self.seconds += time.perf_counter() - began
        return loss

    def finite(self, advice: str) -> None:
        """Refuse weights Adam's last step made infinite or NaN, naming the first (a loss
        can still be finite after an update that overflowed): asked before they are
        evaluated or saved, not at every step (a pass over every weight)."""
        for name, value in self.params.items():
            if not np.all(np.isfinite(value)):
                raise DataError(f"the weights became NaN or infinite at step {self.step} "
                                f"({name} first); {advice}")

    def result(self) -> Trained:
        weights = {k: v for k, v in self.params.items() if not k.startswith("readout.")}
        readout = {k: v for k, v in self.params.items() if k.startswith("readout.")}
        return Trained(weights, readout, self.losses.rows(), self.evals.rows(),
                       self.task.baseline, self.seconds, self.step)

    # -- checkpoints -------------------------------------------------------------------------

    def _meta(self) -> dict[str, object]:
        """What makes a run this run: a checkpoint of another is not resumed (the cell's
        equations and a task file's data by their SHA-256, as a trace records its cell)."""
        return {"cell": self.cell.name, "cell.sha256": digest(self.cell.schedule),
                "task": self.task.name, "task.sha256": self.task.digest,
                "length": self.task.length, "hidden_size": self.hidden, "batch": self.batch,
                "seed": int(self.seed), "dtype": self.dtype.name, "lr": float(self.adam.lr),
                "clip": float(self.max_norm)}  # NumPy numbers as JSON's

    def save(self, path: Path) -> None:
        """Everything a resumed run needs, in one ``.npz`` written whole or not at all."""
        arrays: dict[str, np.ndarray] = {f"param/{k}": v for k, v in self.params.items()}
        arrays.update({f"adam.m/{k}": v for k, v in self.adam.m.items()})
        arrays.update({f"adam.v/{k}": v for k, v in self.adam.v.items()})
        arrays["losses"] = self.losses.rows()
        arrays["evals"] = self.evals.rows()
        counters = {"step": self.step, "adam_steps": self.adam.steps, "seconds": self.seconds}
        arrays["meta"] = np.frombuffer(json.dumps({**self._meta(), **counters},
                                                  sort_keys=True).encode(), dtype=np.uint8)
        write_npz(path, arrays)

    def load(self, path: Path) -> None:
        """Continue from a checkpoint of the same cell, task and settings, every part of it
        checked first (a damaged or edited file is refused, never half-used)."""
        stored = open_npz(path, WeightsError, "the .npz checkpoint train writes")
        history = [a for a in stored.values() if a.name in ("losses", "evals")]
        require([*(allocation(a.name, a.shape, a.dtype) for a in stored.values()),
                 *(allocation(f"{a.name} checked", (3, *a.shape), np.float64) for a in history)],
                "resuming from it", str(path))
        arrays = {name: array.read() for name, array in stored.items()}
        try:
            meta = json.loads(bytes(arrays["meta"]).decode())
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, RecursionError):
            meta = None
        if not isinstance(meta, dict):
            raise DataError(f"{path}: not a checkpoint of lstm-graph train")
        expected = self._meta()
        lacking = [k for k in expected if k not in meta and k not in LATER_KEYS]
        if lacking:  # every lstm-graph wrote these: an edited file
            raise DataError(f"{path}: a damaged checkpoint (its record lacks "
                            f"{', '.join(lacking)}, so it cannot be checked against this "
                            "run); start afresh without --resume")
        # another cell or task is said before its arrays' names (another cell's, or
        # another task's readout) make the file look damaged; a task's name holds the
        # length given for it (copy10), its ``length`` the steps made of that
        shown = [k for k in expected if k in meta and meta[k] != expected[k]
                 and not (k == "length" and meta.get("task") != expected["task"])]
        different = [f"{k} {_shown(meta[k])} (now {_shown(expected[k])})" for k in shown]
        if different:
            raise DataError(f"{path}: a checkpoint of another run: {'; '.join(different)}; "
                            "train with the same settings or start afresh without --resume")
        names = {f"{prefix}{name}" for name in self.params
                 for prefix in ("param/", "adam.m/", "adam.v/")} | {"losses", "evals", "meta"}
        missing, extra = sorted(names - set(arrays)), sorted(set(arrays) - names)
        if missing or extra:
            said = (f"no array {', '.join(missing[:3])}" if missing else "") + \
                ("; " if missing and extra else "") + \
                (f"an array {', '.join(extra[:3])} this run has no place for" if extra else "")
            raise DataError(f"{path}: a damaged checkpoint ({said}); start afresh without "
                            "--resume")
        unrecorded = [k for k in LATER_KEYS if k not in meta]
        if unrecorded:  # an earlier lstm-graph's checkpoint: resumed, unchecked on these
            warnings.warn(f"{path} was written before checkpoints recorded "
                          f"{', '.join(unrecorded)}; it is resumed without checking them",
                          LstmGraphWarning, stacklevel=2)
        try:
            params = {name: _checked(arrays[f"param/{name}"], value, f"param/{name}")
                      for name, value in self.params.items()}
            moments = [{name: _checked(arrays[f"{prefix}{name}"], value, f"{prefix}{name}",
                                       moment=True, positive=prefix == "adam.v/")
                        for name, value in self.params.items()}
                       for prefix in ("adam.m/", "adam.v/")]
            step, adam_steps = _count(meta, "step"), _count(meta, "adam_steps")
            seconds = meta["seconds"]
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
                    not 0 <= seconds < math.inf:
                raise ValueError(f"seconds is {seconds!r}, not a time")
            if adam_steps != step:
                raise ValueError(f"Adam took {adam_steps} steps, but the step is {step}")
            losses = _history(arrays["losses"], "losses", step, exact=True)
            evals = _history(arrays["evals"], "evals", step, exact=False)
        except KeyError as err:  # the arrays are checked above: one of the record's counts
            raise DataError(f"{path}: a damaged checkpoint (its record lacks {err.args[0]}); "
                            "start afresh without --resume") from None
        except (ValueError, TypeError) as err:
            raise DataError(f"{path}: a damaged checkpoint ({err}); start afresh without "
                            "--resume") from None
        self.params = params
        self.adam.m, self.adam.v = moments
        self.adam.steps, self.step, self.seconds = adam_steps, step, float(seconds)
        self.losses, self.evals = History(losses), History(evals)


def _checked(value: np.ndarray, like: np.ndarray, name: str, moment: bool = False,
             positive: bool = False) -> np.ndarray:
    """``value`` (a checkpoint's array) if it has ``like``'s shape and holds finite real
    numbers (and none below zero where ``positive``: Adam's second moments), as a
    C-contiguous array of ``like``'s dtype, which the fused update reads through raw
    pointers (a ``moment`` is saved in float32 or float64, whatever the weights'). A NaN
    saved in a checkpoint would otherwise be blamed on the learning rate."""
    if value.shape != like.shape or value.dtype.kind not in "fiu":
        raise ValueError(f"{name} has shape {value.shape} and dtype {value.dtype}, not "
                         f"{like.shape} of real numbers")
    if moment and value.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} has dtype {value.dtype}; Adam's moments are float32 or "
                         "float64")
    dtype = like.dtype
    if not moment and value.dtype != dtype:  # a checkpoint saves them in the run's dtype
        raise ValueError(f"{name} has dtype {value.dtype}, not the run's {dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.ascontiguousarray(value, dtype=dtype)
    if not np.all(np.isfinite(converted)):
        raise ValueError(f"{name} holds NaN or infinity, or numbers too large for {dtype}")
    if positive and np.any(converted < 0):
        raise ValueError(f"{name} holds negative numbers, which Adam's second moments "
                         "never are")
    return converted


#: What a checkpoint records that earlier ones did not (see :meth:`Trainer._meta`).
LATER_KEYS = ("cell.sha256", "task.sha256", "lr", "clip")


def checkpoint_step(path: Path) -> int | None:
    """The step the checkpoint of ``lstm-graph train`` at ``path`` was written at (its
    record alone is read); None where ``path`` is no such checkpoint."""
    try:
        record = open_npz(path, WeightsError).get("meta")
        if record is None or record.nbytes > 1 << 20:  # a record is a few hundred bytes
            return None
        meta = json.loads(bytes(record.read()).decode())
    except (LstmGraphError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    step = meta.get("step") if isinstance(meta, dict) and "cell" in meta else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _shown(value: object) -> str:
    """A checkpoint's setting as a message quotes it: a digest by its first 12 digits."""
    if isinstance(value, str) and len(value) == 64:
        return repr(f"{value[:12]}…")
    return inert(repr(value))


def _count(meta: dict[str, object], key: str) -> int:
    """A whole number of steps from a checkpoint's record: 0 or more."""
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} is {value!r}, not a number of steps")
    return value


def _history(value: np.ndarray, name: str, step: int, exact: bool) -> np.ndarray:
    """A checkpoint's ``(step, loss)`` rows: float64 ``(n, 2)`` with steps from 1 to ``step``
    in order (every one of them when ``exact``) and losses finite and not negative."""
    if value.ndim != 2 or value.shape[1:] != (2,) or value.dtype.kind not in "fiu":
        raise ValueError(f"{name} has shape {value.shape} and dtype {value.dtype}, not (n, 2)")
    rows = value.astype(np.float64, copy=False)
    steps = rows[:, 0]
    if exact and (len(rows) != step or not np.array_equal(steps, np.arange(1, step + 1))):
        raise ValueError(f"{name} does not hold steps 1 to {step}")
    if len(rows) and (np.any(np.diff(steps) <= 0) or steps[0] < 1 or steps[-1] > step):
        raise ValueError(f"{name} holds steps out of order or past step {step}")
    if not np.all(np.isfinite(rows[:, 1])) or np.any(rows[:, 1] < 0):
        raise ValueError(f"{name} holds a loss that is NaN, infinite or below 0 (a run stops "
                         "at a loss that is not finite, and its losses are never negative)")
    return rows


def allocations(cell: Cell, task: Task, hidden_size: int, steps: int, batch: int,
                dtype: np.dtype) -> list[Allocation]:
    """Every array :func:`train` holds at once, the largest of each kind: the task's
    stored data, the weights (the largest drawn in float64 first) and as many again for
    their gradients, Adam's two moments, the compiled backward pass's packed copy and
    the update's temporaries; a batch (in float64 and in ``dtype``) and what the forward
    and backward passes over it keep; the held-out batch and its run; the loss history."""
    schedule = cell.schedule
    inputs, outputs, length = task.input_size, task.output_size, task.length
    (output,) = cell.graph.outputs
    width = schedule.width(output, inputs, hidden_size)
    shapes = {**schedule.param_shapes(inputs, hidden_size),
              "readout.W": (outputs, width), "readout.b": (outputs,)}
    largest = max(shapes, key=lambda name: math.prod(shapes[name]))
    count = sum(math.prod(shape) for shape in shapes.values())
    found = [*task.stored,
             allocation("the weights", (count,), dtype),
             allocation(f"{largest} as drawn (float64)", shapes[largest], np.float64),
             allocation("their gradients", (count,), dtype),
             allocation("Adam's first and second moments", (2, count), dtype),
             allocation("the backward pass's packed weights", (count,), dtype),
             allocation(f"the update's temporaries of {largest}", (4, *shapes[largest]),
                        np.float64),
             allocation("a batch of x (float64)", (length, batch, inputs), np.float64),
             *run_allocations(schedule, length, batch, inputs, hidden_size, dtype,
                              np.dtype(np.float64)),
             *work_allocations(schedule, "grad", length, batch, inputs, hidden_size, dtype),
             allocation("the gradient of x", (length, batch, inputs), dtype),
             allocation("the readout and its gradients", (3, length, batch, max(outputs,
                                                                                  width)),
                        np.float64),
             allocation("the held-out batch (float64)", (length, EVAL_BATCH, inputs),
                        np.float64),
             *(replace(a, name=f"{a.name} of the held-out batch") for a in run_allocations(
                 schedule, length, EVAL_BATCH, inputs, hidden_size, dtype,
                 np.dtype(np.float64))),
             allocation("the held-out batch's readout and its loss",
                        (3, 1 if task.loss == "mse_last" else length, EVAL_BATCH, outputs),
                        np.float64),
             allocation("the loss history at its largest", (2 * steps, 2), np.float64)]
    return found


def check_fits(cell: Cell, task: Task, hidden_size: int, steps: int, batch: int,
               dtype: str, runs: int = 1) -> None:
    """Refuse training whose arrays (:func:`allocations`) would not fit in memory, naming
    the largest; ``runs`` of it at once (a sweep's on the local cluster, one a core)."""
    at_once = f", {runs} runs at once" if runs > 1 else ""
    require(allocations(cell, task, hidden_size, steps, batch, np.dtype(dtype)) * runs,
            f"training {cell.name} with H={hidden_size}, batch {batch}, {steps} "
            f"steps{at_once}")


def train(cell: Cell, task: Task, hidden_size: int, steps: int, batch: int = 64,
          lr: float = 2e-3, max_norm: float = 1.0, seed: int = 0,
          dtype: str | np.dtype | type = "float32",
          checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 500,
          resume: bool = False,
          eval_every: int = 100, report: Report | None = None,
          stop: Callable[[], bool] | None = None,
          begin: Callable[[int], None] | None = None) -> Trained:
    """Train ``cell`` on ``task`` for ``steps`` steps in all (a resumed run counts the
    steps it had done). With ``checkpoint``, progress is saved there every
    ``checkpoint_every`` steps and at the end; ``resume`` continues from it. ``stop`` is
    asked after every step: when it says so, the step's checkpoint is written and
    :class:`Stopped` raised. Work that would not fit in memory is refused first
    (:func:`allocations`). ``begin`` is called with the step training starts from once
    everything is checked and any checkpoint read, before the first step: where a caller
    starts showing progress, so that nothing shows for work refused. ``dtype``: a name or
    NumPy's dtype (``np.float64``); ``checkpoint``: a path, a place it cannot be written
    refused before the first step.

    >>> import lstm_graph
    >>> from lstm_graph.training import adding, train
    >>> done = train(lstm_graph.load_cell("lstm"), adding(10), hidden_size=8, steps=3, batch=4)
    >>> done.steps, sorted(done.readout)
    (3, ['readout.W', 'readout.b'])
    """
    for what, count in (("steps", steps), ("batch", batch), ("hidden_size", hidden_size),
                        ("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        whole(count, what, 1)
    for what, number in (("lr", lr), ("max_norm", max_norm)):
        if isinstance(number, (bool, np.bool_)) or not isinstance(
                number, (int, float, np.integer, np.floating)):
            raise DataError(f"{what} is {number!r}, of type {type(number).__name__}; it must "
                            "be a number")
    if not 0 < lr < math.inf or not 0 <= max_norm < math.inf:
        raise DataError(f"lr is {lr} and max_norm {max_norm}: the learning rate must be a "
                        "finite number above 0, the clip a finite number, 0 or more")
    whole(seed, "seed", 0)
    try:
        named = np.dtype(dtype).name
    except TypeError:
        named = repr(dtype)  # refused next
    if named not in DTYPES:
        raise DataError(f"dtype is {dtype!r}; train in one of {', '.join(DTYPES)}")
    if task.largest > float(np.finfo(named).max):  # compared as Python floats: no warning
        raise DataError(f"{task.largest_in} holds {task.largest:.3g}, too large for {named}; "
                        "train in float64 (--dtype float64)")
    check_fits(cell, task, hidden_size, steps, batch, named)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume and checkpoint is None:
        raise DataError("nothing to resume: resume=True goes on from a checkpoint, and no "
                        "checkpoint path was given")
    if resume and checkpoint is not None and not checkpoint.exists():
        raise DataError(f"nothing to resume: no checkpoint at {checkpoint}")
    if checkpoint is not None:
        check_output(checkpoint)
    trainer = Trainer(cell, task, hidden_size, batch, lr, max_norm, seed, named)
    if resume and checkpoint is not None:
        trainer.load(checkpoint)
    if trainer.step > steps:  # it would train no step and report the checkpoint's count
        raise DataError(f"the checkpoint {checkpoint} is at step {trainer.step}, past the "
                        f"{steps} step{'s' if steps != 1 else ''} asked for in all; ask for "
                        "more to train on")
    resumed_from = trainer.step
    if begin is not None:
        begin(resumed_from)
    advice = ("lower the learning rate (--lr) or the gradient clip (--clip)" if max_norm > 0
              else "lower the learning rate (--lr), or clip the gradient (--clip, e.g. 1)")
    while trainer.step < steps:
        with np.errstate(over="ignore", invalid="ignore"):  # a NaN loss is said below
            loss = trainer.train_step()
        if not math.isfinite(loss) and trainer.step == resumed_from + 1:  # no update yet
            weights = "its initial weights" if resumed_from == 0 else "the checkpoint's weights"
            raise DataError(f"the training loss is {loss} at step {trainer.step}, before any "
                            f"update: the cell's output with {weights} is not finite (its "
                            "values grow past what the dtype holds): train in float64 "
                            "(--dtype float64), or bound the cell's values")
        if not math.isfinite(loss):
            raise DataError(f"the training loss became {loss} at step {trainer.step}; {advice}")
        evaluating = trainer.step % eval_every == 0 or trainer.step == steps
        if evaluating:
            trainer.finite(advice)
            trainer.evals.append(trainer.step, trainer.evaluate())
        stopping = stop is not None and stop()
        if checkpoint is not None and (trainer.step % checkpoint_every == 0
                                       or trainer.step == steps or stopping):
            if not evaluating:
                trainer.finite(advice)  # the last checkpoint stays as it was
            trainer.save(checkpoint)
        if report is not None:
            report(trainer.step, loss)
        if stopping and trainer.step < steps:
            raise Stopped(trainer.step, checkpoint)
    last = trainer.evals.rows()
    if not len(last) or last[-1, 0] != steps:  # resumed at a stop's step, never evaluated
        trainer.evals.append(trainer.step, trainer.evaluate())  # as a run to it would be
        if checkpoint is not None:
            trainer.save(checkpoint)
    return replace(trainer.result(), resumed_from=resumed_from)
