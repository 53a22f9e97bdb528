"""A PyTorch or ONNX model file as a SPEC: its cell, its stack, its weights, and what it
stores besides.

``lstm-graph run model.onnx`` and ``load_model("model.pt")`` read everything from the
file (:mod:`lstm_graph.formats.torch_layers`, :mod:`lstm_graph.formats.onnx_layers`):
the cell is written from the layer's attributes (:meth:`CellSpec.text`, or the built-in
cell that computes the same), the weights are translated into its names, and the number
of layers, the direction, the layout and any initial states and sequence lengths the
model stores come with them. A file that does not say what it computes is no model: an
``nn.RNN``'s state dict does not record its nonlinearity (name the cell with it).

>>> import torch, tempfile, os, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "lstm.pt")
>>> torch.save(torch.nn.LSTM(3, 4, num_layers=2).state_dict(), path)
>>> model = load_model(path)
>>> model.cell.name, model.stack.describe()
('lstm', '2 layers, forward')
>>> y, final = model.compile()(np.zeros((5, 2, 3), "float32"))
>>> y.shape, final["c"].shape
((5, 2, 4), (2, 2, 4))
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from lstm_graph.cell import Cell, Runner, compile_layers
from lstm_graph.errors import LstmGraphWarning, WeightsError, inert
from lstm_graph.formats.importers import read_layer_file, stack_of, translate
from lstm_graph.formats.recurrent import CellSpec, LayerFile
from lstm_graph.layers import Stack
from lstm_graph.library import compile_source

#: The file suffixes a SPEC names a model by.
MODEL_SUFFIXES = (".pt", ".pth", ".onnx")


def is_model(spec: str | Path) -> bool:
    """Whether SPEC names a PyTorch or ONNX model file (by its suffix)."""
    return Path(str(spec)).suffix.lower() in MODEL_SUFFIXES


@dataclass(frozen=True)
class Model:
    """A recurrent layer read from a model file: its cell (one per direction when an ONNX
    model gives its directions other activations), the stack, the weights in the cell's
    names, the initial states (in a runner's shapes) and sequence lengths it stores, and
    the notes the user must see."""

    file: LayerFile
    cells: tuple[Cell, ...]
    weights: dict[str, np.ndarray]
    #: Each cell's ``(text, file, name)``, as :func:`lstm_graph.library.compile_source`
    #: takes them (what a Dask worker compiles).
    sources: tuple[tuple[str, str, str], ...]

    @property
    def cell(self) -> Cell:
        return self.cells[0]

    @property
    def stack(self) -> Stack:
        return stack_of(self.file)

    @property
    def batch_first(self) -> bool:
        return self.file.batch_first

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The initial states the model stores, shaped as a runner takes them."""
        single = self.stack.single
        return {name: value[0] if single else value for name, value in self.file.state.items()}

    @property
    def lengths(self) -> np.ndarray | None:
        return self.file.lengths

    @property
    def notes(self) -> tuple[str, ...]:
        return self.file.notes

    def describe(self) -> str:
        """One line on what the file holds: ``m.onnx: the LSTM node 'l' (ONNX): 1 layer,
        bidirectional, I=3, H=4; cell lstm``."""
        stored = [*(f"initial_{s}" for s in self.file.state),
                  *(["sequence_lens"] if self.lengths is not None else [])]
        extra = f"; stores {', '.join(stored)}" if stored else ""
        cells = " and ".join(c.name for c in self.cells)
        layout = ", batch-major" if self.batch_first else ""
        kind = "ONNX" if self.file.format == "onnx" else "PyTorch"
        return (f"{self.file.source}: {self.file.name} ({kind}): {self.stack.describe()}"
                f"{layout}, I={self.file.input_size}, H={self.file.hidden_size}; cell {cells}"
                f"{extra}")

    def compile(self, backend: str = "numpy", dtype: str | np.dtype | type | None = None,
                executor: str = "plan", batch_first: bool | None = None,
                warn: bool = True) -> Runner:
        """A runner of the whole stack with the model's weights, which starts from the
        initial states and runs the sequence lengths the model stores where a call gives
        none, as ``lstm-graph run`` does (before, ``runner(x)`` started from zeros and ran
        every sequence whole: 0.65 off onnxruntime). ``dtype``: float64 where the model
        stores float64 weight matrices, else float32, unless given (a float64 model ran
        in float32, 7e-8 off the reference evaluator); ``batch_first``: the model's own
        layout unless given. With ``warn``, the model's notes are warnings (a checkpoint's
        other modules, ONNX nodes left out, …); the command line says them at load
        (``warn=False``)."""
        if warn:
            for note in self.notes:
                warnings.warn(note.removeprefix("note: "), LstmGraphWarning, stacklevel=2)
        if dtype is None:
            dtype = "float64" if any(d.itemsize >= 8 for d in self.file.stored_dtypes) \
                else "float32"
        stack = self.stack
        runner = compile_layers(self.cells, None, None, backend, dtype, self.weights, None,
                                executor, stack.layers, stack.direction,
                                self.batch_first if batch_first is None else batch_first,
                                stack.proj, self.file.source, self.file.stored_dtypes)
        runner.stored_state = {name: runner.xp.asarray(value.astype(runner.dtype))
                               for name, value in self.state.items()}
        runner.stored_lengths = self.lengths
        return runner


def load_model(path: str | Path) -> Model:
    """The model a ``.pt``/``.pth``/``.onnx`` file holds (see the module docstring)."""
    file = read_layer_file(Path(path))
    if file is None:
        raise WeightsError(f"{inert(str(path))} is not a model file (its name must end "
                           f"in {', '.join(MODEL_SUFFIXES)})")
    if file.format == "torch" and file.family == "rnn":  # ONNX's RNN node names its own
        shown = inert(str(path))
        raise WeightsError(
            f"{shown} holds {file.name} weights, which do not record the nonlinearity (tanh "
            "or relu), so the file alone does not say what it computes (a relu RNN run as "
            f"tanh is 0.4 off): name the cell with them, rnn --weights {shown} (tanh, "
            f"nn.RNN's default) or rnn_relu --weights {shown} (nonlinearity='relu'); from "
            f"Python, load_cell('rnn').compile(weights=...)")
    sources = tuple(_source(spec, file, k) for k, spec in enumerate(file.cells))
    cells = tuple(compile_source(*source) for source in sources)
    return Model(file, cells, translate(file, [c.graph for c in cells], stack_of(file)),
                 sources)


def _source(spec: CellSpec, file: LayerFile, index: int) -> tuple[str, str, str]:
    """The cell that computes one direction of the file's layer, as ``(text, file, name)``:
    a built-in where one computes exactly the same, else written from the layer's
    attributes."""
    builtin = spec.builtin()
    if builtin is not None:
        text = (resources.files("lstm_graph") / "cells" / f"{builtin}.cell").read_text(
            encoding="utf-8")
        return text, f"<builtin>/{builtin}.cell", builtin
    stem = re.sub(r"\W", "_", Path(file.source).stem) or file.family
    name = stem if stem[0].isalpha() else f"{file.family}_{stem}"
    if len(file.cells) > 1:
        name += "_reverse" if index else "_forward"
    return spec.text(name, f"{file.name} of {file.source}"), f"<{file.source}: {name}.cell>", \
        name
