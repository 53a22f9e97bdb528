"""Weights from PyTorch and ONNX, translated into the cell language's names.

PyTorch and ONNX stack a layer's gates into one matrix, each in its own
order; this module owns those orders (:data:`GATE_ORDER`), and nothing else in
lstm-graph knows them. Which of a cell's assignments holds each gate is the
cell's own ``gates`` line (:mod:`lstm_graph.language.directives`): a cell
written ``gates lstm: i, f, g, o`` takes ``nn.LSTM`` and ONNX ``LSTM`` weights.
Loading never runs code from the file: ``.pt`` files are read with
``torch.load(weights_only=True)``, ONNX files are protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.errors import WeightsError
from lstm_graph.formats.weights import load_npz
from lstm_graph.ir import CellGraph, Node, NodeKind
from lstm_graph.language.directives import linear_of

#: Order of the gates stacked in each format's weight matrices, in our gate names.
GATE_ORDER: dict[tuple[str, str], tuple[str, ...]] = {
    ("torch", "rnn"): ("h",),
    ("torch", "lstm"): ("i", "f", "g", "o"),
    ("torch", "gru"): ("r", "z", "n"),
    ("onnx", "lstm"): ("i", "o", "f", "g"),
    ("onnx", "lstm_peepholes"): ("i", "o", "f"),
    ("onnx", "gru"): ("z", "r", "n"),
}
_TORCH_FAMILY_BY_GATES = {1: "rnn", 4: "lstm", 3: "gru"}


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


def gate_params(graph: CellGraph, family: str, source: str) -> dict[str, GateParams]:
    """Where each gate of a ``family`` layer goes in this cell, by its ``gates`` line."""
    gates = graph.gates.get(family)
    if gates is None:
        takes = ", ".join(graph.gates) or "none"
        raise WeightsError(f"{source} holds {family} weights, but cell '{graph.name}' has no "
                           f"'gates {family}:' line saying which of its assignments hold them "
                           f"(it takes stacked weights of: {takes}); save weights in the cell's "
                           "own names as .npz (see 'lstm-graph params')")
    found = {}
    for owner in gates.owners:
        x_linear = linear_of(graph, owner.input_owner)
        h_linear = linear_of(graph, owner.recurrent_owner)
        if x_linear is None or h_linear is None:  # the validator has refused such a cell
            raise WeightsError(f"cell '{graph.name}': gate '{owner.gate}' has no linear")

        def param(linear: Node, kind: NodeKind) -> str:
            return next(p for a, p, peep in zip(linear.args, linear.params, linear.peep)
                        if not peep and graph.node(a).kind is kind)

        peeps = [p for p, peep in zip(h_linear.params, h_linear.peep) if peep]
        split = owner.input_owner != owner.recurrent_owner
        found[owner.gate] = GateParams(
            param(x_linear, NodeKind.INPUT), param(h_linear, NodeKind.OLD), x_linear.params[-1],
            h_linear.params[-1] if split else None, peeps[0] if peeps else None)
    return found


def unstack(params: Mapping[str, GateParams], order: tuple[str, ...], w_x: np.ndarray,
            w_h: np.ndarray, b_x: np.ndarray, b_h: np.ndarray) -> dict[str, np.ndarray]:
    """Split stacked ``(gates·H, ·)`` weights into our parameter names.

    A gate whose two halves have one owner gets the sum of both biases.
    """
    hidden = w_h.shape[1]
    out: dict[str, np.ndarray] = {}
    for k, gate in enumerate(order):
        rows = slice(k * hidden, (k + 1) * hidden)
        names = params[gate]
        out[names.w_x] = w_x[rows]
        out[names.w_h] = w_h[rows]
        if names.b_h is None:
            out[names.b_x] = b_x[rows].astype(np.float64) + b_h[rows]  # one rounding
        else:
            out[names.b_x], out[names.b_h] = b_x[rows], b_h[rows]
    return out


def stack(params: Mapping[str, GateParams], order: tuple[str, ...],
          weights: Mapping[str, np.ndarray]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`unstack`: ``(w_x, w_h, b_x, b_h)`` stacked in ``order``.

    A bias with one owner goes wholly into ``b_x`` (``b_h`` is zero there), so
    unstacking gives the same weights back.
    """
    w_x, w_h, b_x, b_h = [], [], [], []
    for gate in order:
        names = params[gate]
        w_x.append(weights[names.w_x])
        w_h.append(weights[names.w_h])
        b_x.append(weights[names.b_x])
        b_h.append(np.zeros_like(weights[names.b_x]) if names.b_h is None
                   else weights[names.b_h])
    return (np.concatenate(w_x), np.concatenate(w_h), np.concatenate(b_x),
            np.concatenate(b_h))


