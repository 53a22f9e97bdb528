"""ONNX recurrent layers: a model holding one ``LSTM``, ``GRU`` or ``RNN`` node, or a stack
of them, with every attribute of the current opset.

The node says its cell (``activations`` with ``activation_alpha``/``activation_beta``,
``clip``, ``input_forget``, ``linear_before_reset``, peepholes ``P``), its direction and
layout, and may store initial states (``initial_h``, ``initial_c``) and sequence lengths
(``sequence_lens``) beside its weights; all become a :class:`~.recurrent.LayerFile`. A
model is protobuf, never code. Tensors the model keeps in external files are read only
from files beside it. Weights are stored in the model (initializers) or computed from
stored tensors by nodes that only move numbers (``Concat``, ``Unsqueeze``, ``Slice``, …:
:mod:`.onnx_graph`, as ``lstm-graph export`` and PyTorch's two exporters write them);
weights computed any other way are refused. Initial states made as zeros shaped after
the input (``ConstantOfShape`` of 0, or a stored 0 ``Expand``-ed: PyTorch's exporters)
are zeros.

Several recurrent nodes are read as a stack where each reads the one below's output
reshaped exactly as a stack does for every size (checked on probes of two sizes, shapes
computed from the values' shapes included: :func:`.onnx_graph.reads_as_stack`), nothing
else reading a lower layer's output,
all with the same cell, direction, layout, hidden size and ``sequence_lens``; anything
else is refused. A layout-0 stack whose input is the model's input transposed from
batch-major (PyTorch's ``batch_first=True``) is read as batch-first, and a layout-1
stack whose input is transposed from time-major as time-major; a first layer whose
input is computed otherwise (arithmetic, an embedding, a reversal, a reshape of another
layout) is refused, since ``x`` would be run as that input without those nodes. The
model's other nodes are not run (a note counts them and names their kinds).

How the activations' ``alpha`` and ``beta`` are read follows onnxruntime: in the order
of the activations, each function that takes an ``alpha`` (``beta``) takes the next
value of ``activation_alpha`` (``activation_beta``); a function left without one gets
its ONNX operator's default, where onnxruntime agrees with it (LeakyRelu 0.01,
HardSigmoid 0.2 and 0.5, Elu 1.0). Where they disagree (ThresholdedRelu, Affine,
ScaledTanh: 1.0 in the operators, 0.0 in onnxruntime) the model must give the value.
"""

from __future__ import annotations

import functools
import math
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.errors import WeightsError, install_hint
from lstm_graph.formats.memory import allocation, require, require_file
from lstm_graph.formats.onnx_graph import (
    MOVERS,
    Chain,
    Constants,
    FromInput,
    Unfoldable,
    chain_to,
    keeps_layout,
    named,
    reads_as_stack,
    swaps_time_and_batch,
)
from lstm_graph.formats.recurrent import (
    DEFAULT_ACTIVATIONS,
    FAMILY_STATES,
    GATES,
    Activation,
    CellSpec,
    LayerFile,
    StackedWeights,
)
from lstm_graph.layers import DIRECTIONS
from lstm_graph.ops import ONNX_ACTIVATIONS

#: ONNX tensor data types of real numbers that NumPy holds.
_ONNX_TYPES = ("FLOAT", "DOUBLE", "FLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8",
               "UINT16", "UINT32", "UINT64")
#: The recurrent operators and their inputs by position (their gates: ``GATES``).
OPERATORS: dict[str, tuple[str, ...]] = {
    "LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
    "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    "RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
}
#: The attributes each operator has (opset 22).
ATTRIBUTES: dict[str, frozenset[str]] = {
    op: frozenset({"activation_alpha", "activation_beta", "activations", "clip", "direction",
                   "hidden_size", "layout", *extra})
    for op, extra in (("LSTM", ("input_forget",)), ("GRU", ("linear_before_reset",)),
                      ("RNN", ()))}
#: The type of each attribute (``AttributeProto``'s name for it, and the field that holds
#: its value): one of another type is refused, as onnxruntime and ``onnx.checker`` refuse
#: it (read by its field, a ``layout`` of 1.0 was layout 0 and an ``activation_alpha`` of
#: integers none at all).
ATTRIBUTE_TYPES: dict[str, tuple[str, str]] = {
    "activation_alpha": ("FLOATS", "floats"), "activation_beta": ("FLOATS", "floats"),
    "activations": ("STRINGS", "strings"), "clip": ("FLOAT", "f"),
    "direction": ("STRING", "s"), "hidden_size": ("INT", "i"), "layout": ("INT", "i"),
    "input_forget": ("INT", "i"), "linear_before_reset": ("INT", "i")}
