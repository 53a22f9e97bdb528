"""Each op's ONNX nodes, PyTorch expression and PyTorch spellings compute what its reference
does: the ONNX form run by onnxruntime (float32 and float64) and the onnx reference
evaluator, the PyTorch forms by PyTorch itself (values, and gradients against the op's
vjp)."""

from __future__ import annotations

import math
import operator

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from lstm_graph.ops import OPS, OpKind

#: Values around every branch point (0, ±1, a threshold of 0.5) and far out.
GRID = np.array([-30.0, -3.0, -1.5, -1.0, -0.5, -0.1, 0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 2.5, 30.0,
                 np.nan, np.inf, -np.inf])
#: Attribute values that are not the defaults, so a dropped attribute shows.
ATTRS = {"alpha": 0.3, "beta": 0.6, "threshold": 0.8}
FORMED = [op for op in OPS.values() if op.onnx_nodes is not None]
#: ±inf and NaN on the grid: 0·inf and inf/inf are NaN, as they should be, said by NumPy
pytestmark = pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")


def attrs_of(op):
    return {a.name: ATTRS[a.name] for a in op.attributes}


def operands(op):
    other = np.linspace(-2, 2, GRID.size)
    return [GRID] if op.arity == 1 else [GRID, other]


def reference(op, args):
    return op.reference(np, args, [], attrs_of(op))


