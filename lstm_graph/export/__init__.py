"""Export: a compiled cell as a model that runs without lstm-graph.

- :mod:`.onnx_model`: one ONNX model (opset 17) that onnxruntime runs: ONNX's own
  ``LSTM``/``GRU``/``RNN`` operator where the cell is exactly one (:mod:`.fused`
  decides), else a ``Scan`` whose body is the cell's step, written from the op table.
- :mod:`.torch_module`: a readable PyTorch module (Python source that imports only
  torch) and its state dict.

Both take a :class:`~lstm_graph.cell.Runner` (a cell bound to its sizes, weights and
stack: ``runner.export_onnx(path)``, ``runner.export_torch(path)``), check what they
wrote against the runner on a small input before it is kept, and name every weight
after the cell's parameters (:func:`.names.torch_attribute`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lstm_graph.errors import DataError


def refuse_stored(source: str, state: Mapping[str, Any], lengths: Any, fix: str) -> None:
    """A DataError where ``source`` (a model file, or the runner compiled from one) stores
    initial states other than zeros, or sequence lengths: an exported model starts every
    sequence from zero states and runs it whole, so it would compute other numbers than
    the model (exported before: 0.118 off the model's y for a stored initial_h, 0.42 for
    stored lengths; from Python, without its check, with no word). ``fix``: what to do."""
    stored = [f"initial {name}" for name, value in state.items() if bool((value != 0).any())]
    stored += [] if lengths is None else ["sequence lengths"]
    if stored:
        raise DataError(f"{source} stores {' and '.join(stored)}, which an exported model "
                        "does not hold (it starts every sequence from zero states and runs it "
                        "whole), so its numbers would not be this model's; nothing was "
                        f"written. {fix}")


def expected(runner: Any, x: Any) -> tuple[Any, dict[str, Any]]:
    """What an export must give on ``x``: ``runner``'s run from zero states, as every
    exported model starts (a model's stored initial states are zeros, :func:`refuse_stored`
    refuses others; held, they bound the run to the model's batch size)."""
    zeros = {name: runner.xp.zeros(runner.state_shape(name, x.shape[1]), runner.dtype)
             for name in runner.cell.graph.states}
    result: tuple[Any, dict[str, Any]] = runner(x, zeros, allow_nonfinite=True)
    return result  # allow_nonfinite: a cell that overflows gives the same there