def family_of(graph: CellGraph) -> str:
    """The one stacked-gate family a cell takes (for the exporters)."""
    if len(graph.gates) != 1:
        raise WeightsError(f"cell '{graph.name}' has {len(graph.gates) or 'no'} 'gates' lines; "
                           "export needs exactly one")
    return next(iter(graph.gates))


def to_torch_state_dict(graph: CellGraph, weights: Mapping[str, np.ndarray]
                        ) -> dict[str, Any]:
    """An ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state dict (of tensors) holding ``weights``."""
    import torch

    family = family_of(graph)
    params = gate_params(graph, family, "weights")
    w_x, w_h, b_x, b_h = stack(params, GATE_ORDER["torch", family], weights)
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in (
        ("weight_ih_l0", w_x), ("weight_hh_l0", w_h), ("bias_ih_l0", b_x), ("bias_hh_l0", b_h))}


def to_onnx_tensors(graph: CellGraph, weights: Mapping[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """ONNX ``W``, ``R``, ``B`` (and ``P`` when the cell has peepholes) holding ``weights``."""
    family = family_of(graph)
    params = gate_params(graph, family, "weights")
    w_x, w_h, b_x, b_h = stack(params, GATE_ORDER["onnx", family], weights)
    out = {"W": w_x[None], "R": w_h[None], "B": np.concatenate([b_x, b_h])[None]}
    peepholes = [params[gate].peep for gate in GATE_ORDER["onnx", "lstm_peepholes"]] \
        if family == "lstm" else []
    if peepholes and all(p is not None for p in peepholes):
        out["P"] = np.concatenate([weights[str(p)] for p in peepholes])[None]
    return out


# -- PyTorch -------------------------------------------------------------------

def from_torch_state_dict(state: Mapping[str, Any], graph: CellGraph, source: str
                          ) -> dict[str, np.ndarray]:
    """Our parameters from an ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state dict."""
    arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
              for k, v in state.items()}
    prefixes = {k[: -len("weight_ih_l0")] for k in arrays if k.endswith("weight_ih_l0")}
    if len(prefixes) != 1:
        found = "no" if not prefixes else f"{len(prefixes)}"
        raise WeightsError(f"{source}: expected the state dict of one nn.LSTM, nn.GRU or "
                           f"nn.RNN (keys weight_ih_l0, weight_hh_l0, ...), found {found} "
                           f"such layers; keys: {', '.join(sorted(arrays)[:8])}")
    (prefix,) = prefixes
    layer = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if any(k.endswith("_reverse") for k in layer):
        raise WeightsError(f"{source}: bidirectional layers are not supported; a cell runs "
                           "forward in time (save a unidirectional layer)")
    if any(k.endswith("_l1") for k in layer):
        raise WeightsError(f"{source}: multi-layer weights (num_layers > 1) are not supported;"
                           " a cell is one layer")
    if "weight_hr_l0" in layer:
        raise WeightsError(f"{source}: LSTM projections (proj_size > 0) are not supported")
    w_x, w_h = layer["weight_ih_l0"], layer.get("weight_hh_l0")
    if w_h is None or w_h.ndim != 2 or w_x.ndim != 2 or w_h.shape[0] % w_h.shape[1]:
        raise WeightsError(f"{source}: weight_hh_l0 is missing or not of shape (gates*H, H)")
    gates = w_h.shape[0] // w_h.shape[1]
    family = _TORCH_FAMILY_BY_GATES.get(gates)
    if family is None:
        raise WeightsError(f"{source}: {gates} stacked gates is not an RNN, GRU or LSTM")
    zeros = np.zeros(w_h.shape[0], dtype=w_h.dtype)
    return unstack(gate_params(graph, family, source), GATE_ORDER["torch", family], w_x, w_h,
                   layer.get("bias_ih_l0", zeros), layer.get("bias_hh_l0", zeros))


def load_torch(path: Path, graph: CellGraph) -> dict[str, np.ndarray]:
    """Our parameters from a ``.pt`` file holding a state dict; code in it never runs."""
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: reading .pt files needs PyTorch: pip install "
                           "'lstm-graph[import]' (torch==2.13.0); or save the weights as "
                           ".npz") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: refused or unreadable as a weights-only PyTorch file "
                           f"({first}); nothing in it was run") from None
    if hasattr(state, "state_dict") and not isinstance(state, Mapping):
        state = state.state_dict()
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return from_torch_state_dict(state, graph, str(path))


