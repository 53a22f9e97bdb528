"""A checkpoint whose arrays are stored in another float dtype or in Fortran order (an
edited or converted file) resumes exactly as the run that wrote it would have gone on:
the fused update reads raw pointers, so everything it is given is made C-contiguous and
of the weights' dtype first."""

from __future__ import annotations

import numpy as np
import pytest

import lstm_graph
from lstm_graph.training import adding, train


@pytest.mark.parametrize("rewrite", ["moments in float64", "Fortran order"])
def test_a_rewritten_checkpoint_resumes_where_an_uninterrupted_run_ends(tmp_path, rewrite):
    cell = lstm_graph.load_cell("lstm")
    whole = train(cell, adding(8), 4, 4, batch=4)
    checkpoint = tmp_path / "c.npz"
    train(cell, adding(8), 4, 2, batch=4, checkpoint=checkpoint)
    arrays = dict(np.load(checkpoint))
    for name, value in arrays.items():
        if rewrite == "moments in float64" and name.startswith("adam."):
            arrays[name] = value.astype("float64")
        elif rewrite == "Fortran order" and value.ndim == 2 and name != "meta":
            arrays[name] = np.asfortranarray(value)
    np.savez(checkpoint, **arrays)
    resumed = train(cell, adding(8), 4, 4, batch=4, checkpoint=checkpoint, resume=True)
    for name, value in whole.weights.items():
        np.testing.assert_allclose(resumed.weights[name], value, rtol=1e-6, atol=1e-7)
