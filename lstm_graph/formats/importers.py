"""Weights from PyTorch and ONNX, translated into the cell language's names.

PyTorch and ONNX stack a layer's gates into one matrix, each in its own
order; this module owns those orders (:data:`GATE_ORDER`), and nothing else in
lstm-graph knows them. Which of a cell's assignments holds each gate is the
cell's own ``gates`` line (:mod:`lstm_graph.language.directives`): a cell
written ``gates lstm: i, f, g, o`` takes ``nn.LSTM`` and ONNX ``LSTM`` weights.
The files themselves are read by :mod:`.torch_layers` and :mod:`.onnx_layers`
(never running code from them); :func:`translate` puts what they hold into a
cell's names, every layer and direction of a stack under its prefix
(:meth:`lstm_graph.layers.Stack.prefix`), and refuses a file whose cell the given
cell does not compute (:func:`check_cell`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.equivalence import computes
from lstm_graph.errors import DataError, WeightsError, printable
from lstm_graph.formats import onnx_layers, torch_layers
from lstm_graph.formats.arrays import StoredArray, open_npz
from lstm_graph.formats.memory import file_size
from lstm_graph.formats.recurrent import DEFAULT_ACTIVATIONS, RELU, TANH, CellSpec, LayerFile
from lstm_graph.formats.torch_layers import RNN_NOTE
from lstm_graph.ir import CellGraph, Node, NodeKind
from lstm_graph.language.directives import OPTIONAL, linear_of
from lstm_graph.layers import Stack

#: The member of an ``.npz`` of weights that records the layer file they came from
#: (:func:`layer_record`); no parameter's name (those hold a dot) can be it.
RECORD = "__layer__"
#: The most bytes a record may take (a record of two cells takes about 1 KB).
RECORD_BYTES = 1 << 16

#: Order of the gates stacked in each format's weight matrices, in our gate names.
GATE_ORDER: dict[tuple[str, str], tuple[str, ...]] = {
    ("torch", "rnn"): ("h",),
    ("torch", "lstm"): ("i", "f", "g", "o"),
    ("torch", "gru"): ("r", "z", "n"),
    ("onnx", "lstm"): ("i", "o", "f", "g"),
    ("onnx", "lstm_peepholes"): ("i", "o", "f"),
    ("onnx", "gru"): ("z", "r", "n"),
    ("onnx", "rnn"): ("h",),
}


@dataclass(frozen=True)
class GateParams:
    """Our parameter names for one stacked gate: input weights, recurrent weights, the
    bias (both stacked biases summed, or the input one alone when ``b_h`` has its own
    owner) and the peephole weight, if the gate has one."""

    w_x: str
    w_h: str
    b_x: str
    b_h: str | None
    peep: str | None


@dataclass(frozen=True)
class Projection:
    """Our parameter names for an LSTM's projection (PyTorch's ``weight_hr``, no bias)."""

    weight: str
    bias: str


def gate_params(graph: CellGraph, family: str, source: str) -> dict[str, GateParams | None]:
    """Where each gate of a ``family`` layer goes in this cell, by its ``gates`` line
    (None for a gate whose weights the cell does not use)."""
    gates = graph.gates.get(family)
    if gates is None:
        takes = ", ".join(graph.gates) or "none"
        raise WeightsError(f"{source} holds {family} weights, but cell '{graph.name}' has no "
                           f"'gates {family}:' line saying which of its assignments hold them "
                           f"(it takes stacked weights of: {takes}); save weights in the cell's "
                           "own names as .npz (see 'lstm-graph params')")
    found: dict[str, GateParams | None] = {}
    for owner in gates.owners:
        if owner.gate in OPTIONAL.get(family, ()):
            continue
        if owner.unused:
            found[owner.gate] = None
            continue
        x_linear = linear_of(graph, owner.input_owner)
        h_linear = linear_of(graph, owner.recurrent_owner)
        if x_linear is None or h_linear is None:  # the validator has refused such a cell
            raise WeightsError(f"cell '{graph.name}': gate '{owner.gate}' has no linear")

        def param(linear: Node, recurrent: bool) -> str:
            return next(p for a, p, peep in zip(linear.args, linear.params, linear.peep)
                        if not peep and (graph.node(a).kind is NodeKind.INPUT) != recurrent)

        peeps = [p for p, peep in zip(h_linear.params, h_linear.peep) if peep]
        split = owner.input_owner != owner.recurrent_owner
        found[owner.gate] = GateParams(
            param(x_linear, False), param(h_linear, True), x_linear.params[-1],
            h_linear.params[-1] if split else None, peeps[0] if peeps else None)
    return found


def projection(graph: CellGraph, family: str) -> Projection | None:
    """The parameters of the cell's projection (``proj = h`` on its gates line), if any."""
    gates = graph.gates.get(family)
    owner = next((o for o in gates.owners if o.gate in OPTIONAL.get(family, ())), None) \
        if gates else None
    linear = linear_of(graph, owner.input_owner) if owner is not None else None
    return Projection(linear.params[0], linear.params[-1]) if linear is not None else None


