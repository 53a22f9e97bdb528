"""The fused Adam step (clipping and Adam in one pass over the weights) against PyTorch's
``clip_grad_norm_`` and ``torch.optim.Adam``, in C and in its NumPy fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lstm_graph.training import fused
from lstm_graph.training.trainer import Adam


@pytest.mark.parametrize("path", ["C", "NumPy"])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("max_norm", [0.0, 0.5, 1e6])  # off, clipping, never reached
def test_clipping_and_adam_take_pytorchs_steps(path, dtype, rtol, max_norm, monkeypatch):
    if path == "NumPy":
        monkeypatch.setattr(fused, "_library", lambda dtype: None)
    elif fused._library(np.dtype(dtype)) is None:
        pytest.skip("no C compiler")
    rng = np.random.default_rng(0)
    start = {"w": rng.standard_normal((3, 5)).astype(dtype), "b": rng.standard_normal(5)
             .astype(dtype)}
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in start.items()}
    reference = torch.optim.Adam(tensors.values(), lr=0.01)
    ours, params = Adam(lr=0.01), {k: v.copy() for k, v in start.items()}
    for _ in range(4):
        grads = {k: (3 * rng.standard_normal(v.shape)).astype(dtype) for k, v in start.items()}
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name])
        expected = float(torch.nn.utils.clip_grad_norm_(tensors.values(), max_norm)) \
            if max_norm else float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2)
                                               for g in grads.values())))
        reference.step()
        assert ours.update(params, grads, max_norm) == pytest.approx(expected, rel=1e-6)
    for name, tensor in tensors.items():
        np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=rtol)


@pytest.mark.parametrize("bad", [np.zeros(6, "float64"), np.zeros(12, "float32")[::2]],
                         ids=["another dtype", "not contiguous"])
def test_arrays_it_cannot_update_in_place_are_refused_not_misread(bad):
    def zeros() -> list[np.ndarray]:
        return [np.zeros(6, "float32")]

    with pytest.raises(ValueError, match="C-contiguous arrays of the weights' dtype"):
        fused.adam_step(zeros(), zeros(), [bad], zeros(), 0.01, 0.9, 0.999, 1e-8, 1, 0.0)
