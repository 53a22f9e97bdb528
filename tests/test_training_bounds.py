"""Training refuses, before anything is drawn or run, work that would not fit in memory (a
task file that inflates, a hidden size too large, a checkpoint's history); refuses damaged
or edited checkpoints with a message; checks its outputs before it trains; and, on SIGTERM,
ends at the step's end with a checkpoint that resumes where it stopped."""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI_COMMAND
from numpy.lib import format as npy_format

import lstm_graph
from lstm_graph.executors.buildcache import compiler
from lstm_graph.training import adding, train
from lstm_graph.training.trainer import Stopped


def cli_under_address_space(args: list[str], cwd: Path,
                            address_space: int) -> subprocess.CompletedProcess[str]:
    """The command line as a process of its own whose address space is limited (an rlimit
    set in the child before it starts, which ``cli_process`` has no way to give)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.run([*CLI_COMMAND, *args], cwd=cwd, text=True, capture_output=True,
                          timeout=300, preexec_fn=limit)


def compressed_npz(path: Path, arrays: dict[str, tuple[tuple[int, ...], np.ndarray]]) -> None:
    """An .npz whose arrays of ``shape`` repeat ``block`` over and over (zeros, say): written
    a block at a time and compressed, so a small file inflates to a large array."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (shape, block) in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                npy_format.write_array_header_1_0(member, {
                    "descr": npy_format.dtype_to_descr(block.dtype), "fortran_order": False,
                    "shape": shape})
                left = int(np.prod(shape)) * block.dtype.itemsize
                data = block.tobytes()
                while left:
                    member.write(data[:left])
                    left -= min(left, len(data))


def test_a_small_task_file_that_inflates_past_the_bound_is_refused_before_it_is_read(
        tmp_path, monkeypatch, cli_fails):
    """A 3 MB-like file whose x takes 200 MB: refused by its header, naming x, not read."""
    compressed_npz(tmp_path / "task.npz", {
        "x": ((500, 100, 1000), np.zeros(1 << 18, "float32")),
        "y": ((100, 1), np.arange(100, dtype="float64"))})
    assert (tmp_path / "task.npz").stat().st_size < 1_000_000
    monkeypatch.chdir(tmp_path)
    assert cli_fails("train", "lstm", "--task", "task.npz", "--steps", "2", "--out", "w.npz",
                     env={"LSTM_GRAPH_MAX_BYTES": "100M"}) == (
        "task.npz: x of shape (500, 100, 1000) would take 200 MB; 200 MB in all "
        "for reading the task, more than the limit of 105 MB set by LSTM_GRAPH_MAX_BYTES\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task.npz"]


def test_a_hidden_size_too_large_is_refused_before_any_weight_is_drawn(tmp_path, monkeypatch,
                                                                       cli_fails):
    """H = 5000 under a 1 GB bound grew to 4.3 GB before: refused now, naming the largest
    array and the whole, under an address-space limit too (no MemoryError, no traceback)."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "lstm", "--task", "adding", "-H", "5000", "--steps", "5", "--out", "w.npz"]
    stderr = cli_fails(*args, env={"LSTM_GRAPH_MAX_BYTES": "1G"})
    assert stderr.startswith("Adam's first and second moments of shape (2, 100065001) "
                             "would take 801 MB; ")
    assert "in all for training lstm with H=5000, batch 64, 5 steps, more than the limit of " \
        "1.07 GB set by LSTM_GRAPH_MAX_BYTES" in stderr
    limited = cli_under_address_space(args, tmp_path, 3 * 2**30)
    assert limited.returncode == 1 and "Traceback" not in limited.stderr
    assert "of memory available (set LSTM_GRAPH_MAX_BYTES to change the limit)" in \
        limited.stderr
    assert list(tmp_path.iterdir()) == []


def test_gradflow_weighs_its_batch_before_drawing_it(tmp_path):
    """A batch of 300,000 copy-task sequences grew to 735 MB before the refusal: now
    refused under an address space of 1 GB, before the batch is drawn."""
    args = ["gradflow", "lstm", "--task", "copy", "--length", "5", "-H", "4", "--batch",
            "300000", "--out", "g.png"]
    limited = cli_under_address_space(args, tmp_path, 2**30)
    assert limited.returncode == 1 and "Traceback" not in limited.stderr, limited.stderr
    assert "for charting the gradient flow of lstm over a batch of 300000, more than" in \
        limited.stderr and list(tmp_path.iterdir()) == []


def test_what_training_holds_is_counted(monkeypatch):
    """The estimate covers the weights four times over (with gradients and Adam's moments),
    a batch's forward and backward values, the held-out batch and the history."""
    from lstm_graph.training.trainer import allocations

    found = {a.name: a for a in allocations(lstm_graph.load_cell("lstm"), adding(50), 64,
                                            3000, 64, np.dtype("float32"))}
    weights = 4 * (64 * 2 + 64 * 64 + 64) + 64 + 1  # the cell's, and the readout's
    assert found["the weights"].nbytes == 4 * weights
    assert found["Adam's first and second moments"].nbytes == 2 * 4 * weights
    if compiler():  # the native backward keeps a tape of what its VJPs read
        assert found["the tape (what backward reads, T·B rows)"].shape[:2] == (51, 64)
    else:  # the NumPy backward keeps every value
        assert found["every value of every step (T·B rows)"].shape[0] == 50 * 64
    assert found["the held-out batch (float64)"].shape == (50, 512, 2)
    assert found["the loss history at its largest"].shape == (6000, 2)


def _checkpoint(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, object]]:
    checkpoint = tmp_path / "c.npz"
    train(lstm_graph.load_cell("lstm"), adding(5), 4, 2, batch=4, checkpoint=checkpoint)
    arrays = dict(np.load(checkpoint))
    return checkpoint, arrays, json.loads(bytes(arrays["meta"]).decode())


