"""A compiled cell as one ONNX model (opset 17) that onnxruntime runs.

The model's interface::

    x               (T, B, I)          graph input; T and B symbolic
    y               (T, B, D·O)        graph output: the top layer's outputs, forward half first
    final_STATE     (B, H)             one per state: its value after the last step;
                    (L·D, B, H)        for a stack, in PyTorch's h_n order

States start at zero, so a run is fed ``x`` alone. Weights are initializers named
after the cell's parameters (``f.W_x``, ``l0_reverse.f.W_x`` in a stack), in their
shapes (``f.W_x`` is ``(H, I)``).

Inside, each layer is one of two things:

- **the operator**: where the cell is exactly ONNX's ``LSTM``, ``GRU`` or ``RNN``
  (:func:`lstm_graph.export.fused.match`), one node of it per layer with its
  ``direction``; its ``W``, ``R``, ``B`` (and ``P``) are ``Concat`` nodes over the
  parameters in the operator's gate order (folded once when a runtime loads the model);
- **a Scan** per layer and direction over the cell's step: every node of the schedule in
  order, each op written by its ``onnx_nodes`` form in the op table, each ``linear`` a
  chain of ``Gemm`` nodes (one per weight matrix, the bias first) and ``Mul``/``Add`` for
  peepholes. The reverse direction scans backwards (``scan_input_directions``), and its
  outputs are laid out in the input's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.cell import Runner, _Unit
from lstm_graph.errors import DataError, install_hint
from lstm_graph.export import expected
from lstm_graph.export.fused import Fused, match
from lstm_graph.export.runtime import onnxruntime
from lstm_graph.formats import memory
from lstm_graph.formats.files import write_atomic
from lstm_graph.formats.memory import allocation
from lstm_graph.ir import NodeKind

#: The ONNX operator set the models use (``Scan`` and ``LSTM`` as of opset 14, ``Squeeze``
#: with an axes input as of 13); 17 is what ``onnx`` and onnxruntime both know well.
OPSET = 17
#: The IR version written: the lowest that carries opset 17, which every runtime since
#: onnxruntime 1.11 reads.
IR_VERSION = 8


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as err:
        raise DataError(f"exporting to ONNX needs the onnx package, which is not installed "
                        f"({err}): {install_hint('import')}") from None
    return onnx


class _Names:
    """Unique value names across a model and its Scan bodies (ONNX keeps them in one
    scope: a body may read the outer graph's names, so it must not reuse them)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


class _Graph:
    """The nodes of one graph (the model's, or a Scan body's) as they are added."""

    def __init__(self, onnx: Any, names: _Names, dtype: np.dtype):
        self.onnx, self.names, self.dtype = onnx, names, dtype
        self.nodes: list[Any] = []
        self._constants: dict[tuple[str, float], str] = {}

    def node(self, op_type: str, inputs: Sequence[str], out: str | Sequence[str] | None = None,
             **attributes: Any) -> str:
        """Add a node; return its (first) output's name. ``out`` names the outputs (made
        unique); by default one output named after the op."""
        wanted = [out] if isinstance(out, str) else list(out or [op_type.lower()])
        return self._add(op_type, inputs, wanted, attributes)

    def _add(self, op_type: str, inputs: Sequence[str], wanted: Sequence[str],
             attributes: Mapping[str, Any]) -> str:
        outputs = [self.names.fresh(name) for name in wanted]
        self.nodes.append(self.onnx.helper.make_node(
            op_type, list(inputs), outputs, name=self.names.fresh(f"{op_type}:{outputs[0]}"),
            **attributes))
        return outputs[0]

    def outputs_of(self, op_type: str, inputs: Sequence[str], outs: Sequence[str],
                   **attributes: Any) -> list[str]:
        """Add a node with several outputs; return their names."""
        self.node(op_type, inputs, outs, **attributes)
        return list(self.nodes[-1].output)

    def emit(self, op_type: str, inputs: Sequence[str | float],
             attributes: Mapping[str, float]) -> str:
        """The op table's ``onnx_nodes`` callback: numbers become constants of the dtype."""
        names = [self.scalar(v) if isinstance(v, (int, float)) else v for v in inputs]
        return self._add(op_type, names, [op_type.lower()],
                         {k: float(v) for k, v in attributes.items()})

    def scalar(self, value: float, kind: str = "float") -> str:
        """A 0-d constant of the model's dtype (``kind`` "float") or int64, made once."""
        key = (kind, float(value))
        if key not in self._constants:
            array = np.array(value, dtype=self.dtype if kind == "float" else np.int64)
            self._constants[key] = self.constant(array, f"const_{value:g}")
        return self._constants[key]

    def constant(self, array: np.ndarray, base: str) -> str:
        return self.node("Constant", [], base,
                         value=self.onnx.numpy_helper.from_array(np.asarray(array)))

    def ints(self, values: Sequence[int], base: str) -> str:
        return self.constant(np.array(values, dtype=np.int64), base)


def check_exportable(runner: Runner) -> None:
    """Refuse what an exported model cannot hold (a DataError saying why)."""
    if runner.stack.proj is not None:
        raise DataError(f"this runner projects its output to {runner.stack.proj} units "
                        "between layers (a PyTorch proj_size), which export does not write; "
                        "the cell lstm_proj exports on its own weights (h = linear(m)) as any "
                        "cell does")


def fused_operator(runner: Runner, scan: bool = False) -> Fused | None:
    """The ONNX operator every layer of ``runner`` runs as, or None: a Scan (always, with
    ``scan``). Only in float32: onnxruntime's recurrent operators have no float64 kernel,
    its Scan has."""
    if scan or np.dtype(runner.dtype) != np.float32:
        return None
    found = [match(unit.cell) for unit in runner.units]
    first = found[0]
    return first if first is not None and all(f == first for f in found) else None


def build(runner: Runner, scan: bool = False) -> Any:
    """The ONNX model (a ``ModelProto``) of ``runner``: see the module docstring (with
    ``scan``, a Scan where it would be one of ONNX's recurrent operators)."""
    onnx = _onnx()
    check_exportable(runner)
    helper = onnx.helper
    dtype = np.dtype(runner.dtype)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    names = _Names()
    states = list(runner.cell.graph.states)
    for reserved in ("x", "y", *(f"final_{s}" for s in states)):
        names.fresh(reserved)
    graph = _Graph(onnx, names, dtype)
    initializers = [onnx.numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype),
                                                 name=name)
                    for name, value in runner.weights.items()]
    names.used.update(runner.weights)
    fused = fused_operator(runner, scan)
    stack = runner.stack
    layer_input = "x"
    finals: list[dict[str, str]] = []
    if fused is not None:
        for layer in range(stack.layers):
            units = runner.units[layer * stack.directions:(layer + 1) * stack.directions]
            layer_input, layer_finals = _fused_layer(
                graph, units, fused, layer_input, stack.direction, runner.hidden_size,
                "" if stack.single else f"l{layer}.")
            finals += layer_finals
    else:
        zeros = _zeros(graph, runner.hidden_size)
        for layer in range(stack.layers):
            outputs = []
            for unit in runner.units[layer * stack.directions:(layer + 1) * stack.directions]:
                y, final = _scan_unit(graph, unit, layer_input, zeros, onnx)
                outputs.append(y)
                finals.append(final)
            layer_input = outputs[0] if len(outputs) == 1 else \
                graph.node("Concat", outputs, f"layer{layer}.y", axis=-1)
    graph.nodes.append(helper.make_node("Identity", [layer_input], ["y"], name="Identity:y"))
    single = stack.single
    for state in states:
        parts = [final[state] for final in finals]
        if single:
            graph.nodes.append(helper.make_node("Identity", parts, [f"final_{state}"],
                                                name=f"Identity:final_{state}"))
        else:
            axis0 = graph.ints([0], "axes0")
            rows = [graph.node("Unsqueeze", [p, axis0], f"{p}.row") for p in parts]
            graph.nodes.append(helper.make_node("Concat", rows, [f"final_{state}"], axis=0,
                                                name=f"Concat:final_{state}"))
    state_shape: list[int | str] = ["B", runner.hidden_size] if single else \
        [len(runner.units), "B", runner.hidden_size]
    model_graph = helper.make_graph(
        graph.nodes, runner.cell.name,
        [helper.make_tensor_value_info("x", elem, ["T", "B", runner.input_size])],
        [helper.make_tensor_value_info("y", elem, ["T", "B", runner.output_width]),
         *(helper.make_tensor_value_info(f"final_{s}", elem, state_shape) for s in states)],
        initializers)
    model_graph.doc_string = _doc(runner, fused is not None)
    model = helper.make_model(model_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="lstm-graph", producer_version=_version())
    model.ir_version = IR_VERSION
    return model


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lstm-graph")
    except metadata.PackageNotFoundError:
        return "unknown"