def unstack(params: Mapping[str, GateParams | None], order: tuple[str, ...], w_x: np.ndarray,
            w_h: np.ndarray, b_x: np.ndarray, b_h: np.ndarray) -> dict[str, np.ndarray]:
    """Split stacked ``(gates·H, ·)`` weights into our parameter names.

    A gate whose two halves have one owner gets the sum of both biases.
    """
    hidden = w_h.shape[0] // len(order)
    out: dict[str, np.ndarray] = {}
    for k, gate in enumerate(order):
        rows = slice(k * hidden, (k + 1) * hidden)
        names = params[gate]
        if names is None:  # a gate this cell does not use
            continue
        out[names.w_x] = w_x[rows]
        out[names.w_h] = w_h[rows]
        if names.b_h is None:
            out[names.b_x] = b_x[rows].astype(np.float64) + b_h[rows]  # one rounding
        else:
            out[names.b_x], out[names.b_h] = b_x[rows], b_h[rows]
    return out


def stack(params: Mapping[str, GateParams | None], order: tuple[str, ...],
          weights: Mapping[str, np.ndarray], gradients: bool = False
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`unstack`: ``(w_x, w_h, b_x, b_h)`` stacked in ``order``.

    A bias with one owner goes wholly into ``b_x`` (``b_h`` is zero there), so
    unstacking gives the same weights back; a gate the cell does not use is zeros. Where
    ``weights`` are gradients, such a bias's is both ``b_x``'s and ``b_h``'s (the two
    biases of a layer that has two are added where the one is, so each has its gradient).
    """
    w_x: list[np.ndarray] = []
    w_h: list[np.ndarray] = []
    b_x: list[np.ndarray] = []
    b_h: list[np.ndarray] = []
    used = next(p for p in params.values() if p is not None)
    for gate in order:
        names = params[gate]
        if names is None:
            for stacked, name in ((w_x, used.w_x), (w_h, used.w_h), (b_x, used.b_x),
                                  (b_h, used.b_x)):
                stacked.append(np.zeros_like(weights[name]))
            continue
        w_x.append(weights[names.w_x])
        w_h.append(weights[names.w_h])
        b_x.append(weights[names.b_x])
        if names.b_h is not None:
            b_h.append(weights[names.b_h])
        else:
            b_h.append(weights[names.b_x] if gradients else np.zeros_like(weights[names.b_x]))
    return (np.concatenate(w_x), np.concatenate(w_h), np.concatenate(b_x),
            np.concatenate(b_h))


def family_of(graph: CellGraph) -> str:
    """The one stacked-gate family a cell takes (for the exporters)."""
    if len(graph.gates) != 1:
        raise WeightsError(f"cell '{graph.name}' has {len(graph.gates) or 'no'} 'gates' lines; "
                           "export needs exactly one")
    return next(iter(graph.gates))


def to_torch_state_dict(graph: CellGraph, weights: Mapping[str, np.ndarray],
                        gradients: bool = False) -> dict[str, Any]:
    """An ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state dict (of tensors) holding ``weights``
    (or, with ``gradients``, the gradients of such a layer's parameters: :func:`stack`)."""
    import torch

    family = family_of(graph)
    params = gate_params(graph, family, "weights")
    w_x, w_h, b_x, b_h = stack(params, GATE_ORDER["torch", family], weights, gradients)
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in (
        ("weight_ih_l0", w_x), ("weight_hh_l0", w_h), ("bias_ih_l0", b_x), ("bias_hh_l0", b_h))}


