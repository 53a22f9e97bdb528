"""Parameters: random initialisation, ``.npz`` files, and checking them against a cell.

Parameter names are the ones the cell language gives (``f.W_x``, ``f.W_h``,
``f.p_c``, ``f.b``; see ``lstm-graph params``). Files from other frameworks
are translated into these names by :mod:`lstm_graph.formats.importers`.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.errors import WeightsError
from lstm_graph.ir import Size
from lstm_graph.schedule import Schedule


def random_weights(schedule: Schedule, input_size: int, hidden_size: int, seed: int | None,
                   dtype: np.dtype | str = "float32") -> dict[str, np.ndarray]:
    """Uniform in ±1/√H, as PyTorch initialises its recurrent layers; seeded, in file order."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(hidden_size)
    return {
        name: rng.uniform(-bound, bound, size=shape).astype(dtype)
        for name, shape in schedule.param_shapes(input_size, hidden_size).items()
    }


def infer_sizes(schedule: Schedule, weights: Mapping[str, Any], source: str = "weights"
                ) -> tuple[int | None, int]:
    """``(input_size, hidden_size)`` read off the weights' shapes (input size None if unused)."""
    hidden = input_size = None
    for spec in schedule.params:
        shape = getattr(weights.get(spec.name), "shape", None)
        if shape is None or len(shape) != len(spec.shape):
            continue
        for symbol, size in zip(spec.shape, shape):
            if symbol is Size.HIDDEN and hidden is None:
                hidden = int(size)
            elif symbol is Size.INPUT and input_size is None:
                input_size = int(size)
    if hidden is None:
        held = ", ".join(sorted(weights)[:12]) or "nothing"
        raise WeightsError(f"{source} do not fit cell '{schedule.graph.name}': none of its "
                           f"parameters ({', '.join(p.name for p in schedule.params)}) is "
                           f"there; they hold {held} (weights of another cell?)")
    return input_size, hidden


def check_weights(schedule: Schedule, weights: Mapping[str, Any], input_size: int,
                  hidden_size: int, dtype: np.dtype | str, source: str = "weights"
                  ) -> dict[str, np.ndarray]:
    """The weights as arrays of ``dtype``, or an error naming what does not fit.

    Every parameter of the cell must be present with its exact shape, and
    nothing else may be (a stray name usually means a different cell).
    """
    expected = schedule.param_shapes(input_size, hidden_size)
    missing = [name for name in expected if name not in weights]
    extra = sorted(name for name in weights if name not in expected)
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"not parameters of this cell: {', '.join(extra)}")
    checked = {}
    for name, shape in expected.items():
        if name not in weights:
            continue
        value = np.asarray(weights[name])
        if value.dtype.kind not in "fiu":
            problems.append(f"{name} has dtype {value.dtype}; parameters are real numbers")
            continue
        if value.shape != shape:
            problems.append(f"{name} has shape {value.shape}, the cell needs {shape} "
                            f"(I={input_size}, H={hidden_size})")
            continue
        if not np.all(np.isfinite(value)):
            problems.append(f"{name} holds NaN or infinity")
            continue
        checked[name] = value.astype(dtype, copy=False)
    if problems:
        raise WeightsError(f"{source} do not fit cell '{schedule.graph.name}': "
                           + "; ".join(problems))
    return checked


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file; never unpickles (``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise WeightsError(f"{path}: not a readable .npz file ({err})") from None