def _doc(runner: Runner, fused: bool) -> str:
    how = "ONNX's own recurrent operator" if fused else "a Scan over the cell's step"
    return (f"Cell '{runner.cell.name}' ({runner.stack.describe()}; I={runner.input_size}, "
            f"H={runner.hidden_size}), exported by lstm-graph as {how}. Input x (T, B, I); "
            f"outputs y (T, B, {runner.output_width}) and final_STATE for each state; "
            "states start at zero. Initializers carry the cell's parameter names.")


def _zeros(graph: _Graph, hidden: int) -> str:
    """``(B, H)`` zeros, B read off ``x``: every Scan's initial states."""
    shape = graph.node("Shape", ["x"], "x.shape")
    batch = graph.node("Slice", [shape, graph.ints([1], "one"), graph.ints([2], "two")],
                       "B")
    dims = graph.node("Concat", [batch, graph.ints([hidden], "H")], "B_H", axis=0)
    return graph.node("ConstantOfShape", [dims], "zeros",
                      value=graph.onnx.numpy_helper.from_array(np.zeros(1, graph.dtype)))


def _scan_unit(outer: _Graph, unit: _Unit, layer_input: str, zeros: str, onnx: Any
               ) -> tuple[str, dict[str, str]]:
    """One layer and direction as a Scan over the cell's step: ``(y, final states)``."""
    helper = onnx.helper
    cell, prefix = unit.cell, unit.prefix
    graph, schedule = cell.graph, cell.schedule
    body = _Graph(onnx, outer.names, outer.dtype)
    elem = helper.np_dtype_to_tensor_dtype(outer.dtype)
    values: dict[str, str] = {}
    inputs = []
    for state in graph.states:
        values[f"{state}[t-1]"] = outer.names.fresh(f"{prefix}{state}[t-1]")
        inputs.append(helper.make_tensor_value_info(values[f"{state}[t-1]"], elem,
                                                    ["B", unit.hidden_size]))
    (x_name,) = graph.inputs
    values[x_name] = outer.names.fresh(f"{prefix}{x_name}[t]")
    inputs.append(helper.make_tensor_value_info(values[x_name], elem,
                                                ["B", unit.input_size]))
    for node_id in schedule.order:
        node = graph.node(node_id)
        base = f"{prefix}{node.id}" if node.id == node.assignment else \
            f"{prefix}{node.assignment}/{node.op or 'const'}"
        if node.kind is NodeKind.CONST:
            values[node_id] = body.scalar(float(node.value or 0.0))
            continue
        args = [values[a] for a in node.args]
        op = node.operation
        if node.is_linear:
            values[node_id] = _linear(body, args, node.peep,
                                      [prefix + p for p in node.params], base)
        else:
            assert op.onnx_nodes is not None, op.name  # every op but linear has a form
            made = op.onnx_nodes(body.emit, args, node.attributes)
            values[node_id] = body.node("Identity", [made], base)
    outputs = []
    for state in graph.states:
        outputs.append(helper.make_tensor_value_info(
            body.node("Identity", [values[state]], f"{prefix}{state}[t]"), elem,
            ["B", unit.hidden_size]))
    (output,) = graph.outputs
    width = schedule.width(output, unit.input_size, unit.hidden_size)
    outputs.append(helper.make_tensor_value_info(
        body.node("Identity", [values[output]], f"{prefix}{output}.out[t]"), elem,
        ["B", width]))
    body_graph = helper.make_graph(body.nodes, f"{prefix}{cell.name}.step", inputs, outputs)
    scanned = _reversed(outer, layer_input, f"{prefix}x.reversed") if unit.reverse \
        else layer_input
    results = outer.outputs_of(
        "Scan", [zeros] * len(graph.states) + [scanned],
        [*(f"{prefix}final.{s}" for s in graph.states), f"{prefix}y"],
        body=body_graph, num_scan_inputs=1)
    y = _reversed(outer, results[-1], f"{prefix}y.reversed") if unit.reverse else results[-1]
    return y, dict(zip(graph.states, results[:-1]))