_KINDS = {"FLOAT": "a float", "FLOATS": "a list of floats", "INT": "an integer",
          "STRING": "a string", "STRINGS": "a list of strings"}
#: Activation attributes whose default onnxruntime and the ONNX operators agree on.
_AGREED_DEFAULTS = {"LeakyRelu": {"alpha": 0.01}, "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
                    "Elu": {"alpha": 1.0}}
_ACTIVATIONS_BY_LOWER = {name.lower(): name for name in ONNX_ACTIVATIONS}


def load(path: Path) -> LayerFile:
    """The recurrent layer of an ``.onnx`` file; external data only from its directory."""
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
    return from_model(model, str(path), path.parent)


def from_model(model: Any, source: str, directory: Path | None = None) -> LayerFile:
    """The recurrent layers of an ONNX model (see the module docstring)."""
    graph = model.graph
    nodes = [n for n in graph.node if n.op_type in OPERATORS and n.domain in ("", "ai.onnx")]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if nodes and opset is not None and opset < FIRST_OPSET:
        raise WeightsError(f"{source}: is opset {opset}, whose {nodes[0].op_type} operator "
                           f"predates the one lstm-graph reads (opset {FIRST_OPSET} and later: "
                           "output_sequence and other attributes were dropped); convert the "
                           "model (onnx.version_converter) or export it again")
    if not nodes:
        ops = {n.op_type for n in graph.node}
        unrolled = "; a recurrent layer written step by step (PyTorch's dynamo exporter " \
            "writes nn.RNN so: export it with dynamo=False) or a cell's step written as " \
            "its products and activations is not read: lstm-graph reads ONNX's LSTM, GRU " \
            "and RNN operators" \
            if {"MatMul", "Gemm"} & ops and {"Tanh", "Relu", "Sigmoid"} & ops else ""
        if model.producer_name == "lstm-graph" and "Scan" in ops:  # our own export's Scan
            unrolled = "; it is lstm-graph's export of a cell as a Scan over its step " \
                "(the cell is no ONNX LSTM, GRU or RNN, or it was exported with --scan or " \
                "in float64), which is not read back: run the cell itself with its weights " \
                "(lstm-graph run CELL --weights w.npz)"
        raise WeightsError(f"{source}: holds no LSTM, GRU or RNN node (its nodes: "
                           f"{', '.join(sorted(ops)) or 'none'}){unrolled}")
    try:
        constants = Constants(graph, lambda tensor, what: _array(
            _header(tensor, what, source)[0], what, source, directory), source)
    except Unfoldable as why:
        raise WeightsError(f"{source}: {why}") from None
    ordered, chains = _stack_order(nodes, constants, source)
    fed = _sliced_states(ordered, constants)  # a layer of one too (PyTorch's dynamo)
    layers = [_node_layer(node, constants, source, fed) for node in ordered]
    what = layers[0].name if len(layers) == 1 else \
        f"the {len(layers)} {ordered[0].op_type} nodes " + ", ".join(map(named, ordered))
    layer = layers[0] if len(layers) == 1 else \
        _stacked(layers, ordered, chains, constants, graph, what, source)
    between = [node for chain in chains for node in [*chain.nodes, *chain.shaping]]
    found = chain_to(ordered[0].input[0], constants, constants.inputs)
    if found is None:
        raise WeightsError(_computed_input(ordered[0], constants, source))
    if swaps_time_and_batch(found, constants, layer.input_size):
        # the model's input has the other layout (PyTorch exports batch_first=True so)
        layer = replace(layer, batch_first=not layer.batch_first)
    elif found.nodes and not keeps_layout(found, constants, layer.input_size):
        kinds = ", ".join(dict.fromkeys(f"{n.op_type} {named(n)}" for n in found.nodes))
        raise WeightsError(f"{source}: the model reshapes its input '{found.start}' into the X "
                           f"of {named(ordered[0])} ({kinds}) otherwise than by swapping time "
                           f"and batch; x is run as X itself, so {RUN_ALONE}")
    between += [*found.nodes, *found.shaping]
    used = {n.output[0] for n in [*ordered, *between] if n.output} | constants.folded | \
        set(fed)  # a stack's state input, cut per layer by Slice nodes
    others = [n.op_type for n in graph.node if not n.output or n.output[0] not in used]
    notes = tuple(dict.fromkeys(note for each in layers for note in each.notes))
    if others:
        kinds = ", ".join(sorted(set(others)))
        if set(others) <= MOVERS | {"Shape"}:
            kinds += ": they only move, select or retype numbers"
        one = len(others) == 1
        notes = (f"note: running {what} of {source} alone; the model's {len(others)} other "
                 f"node{'' if one else 's'} ({kinds}) {'is' if one else 'are'} not run", *notes)
    return replace(layer, notes=notes)


