"""ONNX's own test material: the official LSTM, GRU and RNN node cases, run as models.

The ``onnx`` package writes its backend test cases with generators
(``onnx/backend/test/case/node/{lstm,gru,rnn}.py``), each calling ``expect(node,
inputs, outputs, name)``. Here every generator runs with ``expect`` collecting its case;
each case becomes a model whose every input but ``X`` is stored as an initializer, and
``lstm-graph run case.onnx --input x.npy`` must give the case's expected outputs: ``Y``
as our ``y`` (``(T, B, D·H)``, or batch-major for ``layout=1``), ``Y_h`` and ``Y_c`` as
our final ``h`` and ``c`` (``(D, B, H)``, or ``(B, H)`` for one direction).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

FAMILIES = ("lstm", "gru", "rnn")


def official_cases() -> dict[str, tuple]:
    """Every case the generators write: name -> (node, inputs, outputs)."""
    cases: dict[str, tuple] = {}
    for family in FAMILIES:
        module = importlib.import_module(f"onnx.backend.test.case.node.{family}")
        np.random.seed(0)  # the generators draw their weights from NumPy's global state

        def collect(node, inputs, outputs, name, **kwargs):
            cases[name] = (node, list(inputs), list(outputs))

        original = module.expect
        module.expect = collect
        try:
            (operator,) = [c for _, c in inspect.getmembers(module, inspect.isclass)
                           if c.__module__ == module.__name__
                           and any(a.startswith("export_") for a in dir(c))]
            for attribute in sorted(dir(operator)):
                if attribute.startswith("export_"):
                    getattr(operator, attribute)()
        finally:
            module.expect = original
    return cases


CASES = official_cases()


def test_the_generators_give_all_eighteen_official_cases():
    assert len(CASES) == 18, sorted(CASES)
    kinds = sorted(node.op_type for node, _, _ in CASES.values())
    assert kinds == ["GRU"] * 6 + ["LSTM"] * 6 + ["RNN"] * 6


def as_model(node, inputs, outputs) -> tuple[onnx.ModelProto, np.ndarray]:
    """The case as a model: X a graph input, every other input an initializer."""
    names = [n for n in node.input]
    present = [n for n in names if n]
    values = dict(zip(present, inputs))
    x = values.pop(names[0])
    declared = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(np.shape(v)))
                for n, v in zip([n for n in node.output if n], outputs)]
    graph = helper.make_graph(
        [node], "case", [helper.make_tensor_value_info(names[0], onnx.TensorProto.FLOAT,
                                                      list(x.shape))], declared,
        [numpy_helper.from_array(np.asarray(v), name) for name, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    return model, x


def expected_outputs(node, outputs) -> dict[str, np.ndarray]:
    """The case's outputs in our names and shapes."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    layout = attributes.get("layout", 0)
    named = dict(zip([n for n in node.output if n], outputs))
    positions = dict(zip(("Y", "Y_h", "Y_c"), node.output))
    found = {}
    for role, name in positions.items():
        if not name:
            continue
        value = np.asarray(named[name])
        if role == "Y":
            if layout:  # (B, T, D, H)
                found["y"] = value.reshape(*value.shape[:2], -1)
            else:  # (T, D, B, H)
                found["y"] = value.transpose(0, 2, 1, 3).reshape(value.shape[0],
                                                                 value.shape[2], -1)
        else:
            if layout:  # (B, D, H)
                value = value.transpose(1, 0, 2)
            found[{"Y_h": "h", "Y_c": "c"}[role]] = value[0] if value.shape[0] == 1 else value
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_official_case_runs_exactly_from_the_model_file(name, tmp_path, cli_run):
    node, inputs, outputs = CASES[name]
    model, x = as_model(node, inputs, outputs)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "case.onnx"))
    np.save(tmp_path / "x.npy", x)
    cli_run("run", tmp_path / "case.onnx", "--input", tmp_path / "x.npy", "--out",
            tmp_path / "y.npz")
    found = np.load(tmp_path / "y.npz")
    for what, value in expected_outputs(node, outputs).items():
        assert found[what].shape == value.shape, (what, found[what].shape, value.shape)
        np.testing.assert_allclose(found[what], value, rtol=1e-5, atol=1e-5, err_msg=what)


@pytest.mark.parametrize("executor", ["reference", "numpy"])
def test_official_cases_run_on_every_executor(executor, tmp_path):
    import lstm_graph

    for name, (node, inputs, outputs) in sorted(CASES.items()):
        model, x = as_model(node, inputs, outputs)
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        loaded = lstm_graph.load_model(tmp_path / f"{name}.onnx")
        y, final = loaded.compile(executor=executor)(x, loaded.state or None,
                                                     lengths=loaded.lengths)
        found = {"y": y, **final}
        for what, value in expected_outputs(node, outputs).items():
            np.testing.assert_allclose(found[what], value, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name}: {what}")


def test_the_cases_are_the_onnx_package_s_own(tmp_path):
    source = Path(importlib.import_module("onnx.backend.test.case.node.lstm").__file__)
    assert "expect(" in source.read_text()
