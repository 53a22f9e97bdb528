"""PyTorch recurrent layers from state dicts: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` with any
``num_layers``, ``bidirectional``, ``proj_size`` and ``bias``, and ``nn.LSTMCell``,
``nn.GRUCell``, ``nn.RNNCell`` (a cell applied over the sequence).

A ``.pt``/``.pth`` file is read with ``torch.load(weights_only=True)``, so no code in it
ever runs; it may hold the layer's state dict, a model's state dict holding exactly one
recurrent layer (``encoder.lstm.weight_ih_l0`` beside other modules' weights), or a
checkpoint dict holding such a state dict under a key (``model``, ``state_dict``, …).
A whole pickled module or a TorchScript archive is refused with our own message.
Every key, kind, dtype and shape is checked before anything is computed.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.errors import WeightsError, install_hint, printable
from lstm_graph.formats.memory import require_file, require_unpacked
from lstm_graph.formats.recurrent import (
    DEFAULT_ACTIVATIONS,
    GATES,
    CellSpec,
    LayerFile,
    StackedWeights,
)
from lstm_graph.layers import MAX_LAYERS

#: The tensor dtypes a layer's parameters may have: the floating-point ones NumPy has.
TORCH_DTYPES = ("float16", "float32", "float64")
#: A recurrent parameter's key: its module's prefix, its kind, and for a layer
#: (not a cell) its layer number and direction.
_KEY = re.compile(r"^(?P<prefix>.*?)(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
                  r"(?:_l(?P<layer>\d+)(?P<reverse>_reverse)?)?$")
#: A key that names a recurrent parameter in another form than ``_KEY``'s: a
#: parametrization's (``parametrizations.weight_hh_l1.original0`` of weight_norm, or the
#: older ``weight_hh_l1_g`` and ``_v``), which holds the weight only as a function of its
#: parts.
_PARAMETRIZED = re.compile(r"(?:^|\.)(?:parametrizations\.)?(weight_ih|weight_hh|bias_ih|"
                           r"bias_hh|weight_hr)(?:_l\d+(?:_reverse)?)?(?:\.|_g$|_v$)")
_FAMILY_BY_GATES = {count: family for family, count in GATES.items()}
_MODULES = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}
#: How deep a checkpoint may nest the state dict (``{"model": {"state_dict": …}}``).
_DEPTH = 4
#: What is said whenever an nn.RNN's weights are read for the tanh cell.
RNN_NOTE = ("note: {source} holds nn.RNN weights, which do not record the nonlinearity: "
            "assuming tanh, nn.RNN's default; for nonlinearity='relu' name the cell rnn_relu")


def load(path: Path) -> LayerFile:
    """The recurrent layer a ``.pt``/``.pth`` file holds (see the module docstring)."""
    return from_state_dict(read(path), str(path))


def read(path: Path) -> Any:
    """What ``torch.load(weights_only=True)`` gives for ``path``, or our error; a
    ``torch.save`` archive (a zip) only where its members, all of which ``torch.load``
    reads, fit in memory unpacked."""
    require_file(path, WeightsError)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                unpacked = sum(member.file_size for member in archive.infolist())
                require_unpacked(path, unpacked, path.stat().st_size)
                damaged = archive.testzip()  # torch.load reads past a wrong checksum
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise WeightsError(f"{path}: not a readable PyTorch file (a damaged zip archive: "
                               f"{printable(str(err))})") from None
        if damaged is not None:
            raise WeightsError(f"{path}: not a readable PyTorch file (a damaged zip archive: "
                               f"the bytes of {printable(damaged)} fail their checksum)")
    else:
        with open(path, "rb") as stream:
            if stream.read(4) == b"PK\x03\x04":  # a zip's first member, and no end found
                raise WeightsError(f"{path}: not a readable PyTorch file (a truncated or "
                                   "damaged zip archive: the list of its members at its end "
                                   "is missing)")
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: reading .pt files needs PyTorch: "
                           f"{install_hint('import')}; or save the weights as .npz") from None
    try:
        with warnings.catch_warnings():  # torch's deprecation notes are not the user's concern
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        text = str(err)
        if "Unsupported operand" in text or "invalid load key" in text:  # not a pickle
            raise WeightsError(f"{path}: not a readable PyTorch file (neither a torch.save "
                               "archive nor a pickle that torch.load reads with weights only)"
                               ) from None
        if "Unsupported global: GLOBAL numpy" in text:  # arrays, not tensors: no code
            raise WeightsError(f"{path}: holds NumPy arrays, not tensors, which a weights-only "
                               "load does not read (they are pickled objects); save tensors "
                               "(torch.from_numpy(a)), or the arrays as .npz (numpy.savez)"
                               ) from None
        other = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)",
                          text)
        if other and other.group(1).split(".")[0] != "torch":  # a checkpoint's extra
            raise WeightsError(f"{path}: holds a pickled {printable(other.group(1))}, "
                               "which a weights-only load does not make (making it "
                               "would run code); lstm-graph never runs code from a file: "
                               "save tensors, numbers and text alone (model.state_dict(), "
                               "or a dict of those)") from None
        if any(mark in text for mark in ("Weights only load failed", "jit.load",
                                          "TorchScript", "Unsupported global")):
            raise WeightsError(f"{path}: holds a whole pickled module or a TorchScript "
                               "archive, not a state dict; lstm-graph never runs code from a "
                               "file: save model.state_dict() (torch.save(model.state_dict(), "
                               "'weights.pt')) and pass that") from None
        first = printable(text.strip().splitlines()[0]) if text.strip() \
            else type(err).__name__
        raise WeightsError(f"{path}: refused or unreadable as a weights-only PyTorch file "
                           f"({first}); nothing in it was run") from None


@dataclass(frozen=True)
class _Found:
    """One recurrent module's parameters in a (possibly nested) state dict."""

    where: str  # "", or the checkpoint keys leading to its state dict ("model/")
    prefix: str  # its keys' common beginning ("encoder.lstm.")
    keys: dict[str, tuple[str, int | None, bool]]  # key -> (kind, layer, reverse)
    state: Mapping[str, Any]