# -- ONNX ----------------------------------------------------------------------

def from_onnx_model(model: Any, graph: CellGraph, source: str) -> dict[str, np.ndarray]:
    """Our parameters from an ONNX model holding exactly one ``LSTM`` or ``GRU`` node."""
    from onnx import numpy_helper

    nodes = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    if len(nodes) != 1:
        raise WeightsError(f"{source}: expected one LSTM or GRU node, found {len(nodes)}")
    (node,) = nodes
    attrs = {a.name: a for a in node.attribute}
    family = node.op_type.lower()
    direction = attrs["direction"].s.decode() if "direction" in attrs else "forward"
    unsupported = [
        (direction != "forward", f"direction={direction} (only forward)"),
        ("activations" in attrs, "custom activations"),
        ("clip" in attrs, "clip"),
        ("input_forget" in attrs and attrs["input_forget"].i, "input_forget=1"),
        ("layout" in attrs and attrs["layout"].i, "layout=1 (batch-major)"),
        (family == "gru" and not ("linear_before_reset" in attrs
                                  and attrs["linear_before_reset"].i),
         "linear_before_reset=0 (the gru cell is the PyTorch form, linear_before_reset=1)"),
        (family == "rnn", "the ONNX RNN operator (use a PyTorch nn.RNN state dict or .npz)"),
    ]
    reasons = [text for bad, text in unsupported if bad]
    if reasons:
        raise WeightsError(f"{source}: {node.op_type} node '{node.name}' uses what the cell "
                           f"cannot express: {', '.join(reasons)}")
    stored = {t.name: t for t in model.graph.initializer}

    def tensor(position: int, what: str) -> np.ndarray | None:
        if position >= len(node.input) or not node.input[position]:
            return None
        name = node.input[position]
        if name not in stored:
            raise WeightsError(f"{source}: {what} ('{name}') is not stored in the model as an "
                               "initializer")
        return numpy_helper.to_array(stored[name])

    w, r, b = tensor(1, "W"), tensor(2, "R"), tensor(3, "B")
    if w is None or r is None or w.ndim != 3 or r.ndim != 3 or w.shape[0] != 1:
        raise WeightsError(f"{source}: W and R must be stored, of shape [1, gates*H, ·]")
    w, r = w[0], r[0]
    hidden = r.shape[1]
    b = np.zeros(2 * r.shape[0], dtype=r.dtype) if b is None else b[0]
    params = gate_params(graph, family, source)
    out = unstack(params, GATE_ORDER["onnx", family], w, r, b[: r.shape[0]], b[r.shape[0]:])
    peepholes = tensor(7, "P") if family == "lstm" else None
    if peepholes is not None:
        for k, gate in enumerate(GATE_ORDER["onnx", "lstm_peepholes"]):
            name = params[gate].peep
            if name is None:
                raise WeightsError(f"{source}: the LSTM node has peepholes (input P), but "
                                   f"gate '{gate}' of cell '{graph.name}' has no peep(...) "
                                   "operand; use a cell with peepholes (peephole_lstm)")
            out[name] = peepholes[0, k * hidden:(k + 1) * hidden]
    return out


def load_onnx(path: Path, graph: CellGraph) -> dict[str, np.ndarray]:
    try:
        import onnx
    except ImportError:
        raise WeightsError(f"{path}: reading .onnx files needs the onnx package: pip install "
                           "'lstm-graph[import]'") from None
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except Exception as err:  # protobuf DecodeError and friends
        raise WeightsError(f"{path}: not a readable ONNX model ({err})") from None
    return from_onnx_model(model, graph, str(path))


def read_weights(source: str | Path | Mapping[str, Any], graph: CellGraph) -> dict[str, Any]:
    """Parameters for ``graph`` from a dict, an ``.npz``, a PyTorch ``.pt``/``.pth`` or an
    ``.onnx`` file.

    A dict already in our names is returned as is; a PyTorch state dict is translated.
    """
    if isinstance(source, Mapping):
        if any(str(k).endswith("weight_ih_l0") for k in source):
            return from_torch_state_dict(source, graph, "state dict")
        return dict(source)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix in (".pt", ".pth"):
        return load_torch(path, graph)
    if suffix == ".onnx":
        return load_onnx(path, graph)
    raise WeightsError(f"{path}: unknown weights format '{suffix}'; use .npz (our names), "
                       ".pt/.pth (a PyTorch state dict) or .onnx")