def to_onnx_tensors(graph: CellGraph, weights: Mapping[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """ONNX ``W``, ``R``, ``B`` (and ``P`` when the cell has peepholes) holding ``weights``."""
    family = family_of(graph)
    params = gate_params(graph, family, "weights")
    w_x, w_h, b_x, b_h = stack(params, GATE_ORDER["onnx", family], weights)
    out = {"W": w_x[None], "R": w_h[None], "B": np.concatenate([b_x, b_h])[None]}
    owners = [params[gate] for gate in GATE_ORDER["onnx", "lstm_peepholes"]] \
        if family == "lstm" else []
    peepholes = [owner.peep for owner in owners if owner is not None]
    if peepholes and len(peepholes) == len(owners) and all(p is not None for p in peepholes):
        out["P"] = np.concatenate([weights[str(p)] for p in peepholes])[None]
    return out


# -- a layer file into a cell's names -------------------------------------------


def check_cell(file: LayerFile, graph: CellGraph) -> None:
    """Refuse ``file`` for a cell that does not compute what the file's layer computes:
    other activations, a clip, a coupled forget valve, the other GRU form, peepholes or a
    projection the cell lacks (or has and the file lacks); and any cell that is not
    structurally its layer's (:func:`~lstm_graph.equivalence.computes`). A PyTorch state
    dict does not record an ``nn.RNN``'s nonlinearity: either is taken there, and the
    reader's note says which it assumed."""
    whole = f"run the file itself ('lstm-graph run {file.source}' builds its cell)"
    for spec in file.cells:
        extra = (spec.clip is not None or spec.input_forget
                 or spec.activations != DEFAULT_ACTIVATIONS[spec.family])
        if extra and spec.builtin() != graph.name:
            raise WeightsError(f"{file.source}: {file.name} computes {spec.describe()}, which "
                               f"cell '{graph.name}' does not; {whole}")
    family = file.family
    params = gate_params(graph, family, file.source)
    if family == "gru":
        owners = {o.gate: o for o in graph.gates[family].owners}
        split = owners["n"].input_owner != owners["n"].recurrent_owner
        before = file.cells[0].linear_before_reset
        if split != before:
            form = ("scales the recurrent linear's result (linear_before_reset=1)" if before
                    else "scales h[t-1] before its linear (linear_before_reset=0)")
            raise WeightsError(f"{file.source}: {file.name}'s reset valve {form}, and cell "
                               f"'{graph.name}''s does not; use the cell "
                               f"{'gru' if before else 'gru_cho'}, or {whole}")
    if file.units[0].peep is not None:
        lacking = [gate for gate in GATE_ORDER["onnx", "lstm_peepholes"]
                   if (owner := params.get(gate)) is not None and owner.peep is None]
        if lacking:
            raise WeightsError(f"{file.source}: {file.name} has peepholes (input P), but gate "
                               f"'{lacking[0]}' of cell '{graph.name}' has no peep(...) "
                               "operand; use a cell with peepholes (peephole_lstm)")
    has = projection(graph, family) is not None
    if has != (file.proj_size is not None):
        raise WeightsError(
            f"{file.source}: {file.name} has a projection (weight_hr, proj_size "
            f"{file.proj_size}) and cell '{graph.name}' has none; use the cell lstm_proj, or "
            f"{whole}" if not has else
            f"{file.source}: cell '{graph.name}' projects its output (proj = on its gates "
            f"line), and {file.name} has no projection (weight_hr); use the cell lstm")
    # An ONNX file records everything its cell computes, activations included; a PyTorch
    # layer's are fixed by its kind (nn.LSTM's, nn.GRU's), but for an nn.RNN's
    # nonlinearity. A cell that computes anything else would give the weights other
    # numbers (a user's LSTM with another activation once ran an nn.LSTM's state dict).
    for spec in file.cells:
        if not takes(graph, spec, file.format == "onnx" or spec.family != "rnn"):
            raise WeightsError(
                f"{file.source}: {file.name} computes {spec.describe()}, and cell "
                f"'{graph.name}' computes something else (another activation, a clip, "
                f"other terms); {whole}")


def takes(graph: CellGraph, spec: CellSpec, nonlinearity_known: bool = True) -> bool:
    """Whether ``graph`` computes what ``spec``'s layer does, given its weights: peepholes
    a layer lacks are zeros, so a cell with them takes it too; where the layer's
    nonlinearity is not known (a PyTorch ``nn.RNN``'s state dict), either of its two."""
    alike = [spec]
    if spec.family == "lstm" and not spec.peepholes:
        alike.append(replace(spec, peepholes=True))
    if spec.family == "rnn" and not nonlinearity_known:
        alike += [replace(spec, activations=(TANH,)), replace(spec, activations=(RELU,))]
    return any(computes(graph, one) is not None for one in alike)


#: The dtypes a record may say a layer file stored its weights in.
_FLOATS = ("float16", "float32", "float64")


def layer_record(file: LayerFile) -> np.ndarray:
    """What ``params MODEL --out`` writes under :data:`RECORD` beside a layer file's
    weights: what their names cannot say (a reverse layer, a projection's width, the
    cell's activations, clip and form), so that a run of them is the file's or refused;
    and what a run of them must be told (the file reads ``x`` batch-first, stores initial
    states or lengths, or assumed an ``nn.RNN``'s nonlinearity)."""
    return np.array(json.dumps({
        "source": _short(file.source), "format": file.format, "name": _short(file.name),
        "layers": file.layers, "direction": file.direction, "proj_size": file.proj_size,
        "batch_first": file.batch_first, "stores": _stored(file),
        "assumed_tanh": RNN_NOTE.format(source=file.source) in file.notes,
        "dtypes": sorted(dtype.name for dtype in file.stored_dtypes),
        "cells": [spec.as_data() for spec in file.cells]}, sort_keys=True))


def _short(text: str, most: int = 200) -> str:
    """A name as a record keeps it: at most ``most`` characters (a node's name may be
    long; the record's size is bounded, :data:`RECORD_BYTES`)."""
    return text if len(text) <= most else text[: most - 1] + "…"


def _stored(file: LayerFile) -> list[str]:
    """What a layer file stores besides its weights, as its notes name them."""
    return [*(f"initial_{s}" for s in file.state),
            *(["sequence_lens"] if file.lengths is not None else [])]


def _recorded(arrays: dict[str, Any], stored: StoredArray, path: Path, graph: CellGraph
              ) -> Weights:
    """An ``.npz``'s weights with the stack its :data:`RECORD` gives, refused for a cell
    that does not compute the recorded layer's cell."""
    bad = f"{path}: {RECORD} is not the record of a layer as 'lstm-graph params' writes it"
    if stored.dtype.kind != "U" or stored.shape != () or stored.nbytes > RECORD_BYTES:
        raise WeightsError(f"{bad} (a {stored.dtype} array of shape {stored.shape})")
    try:
        data = json.loads(str(stored.read()[()]))
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in (
                "source", "format", "name")) or data["format"] not in ("torch", "onnx") \
                or not isinstance(data.get("cells"), list) or len(data["cells"]) not in (1, 2):
            raise ValueError("its fields are missing or of the wrong kind")
        cells = [CellSpec.from_data(cell) for cell in data["cells"]]
        sizes = [data.get("layers"), data.get("proj_size")]
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in sizes
                   if n is not None) or sizes[0] is None:
            raise ValueError("its sizes are not whole numbers")
        stack = Stack(data["layers"], str(data.get("direction")), data["proj_size"])
        if any(spec.projection != (stack.proj is not None) for spec in cells):
            raise ValueError("its projection and its cell's disagree")
        flags = [data.get("batch_first"), data.get("assumed_tanh")]
        stores, dtypes = data.get("stores"), data.get("dtypes", [])  # dtypes: since 12-2026
        if not all(isinstance(f, bool) for f in flags) or not isinstance(stores, list) \
                or not all(name in ("initial_h", "initial_c", "sequence_lens")
                           for name in stores) \
                or not isinstance(dtypes, list) or not all(name in _FLOATS for name in dtypes):
            raise ValueError("its notes are missing or of the wrong kind")
    except (ValueError, DataError, RecursionError) as err:  # JSON nested past the stack
        raise WeightsError(f"{bad} ({err})") from None
    source, name = printable(data["source"]), printable(data["name"])
    for spec in cells:
        if not takes(graph, spec, data["format"] == "onnx" or spec.family != "rnn"):
            raise WeightsError(
                f"{path} holds the weights of {name} in {source} ({stack.describe()}), which "
                f"computes {spec.describe()}, and cell '{graph.name}' computes something "
                f"else; run them with a cell that computes it, or run {source} itself")
    notes: tuple[str, ...] = (f"note: {path} holds the weights of {source}, which also stores "
             f"{', '.join(stores)}; only a run of that file uses them ('lstm-graph run "
             f"{source}')",) if stores else ()
    if data["assumed_tanh"] and graph.name != "rnn_relu":
        notes += (RNN_NOTE.format(source=f"{path} (from {source})"),)
    # the file's precision, not the arrays' (the biases were summed in float64)
    return Weights(arrays, stack, notes, data["batch_first"],
                   frozenset(np.dtype(name) for name in dtypes) or None)


