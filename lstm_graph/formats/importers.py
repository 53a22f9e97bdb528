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

import functools
import math
import os
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.errors import WeightsError, install_hint
from lstm_graph.formats.arrays import open_npz
from lstm_graph.formats.memory import allocation, require, require_file
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

#: The tensor dtypes a state dict may hold: those NumPy has, for real numbers.
_TORCH_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")


def from_torch_state_dict(state: Mapping[Any, Any], graph: CellGraph, source: str
                          ) -> dict[str, np.ndarray]:
    """Our parameters from an ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state dict.

    Every key, every value's kind and dtype, and every shape against the others
    are checked before anything is computed.
    """
    odd = [key for key in state if not isinstance(key, str)]
    if odd:
        raise WeightsError(f"{source}: holds the key {odd[0]!r} of type "
                           f"{type(odd[0]).__name__}; the keys of a state dict are parameter "
                           "names such as weight_ih_l0")
    prefixes = {k[: -len("weight_ih_l0")] for k in state if k.endswith("weight_ih_l0")}
    if len(prefixes) != 1:
        found = "no" if not prefixes else f"{len(prefixes)}"
        raise WeightsError(f"{source}: expected the state dict of one nn.LSTM, nn.GRU or "
                           f"nn.RNN (keys weight_ih_l0, weight_hh_l0, ...), found {found} "
                           f"such layers; keys: {', '.join(sorted(state)[:8])}")
    (prefix,) = prefixes
    keys = [k for k in state if k.startswith(prefix)]
    if any(k.endswith("_reverse") for k in keys):
        raise WeightsError(f"{source}: bidirectional layers are not supported; a cell runs "
                           "forward in time (save a unidirectional layer)")
    if any(k.endswith("_l1") for k in keys):
        raise WeightsError(f"{source}: multi-layer weights (num_layers > 1) are not supported;"
                           " a cell is one layer")
    if prefix + "weight_hr_l0" in keys:
        raise WeightsError(f"{source}: LSTM projections (proj_size > 0) are not supported")
    layer = {k[len(prefix):]: _torch_array(k, state[k], source) for k in keys}
    w_x, w_h, b_x, b_h, family = _torch_layer(layer, source)
    return unstack(gate_params(graph, family, source), GATE_ORDER["torch", family], w_x, w_h,
                   b_x, b_h)


def _torch_array(key: str, value: Any, source: str) -> np.ndarray:
    """A state dict's value as a NumPy array of real numbers, or an error saying why not."""
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "layout"):
        layout, dtype = str(value.layout), str(value.dtype).removeprefix("torch.")
        problem = (
            f"is a sparse tensor ({layout}); save it dense (tensor.to_dense())"
            if layout != "torch.strided" else
            "is a meta tensor: it has a shape but no values (saved from a model on the "
            "'meta' device?)" if value.is_meta else
            f"is a quantized tensor ({dtype}); save it dequantized (tensor.dequantize())"
            if value.is_quantized else
            f"has dtype {dtype}; parameters are real numbers of a dtype NumPy has "
            f"({', '.join(_TORCH_DTYPES)}): save tensor.float()"
            if dtype not in _TORCH_DTYPES else None)
        if problem:
            raise WeightsError(f"{source}: {key} {problem}")
        return np.asarray(value.detach().cpu().numpy())
    if not isinstance(value, np.ndarray):
        raise WeightsError(f"{source}: {key} is of type {type(value).__name__}, not a tensor")
    if value.dtype.kind not in "fiu":
        raise WeightsError(f"{source}: {key} has dtype {value.dtype}; parameters are real "
                           "numbers")
    return value