def _find(state: Any, where: str, depth: int, source: str) -> list[_Found]:
    """Every recurrent module in ``state`` and the mappings nested in it."""
    if not isinstance(state, Mapping) or depth > _DEPTH:
        return []
    groups: dict[str, dict[str, tuple[str, int | None, bool]]] = {}
    found = []
    for key, value in state.items():
        match = _KEY.match(key) if isinstance(key, str) else None
        if isinstance(key, str) and not match and not isinstance(value, Mapping) and \
                _PARAMETRIZED.search(key):
            raise WeightsError(
                f"{source}: holds '{where}{key}', a recurrent weight kept as the parts of a "
                "parametrization (weight_norm and its kind), which lstm-graph does not "
                "compose: remove it before saving (torch.nn.utils.parametrize."
                "remove_parametrizations(module, 'weight_hh_l0'), or remove_weight_norm) "
                "and save the plain weights")
        if isinstance(value, Mapping) and not match:
            found += _find(value, f"{where}{key}/", depth + 1, source)
        elif match:
            layer = match.group("layer")
            groups.setdefault(match.group("prefix"), {})[key] = (
                match.group("kind"), None if layer is None  # past 9 digits: too deep
                else int(layer) if len(layer) <= 9 else 10**9,
                bool(match.group("reverse")))
    for prefix, keys in groups.items():
        if any(kind == "weight_hh" for kind, _, _ in keys.values()):
            found.append(_Found(where, prefix, keys, state))
    return found


def from_state_dict(state: Any, source: str) -> LayerFile:
    """The recurrent layer in a state dict, a model's state dict or a checkpoint."""
    if not isinstance(state, Mapping):
        raise WeightsError(f"{source}: holds a {type(state).__name__}, not a state dict")
    odd = [key for key in state if not isinstance(key, str)]
    if odd:
        raise WeightsError(f"{source}: holds the key {odd[0]!r} of type "
                           f"{type(odd[0]).__name__}; the keys of a state dict are parameter "
                           "names such as weight_ih_l0")
    found = _find(state, "", 0, source)
    if not found:
        keys = ", ".join(sorted(map(str, state))[:8]) or "none"
        raise WeightsError(f"{source}: holds no recurrent layer (no weight_hh_l0 or "
                           f"weight_hh of an nn.LSTM, nn.GRU, nn.RNN or their cells); keys: "
                           f"{keys}")
    if len(found) > 1:
        names = ", ".join(f"'{f.where}{f.prefix or '(top level)'}'" for f in found)
        raise WeightsError(f"{source}: holds {len(found)} recurrent layers ({names}); "
                           "lstm-graph runs one: save that layer's state_dict() alone")
    layer = _layer(found[0], source)
    others = [key for key in _leaves(state, "") if key not in
              {f"{found[0].where}{name}" for name in found[0].keys}]
    if others:  # a model's or checkpoint's other modules: said, as an ONNX model's are
        shown = ", ".join(printable(key) for key in others[:3]) + (", …" if len(others) > 3
                                                                   else "")
        layer = replace(layer, notes=(*layer.notes, (
            f"note: running {layer.name} of {source} alone; its {len(others)} other "
            f"entr{'y is' if len(others) == 1 else 'ies are'} not run ({shown})")))
    return layer