@pytest.mark.parametrize("damage, words", [
    ("integer moments", "adam.m/f.W_x has dtype int64; Adam's moments are float32 or float64"),
    ("a step of -1e9", "step is -1000000000.0, not a number of steps"),
    ("a negative step", "step is -5, not a number of steps"),
    ("deeply nested meta", "not a checkpoint of lstm-graph train"),
    ("NaN in a parameter", "param/f.W_x holds NaN or infinity"),
    ("negative second moments", "adam.v/f.b holds negative numbers"),
    ("a history that disagrees", "losses does not hold steps 1 to 2"),
    ("seconds of infinity", "seconds is inf, not a time"),
    ("no seed or batch in the record", "its record lacks batch, seed, so it cannot be "
     "checked against this run"),
    ("no step in the record", "its record lacks step"),
    ("a parameter missing", "no array param/f.W_x"),
    ("a parameter of another cell", "an array param/zzz this run has no place for"),
])
def test_a_tampered_checkpoint_is_refused_naming_what_is_wrong(tmp_path, damage, words,
                                                               cli_refused):
    checkpoint, arrays, meta = _checkpoint(tmp_path)
    text = None
    if damage == "integer moments":
        arrays["adam.m/f.W_x"] = arrays["adam.m/f.W_x"].astype("int64")
    elif damage == "a step of -1e9":
        meta["step"] = -1e9
    elif damage == "a negative step":
        meta["step"] = meta["adam_steps"] = -5
    elif damage == "deeply nested meta":
        text = "[" * 100_000 + "]" * 100_000
    elif damage == "NaN in a parameter":
        arrays["param/f.W_x"][0, 0] = np.nan
    elif damage == "negative second moments":
        arrays["adam.v/f.b"][0] = -1
    elif damage == "a history that disagrees":
        arrays["losses"] = arrays["losses"][:1]
    elif damage == "no seed or batch in the record":  # resumed without a word, before
        del meta["seed"], meta["batch"]
    elif damage == "no step in the record":
        del meta["step"]
    elif damage == "a parameter missing":
        del arrays["param/f.W_x"]
    elif damage == "a parameter of another cell":
        arrays["param/zzz"] = np.zeros(3)
    else:
        text = json.dumps(meta).replace(f'"seconds": {meta["seconds"]}', '"seconds": Infinity')
    arrays["meta"] = np.frombuffer((text or json.dumps(meta)).encode(), np.uint8)
    np.savez(checkpoint, **arrays)
    stderr = cli_refused("train", "lstm", "--task", "adding", "--length", "5", "-H", "4",
                         "--batch", "4", "--steps", "4", "--resume", "--checkpoint", checkpoint)
    assert f"{checkpoint}: " in stderr and words in stderr
    assert "learning rate" not in stderr


def test_a_checkpoint_with_a_long_history_is_weighed_before_it_is_read(tmp_path, cli_refused):
    """A small checkpoint whose loss history holds 2,000,000 steps: refused under a bound
    that its history and the checks of it would pass, before it is read."""
    checkpoint, arrays, _meta = _checkpoint(tmp_path)
    compressed_npz(checkpoint, {**{name: (value.shape, value.ravel())
                                   for name, value in arrays.items() if name != "losses"},
                                "losses": ((2_000_000, 2), np.zeros(1 << 16))})
    assert checkpoint.stat().st_size < 1_000_000
    assert f"{checkpoint}: losses checked of shape (3, 2000000, 2) would take 96 MB" in \
        cli_refused("train", "lstm", "--task", "adding", "--length", "5", "-H", "4", "--batch",
                    "4", "--steps", "4", "--resume", "--checkpoint", checkpoint,
                    env={"LSTM_GRAPH_MAX_BYTES": "60M"})