def _torch_layer(layer: Mapping[str, np.ndarray], source: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """``(w_x, w_h, b_x, b_h, family)`` of one layer, every shape checked against the
    others (a missing bias is zero)."""
    w_x, w_h = layer["weight_ih_l0"], layer.get("weight_hh_l0")
    if w_h is None:
        raise WeightsError(f"{source}: weight_hh_l0 is missing")
    if w_h.ndim != 2 or w_h.shape[1] == 0 or w_h.shape[0] % w_h.shape[1]:
        raise WeightsError(f"{source}: weight_hh_l0 has shape {w_h.shape}; a layer's is "
                           "(gates·H, H) with H at least 1")
    hidden = w_h.shape[1]
    gates = w_h.shape[0] // hidden
    family = _TORCH_FAMILY_BY_GATES.get(gates)
    if family is None:
        raise WeightsError(f"{source}: weight_hh_l0 has shape {w_h.shape}: {gates} stacked "
                           "gates is not an RNN (1), GRU (3) or LSTM (4)")
    rows = gates * hidden
    what = f"a layer with weight_hh_l0 of shape {w_h.shape} ({family}, H={hidden})"
    if w_x.ndim != 2 or w_x.shape[0] != rows or w_x.shape[1] == 0:
        raise WeightsError(f"{source}: weight_ih_l0 has shape {w_x.shape}; {what} needs "
                           f"({rows}, I) with I at least 1")
    biases = []
    for name in ("bias_ih_l0", "bias_hh_l0"):
        bias = layer.get(name)
        if bias is not None and bias.shape != (rows,):
            raise WeightsError(f"{source}: {name} has shape {bias.shape}; {what} needs "
                               f"({rows},)")
        biases.append(np.zeros(rows, dtype=w_h.dtype) if bias is None else bias)
    return w_x, w_h, biases[0], biases[1], family


def load_torch(path: Path, graph: CellGraph) -> dict[str, np.ndarray]:
    """Our parameters from a ``.pt`` file holding a state dict; code in it never runs."""
    require_file(path, WeightsError)
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: reading .pt files needs PyTorch: "
                           f"{install_hint('import')}; or save the weights as .npz") from None
    try:
        with warnings.catch_warnings():  # torch's deprecation notes are not the user's concern
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: refused or unreadable as a weights-only PyTorch file "
                           f"({first}); nothing in it was run") from None
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return from_torch_state_dict(state, graph, str(path))


# -- ONNX ----------------------------------------------------------------------

#: ONNX tensor data types of real numbers that NumPy holds.
_ONNX_TYPES = ("FLOAT", "DOUBLE", "FLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8",
               "UINT16", "UINT32", "UINT64")