def _reversed(graph: _Graph, value: str, base: str) -> str:
    """``value`` with its first axis (time) reversed: a Slice with step -1 (a Scan's own
    reverse direction is not in every runtime, the onnx reference evaluator among them)."""
    ends = np.iinfo(np.int64).min + 1  # -INT_MAX: through the first element
    return graph.node("Slice", [value, graph.ints([-1], "minus_one"),
                                graph.ints([ends], "through_first"), graph.ints([0], "axes0"),
                                graph.ints([-1], "minus_one")], base)


def _linear(body: _Graph, args: Sequence[str], peep: Sequence[bool], params: Sequence[str],
            base: str) -> str:
    """``bias + Σ W_k · a_k + Σ p_k ⊙ a_k``: one Gemm per weight matrix (``transB``: the
    weights stay ``(H, ·)`` as the cell names them), the bias as the first's ``C``."""
    total = params[-1]
    for arg, is_peep, weight in zip(args, peep, params):
        if is_peep:
            total = body.node("Add", [total, body.node("Mul", [arg, weight], f"{base}.peep")],
                              f"{base}.sum")
        else:
            total = body.node("Gemm", [arg, weight, total], f"{base}.gemm", transB=1)
    return total


def _fused_layer(graph: _Graph, units: Sequence[_Unit], fused: Fused, layer_input: str,
                 direction: str, hidden: int, prefix: str) -> tuple[str, list[dict[str, str]]]:
    """One layer (both its directions) as ONNX's operator: ``(y, each unit's finals)``;
    ``prefix`` begins the names of its values (``l0.``; none for one unit)."""
    zero = graph.constant(np.zeros(hidden, graph.dtype), "zero_bias")

    def stacked(parts_of_unit: list[list[str]], base: str) -> str:
        axis0 = graph.ints([0], "axes0")
        rows = [graph.node("Unsqueeze", [graph.node("Concat", parts, base, axis=0), axis0],
                           base) for parts in parts_of_unit]
        return rows[0] if len(rows) == 1 else graph.node("Concat", rows, base, axis=0)

    per = [(u.prefix, dict(fused.gates)) for u in units]
    w = stacked([[p + g.w_x for g in gates.values()] for p, gates in per], f"{prefix}W")
    r = stacked([[p + g.w_h for g in gates.values()] for p, gates in per], f"{prefix}R")
    b = stacked([[p + g.b_x for g in gates.values()]
                 + [p + g.b_h if g.b_h is not None else zero for g in gates.values()]
                 for p, gates in per], f"{prefix}B")
    inputs = [layer_input, w, r, b]
    attributes: dict[str, Any] = {"hidden_size": hidden, "direction": direction,
                                  "activations": fused.activations * len(units)}
    if fused.op_type == "GRU":
        attributes["linear_before_reset"] = int(fused.linear_before_reset)
    outs = [f"{prefix}Y", f"{prefix}Y_h"]
    if fused.op_type == "LSTM":
        outs.append(f"{prefix}Y_c")
        if fused.peepholes:
            inputs += ["", "", "", stacked([[p + name for name in fused.peepholes]
                                            for p, _ in per], f"{prefix}P")]
    results = graph.outputs_of(fused.op_type, inputs, outs, **attributes)
    y = graph.node("Transpose", [results[0]], f"{prefix}Y.tbdh", perm=[0, 2, 1, 3])
    y = graph.node("Reshape", [y, graph.ints([0, 0, -1], "tb_rest")], f"{prefix}y")
    by_role = {"h": results[1], **({"c": results[2]} if fused.op_type == "LSTM" else {})}
    finals: list[dict[str, str]] = []
    for d in range(len(units)):
        index = graph.ints([d], f"direction{d}")
        finals.append({fused.states[role]: graph.node(
            "Squeeze", [graph.node("Gather", [value, index], f"{value}.{d}"),
                        graph.ints([0], "axes0")], f"{value}.{d}.bh")
            for role, value in by_role.items()})
    return y, finals


