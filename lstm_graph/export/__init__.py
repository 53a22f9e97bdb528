"""Export: a compiled cell as a model that runs without lstm-graph.

- :mod:`.onnx_model`: one ONNX model (opset 17) that onnxruntime runs: ONNX's own
  ``LSTM``/``GRU``/``RNN`` operator where the cell is exactly one (:mod:`.fused`
  decides), else a ``Scan`` whose body is the cell's step, written from the op table.
- :mod:`.torch_module`: a readable PyTorch module (Python source that imports only
  torch) and its state dict.

Both take a :class:`~lstm_graph.cell.Runner` (a cell bound to its sizes, weights and
stack: ``runner.export_onnx(path)``, ``runner.export_torch(path)``), check what they
wrote against the runner on a small input before it is kept, and name every weight
after the cell's parameters (:func:`.names.torch_attribute`).
"""