def _leaves(state: Any, where: str) -> list[str]:
    """Every key of ``state`` that is not a mapping, nested ones as ``outer/inner`` (as
    :func:`_find` names them), as deep as it looks."""
    found = []
    for key, value in state.items():
        if isinstance(value, Mapping) and len(where.split("/")) <= _DEPTH:
            found += _leaves(value, f"{where}{key}/")
        else:
            found.append(f"{where}{key}")
    return found


def _layer(found: _Found, source: str) -> LayerFile:
    """A :class:`LayerFile` of one module's parameters, all checked."""
    name = f"{found.where}{found.prefix}".rstrip("./")
    called = f"'{name}'" if name else "the layer"  # a layer's state dict alone has no name
    kinds = {layer is None for _, layer, _ in found.keys.values()}
    if len(kinds) > 1:
        raise WeightsError(f"{source}: {called} mixes a cell's keys (weight_ih) with a layer's "
                           "(weight_ih_l0)")
    cell = kinds == {True}
    arrays = {key: _array(key, found.state[key], source) for key in found.keys}
    units: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    for key, (kind, layer, reverse) in found.keys.items():
        units.setdefault((layer or 0, reverse), {})[kind] = arrays[key]
    deepest = max(found.keys.items(), key=lambda item: item[1][1] or 0)
    layers = 1 + (deepest[1][1] or 0)
    if layers > MAX_LAYERS:  # before anything is made per layer
        key = deepest[0] if len(deepest[0]) <= 60 else f"{deepest[0][:57]}…"
        raise WeightsError(f"{source}: {called} has the key {key}: {layers} layers, "
                           f"more than the {MAX_LAYERS} lstm-graph runs")
    reverse = any(rev for _, rev in units)
    missing = next((f"{found.prefix}weight_ih{'' if cell else f'_l{k}'}"
                    f"{'_reverse' if rev else ''}"
                    for k in range(layers) for rev in ((False, True) if reverse else (False,))
                    if "weight_ih" not in units.get((k, rev), {})
                    or "weight_hh" not in units.get((k, rev), {})), None)
    if missing is not None:
        raise WeightsError(f"{source}: {called} lacks {missing} (or its weight_hh): every "
                           f"layer 0..{layers - 1}{' and direction' if reverse else ''} needs "
                           "its weights")
    ordered = [units[k, rev] for k in range(layers)
               for rev in ((False, True) if reverse else (False,))]
    first = ordered[0]
    projected = "weight_hr" in first
    suffix = "" if cell else "_l0"
    w_hh, w_hr = first["weight_hh"], first.get("weight_hr")
    if w_hr is not None and (w_hr.ndim != 2 or 0 in w_hr.shape):
        raise WeightsError(f"{source}: {found.prefix}weight_hr{suffix} has shape "
                           f"{w_hr.shape}; a projection's is (P, H) with P and H at least 1")
    hidden = w_hr.shape[1] if w_hr is not None else \
        w_hh.shape[1] if w_hh.ndim == 2 else 0
    if w_hh.ndim != 2 or hidden == 0 or w_hh.shape[0] == 0 or w_hh.shape[0] % hidden:
        raise WeightsError(f"{source}: {found.prefix}weight_hh{suffix} has shape "
                           f"{w_hh.shape}; a layer's is (gates·H, H) with H at least 1")
    gates = w_hh.shape[0] // hidden
    family = _FAMILY_BY_GATES.get(gates)
    if family is None:
        raise WeightsError(f"{source}: {found.prefix}weight_hh{suffix} has shape "
                           f"{w_hh.shape}: {gates} stacked gates is not an RNN (1), GRU (3) "
                           "or LSTM (4)")
    if projected and family != "lstm":
        raise WeightsError(f"{source}: {called} has weight_hr, a projection, which only "
                           "nn.LSTM has")
    proj = int(first["weight_hr"].shape[0]) if projected else None
    width = proj if proj is not None else hidden
    biased = "bias_ih" in first
    directions = 2 if reverse else 1
    stacked = []
    for index, unit in enumerate(ordered):
        layer, rev = divmod(index, directions)
        label = (f"{found.prefix}{{}}{'' if cell else f'_l{layer}'}"
                 f"{'_reverse' if rev else ''}")
        want_input = None if layer == 0 else directions * width
        stacked.append(_unit(unit, label, family, hidden, proj, biased, want_input, source))
    module = _MODULES[family] + ("Cell" if cell else "")
    notes = (RNN_NOTE.format(source=source),) if family == "rnn" else ()
    return LayerFile(source, "torch", family, f"{module} '{name}'" if name else f"the {module}",
                     (CellSpec(family, DEFAULT_ACTIVATIONS[family], projection=projected),),
                     layers, "bidirectional" if reverse else "forward", False,
                     tuple(stacked), notes=notes)


