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
``resume=True`` continues from it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lstm_graph.cell import Cell
from lstm_graph.errors import DataError
from lstm_graph.executors import registry
from lstm_graph.executors.contract import Executor, Spec
from lstm_graph.formats.files import write_npz
from lstm_graph.formats.weights import load_npz
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


def clip(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm``; return
    the norm before clipping."""
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    if max_norm > 0 and norm > max_norm:
        for grad in grads.values():
            grad *= max_norm / norm
    return norm


def loss_and_gradient(task: Task, out: np.ndarray, target: np.ndarray
                      ) -> tuple[float, np.ndarray]:
    """The task's loss on the readout ``out`` and its gradient with respect to ``out``."""
    if task.loss == "ce_steps":  # out (T, B, classes), target (T, B) class numbers
        shifted = out - out.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
        chosen = np.take_along_axis(log_p, target[..., None], axis=-1)[..., 0]
        count = target.size
        grad = np.exp(log_p)
        np.put_along_axis(grad, target[..., None],
                          np.take_along_axis(grad, target[..., None], axis=-1) - 1, axis=-1)
        return float(-chosen.sum() / count), grad / count
    error = out - target
    return float(np.mean(error ** 2)), 2 * error / error.size


@dataclass
class Trained:
    """What :func:`train` returns: the parameters and how the losses went."""

    weights: dict[str, np.ndarray]  # the cell's, in its names
    readout: dict[str, np.ndarray]  # readout.W (O, H), readout.b (O,)
    losses: list[tuple[int, float]]  # (step, training loss)
    evals: list[tuple[int, float]]  # (step, loss on the held-out batch)
    baseline: float
    seconds: float
    steps: int
    resumed_from: int = 0  # the step of the checkpoint a resumed run began at (0: none)


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
        self.params["readout.W"] = rng.uniform(-bound, bound, (task.output_size, self.width)) \
            .astype(self.dtype)
        self.params["readout.b"] = np.zeros(task.output_size, dtype=self.dtype)
        self.adam = Adam(lr)
        self.losses: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []
        self.step = 0
        self.seconds = 0.0
        self._eval = task.sample(np.random.default_rng([seed, 2**31]), EVAL_BATCH)
        spec = Spec(cell.schedule, np, self._cell_params(), batch, task.input_size, hidden_size,
                    self.dtype)
        #: What runs the cell forward and backward: the registry's choice for ``plan``.
        self.executor: Executor = registry.build("plan", spec, "numpy")
        self._grad_y: np.ndarray | None = None  # the loss's gradient on y, kept step to step

    def _cell_params(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.params.items() if not k.startswith("readout.")}

    def _readout(self, y: np.ndarray) -> np.ndarray:
        used = y[-1] if self.task.loss == "mse_last" else y
        return np.asarray(used @ self.params["readout.W"].T + self.params["readout.b"])

    def evaluate(self) -> float:
        """The loss on the held-out batch (the same every time), run by the default executor."""
        x, target = self._eval
        cell_params = {k: v for k, v in self.params.items() if not k.startswith("readout.")}
        run = self.cell.compile(input_size=self.task.input_size, weights=cell_params,
                                dtype=self.dtype.name)
        y, _ = run(x.astype(self.dtype))
        loss, _ = loss_and_gradient(self.task, self._readout(np.asarray(y)), target)
        return loss

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
        self.losses.append((self.step, loss))
        self.seconds += time.perf_counter() - began
        return loss

    def result(self) -> Trained:
        weights = {k: v for k, v in self.params.items() if not k.startswith("readout.")}
        readout = {k: v for k, v in self.params.items() if k.startswith("readout.")}
        return Trained(weights, readout, list(self.losses), list(self.evals),
                       self.task.baseline, self.seconds, self.step)

    # -- checkpoints -------------------------------------------------------------------------

    def _meta(self) -> dict[str, object]:
        return {"cell": self.cell.name, "task": self.task.name, "length": self.task.length,
                "hidden_size": self.hidden, "batch": self.batch, "seed": self.seed,
                "dtype": self.dtype.name}

    def save(self, path: Path) -> None:
        """Everything a resumed run needs, in one ``.npz`` written whole or not at all."""
        arrays: dict[str, np.ndarray] = {f"param/{k}": v for k, v in self.params.items()}
        arrays.update({f"adam.m/{k}": v for k, v in self.adam.m.items()})
        arrays.update({f"adam.v/{k}": v for k, v in self.adam.v.items()})
        arrays["losses"] = np.array(self.losses, dtype=np.float64).reshape(-1, 2)
        arrays["evals"] = np.array(self.evals, dtype=np.float64).reshape(-1, 2)
        counters = {"step": self.step, "adam_steps": self.adam.steps, "seconds": self.seconds}
        arrays["meta"] = np.frombuffer(json.dumps({**self._meta(), **counters},
                                                  sort_keys=True).encode(), dtype=np.uint8)
        write_npz(path, arrays)

    def load(self, path: Path) -> None:
        """Continue from a checkpoint of the same cell, task and settings."""
        arrays = load_npz(path)
        try:
            meta = json.loads(bytes(arrays["meta"]).decode())
        except (KeyError, ValueError, TypeError, UnicodeDecodeError):
            meta = None
        if not isinstance(meta, dict):
            raise DataError(f"{path}: not a checkpoint of lstm-graph train")
        expected = self._meta()
        different = [f"{k} {meta.get(k)!r} (now {v!r})" for k, v in expected.items()
                     if meta.get(k) != v]
        if different:
            raise DataError(f"{path}: a checkpoint of another run: {'; '.join(different)}; "
                            "train with the same settings or start afresh without --resume")
        try:
            params = {name: _same_shape(arrays[f"param/{name}"], value, name)
                      for name, value in self.params.items()}
            moments = [{k.split("/", 1)[1]: _same_shape(v, self.params[k.split("/", 1)[1]], k)
                        for k, v in arrays.items() if k.startswith(prefix)}
                       for prefix in ("adam.m/", "adam.v/")]
            steps = (int(meta["adam_steps"]), int(meta["step"]), float(meta["seconds"]))
            losses = [(int(s), float(v)) for s, v in arrays["losses"]]
            evals = [(int(s), float(v)) for s, v in arrays["evals"]]
        except (KeyError, ValueError, TypeError) as err:
            raise DataError(f"{path}: a damaged checkpoint ({err}); start afresh without "
                            "--resume") from None
        self.params = {name: value.astype(self.dtype) for name, value in params.items()}
        self.adam.m, self.adam.v = moments
        (self.adam.steps, self.step, self.seconds), self.losses, self.evals = steps, losses, evals


def _same_shape(value: np.ndarray, like: np.ndarray, name: str) -> np.ndarray:
    """``value`` if it has ``like``'s shape and holds real numbers (a checkpoint's arrays)."""
    if value.shape != like.shape or value.dtype.kind not in "fiu":
        raise ValueError(f"{name} has shape {value.shape} and dtype {value.dtype}, not "
                         f"{like.shape} of real numbers")
    return value


def train(cell: Cell, task: Task, hidden_size: int, steps: int, batch: int = 64,
          lr: float = 2e-3, max_norm: float = 1.0, seed: int = 0, dtype: str = "float32",
          checkpoint: Path | None = None, checkpoint_every: int = 500, resume: bool = False,
          eval_every: int = 100, report: Report | None = None) -> Trained:
    """Train ``cell`` on ``task`` for ``steps`` steps in all (a resumed run counts the
    steps it had done). With ``checkpoint``, progress is saved there every
    ``checkpoint_every`` steps and at the end; ``resume`` continues from it.

    >>> import lstm_graph
    >>> from lstm_graph.training import adding, train
    >>> done = train(lstm_graph.load_cell("lstm"), adding(10), hidden_size=8, steps=3, batch=4)
    >>> done.steps, sorted(done.readout)
    (3, ['readout.W', 'readout.b'])
    """
    if steps < 1 or batch < 1 or hidden_size < 1:
        raise DataError("steps, batch and the hidden size must be at least 1")
    if task.largest > np.finfo(dtype).max:
        raise DataError(f"the task holds {task.largest:.3g}, too large for {dtype}; train in "
                        "float64 (--dtype float64)")
    trainer = Trainer(cell, task, hidden_size, batch, lr, max_norm, seed, dtype)
    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise DataError(f"nothing to resume: no checkpoint at {checkpoint}")
        trainer.load(checkpoint)
    resumed_from = trainer.step
    while trainer.step < steps:
        with np.errstate(over="ignore", invalid="ignore"):  # a NaN loss is said below
            loss = trainer.train_step()
        if not math.isfinite(loss):
            raise DataError(f"the training loss became {loss} at step {trainer.step}; lower "
                            "the learning rate (--lr) or the gradient clip (--clip)")
        if trainer.step % eval_every == 0 or trainer.step == steps:
            trainer.evals.append((trainer.step, trainer.evaluate()))
        if checkpoint is not None and (trainer.step % checkpoint_every == 0
                                       or trainer.step == steps):
            trainer.save(checkpoint)
        if report is not None:
            report(trainer.step, loss)
    return replace(trainer.result(), resumed_from=resumed_from)