def model_bytes(model: Any) -> bytes:
    """The model serialised (a DataError for one past protobuf's 2 GB)."""
    try:
        data: bytes = model.SerializeToString()
    except ValueError as err:
        raise DataError(f"the model is too large for one ONNX file ({err})") from None
    return data


def verify(runner: Runner, model: Any, steps: int = 3, batch: int = 2) -> str:
    """Run ``model`` on a seeded input and compare it with ``runner``; a DataError if they
    differ (the model is not written). It runs in onnxruntime where it is installed, else
    in the ``onnx`` reference evaluator (a DataError where that cannot run it); returns
    which."""
    x = np.random.default_rng(0).standard_normal((steps, batch, runner.input_size)) \
        .astype(runner.dtype)
    want_y, want_states = expected(runner, x)
    try:
        ort = onnxruntime()
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        try:
            got = ReferenceEvaluator(model).run(None, {"x": x})
        except (RuntimeError, NotImplementedError) as err:  # an activation it lacks
            raise DataError(f"the exported model cannot be checked: onnxruntime is not "
                            f"installed, and the onnx reference evaluator cannot run it "
                            f"({err}); nothing was written. Install onnxruntime "
                            f"({install_hint('import')}), or write it as a Scan of the step, "
                            "which the evaluator runs (--scan), or unchecked (--no-check)"
                            ) from None
        ran = "the onnx reference evaluator"
    else:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its errors come back as exceptions
        try:
            session = ort.InferenceSession(model_bytes(model), options,
                                           providers=["CPUExecutionProvider"])
            got = session.run(None, {"x": x})
        except Exception as err:  # noqa: BLE001  (onnxruntime's errors have no common base)
            raise DataError(f"onnxruntime cannot run the exported model ({err}); nothing was "
                            "written (a bug in lstm-graph's export: please report it)") from None
        ran = f"onnxruntime {ort.__version__}"
    names = ["y", *(f"final_{s}" for s in runner.cell.graph.states)]
    for name, value, want in zip(names, got, [want_y, *want_states.values()]):
        _compare(name, np.asarray(value), np.asarray(want), runner.dtype)
    return f"checked in {ran}"