def from_onnx_model(model: Any, graph: CellGraph, source: str, directory: Path | None = None
                    ) -> dict[str, np.ndarray]:
    """Our parameters from an ONNX model holding exactly one ``LSTM`` or ``GRU`` node.

    Tensors stored outside the model (external data) are read from files in
    ``directory`` (the model's own) and nowhere else; without it they are refused.
    """
    nodes = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    if len(nodes) != 1:
        raise WeightsError(f"{source}: expected one LSTM or GRU node, found {len(nodes)}")
    (node,) = nodes
    attrs = {a.name: a for a in node.attribute}
    family = node.op_type.lower()
    direction = attrs["direction"].s.decode(errors="replace") if "direction" in attrs \
        else "forward"
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
    gates = len(GATE_ORDER["onnx", family])
    tensors = {}
    for position, what in ((1, "W"), (2, "R"), (3, "B"), (7, "P")):
        if position < len(node.input) and node.input[position] and (what != "P"
                                                                     or family == "lstm"):
            name = node.input[position]
            if name not in stored:
                raise WeightsError(f"{source}: {what} ('{name}') is not stored in the model "
                                   "as an initializer")
            tensors[what] = _onnx_header(stored[name], what, source)
    if "W" not in tensors or "R" not in tensors:
        raise WeightsError(f"{source}: W and R must be stored, of shape [1, gates*H, ·]")
    r_dims, w_dims = tensors["R"][1], tensors["W"][1]
    hidden = r_dims[2] if len(r_dims) == 3 else 0
    if hidden < 1 or r_dims != (1, gates * hidden, hidden):
        raise WeightsError(f"{source}: R has shape {r_dims}; an {node.op_type}'s is "
                           f"[1, {gates}·H, H] with H at least 1")
    if "hidden_size" in attrs and attrs["hidden_size"].i != hidden:
        raise WeightsError(f"{source}: the node's hidden_size is {attrs['hidden_size'].i}, but "
                           f"R has shape {r_dims} (H={hidden})")
    layer = f"with R of shape {r_dims} ({node.op_type}, H={hidden})"
    if len(w_dims) != 3 or w_dims[:2] != (1, gates * hidden) or w_dims[2] < 1:
        raise WeightsError(f"{source}: W has shape {w_dims}; {layer} it must be "
                           f"[1, {gates * hidden}, I] with I at least 1")
    for what, want in (("B", (1, 2 * gates * hidden)), ("P", (1, 3 * hidden))):
        if what in tensors and tensors[what][1] != want:
            raise WeightsError(f"{source}: {what} has shape {tensors[what][1]}; {layer} it "
                               f"must be {list(want)}")
    require([allocation(what, dims, _onnx_dtypes()[tensor.data_type])
             for what, (tensor, dims) in tensors.items()], "the weights", source)
    arrays = {what: _onnx_array(tensor, what, source, directory)
              for what, (tensor, _dims) in tensors.items()}
    w, r = arrays["W"][0], arrays["R"][0]
    b = arrays["B"][0] if "B" in arrays else np.zeros(2 * r.shape[0], dtype=r.dtype)
    params = gate_params(graph, family, source)
    out = unstack(params, GATE_ORDER["onnx", family], w, r, b[: r.shape[0]], b[r.shape[0]:])
    if "P" in arrays:
        for k, gate in enumerate(GATE_ORDER["onnx", "lstm_peepholes"]):
            name = params[gate].peep
            if name is None:
                raise WeightsError(f"{source}: the LSTM node has peepholes (input P), but "
                                   f"gate '{gate}' of cell '{graph.name}' has no peep(...) "
                                   "operand; use a cell with peepholes (peephole_lstm)")
            out[name] = arrays["P"][0, k * hidden:(k + 1) * hidden]
    return out


@functools.cache
def _onnx_dtypes() -> dict[int, np.dtype]:
    """The NumPy dtype of each ONNX data type in :data:`_ONNX_TYPES`, by its number."""
    from onnx import TensorProto, helper

    return {TensorProto.DataType.Value(name): np.dtype(helper.tensor_dtype_to_np_dtype(
        TensorProto.DataType.Value(name))) for name in _ONNX_TYPES}


def _onnx_header(tensor: Any, what: str, source: str) -> tuple[Any, tuple[int, ...]]:
    """``(tensor, dims)`` once its data type holds real numbers, its dims are sane, and
    the data stored in the model (not outside it) is as long as the dims declare."""
    from onnx import TensorProto, helper

    if tensor.data_type not in _onnx_dtypes():
        kind = TensorProto.DataType.Name(tensor.data_type) \
            if tensor.data_type in TensorProto.DataType.values() else str(tensor.data_type)
        raise WeightsError(f"{source}: {what} has data type {kind}; parameters are real "
                           f"numbers ({', '.join(_ONNX_TYPES)})")
    if tensor.HasField("segment"):
        raise WeightsError(f"{source}: {what} is stored in segments, which are not supported")
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise WeightsError(f"{source}: {what} has the impossible shape {dims}")
    if tensor.data_location == TensorProto.EXTERNAL:
        return tensor, dims
    count = math.prod(dims)
    if tensor.HasField("raw_data"):
        held, wanted = len(tensor.raw_data), count * _onnx_dtypes()[tensor.data_type].itemsize
        unit = "bytes"
    else:
        held = len(getattr(tensor, helper.tensor_dtype_to_field(tensor.data_type)))
        wanted, unit = count, "numbers"
    if held != wanted:
        raise WeightsError(f"{source}: {what} declares shape {dims} ({wanted} {unit}) but "
                           f"holds {held} {unit}; the model is damaged")
    return tensor, dims