def translate(file: LayerFile, graphs: Sequence[CellGraph], stack: Stack
              ) -> dict[str, np.ndarray]:
    """The weights of every unit of ``file`` in the names of its direction's cell (one
    graph, or one per direction), under the unit's prefix. Peepholes a file does not
    hold are zero (ONNX's default); a projection of width P < H is padded with zeros to
    the cell's hidden size (see the ``lstm_proj`` cell)."""
    out: dict[str, np.ndarray] = {}
    hidden = file.hidden_size
    for unit, (layer, reverse) in zip(file.units, stack.units):
        graph = graphs[-1] if reverse else graphs[0]
        params = gate_params(graph, file.family, file.source)
        w_h = unit.w_h
        if unit.proj is not None:  # recurrent weights read h's first P units
            w_h = np.concatenate([w_h, np.zeros((w_h.shape[0], hidden - w_h.shape[1]),
                                                dtype=w_h.dtype)], axis=1)
        found = unstack(params, GATE_ORDER[file.format, file.family], unit.w_x, w_h,
                        unit.b_x, unit.b_h)
        for k, gate in enumerate(GATE_ORDER["onnx", "lstm_peepholes"]
                                 if file.family == "lstm" else ()):
            names = params.get(gate)
            if names is not None and names.peep is not None:
                found[names.peep] = unit.peep[k * hidden:(k + 1) * hidden] \
                    if unit.peep is not None else np.zeros(hidden, dtype=unit.w_h.dtype)
        owner = projection(graph, file.family)
        if owner is not None and unit.proj is not None:
            padded = np.zeros((hidden, hidden), dtype=unit.proj.dtype)
            padded[: unit.proj.shape[0]] = unit.proj
            found[owner.weight] = padded
            found[owner.bias] = np.zeros(hidden, dtype=unit.proj.dtype)
        prefix = stack.prefix(layer, reverse)
        out.update({prefix + name: value for name, value in found.items()})
    return out