def test_train_checks_its_outputs_before_it_trains(tmp_path, monkeypatch, cli_fails):
    """Not after a million steps: a --out where nothing can be written is said at once."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    for out, words in ((tmp_path / "afile" / "w.npz", "afile is not a directory"),
                       (Path("/proc/self/w.npz"), "cannot write in /proc/self")):
        stderr = cli_fails("train", "lstm", "--task", "adding", "--steps", "1000000", "--out",
                           out)
        assert words in stderr and "training lstm" not in stderr  # refused before the bar
    assert "afile is not a directory" in cli_fails(
        "train", "lstm", "--task", "adding", "--steps", "1000000", "--out", "w.npz", "--plot",
        tmp_path / "afile" / "p.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_sigterm_during_training_writes_a_checkpoint_that_resumes_where_it_stopped(
        tmp_path, monkeypatch, cli_run):
    """The command runs as a process of its own, read line by line while it trains, to be
    sent SIGTERM at a step (``cli_process`` waits for its end); resumed in this one."""
    args = ["train", "gru", "--task", "adding", "--length", "5", "-H", "4", "--batch", "4",
            "--eval-every", "5", "--checkpoint-every", "100000", "--out", "w.npz"]
    process = subprocess.Popen([*CLI_COMMAND, *args, "--steps", "100000"], cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    try:
        while not process.stderr.readline().startswith("step 5: loss"):
            pass
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(timeout=60) == 143
    finally:
        process.kill()
    found = re.search(r"terminated at step (\d+); the checkpoint w\.ckpt\.npz holds it \(train "
                      r"again with --resume to go on\); --out w\.npz was not written", rest)
    assert found, rest
    stopped = int(found.group(1))
    meta = json.loads(bytes(np.load(tmp_path / "w.ckpt.npz")["meta"]).decode())
    assert meta["step"] == stopped and not (tmp_path / "w.npz").exists()
    monkeypatch.chdir(tmp_path)
    cli_run(*args, "--steps", stopped + 3, "--resume", "--json")
    cli_run(*args, "--steps", stopped + 3, "--json", "--out", "s.npz")
    with np.load(tmp_path / "w.npz") as a, np.load(tmp_path / "s.npz") as b:
        assert all(np.array_equal(a[name], b[name]) for name in a.files)


def test_gradflow_takes_a_path_holding_an_equals_sign(tmp_path, cli_run):
    folder = tmp_path / "run=1"
    folder.mkdir()
    (folder / "my.cell").write_text("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\n")
    weights = lstm_graph.load_cell(folder / "my.cell").random_weights(2, 4, seed=1)
    np.savez(folder / "w=a.npz", **weights)
    result = cli_run("gradflow", f"{folder / 'my.cell'}={folder / 'w=a.npz'}",
                     folder / "my.cell", "--length", "6", "--json", "--out", tmp_path / "g.svg")
    assert len(json.loads(result.stdout)["flows"]) == 2


def test_training_on_the_copy_task_holds_no_more_than_it_weighed():
    """The finding: the held-out batch's readout and its loss (and the loss's gradient,
    made for nobody) were not counted: 152 MB held against 74 MB weighed."""
    import tracemalloc

    from lstm_graph.training import copy
    from lstm_graph.training.trainer import allocations

    cell, task = lstm_graph.load_cell("lstm"), copy(300)
    weighed = sum(a.nbytes for a in allocations(cell, task, 4, 2, 4, np.dtype("float32")))
    tracemalloc.start()
    try:
        train(cell, task, 4, 2, batch=4, eval_every=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= weighed, (peak, weighed)


def test_gradflow_weighs_the_recording_gradient_it_runs(tmp_path, cli_fails):
    """The finding: gradflow weighed the plain gradient (199 MB) and ran the recording one
    (469 MB at its peak, its recorded gradients held twice while stacked): refused now by
    a bound the plain one would pass."""
    args = ["gradflow", "lstm", "--length", "2000", "--batch", "16", "-H", "64", "--out",
            tmp_path / "f.png"]
    message = cli_fails(*args, env={"LSTM_GRAPH_MAX_BYTES": "300M"})
    assert "for charting the gradient flow of lstm over a batch of 16, more than the limit" \
        in message
    assert list(tmp_path.iterdir()) == []


def test_resuming_at_the_checkpoint_s_own_step_reports_its_held_out_loss(tmp_path, cli_run):
    """The finding: a run stopped at step 1 (no evaluation there) resumed with --steps 1
    printed "held-out loss nan"; it is evaluated, as a run to that step would be."""
    checkpoint = tmp_path / "c.npz"
    with pytest.raises(Stopped):
        train(lstm_graph.load_cell("lstm"), adding(5), 4, 2, batch=4, eval_every=5,
              checkpoint=checkpoint, stop=lambda: True)
    done = cli_run("train", "lstm", "--task", "adding", "--length", "5", "-H", "4", "--batch",
                   "4", "--steps", "1", "--eval-every", "5", "--resume", "--checkpoint",
                   checkpoint, "--out", tmp_path / "w.npz", "--json")
    whole = train(lstm_graph.load_cell("lstm"), adding(5), 4, 1, batch=4, eval_every=5)
    assert json.loads(done.stdout)["held_out_loss"] == float(whole.evals[-1][1])