def onnx_model(op, dtype):
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes = []
    names = [f"in{k}" for k in range(op.arity)]

    def emit(op_type, inputs, attributes):
        resolved = []
        for value in inputs:
            if isinstance(value, (int, float)):
                name = f"const{len(nodes)}"
                nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper
                                              .from_array(np.array(value, dtype))))
                value = name
            resolved.append(value)
        out = f"v{len(nodes)}"
        nodes.append(helper.make_node(op_type, resolved, [out], **attributes))
        return out

    result = op.onnx_nodes(emit, names, attrs_of(op))
    graph = helper.make_graph(
        nodes, op.name, [helper.make_tensor_value_info(n, elem, [GRID.size]) for n in names],
        [helper.make_tensor_value_info(result, elem, [GRID.size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("op", FORMED, ids=[op.name for op in FORMED])
def test_each_ops_onnx_nodes_compute_its_reference(op):
    args = operands(op)
    want = reference(op, args)
    model = onnx_model(op, np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {f"in{k}": a.astype(np.float32) for k, a in enumerate(args)})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    model64 = onnx_model(op, np.float64)
    feed = {f"in{k}": a for k, a in enumerate(args)}
    np.testing.assert_allclose(ReferenceEvaluator(model64).run(None, feed)[0], want,
                               rtol=1e-12, atol=1e-12)
    session = onnxruntime.InferenceSession(model64.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, feed)[0], want, rtol=1e-12, atol=1e-12)


def torch_form(op, tensors):
    from lstm_graph.export.torch_module import _number

    names = {f"a{k}": t for k, t in enumerate(tensors)}
    text = op.torch.format(*names, **{k: _number(v) for k, v in attrs_of(op).items()})
    if op.kind is OpKind.OPERATOR:  # the template's operands are names: no precedence here
        text = op.torch.format(*names)
    return eval(text, {"torch": torch, "F": F}, names)  # our own op table's forms


@pytest.mark.parametrize("op", [op for op in OPS.values() if op.torch],
                         ids=[op.name for op in OPS.values() if op.torch])
def test_each_ops_pytorch_form_computes_its_reference_and_its_gradient(op):
    args = operands(op)
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in args]
    out = torch_form(op, tensors)
    np.testing.assert_allclose(out.detach().numpy(), reference(op, args), rtol=1e-13,
                               atol=1e-13)
    grad = np.linspace(0.5, 1.5, GRID.size)
    out.backward(torch.from_numpy(grad))
    want, _ = op.vjp(np, args, [], attrs_of(op), reference(op, args), grad)
    # not at the kinks of hard_sigmoid and clip's bounds, nor where the value is infinite
    # or NaN (softsign's is NaN at ±inf, whose gradient is 0 in ours and NaN in PyTorch's)
    inside = (np.abs(np.abs(GRID) - 1) > 1e-9) & np.isfinite(GRID)
    for tensor, expected in zip(tensors, want):
        np.testing.assert_allclose(tensor.grad.numpy()[inside], np.broadcast_to(
            expected, GRID.shape)[inside], rtol=1e-12, atol=1e-12)


def call_numbers(op, call):
    """Numbers for a PyTorch spelling that its ``attrs`` accepts: the required ones set,
    and an op's own attribute away from its default, so a misread name shows."""
    chosen = {"negative_slope": 0.3, "alpha": 0.3, "threshold": 0.8, "value": 0.0,
              "min": -0.8, "max": 0.8, "min_val": -0.8, "max_val": 0.8, "training": False}
    numbers = dict(call.numbers)
    for name, default in call.numbers:
        if name in chosen and (default is None or op.attributes or name == "training") \
                and not (op.name == "softplus" and name == "threshold"):
            numbers[name] = chosen[name]
    return numbers


def run_call(call, tensors, numbers):
    head, _, name = call.name.partition(".")
    given = {n: numbers[n] for n, default in call.numbers if numbers[n] != default}
    if head == "nn":
        module = getattr(torch.nn, name)(**{k: v for k, v in given.items()
                                            if k != "training"})
        return module.eval()(*tensors)
    if head == "Tensor":
        return getattr(tensors[0], name)(*tensors[1:], **given)
    function = {"torch": torch, "F": F, "operator": operator}[head]
    for part in name.split("."):
        function = getattr(function, part)
    return function(*tensors, **given)


CALLS = [(op, call) for op in OPS.values() for call in op.torch_calls]


@pytest.mark.parametrize("op, call", CALLS, ids=[c.name for _, c in CALLS])
def test_each_pytorch_spelling_the_importer_knows_computes_the_op(op, call):
    numbers = call_numbers(op, call)
    attrs = (call.attrs or (lambda given: {}))(numbers)
    args = operands(op) if op.kind is not OpKind.COPY else [GRID]
    tensors = [torch.tensor(a, dtype=torch.float64) for a in args]
    with torch.no_grad():
        got = run_call(call, tensors, numbers)
    ordered = args[::-1] if call.swapped else args
    want = op.reference(np, ordered, [], attrs)
    kept = ~np.isnan(GRID) if call.differs else slice(None)  # F.threshold keeps NaN: said
    np.testing.assert_allclose(got.numpy()[kept], want[kept], rtol=1e-12, atol=1e-12)
    assert not call.differs or not np.allclose(got.numpy(), want, equal_nan=True)


def test_an_attribute_pytorch_spells_otherwise_is_refused_in_words():
    softplus = next(c for c in OPS["softplus"].torch_calls if c.name == "F.softplus")
    with pytest.raises(ValueError, match="beta=2.0 is not 1"):
        softplus.attrs({"beta": 2.0, "threshold": 20.0})
    # PyTorch's log1p(exp(v)) overflows in float32 from 88.72: infinity up to the threshold
    with pytest.raises(ValueError, match=r"threshold from 20 to 88.72; with threshold=1000.0 "
                                         r"PyTorch's is infinity for v from 88.72 \(float32\)"):
        softplus.attrs({"beta": 1.0, "threshold": 1000.0})
    assert softplus.attrs({"beta": 1.0, "threshold": 80.0}) == {}
    bound = math.log(3.4028234663852886e38)  # rounded to float32 it is past the overflow
    with pytest.raises(ValueError, match="PyTorch's is infinity"):
        softplus.attrs({"beta": 1.0, "threshold": bound})
    assert softplus.attrs({"beta": 1.0, "threshold": 88.72}) == {}
    clamp = next(c for c in OPS["clip"].torch_calls if c.name == "torch.clamp")
    with pytest.raises(ValueError, match=r"\[-t, t\]"):
        clamp.attrs({"min": 0.0, "max": 1.0})
