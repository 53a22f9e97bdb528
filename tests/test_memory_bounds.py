"""Memory bombs under an address-space limit (``ulimit -v``): each is refused before it
allocates, with a message naming the array, its shape and the bytes it would take.

The CLI runs in a subprocess whose address space is capped with ``setrlimit``;
without the bound in lstm_graph.formats.memory, each of these ends in a
``MemoryError`` (or, with no cap, takes many GB). Files are sparse or compressed,
so none takes real disk space.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_compiler
from hostile import deflate_bomb, sparse_npy

import lstm_graph

resource = pytest.importorskip("resource")

#: The address space the CLI gets: enough to start and run small cells, not for bombs.
ADDRESS_SPACE = 1536 * 2**20


def limited_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    env = {k: v for k, v in os.environ.items() if k != "LSTM_GRAPH_MAX_BYTES"}
    return subprocess.run([sys.executable, "-m", "lstm_graph.cli", *map(str, args)],
                          cwd=tmp_path, env=env, preexec_fn=cap, capture_output=True,
                          text=True, timeout=300)


def refused(tmp_path: Path, *args: str) -> str:
    result = limited_cli(tmp_path, *args)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".*.tmp"))
    return result.stderr


def test_the_limited_cli_runs_a_small_cell(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((5, 2, 3), "float32"))
    result = limited_cli(tmp_path, "run", "lstm", "--input", "x.npy", "-H", "4", "--out",
                         "y.npz", "--executor", "numpy")
    assert result.returncode == 0, result.stderr


def test_an_x_of_12_gb(tmp_path):
    sparse_npy(tmp_path / "x.npy", (1_000_000, 1, 3000))
    stderr = refused(tmp_path, "run", "rnn", "--input", "x.npy", "-H", "2", "--out",
                     "out.npz")
    assert "x.npy: x of shape (1000000, 1, 3000) would take 12 GB" in stderr
    assert "in all for this run, more than the" in stderr and "LSTM_GRAPH_MAX_BYTES" in stderr


def test_a_run_of_a_million_steps_with_h_2048(tmp_path):
    sparse_npy(tmp_path / "x.npy", (1_000_000, 1, 4))
    stderr = refused(tmp_path, "run", "lstm", "--input", "x.npy", "-H", "2048", "--out",
                     "out.npz")
    # the default executor's own estimate: for one sequence the native step (as the NumPy
    # plan) multiplies x by its weights for every step before the loop, 4H a step
    assert "the hoisted products (T·B rows) of shape (1000000, 8192) would take 32.8 GB" \
        in stderr


def test_a_compressed_x_that_inflates_to_1_6_gb(tmp_path):
    deflate_bomb(tmp_path / "x.npz", "x.npy", (20000, 20000))
    assert (tmp_path / "x.npz").stat().st_size < 5_000_000
    stderr = refused(tmp_path, "run", "rnn", "--input", "x.npz", "-H", "2", "--out",
                     "out.npz")
    assert "x.npz: x of shape (20000, 20000) would take 1.6 GB" in stderr


@pytest.mark.parametrize("hidden, words", [
    ("100000", "f.W_h as drawn (float64) of shape (100000, 100000) would take 80 GB"),
    ("99999999999999999999", "of shape (99999999999999999999, 99999999999999999999)"),
])
def test_a_weights_template_too_large(tmp_path, hidden, words):
    stderr = refused(tmp_path, "params", "lstm", "-I", "1", "-H", hidden, "--out", "out.npz")
    assert words in stderr
    assert "in all for the weights with I=1" in stderr


def test_random_weights_too_large_for_a_run(tmp_path):
    stderr = refused(tmp_path, "run", "lstm", "--sample", "-H", "99999999999999999999",
                     "--out", "out.npz")
    assert "would take" in stderr and "for the weights with I=8" in stderr


def test_the_machine_s_memory_is_read_only_for_runs_that_may_not_fit(monkeypatch):
    """A run whose arrays (as its executor allocates them; a stack's, every unit's)
    take less than SURELY_FITS does not read the machine's memory, even where the rough
    bound from the sizes is above it (the medium LSTM's run: 7 MB, rough 134 MB); one
    whose arrays take more is weighed against it and refused, naming the array, when it
    would not fit."""
    import lstm_graph
    from lstm_graph import checks
    from lstm_graph.formats import memory
    from lstm_graph.formats.memory import MemoryLimitError

    monkeypatch.delenv(memory.ENV, raising=False)
    run = lstm_graph.load_cell("lstm").compile(input_size=128, hidden_size=256)
    stack = lstm_graph.load_cell("lstm").compile(input_size=128, hidden_size=256,
                                                 direction="bidirectional")
    x = np.zeros((100, 64, 128), "float32")
    reads = []
    monkeypatch.setattr(memory, "_available_memory", lambda: reads.append(1) or 2**20)
    y, _ = run(x)  # fits, and the memory was not read
    assert y.shape == (100, 64, 256) and reads == []
    y, _ = stack(x)  # a stack's list of every unit's arrays (44 MB): the same rule
    assert y.shape == (100, 64, 512) and reads == []
    monkeypatch.setattr(checks, "SURELY_FITS", 2**20)
    with pytest.raises(MemoryLimitError, match=r"y of shape \(100, 64, 256\) would take 6.55 MB"):
        run(x)
    assert reads
    reads.clear()
    with pytest.raises(MemoryLimitError, match="in all for this run"):
        stack(x)
    assert reads


def test_trace_and_explore_from_python_weigh_the_trace_before_they_start(monkeypatch):
    """``Runner.trace`` was weighed as a run: the trace of every assignment at every step
    (here 768 MB, from a broadcast x of 48 kB) was made; ``explore`` went on to be killed
    by the system. The trace is refused as ``lstm-graph trace`` is, before work; explore
    runs the part of x its page keeps."""
    from lstm_graph.formats import memory
    from lstm_graph.formats.memory import MemoryLimitError

    monkeypatch.setenv(memory.ENV, "300M")
    runner = lstm_graph.load_cell("peephole_lstm").compile(input_size=3, hidden_size=8)
    x = np.broadcast_to(np.float32(0), (2000, 2000, 3))
    reached = []
    forward = type(runner)._forward
    monkeypatch.setattr(type(runner), "_forward",
                        lambda *args, **kwargs: reached.append(1) or pytest.fail("ran"))
    with pytest.raises(MemoryLimitError, match=r"the trace .* of shape \(4000000, 48\) "
                                               r"would take 768 MB"):
        runner.trace(x)
    assert reached == []
    # explore runs only the part its page keeps: a few sequences and steps, within bounds
    monkeypatch.setattr(type(runner), "_forward", forward)
    page = runner.explore(x).html
    assert "the first 4 of 2000 sequences" in page


@pytest.mark.parametrize("executor, fits", [pytest.param("native", False, marks=needs_compiler),
                                            ("numpy", True)])
def test_an_executor_whose_packed_weights_would_not_fit_is_refused_before_it_packs(
        monkeypatch, executor, fits):
    """The weights (16 MB, and 8 MB drawn in float64) fit in 28 MiB; the native executor's
    panels and the group's copy it holds while packing (32 MB) do not, the NumPy plan's
    one copy (16 MB) does. The native build held four copies, two of them for good."""
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "28M")
    run = lstm_graph.load_cell("lstm").compile(input_size=1, hidden_size=1000,
                                               executor=executor)
    x = np.zeros((2, 1, 1), "float32")
    if fits:
        assert run(x)[0].shape == (2, 1, 1000)
        return
    with pytest.raises(lstm_graph.LstmGraphError, match=r"the weights as the native executor "
                       r"packs them of shape \(2, 4008000\) would take 32.1 MB.*; the NumPy "
                       r"plan \(--executor numpy, executor='numpy'\) packs one copy$"):
        run(x)


@pytest.mark.parametrize("fmt, copies", [("onnx", 8), ("torch", 5)])
def test_an_export_whose_copies_would_not_fit_is_refused_before_it_makes_them(
        tmp_path, monkeypatch, fmt, copies):
    """An export of 6.4 GB of weights grew to 23 GB and was killed by the kernel."""
    from lstm_graph.export import onnx_model, torch_module

    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "60M")
    run = lstm_graph.load_cell("lstm").compile(input_size=1, hidden_size=1000,
                                               executor="reference")
    export = onnx_model.export if fmt == "onnx" else torch_module.export
    with pytest.raises(lstm_graph.LstmGraphError, match=rf"export copies them of shape "
                       rf"\({copies}, 4008000\)"):
        export(run, tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'py'}")
    assert not list(tmp_path.iterdir())


@needs_compiler
def test_a_native_build_keeps_one_packed_copy_of_the_weights():
    """Packing held four copies of the weights at its peak and kept two (the jobs' own
    weights lived as long as the build): now two, and one."""
    import tracemalloc

    run = lstm_graph.load_cell("lstm").compile(input_size=1, hidden_size=512,
                                               executor="native")
    weights = sum(value.nbytes for value in run.weights.values())
    tracemalloc.start()
    try:
        run.compiled(1)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 1.3 * weights and peak < 2.3 * weights, (held / weights, peak / weights)


def test_a_runner_s_weights_are_read_only_and_only_the_caller_s_are_copied(tmp_path,
                                                                          monkeypatch):
    """The caller's arrays are copied (a runner's weights are its own); a file's are the
    runner's as read (they were copied too, doubling the peak of a compile)."""
    import torch

    from lstm_graph import cell as cell_module

    read = []
    real = cell_module.read_weights
    monkeypatch.setattr(cell_module, "read_weights",
                        lambda *args: read.append(real(*args)) or read[-1])
    torch.save(torch.nn.LSTM(3, 4).state_dict(), tmp_path / "m.pt")
    run = lstm_graph.load_cell("lstm").compile(weights=tmp_path / "m.pt")
    assert all(not value.flags.writeable for value in run.weights.values())
    kept = [name for name, value in run.weights.items()  # the biases are summed in float64
            if read[0].arrays[name].dtype == value.dtype]
    assert len(kept) == 8 and all(np.shares_memory(run.weights[name], read[0].arrays[name])
                                  for name in kept)
    given = lstm_graph.load_cell("lstm").random_weights(3, 4)
    copied = lstm_graph.load_cell("lstm").compile(weights=given)
    assert not any(np.shares_memory(copied.weights[k], given[k]) for k in given)