def stack_of(file: LayerFile) -> Stack:
    """The shape of the stack the file holds."""
    return Stack(file.layers, file.direction, file.proj_size)


@dataclass(frozen=True)
class Weights:
    """What a weights source gives a cell: arrays in its names (prefixed for a stack), the
    stack a layer file holds (None for a dict or ``.npz`` in our names: their names tell),
    and the notes the user must see."""

    arrays: dict[str, Any]
    stack: Stack | None = None
    notes: tuple[str, ...] = ()
    batch_first: bool = False  # the layer file reads x batch-first (ONNX's layout=1)
    #: The precision a layer file stores its weights in (None: the arrays' own dtypes).
    dtypes: frozenset[np.dtype] | None = None


def read_layer_file(path: Path) -> LayerFile | None:
    """The layer a ``.pt``/``.pth``/``.onnx`` file holds; None for another suffix."""
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return torch_layers.load(path)
    if suffix == ".onnx":
        return onnx_layers.load(path)
    return None


def read_weights(source: str | Path | Mapping[str, Any], graph: CellGraph) -> Weights:
    """Parameters for ``graph`` from a dict, an ``.npz``, a PyTorch ``.pt``/``.pth`` or an
    ``.onnx`` file.

    A dict already in our names is returned as is; a PyTorch state dict is translated;
    an ``.npz`` gives its arrays by their headers
    (:class:`~lstm_graph.formats.arrays.StoredArray`), read only once
    :func:`~lstm_graph.formats.weights.check_weights` finds that they fit.
    """
    if isinstance(source, Mapping):
        if any(isinstance(k, str) and ("weight_ih" in k or isinstance(source[k], Mapping))
               for k in source):
            file = torch_layers.from_state_dict(source, "state dict")
            return _from_file(file, graph)
        return Weights(dict(source))
    path = Path(source)
    if path.suffix.lower() == ".npz":
        arrays: dict[str, Any] = dict(open_npz(  # read once they fit
            path, WeightsError, "an .npz of weights by name (params --out writes one)"))
        stored = arrays.pop(RECORD, None)
        return Weights(arrays) if stored is None else _recorded(arrays, stored, path, graph)
    read = read_layer_file(path)
    if read is None:
        file_size(path, WeightsError)  # no file, a loop of links: said as such
        raise WeightsError(f"{path}: unknown weights format '{path.suffix}'; use .npz (our "
                           "names), .pt/.pth (a PyTorch state dict) or .onnx")
    return _from_file(read, graph)


def _from_file(file: LayerFile, graph: CellGraph) -> Weights:
    """A layer file's weights for a cell the user chose (checked to compute the same)."""
    check_cell(file, graph)
    stack = stack_of(file)
    notes = file.notes if graph.name != "rnn_relu" else \
        tuple(n for n in file.notes if n != RNN_NOTE.format(source=file.source))
    if file.family == "lstm" and file.units[0].peep is None and any(
            owner is not None and owner.peep is not None
            for owner in gate_params(graph, "lstm", file.source).values()):
        notes += (f"note: {file.source} holds no peepholes; cell '{graph.name}' runs with its "
                  f"peephole weights at zero, so it computes what {file.name} does",)
    if file.lengths is not None or file.state:
        notes += (f"note: {file.source} also stores {', '.join(_stored(file))}, which only a "
                  f"run of the file itself uses ('lstm-graph run {file.source}')",)
    return Weights(translate(file, [graph], stack), stack, notes, file.batch_first,
                   file.stored_dtypes)