def _unit(unit: Mapping[str, np.ndarray], label: str, family: str, hidden: int,
          proj: int | None, biased: bool, want_input: int | None, source: str
          ) -> StackedWeights:
    """One layer and direction's weights, every shape checked against the layer's."""
    gates = GATES[family]
    rows = gates * hidden
    width = proj if proj is not None else hidden
    what = f"an {_MODULES[family]} with H={hidden}" + (f", proj_size={proj}" if proj else "")
    w_x, w_h = unit["weight_ih"], unit["weight_hh"]
    if w_h.shape != (rows, width):
        raise WeightsError(f"{source}: {label.format('weight_hh')} has shape {w_h.shape}; "
                           f"{what} needs ({rows}, {width})")
    if w_x.ndim != 2 or w_x.shape[0] != rows or w_x.shape[1] < 1 or \
            (want_input is not None and w_x.shape[1] != want_input):
        size = "I with I at least 1" if want_input is None else str(want_input)
        raise WeightsError(f"{source}: {label.format('weight_ih')} has shape {w_x.shape}; "
                           f"{what} needs ({rows}, {size})")
    if ("bias_ih" in unit) != biased or ("bias_hh" in unit) != biased:
        raise WeightsError(f"{source}: {label.format('bias_ih')} and bias_hh must be there in "
                           "every layer or in none (bias=False)")
    if ("weight_hr" in unit) != (proj is not None):
        raise WeightsError(f"{source}: {label.format('weight_hr')} must be there in every "
                           "layer or in none")
    biases = []
    for kind in ("bias_ih", "bias_hh"):
        bias = unit.get(kind)
        if bias is not None and bias.shape != (rows,):
            raise WeightsError(f"{source}: {label.format(kind)} has shape {bias.shape}; "
                               f"{what} needs ({rows},)")
        biases.append(np.zeros(rows, dtype=w_h.dtype) if bias is None else bias)
    projection = unit.get("weight_hr")
    if projection is not None and projection.shape != (proj, hidden):
        raise WeightsError(f"{source}: {label.format('weight_hr')} has shape "
                           f"{projection.shape}; {what} needs ({proj}, {hidden})")
    return StackedWeights(w_x, w_h, biases[0], biases[1], proj=projection)


def _array(key: str, value: Any, source: str) -> np.ndarray:
    """A state dict's value as a NumPy array of real numbers, or an error saying why not."""
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "layout"):
        layout, dtype = str(value.layout), str(value.dtype).removeprefix("torch.")
        problem = (
            "is a nested tensor; save it as a regular tensor"
            if getattr(value, "is_nested", False) else
            f"is a sparse tensor ({layout}); save it dense (tensor.to_dense())"
            if layout != "torch.strided" else
            "is a meta tensor: it has a shape but no values (saved from a model on the "
            "'meta' device?)" if value.is_meta else
            f"is a quantized tensor ({dtype}); save it dequantized (tensor.dequantize())"
            if value.is_quantized else
            f"has dtype {dtype}; a layer's parameters are floating-point numbers of a "
            f"dtype NumPy has ({', '.join(TORCH_DTYPES)}): save tensor.float()"
            if dtype not in TORCH_DTYPES else None)
        if problem:
            raise WeightsError(f"{source}: {key} {problem}")
        return np.asarray(value.detach().cpu().numpy())
    if not isinstance(value, np.ndarray):
        raise WeightsError(f"{source}: {key} is of type {type(value).__name__}, not a tensor")
    if value.dtype.kind != "f":
        raise WeightsError(f"{source}: {key} has dtype {value.dtype}; a layer's parameters "
                           f"are floating-point numbers ({', '.join(TORCH_DTYPES)})")
    return value