#: The first opset whose LSTM, GRU and RNN are those read here (LSTM-7, GRU-7, RNN-7; later
#: versions add layout and types, and keep the rest).
FIRST_OPSET = 7
#: What a model whose recurrent layers read something else than its input gets told.
RUN_ALONE = ("the numbers would not be the model's: lstm-graph runs only its recurrent "
             "layers; export them alone, or compute their input and give that as x")


def _computed_input(first: Any, constants: Constants, source: str) -> str:
    """Why a model whose first recurrent layer's X is computed (by arithmetic, an
    embedding, a reversal) rather than reshaped from the model's input is refused: its x
    would be run as X, without those nodes."""
    name = first.input[0]
    maker = constants.made_by.get(name)
    made = f"made by {maker.op_type} {named(maker)}" if maker is not None else \
        "not an input of the model"
    return (f"{source}: the X of {first.op_type} {named(first)} ('{name}') is {made}, not "
            f"the model's input as it is (or reshaped); x is run as X itself, so {RUN_ALONE}")


def _stack_order(nodes: list[Any], constants: Constants, source: str
                 ) -> tuple[list[Any], list[Chain]]:
    """The recurrent nodes as layers, bottom first, and the nodes between each two
    (:func:`~.onnx_graph.chain_to`): each layer after the first must read the
    one below's output through reshaping alone (what that reshaping does is checked by
    :func:`_stacked`, once the layers' sizes are read)."""
    if len(nodes) == 1:
        return nodes, []
    outputs = {n.output[0]: n for n in nodes if n.output and n.output[0]}
    above: dict[int, tuple[Any, Chain]] = {}  # by the lower layer: the one above, the join
    reads_another: set[int] = set()
    for node in nodes:
        found = chain_to(node.input[0], constants, set(outputs)) if node.input else None
        if found is not None:
            above[id(outputs[found.start])] = (node, found)
            reads_another.add(id(node))
    firsts = [n for n in nodes if id(n) not in reads_another]
    refused = WeightsError(
        f"{source}: holds {len(nodes)} recurrent nodes: "
        f"{', '.join(f'{named(n)} ({n.op_type})' for n in nodes)}, which are not one stack "
        "of layers (each reading the one below's output, reshaped as a stack does); "
        "lstm-graph runs one layer or one stack from a model")
    if len(firsts) != 1:
        raise refused
    ordered, chains = firsts, []
    while id(ordered[-1]) in above and len(ordered) <= len(nodes):
        upper, chain = above[id(ordered[-1])]
        ordered.append(upper)
        chains.append(chain)
    if len(ordered) != len(nodes) or len({id(n) for n in ordered}) != len(nodes):
        raise refused
    return ordered, chains