def _onnx_array(tensor: Any, what: str, source: str, directory: Path | None) -> np.ndarray:
    """The values of a tensor checked by :func:`_onnx_header`."""
    from onnx import TensorProto, numpy_helper

    if tensor.data_location == TensorProto.EXTERNAL:
        declared = math.prod(tensor.dims) * _onnx_dtypes()[tensor.data_type].itemsize
        copy = TensorProto()
        copy.CopyFrom(tensor)
        copy.raw_data = _external_bytes(tensor, what, declared, source, directory)
        copy.data_location = TensorProto.DEFAULT
        del copy.external_data[:]
        tensor = copy
    try:
        return np.asarray(numpy_helper.to_array(tensor))
    except (ValueError, TypeError) as err:
        raise WeightsError(f"{source}: cannot read {what} ({err})") from None


def _external_bytes(tensor: Any, what: str, declared: int, source: str,
                    directory: Path | None) -> bytes:
    """The bytes of a tensor stored in a file beside the model; only a regular file inside
    the model's directory is read, and only the bytes the tensor declares."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if directory is None:
        raise WeightsError(f"{source}: {what} is stored outside the model ('{location}'); "
                           "load the model from its file")
    base = directory.resolve()
    target = (base / location).resolve() if location else base
    if not location or Path(location).is_absolute() or base not in target.parents:
        raise WeightsError(f"{source}: {what} is stored in '{location}', outside the model's "
                           f"directory {base}; only files beside the model are read")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(declared)))
    except ValueError:
        raise WeightsError(f"{source}: {what}'s external data has a bad offset or length") \
            from None
    if offset < 0 or length != declared:
        raise WeightsError(f"{source}: {what} declares {declared} bytes but its external data "
                           f"is {length} bytes at offset {offset}")
    try:
        with open(target, "rb") as stream:
            status = os.fstat(stream.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise WeightsError(f"{source}: {what}'s external data {target} is not a "
                                   "regular file")
            if offset + length > status.st_size:
                raise WeightsError(f"{source}: {what} needs {length} bytes at offset {offset} "
                                   f"of {target}, which holds {status.st_size}; the file is "
                                   "too short")
            stream.seek(offset)
            data = stream.read(length)
    except OSError as err:
        raise WeightsError(f"{source}: cannot read {what}'s external data {target} "
                           f"({err.strerror or err})") from None
    if len(data) != length:
        raise WeightsError(f"{source}: {what}'s external data {target} is too short")
    return data


def load_onnx(path: Path, graph: CellGraph) -> dict[str, np.ndarray]:
    """Our parameters from an ``.onnx`` file; external data only from the model's directory."""
    require_file(path, WeightsError)
    try:
        import onnx
    except ImportError:
        raise WeightsError(f"{path}: reading .onnx files needs the onnx package: "
                           f"{install_hint('import')}") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except Exception as err:  # protobuf DecodeError and friends
        raise WeightsError(f"{path}: not a readable ONNX model ({err})") from None
    return from_onnx_model(model, graph, str(path), path.parent)


def read_weights(source: str | Path | Mapping[str, Any], graph: CellGraph) -> dict[str, Any]:
    """Parameters for ``graph`` from a dict, an ``.npz``, a PyTorch ``.pt``/``.pth`` or an
    ``.onnx`` file.

    A dict already in our names is returned as is; a PyTorch state dict is translated;
    an ``.npz`` gives its arrays by their headers
    (:class:`~lstm_graph.formats.arrays.StoredArray`), read only once
    :func:`~lstm_graph.formats.weights.check_weights` finds that they fit.
    """
    if isinstance(source, Mapping):
        if any(str(k).endswith("weight_ih_l0") for k in source):
            return from_torch_state_dict(source, graph, "state dict")
        return dict(source)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return open_npz(path, WeightsError)  # headers: checked before any data is read
    if suffix in (".pt", ".pth"):
        return load_torch(path, graph)
    if suffix == ".onnx":
        return load_onnx(path, graph)
    raise WeightsError(f"{path}: unknown weights format '{suffix}'; use .npz (our names), "
                       ".pt/.pth (a PyTorch state dict) or .onnx")
