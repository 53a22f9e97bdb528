"""Build small ONNX models with one LSTM or GRU node, as other tools would (test helper)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def rnn_model(op: str, weights: dict[str, np.ndarray], hidden: int, dtype: str,
              **attributes) -> onnx.ModelProto:
    """A model computing ``Y, Y_h[, Y_c] = op(X, W, R, B, , initial_h[, initial_c, P])``.

    ``weights`` holds ONNX-layout arrays named W, R, B and optionally P.
    """
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.DOUBLE
    lstm = op == "LSTM"
    names = ["X", "W", "R", "B", "", "initial_h"] + (["initial_c", "P"] if lstm else [])
    if lstm and "P" not in weights:
        names = names[:-1]
    outputs = ["Y", "Y_h"] + (["Y_c"] if lstm else [])
    node = helper.make_node(op, names, outputs, hidden_size=hidden, **attributes)
    inits = [numpy_helper.from_array(v.astype(dtype), k) for k, v in weights.items()]
    graph_inputs = [helper.make_tensor_value_info(n, elem, None)
                    for n in ("X", "initial_h", "initial_c")[: 3 if lstm else 2]]
    graph_outputs = [helper.make_tensor_value_info(n, elem, None) for n in outputs]
    graph = helper.make_graph([node], "cell", graph_inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def random_onnx_weights(op: str, input_size: int, hidden: int, peepholes: bool,
                        rng: np.random.Generator) -> dict[str, np.ndarray]:
    gates = 4 if op == "LSTM" else 3
    out = {
        "W": rng.uniform(-0.5, 0.5, (1, gates * hidden, input_size)),
        "R": rng.uniform(-0.5, 0.5, (1, gates * hidden, hidden)),
        "B": rng.uniform(-0.5, 0.5, (1, 2 * gates * hidden)),
    }
    if peepholes:
        out["P"] = rng.uniform(-0.5, 0.5, (1, 3 * hidden))
    return out
