"""Front ends from other languages: a PyTorch cell module as a ``.cell`` and its weights.

:mod:`.from_torch` is the entry point (``lstm-graph from-torch FILE.py:CLASS``);
:mod:`.torch_fx` traces the module with ``torch.fx`` and gives each node a value
(:mod:`.values`); :mod:`.cell_writer` writes those values as cell text.
"""