def _stacked(layers: list[LayerFile], ordered: list[Any], chains: list[Chain],
             constants: Constants, graph: Any, what: str, source: str) -> LayerFile:
    """One :class:`LayerFile` of the layers of a stack, checked to be one: one operator,
    cell, direction, layout, hidden size and ``sequence_lens``; each layer's input the
    one below's output reshaped exactly as a stack does, which nothing else reads (a
    model whose outputs are a lower layer's is not its stack's)."""
    first = layers[0]
    outputs = {value.name for value in graph.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for layer, lower, node, chain in zip(layers[1:], ordered, ordered[1:], chains):
        name = f"the {node.op_type} node {named(node)}"
        if node.op_type != lower.op_type:
            raise WeightsError(f"{source}: the {lower.op_type} node {named(lower)} feeds "
                               f"{name}; a stack's layers are one operator")
        differs = [part for part, same in (
            ("cell", layer.cells == first.cells),
            ("direction", layer.direction == first.direction),
            ("layout", layer.batch_first == first.batch_first),
            ("hidden size", layer.hidden_size == first.hidden_size)) if not same]
        if differs:
            raise WeightsError(f"{source}: {name} has another {differs[0]} than the first "
                               f"layer's; the layers of a stack lstm-graph runs share them")
        directions = 2 if first.direction == "bidirectional" else 1
        width = first.hidden_size * directions
        if layer.input_size != width:
            raise WeightsError(f"{source}: {name}'s W reads {layer.input_size} inputs; above "
                               f"a layer of {width} outputs it must read {width}")
        if not reads_as_stack(chain, constants, directions, first.hidden_size,
                              first.batch_first):
            through = ", ".join(n.op_type for n in reversed(chain.nodes)) or "nothing"
            raise WeightsError(f"{source}: {name} reads the output of {named(lower)} through "
                               f"{through}, which does not reshape it as a stack's layers do "
                               "((T, D, B, H) to (T, B, D·H)) for every T and B; lstm-graph "
                               "runs such models only as that (a model exported for fixed "
                               "sizes reshapes for those alone: export it with dynamic sizes, "
                               "as torch.onnx.export's dynamic_shapes or dynamo=False give)")
        way = [lower.output[0], *(n.output[0] for n in reversed(chain.nodes))]
        takers = [*reversed(chain.nodes), node]
        for value, taker in zip(way, takers):  # Shape nodes read no numbers: they may too
            numbers = [id(n) for n in readers.get(value, []) if n.op_type != "Shape"]
            if value in outputs or numbers != [id(taker)]:
                raise WeightsError(
                    f"{source}: the output of {named(lower)}, below {name}, is also "
                    f"{'an output of the model' if value in outputs else 'read by other nodes'}"
                    f" ('{value}'); lstm-graph runs a stack whose lower layers feed only the "
                    "layer above, and gives the top layer's output")
    lens = {node.input[4] if len(node.input) > 4 else "" for node in ordered}
    if len(lens) > 1:
        raise WeightsError(f"{source}: its layers take different sequence_lens "
                           f"({', '.join(repr(n) for n in sorted(lens))}); a stack's layers "
                           "all take the one the bottom layer takes")
    state = {}
    for name in FAMILY_STATES[first.family]:
        given = [(node, layer.state.get(name)) for node, layer in zip(ordered, layers)]
        known = [(node, value) for node, value in given if value is not None]
        if not known:
            continue
        (node, value), *rest = known
        for other, other_value in rest:
            if other_value.shape != value.shape:
                raise WeightsError(
                    f"{source}: the initial_{name} of {named(node)} has shape {value.shape} "
                    f"and that of {named(other)} {other_value.shape}; a stack's layers start "
                    "the same sequences")
        state[name] = np.concatenate([v if v is not None else np.zeros_like(value)
                                      for _, v in given])
    return LayerFile(source, "onnx", first.family, what, first.cells, len(layers),
                     first.direction, first.batch_first,
                     tuple(unit for layer in layers for unit in layer.units), state,
                     first.lengths)


def _sliced_states(ordered: list[Any], constants: Constants) -> dict[str, str]:
    """Where each layer's ``initial_h`` (and ``initial_c``) of a stack is its part of one
    input of the model, sliced along the first axis, layer k's rows D·k to D·(k+1) (what
    PyTorch exports for ``nn.LSTM(num_layers=L)(x, (h0, c0))``): the stack's own
    ``(L·D, B, H)`` state, which ``--state`` gives. Maps each layer's sliced value to that
    input; empty where they are not so (they are then read, or refused, layer by layer)."""
    first = {a.name: a for a in ordered[0].attribute}
    if _int(first, "layout", 0) != 0:
        return {}
    directions = 2 if _string(first, "direction", "forward") == "bidirectional" else 1
    found: dict[str, str] = {}
    for index in (5, 6):  # initial_h, initial_c
        names = [node.input[index] if len(node.input) > index else "" for node in ordered]
        cuts = [_slice_of_input(constants, name) if name else None for name in names]
        sources = {cut[0] for cut in cuts if cut is not None}
        if len(sources) == 1 and all(
                cut is not None and cut[1:] == (directions * k, directions * (k + 1))
                for k, cut in enumerate(cuts)):
            found.update(dict.fromkeys(names, sources.pop()))
    return found


def _slice_of_input(constants: Constants, name: str) -> tuple[str, int, int] | None:
    """``(input, start, stop)`` where ``name`` is ``input[start:stop]`` along the first axis,
    an input of the model cut by one Slice of constant bounds, step 1; else None."""
    node = constants.made_by.get(name)
    if node is None or node.op_type != "Slice" or node.input[0] not in constants.inputs:
        return None
    operands = (list(node.input[1:5]) + [""] * 4)[:4]  # starts, ends, axes, steps
    try:
        starts, ends, axes, steps = (constants.value(operand).tolist() if operand else None
                                     for operand in operands)
    except Unfoldable:
        return None
    if not (isinstance(starts, list) and isinstance(ends, list) and len(starts) == 1 == len(
            ends) and axes in (None, [0]) and steps in (None, [1])):
        return None
    return node.input[0], int(starts[0]), int(ends[0])


def _node_layer(node: Any, constants: Constants, source: str,
                fed: dict[str, str] | None = None) -> LayerFile:
    """The layer one recurrent node computes: its cell, direction and layout, and the
    weights, initial states and lengths stored in the model or computed from stored
    tensors (:class:`~.onnx_graph.Constants`); ``fed``: values that are a stack's state
    input, cut for this layer (:func:`_sliced_states`)."""
    fed = fed or {}
    op = node.op_type
    label = f"the {op} node '{node.name}'" if node.name else f"the {op} node"
    attrs = {a.name: a for a in node.attribute}
    unknown = sorted(set(attrs) - ATTRIBUTES[op])
    if unknown:
        raise WeightsError(f"{source}: {label} has the attribute {unknown[0]}, which the "
                           f"{op} operator does not define")
    for _, attribute in sorted(attrs.items()):
        _check_type(attribute, f"{source}: {label}")
    direction = _string(attrs, "direction", "forward")
    if direction not in DIRECTIONS:
        raise WeightsError(f"{source}: {label} has direction '{direction}'; the {op} "
                           f"operator's are {', '.join(DIRECTIONS)}")
    layout = _int(attrs, "layout", 0)
    if layout not in (0, 1):
        raise WeightsError(f"{source}: {label} has layout {layout}; it is 0 (time-major) or 1 "
                           "(batch-major)")
    directions = 2 if direction == "bidirectional" else 1
    family = op.lower()
    cells = _cells(attrs, family, directions, f"{source}: {label}")
    notes = []
    gates, inputs = GATES[op.lower()], OPERATORS[op]
    given = {what: node.input[k] for k, what in enumerate(inputs)
             if k < len(node.input) and node.input[k]}
    tensors: dict[str, tuple[Any, tuple[int, ...]]] = {}
    folded: dict[str, np.ndarray] = {}
    zeros: dict[str, tuple[str, tuple[int | None, ...] | None]] = {}
    for what, name in given.items():
        if what == "X":
            continue
        if name in constants.stored:
            tensors[what] = _header(constants.stored[name], what, source)
            _floating(what, name, label, source, _dtypes()[constants.stored[name].data_type])
        elif what in ("initial_h", "initial_c") and constants.zeros(name):
            zeros[what] = (name, constants.zeros_shape(name))  # checked once H is known
            continue  # zeros shaped after the input: what a run starts from anyway
        elif name in fed:  # this layer's rows of the stack's state, an input of the model
            notes.append(f"note: the {what} of every layer is its part of '{fed[name]}', "
                         "an input of the model, not stored in it: give it whole with "
                         f"--state (an npz holding {what[-1]}: (B, H) for one layer of "
                         "one direction, else the model's shape, (layers·directions, B, H)),"
                         " or the run uses zeros")
        elif name in constants.made_by:
            folded[what] = _folded(constants, name, what, label, source)
            _floating(what, name, label, source, folded[what].dtype)
            tensors[what] = (None, tuple(folded[what].shape))
        elif what in ("W", "R", "B", "P"):
            raise WeightsError(f"{source}: the {what} ('{name}') of {label} is an input of "
                               "the model, not stored in it; weights must be initializers")
        else:  # sequence_lens, initial_h, initial_c: fed when the model runs
            # a run's states are time-major, as PyTorch's h0: never the node's (B, D, H)
            shaped = "; (B, H), or (layers·directions, B, H) for a stack: not the node's " \
                "layout=1 (B, directions, H)" if layout == 1 else ""
            option = "--lengths" if what == "sequence_lens" else \
                f"--state (an npz holding {what[-1]}{shaped})"
            default = "full lengths" if what == "sequence_lens" else "zeros"
            notes.append(f"note: the {what} ('{name}') of {label} is an input of the model, "
                         f"not stored in it: give it with {option}, or the run uses "
                         f"{default}")
    for what in ("W", "R"):
        if what not in tensors:
            raise WeightsError(f"{source}: {label} has no {what} stored in the model")
    r_dims, w_dims = tensors["R"][1], tensors["W"][1]
    hidden = r_dims[2] if len(r_dims) == 3 else 0
    if hidden < 1 or r_dims != (directions, gates * hidden, hidden):
        raise WeightsError(f"{source}: R has shape {r_dims}; {label} ({direction}) needs "
                           f"[{directions}, {gates}·H, H] with H at least 1")
    if "hidden_size" in attrs and attrs["hidden_size"].i != hidden:
        raise WeightsError(f"{source}: the hidden_size of {label} is "
                           f"{attrs['hidden_size'].i}, but R has shape {r_dims} (H={hidden})")
    what_layer = f"with R of shape {r_dims} ({op}, H={hidden})"
    if len(w_dims) != 3 or w_dims[:2] != (directions, gates * hidden) or w_dims[2] < 1:
        raise WeightsError(f"{source}: W has shape {w_dims}; {what_layer} it must be "
                           f"[{directions}, {gates * hidden}, I] with I at least 1")
    batch = _batch_of(tensors, layout)
    wants = {"B": (directions, 2 * gates * hidden), "P": (directions, 3 * hidden),
             "sequence_lens": (batch,),
             "initial_h": (batch, directions, hidden) if layout else (directions, batch, hidden)}
    wants["initial_c"] = wants["initial_h"]
    for what, want in wants.items():
        if what in tensors and tensors[what][1] != want:
            raise WeightsError(f"{source}: {what} has shape {tensors[what][1]}; {what_layer} "
                               f"it must be {list(want)}")
    for what, (name, dims) in zeros.items():  # zeros the model fixes some dims of
        if dims is not None and (len(dims) != 3 or any(
                d is not None and w != 0 and d != w  # w 0: a batch no tensor fixes
                for d, w in zip(dims, wants[what]))):
            shown = ", ".join("?" if d is None else str(d) for d in dims)
            needed = ", ".join("B" if w == 0 else str(w) for w in wants[what])
            raise WeightsError(f"{source}: the {what} ('{name}') of {label} is zeros of shape "
                               f"({shown}); {what_layer} it must be ({needed}): the model does "
                               "not run as written (onnxruntime refuses it; PyTorch's dynamo "
                               "exporter writes a projected nn.LSTM so): give lstm-graph the "
                               "module's state dict (.pt), which it runs with its projection")
    require([allocation(what, dims, _dtypes()[tensor.data_type])
             for what, (tensor, dims) in tensors.items() if tensor is not None],
            "the model's tensors", source)
    arrays = {what: folded[what] if tensor is None else constants.read(tensor, what)
              for what, (tensor, _dims) in tensors.items()}
    units = []
    for d in range(directions):
        b = arrays["B"][d] if "B" in arrays else np.zeros(2 * gates * hidden,
                                                           dtype=arrays["R"].dtype)
        units.append(StackedWeights(arrays["W"][d], arrays["R"][d], b[: gates * hidden],
                                    b[gates * hidden:], arrays["P"][d] if "P" in arrays else None))
    if "P" in arrays:
        cells = tuple(CellSpec(c.family, c.activations, c.clip, c.input_forget, True,
                               c.linear_before_reset) for c in cells)
    state = {}
    for what, name in (("initial_h", "h"), ("initial_c", "c")):
        if what in arrays and name in FAMILY_STATES[family]:
            value = arrays[what]
            state[name] = np.ascontiguousarray(value.transpose(1, 0, 2) if layout else value)
    lengths = None
    if "sequence_lens" in arrays:
        lengths = arrays["sequence_lens"]
        if lengths.dtype.kind not in "iu":
            raise WeightsError(f"{source}: sequence_lens has dtype {lengths.dtype}; the "
                               "operator's is int32")
        bad = [(k, int(v)) for k, v in enumerate(lengths.tolist()) if v < 1]
        if bad:
            why = "a length counts steps: it is never negative" if bad[0][1] < 0 else \
                ("every sequence needs at least one step (onnxruntime zeroes the state of "
                 "an empty one, which no step computed)")
            raise WeightsError(f"{source}: sequence_lens holds {bad[0][1]} at index "
                               f"{bad[0][0]}: {why}")
    return LayerFile(source, "onnx", family, label, cells, 1, direction, bool(layout),
                     tuple(units), state, lengths, tuple(notes))




def _folded(constants: Constants, name: str, what: str, label: str, source: str
            ) -> np.ndarray:
    """A node's operand ``what`` that other nodes compute from stored tensors alone
    (:class:`~.onnx_graph.Constants`), read once the stored parts fit in memory; a
    WeightsError that says why where it is not."""
    try:
        parts = constants.parts(name)
        require([allocation(f"{what}'s part '{tensor.name or '(a constant)'}'", dims,
                            _dtypes()[tensor.data_type])
                 for tensor, dims in (_header(t, what, source) for t in parts)],
                "the model's tensors", source)
        value = constants.value(name)
    except FromInput as why:
        if what in ("W", "R", "B", "P"):
            raise WeightsError(f"{source}: the {what} ('{name}') of {label} is not stored in "
                               f"the model: {why}; weights must be stored") from None
        option = "--lengths" if what == "sequence_lens" else f"--state (an npz of {what[-1]})"
        raise WeightsError(f"{source}: the {what} ('{name}') of {label} is computed from "
                           f"'{why.name}', an input of the model, by nodes between them; "
                           f"lstm-graph reads an {what} that the model stores, makes as "
                           "zeros, or takes as the node's own input (that one given with "
                           f"{option}), and cannot run this one: export the model without "
                           "that input (zeros made inside it), or with each layer's as an "
                           "input of its own") from None
    except Unfoldable as why:
        raise WeightsError(f"{source}: the {what} ('{name}') of {label} is not stored in the "
                           f"model, and {why}; store it as an initializer, or compute it from "
                           f"initializers by {', '.join(sorted(MOVERS))} alone") from None
    if value.dtype.kind not in "fiu":
        raise WeightsError(f"{source}: the {what} ('{name}') of {label} is computed as "
                           f"{value.dtype}; parameters are real numbers")
    return value


def _floating(what: str, name: str, label: str, source: str, dtype: np.dtype) -> None:
    """Refuse an operand other than ``sequence_lens`` (checked as lengths) that holds
    integers: the operators take floating-point weights and states."""
    if what != "sequence_lens" and dtype.kind != "f":
        raise WeightsError(f"{source}: the {what} ('{name}') of {label} holds {dtype} "
                           f"numbers; the operator's {what} is float16, float32 or float64 "
                           "(onnxruntime refuses such a model too)")


def _batch_of(tensors: dict[str, tuple[Any, tuple[int, ...]]], layout: int) -> int:
    """The batch size the stored initial states or sequence lengths fix (0: none)."""
    for what in ("sequence_lens", "initial_h", "initial_c"):
        if what in tensors:
            dims = tensors[what][1]
            axis = 0 if what == "sequence_lens" or layout else 1
            if len(dims) > axis:
                return dims[axis]
    return 0


def _string(attrs: dict[str, Any], name: str, default: str) -> str:
    return attrs[name].s.decode(errors="replace") if name in attrs else default


def _check_type(attribute: Any, where: str) -> None:
    """An error unless ``attribute`` is of its type (:data:`ATTRIBUTE_TYPES`); one of an
    undefined type (a model from before attributes had types) passes where the field of
    its type holds its value."""
    from onnx import AttributeProto

    name, (kind, field) = attribute.name, ATTRIBUTE_TYPES[attribute.name]
    if attribute.type == getattr(AttributeProto, kind):
        return
    if attribute.type == AttributeProto.UNDEFINED and (
            len(getattr(attribute, field)) if kind.endswith("S") else
            attribute.HasField(field)):
        return
    given = AttributeProto.AttributeType.Name(attribute.type) \
        if attribute.type in AttributeProto.AttributeType.values() else str(attribute.type)
    raise WeightsError(f"{where} has the attribute {name} of type {given}; the operator "
                       f"defines it as {kind} ({_KINDS[kind]}), and onnxruntime refuses the "
                       "model")


def _int(attrs: dict[str, Any], name: str, default: int) -> int:
    return int(attrs[name].i) if name in attrs else default


def _cells(attrs: dict[str, Any], family: str, directions: int, where: str
           ) -> tuple[CellSpec, ...]:
    """The cell of each direction, from the activations, clip, input_forget and
    linear_before_reset attributes (one when both directions compute alike)."""
    count = len(DEFAULT_ACTIVATIONS[family])
    if "activations" in attrs:
        names = [s.decode(errors="replace") for s in attrs["activations"].strings]
        if len(names) != count * directions:
            raise WeightsError(f"{where} has {len(names)} activations; a {family.upper()} "
                               f"with {directions} direction{'s' if directions > 1 else ''} "
                               f"takes {count * directions} ({count} per direction)")
    else:
        names = [a.op.onnx or "" for a in DEFAULT_ACTIVATIONS[family]] * directions
    alphas = list(attrs["activation_alpha"].floats) if "activation_alpha" in attrs else []
    betas = list(attrs["activation_beta"].floats) if "activation_beta" in attrs else []
    activations = []
    for name in names:
        canonical = _ACTIVATIONS_BY_LOWER.get(name.lower())
        if canonical is None:
            raise WeightsError(f"{where} uses the activation '{name}'; the operator's are "
                               f"{', '.join(sorted(ONNX_ACTIVATIONS))}")
        op = ONNX_ACTIVATIONS[canonical]
        values = []
        for attribute in op.attributes:
            pool = alphas if attribute.name == "alpha" else betas
            if pool:
                values.append(pool.pop(0))
                continue
            default = _AGREED_DEFAULTS.get(canonical, {}).get(attribute.name)
            if default is None:
                raise WeightsError(f"{where} uses {canonical} without its activation_"
                                   f"{attribute.name}: the ONNX operator's default (1.0) and "
                                   "onnxruntime's (0.0) differ; give the value in the model")
            values.append(default)
        if not all(math.isfinite(v) for v in values):
            raise WeightsError(f"{where}: {canonical}'s alpha and beta must be finite")
        activations.append(Activation(op, tuple(zip((a.name for a in op.attributes), values))))
    if alphas or betas:
        raise WeightsError(f"{where} gives {len(alphas)} activation_alpha and {len(betas)} "
                           "activation_beta values that no activation takes (onnxruntime "
                           "ignores them); remove them so the model says what it computes")
    clip = None
    if "clip" in attrs:
        clip = float(attrs["clip"].f)
        if not clip > 0:
            raise WeightsError(f"{where} has clip {clip:g}; a cell clip is a positive "
                               "threshold")
        if clip == math.inf:  # bounds nothing, as onnxruntime runs it: no clip
            clip = None
    input_forget = bool(_int(attrs, "input_forget", 0))
    before_reset = bool(_int(attrs, "linear_before_reset", 0))
    cells = [CellSpec(family, tuple(activations[d * count:(d + 1) * count]), clip,
                      input_forget, False, before_reset) for d in range(directions)]
    return tuple(cells[:1] if len(set(cells)) == 1 else cells)


@functools.cache
def _dtypes() -> dict[int, np.dtype]:
    """The NumPy dtype of each ONNX data type in :data:`_ONNX_TYPES`, by its number."""
    from onnx import TensorProto, helper

    return {TensorProto.DataType.Value(name): np.dtype(helper.tensor_dtype_to_np_dtype(
        TensorProto.DataType.Value(name))) for name in _ONNX_TYPES}


def _header(tensor: Any, what: str, source: str) -> tuple[Any, tuple[int, ...]]:
    """``(tensor, dims)`` once its data type holds real numbers, its dims are sane, and
    the data stored in the model (not outside it) is as long as the dims declare."""
    from onnx import TensorProto, helper

    if tensor.data_type not in _dtypes():
        kind = TensorProto.DataType.Name(tensor.data_type) \
            if tensor.data_type in TensorProto.DataType.values() else str(tensor.data_type)
        takes = "parameters are floating-point numbers (FLOAT, DOUBLE, FLOAT16)" \
            if what in OPERATORS["LSTM"] and what != "sequence_lens" else \
            f"parameters are real numbers ({', '.join(_ONNX_TYPES)})"
        raise WeightsError(f"{source}: {what} has data type {kind}; {takes}")
    if tensor.HasField("segment"):
        raise WeightsError(f"{source}: {what} is stored in segments, which are not supported")
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise WeightsError(f"{source}: {what} has the impossible shape {dims}")
    if tensor.data_location == TensorProto.EXTERNAL:
        return tensor, dims
    count = math.prod(dims)
    if tensor.HasField("raw_data"):
        held, wanted = len(tensor.raw_data), count * _dtypes()[tensor.data_type].itemsize
        unit = "bytes"
    else:
        held = len(getattr(tensor, helper.tensor_dtype_to_field(tensor.data_type)))
        wanted, unit = count, "numbers"
    if held != wanted:
        raise WeightsError(f"{source}: {what} declares shape {dims} ({wanted} {unit}) but "
                           f"holds {held} {unit}; the model is damaged")
    return tensor, dims


def _array(tensor: Any, what: str, source: str, directory: Path | None) -> np.ndarray:
    """The values of a tensor checked by :func:`_header`."""
    from onnx import TensorProto, numpy_helper

    if tensor.data_location == TensorProto.EXTERNAL:
        declared = math.prod(tensor.dims) * _dtypes()[tensor.data_type].itemsize
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
    if "\x00" in location:
        raise WeightsError(f"{source}: {what}'s external data has a location with a NUL "
                           f"character ({location!r})")
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
    try:  # not blocking in open(): a FIFO there would wait for a writer forever
        with os.fdopen(os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC),
                       "rb") as stream:
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