def _compare(name: str, got: np.ndarray, want: np.ndarray, dtype: np.dtype) -> None:
    """A DataError unless ``got`` is ``want`` to the dtype's tolerance."""
    tolerance = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
    if got.shape != want.shape:
        raise DataError(f"the exported model's {name} has shape {got.shape}, but the cell's "
                        f"has {want.shape}; nothing was written (a bug in lstm-graph's "
                        "export: please report it)")
    finite = np.isfinite(want)
    if not np.array_equal(np.isnan(got), np.isnan(want)) or \
            not np.array_equal(got[np.isinf(want)], want[np.isinf(want)]):
        raise DataError(f"the exported model's {name} has NaN or infinity where the cell's "
                        "run has not (or the other way); nothing was written (a bug in "
                        "lstm-graph's export: please report it)")
    with np.errstate(invalid="ignore", over="ignore"):
        error = float(np.max(np.abs(got[finite] - want[finite]) / (1 + np.abs(want[finite])),
                             initial=0.0))
    if not error <= tolerance:
        raise DataError(f"the exported model's {name} differs from the cell's run by "
                        f"{error:.3g}; nothing was written (a bug in lstm-graph's export: "
                        "please report it)")


#: Copies of the weights an ONNX export holds at once, with and without its check against
#: the runner (the model's tensors, its bytes, the checker's, onnxruntime's and the
#: runner's own executors): measured 6.7 and 7.5 (with) and 3.5 (without) at H = 3000 and
#: 6000, the peak growth of the process over its imports ÷ the weights' bytes.
ONNX_COPIES = {True: 8, False: 4}


def require_copies(runner: Runner, copies: int, what: str) -> None:
    """Refuse an export (``what``) that would hold ``copies`` copies of the runner's weights
    at once where they would not fit, before it makes any (an export of 6.4 GB of weights
    grew to 23 GB and was killed by the kernel)."""
    weights_fit(sum(int(value.size) for value in runner.weights.values()), runner.dtype,
                copies, what)


def weights_fit(count: int, dtype: Any, copies: int, what: str) -> None:
    """Refuse an export (``what``) that would hold ``copies`` copies of ``count`` weights of
    ``dtype`` at once where they would not fit: before the weights are drawn, where they
    are drawn (at H = 30000, drawing them took 21 GB before the refusal)."""
    memory.require([allocation(f"the weights as {what} copies them", (copies, count),
                               dtype)], what)


def export(runner: Runner, path: str | Path, check: bool = True, scan: bool = False) -> str:
    """Write ``runner`` as an ONNX model to ``path`` (whole or not at all), after checking
    it with ``onnx.checker`` (``full_check``) and, with ``check``, against the runner
    (:func:`verify`); with ``scan``, as a Scan of the step even where the cell is one of
    ONNX's recurrent operators (whose onnxruntime kernels turn NaN and infinity in ``x``
    into numbers). Returns how it was checked, in words."""
    require_copies(runner, ONNX_COPIES[check], "the ONNX export")
    onnx = _onnx()
    model = build(runner, scan)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:  # a bug of ours, said as one
        raise DataError(f"the exported model fails onnx.checker ({err}); nothing was "
                        "written (a bug in lstm-graph's export: please report it)") from None
    checked = verify(runner, model) if check else "not run"
    write_atomic(path, model_bytes(model))
    return checked
