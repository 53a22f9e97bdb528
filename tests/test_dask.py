"""Scale-out on Dask: sharded run, trace and grad equal a plain run; retries; the sweep.

A real scheduler and two worker processes run on 127.0.0.1 for this module (started
with ``python -m dask``, time-bounded, torn down with their process group); the
``--dask local`` tests start the in-process cluster of the command itself. Commands
with ``--dask`` run as processes of their own (``dask_cli``), each under a time limit:
a Dask client that hangs is ended, and its threads, event loop and local workers end with
it instead of staying in the test process; the others run in this process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import CLI_COMMAND, interrupt_after

pytest.importorskip("distributed", reason="the dask extra is not installed")

import dask  # noqa: E402
from distributed import Client  # noqa: E402

import lstm_graph  # noqa: E402
from lstm_graph.cli.inputs import read_array  # noqa: E402
from lstm_graph.distributed import DaskError  # noqa: E402
from lstm_graph.distributed import chunked as chunked_module  # noqa: E402
from lstm_graph.distributed import cluster as cluster_module  # noqa: E402
from lstm_graph.distributed import sharded as sharded_module  # noqa: E402
from lstm_graph.distributed import sweep as sweep_module  # noqa: E402
from lstm_graph.distributed.chunked import ChunkedNpz  # noqa: E402
from lstm_graph.distributed.cluster import check_address, connect  # noqa: E402
from lstm_graph.distributed.jobs import Job, Moments, cell_source  # noqa: E402
from lstm_graph.distributed.sharded import execute, shard_bounds  # noqa: E402
from lstm_graph.errors import OutputError  # noqa: E402
from lstm_graph.formats.memory import MemoryLimitError, size_text  # noqa: E402
from lstm_graph.training import adding, train  # noqa: E402

#: Seconds any one command or start-up may take before the test fails.
LIMIT = 120
#: A user's cell: its file exists only in the test's folder, never where the workers run.
MINE = """\
# a minimal gated cell of two states, written for these tests
input x
state m, h
output h
z = sigmoid(linear(x, h[t-1]))
m = z * m[t-1] + (1 - z) * tanh(linear(x, h[t-1]))
h = tanh(m) * z
"""


@dataclass
class Cluster:
    address: str
    folder: Path


def _start(args: list[str], folder: Path, log: str) -> subprocess.Popen[bytes]:
    """``python -m dask ARGS`` in its own process group (so teardown reaches its children),
    its output in ``folder/log``."""
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(folder),
           "DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH": "0"}  # as docs/dask.md advises
    with open(folder / log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=folder, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the process group: politely, then not."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            time.sleep(0.2)  # the group's other processes end with their parent
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _scheduler(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    file = folder / "scheduler.json"
    process = _start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                      "--dashboard-address", "127.0.0.1:0", "--idle-timeout", "300",
                      "--scheduler-file", str(file)], folder, "scheduler.log")
    deadline = time.monotonic() + LIMIT
    while not (file.exists() and file.stat().st_size):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"dask scheduler did not start: {(folder / 'scheduler.log').read_text()}")
        time.sleep(0.05)
    time.sleep(0.1)  # the file is written whole, but give it a moment
    return process, json.loads(file.read_text())["address"]


def _workers(address: str, folder: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    return _start(["worker", address, "--nworkers", "2", "--nthreads", "1", "--host",
                   "127.0.0.1", "--no-dashboard", "--death-timeout", "30",
                   "--local-directory", str(folder), *extra], folder, "workers.log")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and two single-threaded worker processes (each under a nanny, which
    restarts it if it dies), in a folder of their own."""
    folder = tmp_path_factory.mktemp("dask-cluster")
    scheduler, address = _scheduler(folder)
    workers = _workers(address, folder)
    try:
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=LIMIT)
        yield Cluster(address, folder)
    finally:
        _stop(workers)
        _stop(scheduler)


@pytest.fixture
def dask_cli(cli_process):
    """``dask_cli(*args, cwd=...)``: ``cli_process`` under :data:`LIMIT`, with Dask's
    temporary files in ``cwd``; ``env`` adds variables."""
    def run(*args: object, cwd: Path,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return cli_process(*args, cwd=cwd, timeout=LIMIT,
                           env={"DASK_TEMPORARY_DIRECTORY": str(cwd), **(env or {})})

    return run


def same_arrays(expected: Path, found: Path, rtol: float) -> None:
    """Same names in the same order, same shapes and dtypes, the same numbers (to ``rtol``
    for sums over the batch; rows of run and trace bit for bit where BLAS allows)."""
    with np.load(expected) as a, np.load(found) as b:
        assert a.files == b.files
        for name in a.files:
            assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype, name
            if a[name].dtype.kind == "U":  # a trace's cell, name and digest
                assert a[name] == b[name], name
                continue
            scale = float(np.max(np.abs(a[name]), initial=0.0))
            np.testing.assert_allclose(b[name], a[name], rtol=rtol, atol=rtol * scale,
                                       err_msg=name)


def sharded_equals_plain(args: list[str], shard_size: str, cluster: Cluster, inputs: Path,
                         cli_run, dask_cli) -> None:
    """``args`` run in this process (plain.npz) and on ``cluster`` in shards of
    ``shard_size`` sequences (sharded.npz), from ``inputs``: the same float64 numbers."""
    cli_run(*args, "--out", "plain.npz")
    result = dask_cli(*args, "--out", "sharded.npz", "--dask", cluster.address, "--shard-size",
                      shard_size, cwd=inputs)
    assert result.returncode == 0, result.stderr
    same_arrays(inputs / "plain.npz", inputs / "sharded.npz", 1e-12)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder with x (T=12, B=7, I=3), initial states, grad_y and a user's cell."""
    rng = np.random.default_rng(5)
    np.save(tmp_path / "x.npy", rng.standard_normal((12, 7, 3)))
    np.save(tmp_path / "x1.npy", rng.standard_normal((12, 3)))  # one sequence
    # both states: a sharded run once kept only the last one given, the rest zero
    np.savez(tmp_path / "state.npz", h=rng.standard_normal((7, 4)), m=rng.standard_normal((7, 4)))
    np.save(tmp_path / "gy.npy", rng.standard_normal((12, 7, 4)))
    (tmp_path / "mine.cell").write_text(MINE)
    return tmp_path


COMMANDS = {
    "run": ["run", "mine.cell", "--input", "x.npy", "-H", "4", "--state", "state.npz"],
    "trace": ["trace", "peephole_lstm", "--input", "x.npy", "-H", "4"],
    "grad": ["grad", "mine.cell", "--input", "x.npy", "-H", "4", "--state", "state.npz",
             "--grad-output", "gy.npy"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_sharded_command_on_a_scheduler_equals_a_plain_run(
        cluster: Cluster, inputs: Path, command: str, dtype: str,
        monkeypatch: pytest.MonkeyPatch, cli_run, dask_cli) -> None:
    args = [*COMMANDS[command], "--dtype", dtype, "--seed", "3"]
    monkeypatch.chdir(inputs)
    cli_run(*args, "--out", "plain.npz")
    result = dask_cli(*args, "--out", "sharded.npz", "--dask", cluster.address, "--shard-size",
                      "3", "--json", cwd=inputs)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dask"]["shards"] == 3 and summary["dask"]["workers"] == 2
    rtol = 1e-12 if dtype == "float64" else 2e-5
    same_arrays(inputs / "plain.npz", inputs / "sharded.npz", rtol)
    assert sorted(p.name for p in inputs.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_sharded_stack_with_lengths_batch_first_equals_a_plain_run(
        cluster: Cluster, inputs: Path, command: str, monkeypatch: pytest.MonkeyPatch,
        cli_run, dask_cli) -> None:
    """Layers shard as a single cell does: the batch axis of x (batch-first: the first),
    of the (L·D, B, H) states and of the lengths; NaN past a sequence's length, which no
    step reads, is no error in a shard, as in a plain run."""
    rng = np.random.default_rng(6)
    lengths = np.array([12, 3, 7, 1, 12, 9, 5])
    padding = np.arange(12)[None, :, None] >= lengths[:, None, None]
    np.save(inputs / "xb.npy", np.where(padding, np.nan, rng.standard_normal((7, 12, 3))))
    np.save(inputs / "lengths.npy", lengths)
    np.savez(inputs / "stack_state.npz", h=rng.standard_normal((4, 7, 4)),
             c=rng.standard_normal((4, 7, 4)))
    np.save(inputs / "gyb.npy", np.where(padding, np.nan, rng.standard_normal((7, 12, 8))))
    args = [command, "lstm", "--input", "xb.npy", "-H", "4", "--layers", "2", "--direction",
            "bidirectional", "--batch-first", "--lengths", "lengths.npy", "--state",
            "stack_state.npz", "--dtype", "float64",
            *(["--grad-output", "gyb.npy"] if command == "grad" else [])]
    monkeypatch.chdir(inputs)
    sharded_equals_plain(args, "3", cluster, inputs, cli_run, dask_cli)


def test_a_sharded_reverse_stack_equals_a_plain_run(cluster: Cluster, inputs: Path,
                                                   monkeypatch: pytest.MonkeyPatch, cli_run,
                                                   dask_cli) -> None:
    """A worker compiles the runner again from its weights, whose names (l0., l1.) a
    stack of reverse layers shares with a forward one: it was refused as asking for
    another direction than the weights held."""
    np.save(inputs / "xr.npy", np.random.default_rng(7).standard_normal((6, 5, 3)))
    args = ["run", "rnn", "--input", "xr.npy", "-H", "4", "--layers", "2", "--direction",
            "reverse", "--dtype", "float64"]
    monkeypatch.chdir(inputs)
    sharded_equals_plain(args, "2", cluster, inputs, cli_run, dask_cli)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_dask_local_equals_a_plain_run(inputs: Path, command: str,
                                      monkeypatch: pytest.MonkeyPatch, cli_run,
                                      dask_cli) -> None:
    args = [*COMMANDS[command], "--dtype", "float64"]
    monkeypatch.chdir(inputs)
    cli_run(*args, "--out", "plain.npz")
    scratch = inputs / f"scratch-{command}"  # $DASK_TEMPORARY_DIRECTORY, as Dask reads it
    scratch.mkdir()
    result = dask_cli(*args, "--out", "local.npz", "--dask", "local", cwd=inputs,
                      env={"DASK_TEMPORARY_DIRECTORY": str(scratch)})
    assert result.returncode == 0, result.stderr
    assert "on Dask (local)" in result.stderr
    same_arrays(inputs / "plain.npz", inputs / "local.npz", 1e-12)
    # the workers' scratch space was a directory of the run's own there, now gone (Dask's
    # own, dask-scratch-space, stayed with its lock files)
    assert list(scratch.iterdir()) == []


def test_one_sequence_runs_as_one_shard_with_the_plain_shapes(
        cluster: Cluster, inputs: Path, monkeypatch: pytest.MonkeyPatch, cli_run,
        dask_cli) -> None:
    monkeypatch.chdir(inputs)
    for command in ("run", "trace", "grad"):
        args = [command, "lstm", "--input", "x1.npy", "-H", "5", "--dtype", "float64"]
        cli_run(*args, "--out", f"{command}.plain.npz")
        result = dask_cli(*args, "--out", f"{command}.dask.npz", "--dask", cluster.address,
                          cwd=inputs)
        assert result.returncode == 0, result.stderr
        assert "1 shard of up to 1 sequence, 2 worker threads" in result.stderr
        same_arrays(inputs / f"{command}.plain.npz", inputs / f"{command}.dask.npz", 1e-12)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_run) -> None:
    """SIGKILL the worker running a shard: the scheduler sends its shards elsewhere, the
    nanny starts a new worker, and the output equals a plain run. The sharded command is
    a process watched while it runs (``cli_process`` waits for its end)."""
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((1500, 24, 4)))
    args = ["run", "lstm", "--input", "x.npy", "-H", "8", "--executor", "reference",
            "--dtype", "float64"]
    monkeypatch.chdir(tmp_path)
    cli_run(*args, "--out", "plain.npz")
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(tmp_path)}
    command = [*CLI_COMMAND, *args, "--out", "sharded.npz", "--dask", cluster.address,
               "--shard-size", "2"]
    with Client(cluster.address, timeout=30) as client:
        before = client.run(os.getpid)
        running = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + LIMIT
            busy: list[str] = []
            while not busy and time.monotonic() < deadline and running.poll() is None:
                busy = sorted(worker for worker, keys in client.processing().items()
                              if any(str(key).startswith("lstm-graph-run") for key in keys))
                time.sleep(0.02)
            assert busy, "no shard was ever seen running"
            os.kill(before[busy[0]], signal.SIGKILL)
            out, err = running.communicate(timeout=LIMIT)
        finally:
            running.kill()
        assert running.returncode == 0, err
        client.wait_for_workers(2, timeout=LIMIT)
        assert before[busy[0]] not in client.run(os.getpid).values()
    assert "12 shards" in err
    same_arrays(tmp_path / "plain.npz", tmp_path / "sharded.npz", 0)


def test_a_memory_mapped_input_is_read_a_shard_at_a_time(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    """x of 48 MiB through shards of 0.5 MiB: the client never holds more than a few."""
    x = np.random.default_rng(2).standard_normal((96, 2048, 64)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    mapped = read_array(tmp_path / "x.npy", "x", "x", mapped=True)
    assert isinstance(mapped.base, np.memmap) or not mapped.flags.owndata
    runner = lstm_graph.load_cell("rnn").compile(input_size=64, hidden_size=2, seed=0)
    y, final = runner(x)
    del x
    job = Job("run", (cell_source("rnn"),), runner.weights, 64, 2, "float32", "plan")
    with connect(cluster.address, timeout=30) as client:
        tracemalloc.start()
        try:
            outcome = execute(client, job, mapped, tmp_path / "y.npz", shard_size=20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert outcome.shards == 103
    assert peak < mapped.nbytes / 6, f"the client held {peak / 2**20:.1f} MiB at once"
    with np.load(tmp_path / "y.npz") as found:
        # float32: the hoisted GEMM over T·b rows rounds differently for another b
        np.testing.assert_allclose(found["y"], y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(found["h"], final["h"], rtol=1e-5, atol=1e-5)


def test_an_input_larger_than_the_memory_allowed_runs_in_shards_that_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_run, cli_refused,
        dask_cli) -> None:
    """With $LSTM_GRAPH_MAX_BYTES below the size of x, a plain run is refused before it
    starts; the same run on --dask local (its workers under the same limit) goes through
    in shards that fit, by default (they were sized to 512 MB, and refused), and equals the
    plain run made without the limit."""
    np.save(tmp_path / "x.npy", np.random.default_rng(4).standard_normal((200, 512, 16))
            .astype("float32"))  # 6.6 MB
    args = ["run", "lstm", "--input", "x.npy", "-H", "8"]
    monkeypatch.chdir(tmp_path)
    cli_run(*args, "--out", "plain.npz")
    limited = {"LSTM_GRAPH_MAX_BYTES": "4M"}
    assert "more than the limit of 4" in cli_refused(*args, env=limited)
    sharded = dask_cli(*args, "--out", "y.npz", "--dask", "local", cwd=tmp_path, env=limited)
    assert sharded.returncode == 0, sharded.stderr
    shards = re.search(r"(\d+) shards of up to (\d+) sequences", sharded.stderr)
    assert shards is not None and int(shards[1]) > 2, sharded.stderr
    tiny = dask_cli(*args, "--out", "z.npz", "--dask", "local", cwd=tmp_path,
                    env={"LSTM_GRAPH_MAX_BYTES": "20K"})  # not even one sequence's arrays
    assert tiny.returncode == 1 and "Traceback" not in tiny.stderr
    assert re.search(r"^one sequence's arrays on a worker \(.*\) are more than the limit of "
                     r"20.5 kB set by LSTM_GRAPH_MAX_BYTES: no shard fits$", tiny.stderr, re.M)
    assert not (tmp_path / "z.npz").exists()
    same_arrays(tmp_path / "plain.npz", tmp_path / "y.npz", 2e-5)


def test_a_shard_that_fails_leaves_no_output_and_no_debris(cluster: Cluster, tmp_path: Path,
                                                           dask_cli) -> None:
    x = np.ones((5, 9, 2))
    x[3, 7, 1] = np.nan  # in the third shard of three
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.npz").write_bytes(b"earlier")
    result = dask_cli("run", "lstm", "--input", "x.npy", "-H", "3", "--out", "y.npz", "--dask",
                      cluster.address, "--shard-size", "3", cwd=tmp_path)
    assert result.returncode == 1
    assert "x.npy: x holds NaN or infinity, first at index (3, 7, 1)" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "y.npz").read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npz"]


def _bad_grad_outputs(folder: Path) -> dict[str, str]:
    """Files of --grad-output for x (5, 4, 3) and H=4 that grad must refuse, and what it says."""
    nan = np.ones((5, 4, 4))
    nan[2, 3, 1] = np.nan  # in the second shard of two
    huge = np.ones((5, 4, 4))
    huge[1, 2, 0] = 1e39
    arrays = {"text.npy": (np.full((5, 4, 4), "a"),
                           "text.npy: grad_output has dtype <U1; it must hold real numbers"),
              "complex.npy": (np.ones((5, 4, 4)) + 1j, "complex.npy: grad_output has dtype "
                              "complex128; it must hold real numbers"),
              "nan.npy": (nan, "grad_output holds NaN or infinity, first at index (2, 3, 1); "
                          "clean it or pass --allow-nonfinite"),
              "huge.npy": (huge, "grad_output holds 1e+39 at index (1, 2, 0), too large for "
                           "float32")}
    for name, (array, _) in arrays.items():
        np.save(folder / name, array)
    np.save(folder / "x.npy", np.random.default_rng(0).standard_normal((5, 4, 3)))
    return {name: message for name, (_, message) in arrays.items()}


def test_grad_refuses_a_grad_output_of_no_real_or_finite_numbers_sharded_or_not(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_fails,
        dask_cli) -> None:
    """The plain and the sharded grad check --grad-output alike: its dtype (by its header,
    before any work) and its values (the index the whole batch's), with the same words."""
    monkeypatch.chdir(tmp_path)
    for name, message in _bad_grad_outputs(tmp_path).items():
        args = ["grad", "lstm", "--input", "x.npy", "-H", "4", "--grad-output", name,
                "--out", "g.npz"]
        said = cli_fails(*args)
        assert message in said and f"\n{name}: " in "\n" + said  # named by its file
        assert not (tmp_path / "g.npz").exists()
        sharded = dask_cli(*args, "--dask", cluster.address, "--shard-size", "2", cwd=tmp_path)
        assert sharded.returncode == 1 and message in sharded.stderr, sharded.stderr
        assert f"\n{name}: " in "\n" + sharded.stderr  # named as the plain grad names it
        assert "Traceback" not in sharded.stderr and not (tmp_path / "g.npz").exists()
    allowed = dask_cli("grad", "lstm", "--input", "x.npy", "-H", "4", "--grad-output",
                       "nan.npy", "--out", "g.npz", "--allow-nonfinite", "--dask",
                       cluster.address, cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_ctrl_c_just_as_a_sharded_output_s_directory_is_made_leaves_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C between the making of ``.out.npz.lstm-graph-….parts`` and the object that
    removes it left the directory behind; it is held until the object has it."""
    interrupt_after(monkeypatch, chunked_module, "create_locked")
    with pytest.raises(KeyboardInterrupt):
        ChunkedNpz(tmp_path / "out.npz")
    assert list(tmp_path.iterdir()) == []


def test_chunked_npz_is_whole_or_absent(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ChunkedNpz(tmp_path / "out.npz") as out:
        out.array("a", (4, 3), np.float32)[:2] = 1
        raise RuntimeError("a shard failed")
    assert list(tmp_path.iterdir()) == []
    expected = np.arange(5000 * 300, dtype="float64").reshape(5000, 300)  # 12 MB: 3 blocks
    with ChunkedNpz(tmp_path / "out.npz") as out:
        first, second = out.array("b.W_x", (5000, 300), "float64"), out.array("a", (2,), "i8")
        first[:] = expected  # a distinct number everywhere: a block swapped or lost shows
        second[:] = [3, 4]
        out.commit()
    with np.load(tmp_path / "out.npz") as found:
        assert found.files == ["b.W_x", "a"]
        np.testing.assert_array_equal(found["b.W_x"], expected)
        assert found["a"].tolist() == [3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


_KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from lstm_graph.distributed.chunked import ChunkedNpz
out = ChunkedNpz(Path(sys.argv[1]))
out.array("y", (10, 3), "float32")[:] = 1
sys.stdout.write("made\\n"); sys.stdout.flush()
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # alive until told
"""


def test_the_parts_a_killed_write_left_are_swept_by_the_next_one_and_live_ones_kept(
        tmp_path: Path) -> None:
    """SIGKILL leaves .out.npz.lstm-graph-XXXXXXXX.parts; the next write of out.npz removes
    it (its lock is free), but not the parts of a write still running, nor anything else."""
    def start(mode: str) -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-c", _KILLED_MID_WRITE,
                                    str(tmp_path / "out.npz"), mode], text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdout is not None and process.stdout.readline() == "made\n"
        return process

    killed = start("die")
    assert killed.wait(timeout=30) == -signal.SIGKILL
    (dead,) = [p.name for p in tmp_path.iterdir()]
    assert re.fullmatch(r"\.out\.npz\.lstm-graph-[0-9a-f]{8}\.parts", dead)
    alive = start("live")
    try:
        (live,) = {p.name for p in tmp_path.iterdir()} - {dead}
        (tmp_path / ".out.npz.mine.parts").mkdir()  # not named as ours: never touched
        with ChunkedNpz(tmp_path / "out.npz") as out:
            out.array("y", (2,), "float32")[:] = 7
            out.commit()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [".out.npz.mine.parts", live, "out.npz"])
    finally:
        assert alive.stdin is not None
        alive.stdin.close()
        alive.wait(timeout=30)


class _Threads:
    """As much of a Dask client as execute() asks before it sends a shard."""

    cluster = None  # a remote scheduler's: its workers bound by their own limits

    def nthreads(self) -> dict[str, int]:
        return {"tcp://127.0.0.1:1": 2}


def test_an_output_the_disk_cannot_hold_twice_is_refused_before_any_shard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run writes y (T, B, H) and the final states: (50, 64, 32) float32 is 409,600 bytes of
    y; with less than twice the output free, nothing is sent and nothing is left."""
    runner = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=32, seed=0)
    job = Job("run", (cell_source("lstm"),), runner.weights, 3, 32, "float32", "plan")
    free = 800_000
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(chunked_module.shutil, "disk_usage",
                        lambda where: usage._replace(free=free))
    monkeypatch.setattr(sharded_module, "_submit_all",
                        lambda *args: pytest.fail("a shard was sent"))
    (tmp_path / "y.npz").write_bytes(b"earlier")
    with pytest.raises(OutputError) as refused:
        execute(_Threads(), job, np.zeros((50, 64, 3), "float32"), tmp_path / "y.npz")
    once = (50 * 64 * 32 + 2 * 64 * 32) * 4 + 3 * chunked_module.OVERHEAD  # y, h, c
    assert f"y.npz: needs {size_text(2 * once)} of free disk in {tmp_path} (its arrays " \
        "while they are written and the archive made of them: " \
        f"{size_text(once)} each), but only 800 kB is free" in str(refused.value)
    assert size_text(2 * once) == "858 kB"
    assert [p.name for p in tmp_path.iterdir()] == ["y.npz"]
    assert (tmp_path / "y.npz").read_bytes() == b"earlier"


def test_the_rows_of_x_in_flight_are_said_in_the_shards_the_batch_makes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """256 sequences in shards of 100 are 3 shards: the refusal said '4 shards of 100'
    (the window's count and the size asked for), which no batch of 256 makes."""
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "4M")
    runner = lstm_graph.load_cell("lstm").compile(input_size=64, hidden_size=8, seed=0)
    job = Job("run", (cell_source("lstm"),), runner.weights, 64, 8, "float32", "plan")
    monkeypatch.setattr(sharded_module, "_submit_all",
                        lambda *args: pytest.fail("a shard was sent"))
    with pytest.raises(MemoryLimitError) as refused:
        execute(_Threads(), job, np.zeros((100, 256, 64), "float32"), tmp_path / "y.npz",
                shard_size=100)
    assert str(refused.value).startswith("the rows of x in flight (3 shards of up to 100 "
                                         "sequences) of shape (100, 256, 64) would take")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of 1 MiB (tmpfs), where this process may mount one; else skipped."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def test_a_full_disk_is_an_error_and_leaves_nothing(cluster: Cluster, small_disk: Path,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    dask_cli) -> None:
    """On a disk of 1 MiB: an output of 1 MB (2 MB with its archive) is refused before any
    work (it used to be written through sparse memory-mapped files until SIGBUS); and
    where the free space was misjudged, making an array that does not fit is an error,
    not a crash."""
    np.save(tmp_path / "x.npy", np.zeros((100, 40, 3), "float32"))
    (small_disk / "y.npz").write_bytes(b"earlier")
    result = dask_cli("run", "lstm", "--input", "x.npy", "-H", "64", "--out",
                      small_disk / "y.npz", "--dask", cluster.address, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    once = (100 * 40 * 64 + 2 * 40 * 64) * 4 + 3 * chunked_module.OVERHEAD  # y, h, c
    assert f"y.npz: needs {size_text(2 * once)} of free disk in {small_disk} " in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in small_disk.iterdir()] == ["y.npz"]
    assert (small_disk / "y.npz").read_bytes() == b"earlier"
    plenty = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(chunked_module.shutil, "disk_usage", lambda where: plenty)
    with pytest.raises(OutputError, match=r"cannot make y \(1000, 500\) in .*: no room for "
                       r"its 2 MB on the disk \(No space left on device\)"), \
            ChunkedNpz(small_disk / "z.npz") as out:
        out.reserve(2_000_000)
        out.array("y", (1000, 500), np.float32)
    assert [p.name for p in small_disk.iterdir()] == ["y.npz"]


def test_moments_merged_over_blocks_and_shards_are_numpys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Mean, std (Chan et al.'s merge, accurate far from 0), norm, min and max of numbers
    taken in blocks of 7 and merged over uneven shards equal NumPy's over all of them."""
    monkeypatch.setattr(Moments, "BLOCK", 7)
    values = 1e6 + np.random.default_rng(6).standard_normal(100) * 1e-3
    parts = [Moments.of(values[b0:b1]) for b0, b1 in shard_bounds(100, 30)]
    found = parts[0]
    for part in parts[1:]:
        found = found.merge(part)
    assert found.count == 100
    assert found.mean == pytest.approx(values.mean(), rel=1e-15)
    assert found.std == pytest.approx(values.std(), rel=1e-6)
    assert found.norm == pytest.approx(np.linalg.norm(values), rel=1e-15)
    assert (found.low, found.high) == (values.min(), values.max())


def test_shards_cover_the_batch_once() -> None:
    for batch in range(1, 40):
        for size in range(1, batch + 2):
            bounds = shard_bounds(batch, size)
            rows = [b for b0, b1 in bounds for b in range(b0, b1)]
            assert rows == list(range(batch))
            assert max(b1 - b0 for b0, b1 in bounds) <= size


@pytest.mark.parametrize("address, message", [
    ("foo", "is not a scheduler address"),
    ("http://127.0.0.1:8786", "unknown scheme 'http://'"),
    ("tcp://127.0.0.1", "has no HOST:PORT"),
    ("tcp://127.0.0.1:70000", "port 70000 is not between 1 and 65535"),
    ("tcp://[::1", "'[::1' is not HOST:PORT with a host name or IP address"),
    ("tcp://::1:8786", "(IPv6 in brackets)"),
    ("tcp://[zz]:8786", "'[zz]:8786' is not HOST:PORT"),
    # said "something answered … but not as a Dask scheduler does" (an IDNA UnicodeError)
    ("tcp://a..b:8786", "'a..b:8786' is not HOST:PORT with a host name"),
    ("tcp://127.0.0.1:²", "port '²' is not written in the digits 0-9"),  # int() failed
    ("tcp://localhost:８７８６", "port '８７８６' is not written in the digits 0-9 (ASCII)"),
    ("127.0.0.1:٨٧٨٦", "is not a scheduler address"),  # Arabic-Indic digits: accepted
])
def test_a_malformed_address_is_a_usage_error(tmp_path: Path, address: str, message: str,
                                              cli_fails) -> None:
    assert message in cli_fails("run", "lstm", "--sample", "-H", "2", "--out",
                                tmp_path / "y.npz", "--dask", address, code=2)
    assert not list(tmp_path.iterdir())
    assert check_address("127.0.0.1:8786") == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize("args, message", [
    (["run", "lstm", "--sample", "-H", "2", "--dask", "local", "--dask-timeout", "inf"],
     "inf is not in the range 0<x<=3600"),
    (["trace", "lstm", "--sample", "-H", "2", "--dask", "local", "--dask-timeout", "nan"],
     "nan is not a finite number"),
    (["sweep", "lstm", "--steps", "1", "--dask-timeout", "nan"], "nan is not a finite number"),
    (["sweep", "lstm", "--steps", "1", "--dask-timeout", "1e9"], "not in the range"),
    (["run", "lstm", "--sample", "-H", "2", "--seed", "-1"], "-1 is not in the range x>=0"),
])
def test_timeouts_and_seeds_out_of_range_are_usage_errors(tmp_path: Path, args: list[str],
                                                          message: str, cli_fails) -> None:
    assert message in cli_fails(*args, "--out", tmp_path / "y.npz", code=2)
    assert list(tmp_path.iterdir()) == []


def test_what_dask_cannot_do_is_said_plainly(tmp_path: Path, cli_fails) -> None:
    out = tmp_path / "y.npz"
    assert "numpy backend only" in cli_fails("run", "lstm", "--sample", "-H", "2", "--out", out,
                                             "--dask", "local", "--backend", "cupy", code=2)
    assert "give --dask too" in cli_fails("run", "lstm", "--sample", "-H", "2", "--out", out,
                                          "--shard-size", "4", code=2)
    began = time.monotonic()
    stderr = cli_fails("trace", "lstm", "--sample", "-H", "2", "--out", out, "--dask",
                       "tcp://127.0.0.1:9", "--dask-timeout", "1")
    assert time.monotonic() - began < 20
    assert "cannot reach a Dask scheduler at tcp://127.0.0.1:9 within 1 s" in stderr
    assert not (tmp_path / "y.npz").exists()


@pytest.fixture
def not_dask() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that is no Dask scheduler: it accepts every connection and
    writes what the test puts in the list (nothing: it stays silent), keeping it open."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    reply: list[bytes] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            for data in reply:
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], reply
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("reply", [
    b"", b"HTTP/1.0 400 Bad request\r\n\r\n" + bytes(range(256)),
    struct.pack("<Q", 2**40),  # a frame of a terabyte
    struct.pack("<QQ", 8, 2**40),  # 2**40 frames in 8 bytes (struct.error inside Dask)
])
def test_a_server_that_is_not_dask_is_refused_within_the_timeout(
        tmp_path: Path, not_dask: tuple[int, list[bytes]], reply: bytes, dask_cli) -> None:
    """Something that accepts the connection but never answers as Dask does (silent, or
    writing garbage): refused within about --dask-timeout, not waited on for ever."""
    port, replies = not_dask
    replies.append(reply)
    began = time.monotonic()
    result = dask_cli("run", "lstm", "--sample", "-H", "2", "--out", "y.npz", "--dask",
                      f"127.0.0.1:{port}", "--dask-timeout", "2", cwd=tmp_path)
    took = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    assert f"something answered at tcp://127.0.0.1:{port}, but not as a Dask scheduler " \
        "does" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "y.npz").exists()
    assert took < 2 + 15, f"took {took:.1f} s with --dask-timeout 2"


def test_a_tls_address_without_dask_s_tls_settings_is_said_so(tmp_path: Path,
                                                              dask_cli) -> None:
    """Without certificates in Dask's configuration the client's own side of tls:// fails
    first; it was told that something answered, but not as a Dask scheduler does."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = dask_cli("run", "lstm", "--sample", "-H", "2", "--out", "y.npz", "--dask",
                      f"tls://127.0.0.1:{port}", "--dask-timeout", "2", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot connect to tls://127.0.0.1:{port} (TypeError: TLS expects" in result.stderr
    assert "what a tls:// client needs (for TLS, the certificates of distributed.comm.tls)" \
        in result.stderr


def test_a_local_cluster_whose_nannies_cannot_start_is_said_in_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a small ulimit -u, Dask's nanny cannot fork its worker and LocalCluster raises
    RuntimeError('Nanny failed to start.') from the error underneath."""
    def refuse(scratch: str) -> None:
        try:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        except BlockingIOError as err:
            raise RuntimeError("Nanny failed to start.") from err

    monkeypatch.setattr(cluster_module, "_local_cluster", refuse)
    with pytest.raises(DaskError) as raised, connect("local", timeout=1):
        pass
    assert str(raised.value) == (
        "cannot start a local Dask cluster (Nanny failed to start.: [Errno 11] Resource "
        "temporarily unavailable); see that this machine can start processes (ulimit -u) and "
        "listen on 127.0.0.1, or give the address of a running scheduler")


def test_a_local_sweep_that_cannot_fit_is_refused_before_its_cluster_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_fails) -> None:
    """``sweep -H 99999999 --dask local`` started a cluster (16 s) for each run to be
    refused on its worker; a local cluster's workers are this machine."""
    monkeypatch.setattr(cluster_module, "_local_cluster",
                        lambda scratch: pytest.fail("the cluster was started"))
    message = cli_fails("sweep", "lstm", "--steps", "2", "-H", "8", "-H", "99999999",
                        "--dask", "local", "--out", tmp_path / "board.json")
    assert message.startswith("Adam's first and second moments of shape")
    assert re.search(r"for training lstm with H=99999999, batch 64, 2 steps(, 2 runs at "
                     r"once)?, more than", message), message
    assert list(tmp_path.iterdir()) == []


def test_a_local_sweep_weighs_one_run_a_core_at_once(monkeypatch: pytest.MonkeyPatch,
                                                      cli_fails) -> None:
    """The check weighed one run against the whole memory while each core ran one."""
    from lstm_graph.training.trainer import allocations

    monkeypatch.setattr(cluster_module, "_local_cluster",
                        lambda scratch: pytest.fail("the cluster was started"))
    monkeypatch.setattr("lstm_graph.cli.sweep.usable_cpus", lambda: 4)
    one = sum(a.nbytes for a in allocations(lstm_graph.load_cell("lstm"), adding(8), 64, 3,
                                            32, np.dtype("float32")))
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", str(2 * one))  # two runs fit, four do not
    message = cli_fails("sweep", "lstm", "--length", "8", "--steps", "3", "--batch", "32",
                        "-H", "64", "--seeds", "0,1,2,3", "--dask", "local")
    assert "for training lstm with H=64, batch 32, 3 steps, 4 runs at once, more than" in \
        message


def test_a_scratch_directory_that_cannot_be_made_is_said_as_such(tmp_path: Path,
                                                                 cli_fails) -> None:
    """$DASK_TEMPORARY_DIRECTORY missing: the advice was to see that the machine can start
    processes and listen on 127.0.0.1."""
    with dask.config.set({"temporary-directory": str(tmp_path / "missing")}):  # as it reads
        said = cli_fails("run", "lstm", "--sample", "-H", "3", "--out", tmp_path / "y.npz",
                         "--dask", "local")  # the variable, once, on its import
    assert said == (f"cannot make the local cluster's scratch directory in "
                    f"{tmp_path / 'missing'} (No such file or directory); give Dask a "
                    "directory it can write in (DASK_TEMPORARY_DIRECTORY, or TMPDIR)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_local_cluster_that_cannot_start_is_not_asked_about_a_scheduler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(scratch: str) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(cluster_module, "_local_cluster", refuse)
    with pytest.raises(DaskError) as raised, connect("local", timeout=1):
        pass
    assert str(raised.value).startswith("cannot start a local Dask cluster (")
    assert "Address already in use" in str(raised.value)
    assert "dask scheduler" not in str(raised.value)


def test_without_dask_installed_the_commands_say_so(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, cli_run,
                                                   cli_fails) -> None:
    out = tmp_path / "y.npz"
    monkeypatch.setitem(sys.modules, "lstm_graph.distributed.cluster", None)  # as if absent
    stderr = cli_fails("run", "lstm", "--sample", "-H", "2", "--out", out, "--dask", "local")
    assert "needs Dask, which is not installed here" in stderr
    assert f"{sys.executable} -m pip install 'dask[distributed]>=2024.8.0'" in stderr
    assert not out.exists()
    monkeypatch.chdir(tmp_path)
    assert "needs Dask" in cli_fails("sweep", "lstm", "--steps", "1")
    assert not list(tmp_path.iterdir())
    cli_run("run", "lstm", "--sample", "-H", "2", "--out", out)


def test_a_scheduler_without_usable_workers_is_refused(tmp_path: Path, dask_cli) -> None:
    """No workers: said within the time limit. A worker that cannot import lstm-graph
    (a finder refuses it, as if it were not installed there): named, before any work."""
    scheduler, address = _scheduler(tmp_path)
    worker = None
    try:
        with pytest.raises(DaskError, match="has no workers"), connect(address, timeout=1):
            pass
        blocker = tmp_path / "without_lstm_graph.py"
        blocker.write_text(
            "import sys\n"
            "class Refuse:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'lstm_graph':\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Refuse())\n"
            "sys.argv = ['dask', 'worker', *sys.argv[1:]]\n"
            "from dask.__main__ import main\n"
            "main()\n")
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, str(blocker), address, "--no-nanny", "--nthreads", "1",
                 "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "30",
                 "--local-directory", str(tmp_path)],
                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        result = dask_cli("run", "lstm", "--sample", "-H", "2", "--out", "y.npz", "--dask",
                          address, "--dask-timeout", "60", cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert "lstm-graph cannot run on worker tcp://127.0.0.1:" in result.stderr
        assert "No module named 'lstm_graph" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "y.npz").exists()
    finally:
        if worker is not None:
            _stop(worker)
        _stop(scheduler)


def _lost_mid_run(tmp_path: Path, lose: str, *extra: str) -> tuple[int, str, float]:
    """``run`` on a scheduler of two workers, in a process; once its shards are being
    processed, the ``lose`` side (``"scheduler"`` or ``"workers"``) is killed: the
    command's exit status, its stderr and the seconds it took after the loss."""
    scheduler, address = _scheduler(tmp_path)
    workers = _workers(address, tmp_path)
    try:
        np.save(tmp_path / "x.npy", np.random.default_rng(3).standard_normal((1500, 24, 4)))
        env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(tmp_path)}
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=LIMIT)
            running = subprocess.Popen(
                [*CLI_COMMAND, "run", "lstm", "--input", "x.npy", "-H", "8", "--executor",
                 "reference", "--out", "y.npz", "--dask", address, "--shard-size", "2",
                 *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + LIMIT
                while time.monotonic() < deadline and running.poll() is None and not any(
                        str(key).startswith("lstm-graph-run")
                        for keys in client.processing().values() for key in keys):
                    time.sleep(0.02)
                os.killpg((scheduler if lose == "scheduler" else workers).pid, signal.SIGKILL)
                lost = time.monotonic()
                _, err = running.communicate(timeout=LIMIT)
                return running.returncode, err, time.monotonic() - lost
            finally:
                running.kill()
    finally:
        _stop(workers)
        _stop(scheduler)


def test_a_scheduler_lost_mid_run_is_one_message_and_no_output(tmp_path: Path) -> None:
    """The command is a process watched while it runs (``cli_process`` waits for its end)."""
    code, err, _ = _lost_mid_run(tmp_path, "scheduler")
    assert code == 1, err
    # which the client sees first depends on the host's load: the work gone, or the
    # scheduler's connection closed (a run of the suite on a loaded machine)
    assert ("the Dask cluster lost the work" in err
            or "the Dask cluster lost its scheduler" in err) and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2, err  # a note on the dtype, then the one line
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".log")
                  and p.name != "scheduler.json" and not p.is_dir()) == ["x.npy"]


def test_work_whose_every_worker_is_lost_ends_in_one_message_not_a_hang(tmp_path: Path
                                                                         ) -> None:
    """A scheduler whose workers all died kept the shards for a worker that never came,
    and the command waited forever: it ends once the cluster has had no workers for
    --dask-timeout seconds (3: the workers' answer to which lstm-graph they run must come
    within it too, which one second did not on a loaded machine)."""
    code, err, waited = _lost_mid_run(tmp_path, "workers", "--dask-timeout", "3")
    assert code == 1, err
    assert "the Dask cluster has had no workers for 3 s (each died or left)" in err
    assert "Traceback" not in err and waited < 3 + 10, waited
    assert not (tmp_path / "y.npz").exists()


def test_ctrl_c_at_the_terminal_during_a_local_cluster_run_is_one_line(tmp_path: Path
                                                                       ) -> None:
    """A terminal's Ctrl-C reaches the whole process group: each local worker printed its
    traceback, and the exit took seconds more. The workers ignore it now (they inherit
    that from their start); this process acts on it and closes them."""
    np.save(tmp_path / "x.npy",
            np.random.default_rng(3).standard_normal((3000, 24, 4)).astype("float32"))
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(tmp_path)}
    running = subprocess.Popen(
        [*CLI_COMMAND, "run", "lstm", "--input", "x.npy", "-H", "8", "--executor",
         "reference", "--out", "y.npz", "--dask", "local", "--shard-size", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline and running.poll() is None and not any(
                p.name.endswith(".parts") for p in tmp_path.iterdir()):
            time.sleep(0.02)  # the shards are under way: the cluster is up
        workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(running.pid)],
                                 capture_output=True, text=True).stdout.split()
        ignored = [int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1
                   for pid in workers if Path(f"/proc/{pid}/status").exists()
                   for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("SigIgn:")]
        os.killpg(running.pid, signal.SIGINT)
        sent = time.monotonic()
        _, err = running.communicate(timeout=LIMIT)
        took = time.monotonic() - sent
    finally:
        running.kill()
    assert ignored and all(ignored), workers
    assert (running.returncode, err) == (130, "interrupted; no output was written\n")
    assert took < 8, took


def test_a_sweep_trains_every_cell_seed_and_size_and_ranks_them(cluster: Cluster,
                                                                inputs: Path, dask_cli) -> None:
    result = dask_cli("sweep", "rnn", "mine.cell", "--task", "adding", "--length", "6",
                      "--steps", "6", "--batch", "4", "--eval-every", "3", "--seeds", "0,1",
                      "--hidden-sizes", "3,5", "--dask", cluster.address, "--out",
                      "board.json", "--markdown", "board.md", cwd=inputs)
    assert result.returncode == 0, result.stderr
    board = json.loads((inputs / "board.json").read_text())
    entries = board["leaderboard"]
    assert len(entries) == 8 and board["task"]["baseline"] == pytest.approx(1 / 6)
    assert {(e["spec"], e["hidden_size"], e["seed"]) for e in entries} == {
        (spec, h, seed) for spec in ("rnn", "mine.cell") for h in (3, 5)
        for seed in (0, 1)}
    losses = [e["loss"] for e in entries]
    assert losses == sorted(losses) and [e["rank"] for e in entries] == list(range(1, 9))
    for entry in entries:
        assert entry["ratio"] == pytest.approx(entry["loss"] / entry["baseline"])
        assert entry["steps"] == 6 and [step for step, _ in entry["evals"]] == [3, 6]
    mine = next(e for e in entries if e["spec"] == "mine.cell" and e["hidden_size"] == 5
                and e["seed"] == 1)
    cell = lstm_graph.compile_source(MINE, "mine.cell", "mine")
    here = train(cell, adding(6), 5, 6, batch=4, seed=1, eval_every=3)
    assert mine["loss"] == pytest.approx(here.evals[-1][1], rel=1e-5)
    assert mine["params"] == sum(v.size for v in here.weights.values())
    table = result.stdout.splitlines()
    assert table[0].startswith("adding (T=6), 6 steps: memoryless baseline 0.1667")
    assert table[1].split()[:4] == ["rank", "cell", "H", "seed"] and len(table) == 10
    assert (inputs / "board.md").read_text().count("\n| ") == 9


def test_the_board_names_cells_as_train_does_and_escapes_them_in_markdown() -> None:
    """``cells/mgu.cell`` is ``mgu`` on the board, as train calls it (two files of one cell
    name keep their paths); losses show four significant digits (``0.1600`` beside
    ``0.1488``); a name holding ``|`` or HTML is text in the Markdown table."""
    def entry(spec: str, cell: str, loss: float) -> sweep_module.Entry:
        return sweep_module.Entry(spec, cell, 4, 0, 10, loss, 1 / 6, 2, 0.1)

    entries = sweep_module.rank([entry("cells/mgu.cell", "mgu", 0.16),
                                 entry("a/x.cell", "x", 0.1488), entry("b/x.cell", "x", 0.2),
                                 entry("odd.cell", "a|b<i>c</i>", 0.3)])
    rows = [line.split()[1:5] for line in sweep_module.table(entries).splitlines()[1:]]
    assert rows == [["a/x.cell", "4", "0", "0.1488"], ["mgu", "4", "0", "0.1600"],
                    ["b/x.cell", "4", "0", "0.2000"], ["a|b<i>c</i>", "4", "0", "0.3000"]]
    page = sweep_module.markdown(entries, "adding")
    last = page.splitlines()[-1]
    assert last.startswith("| 4 | a\\|b&lt;i&gt;c&lt;/i&gt; | 4 | 0 | 0.3000 |")
    assert all(line.count(" | ") == len(sweep_module._COLUMNS) - 1
               for line in page.splitlines() if line.startswith("| "))


def test_a_sweep_refuses_bad_grids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   cli_fails) -> None:
    monkeypatch.chdir(tmp_path)
    for args, message in ((["lstm", "lstm"], "given twice"),
                          (["lstm", "--out", "s.json", "--markdown", "./s.json"],
                           "--out and --markdown name the same file (s.json)"),
                          (["lstm", "--seeds", "0,x"], "comma-separated list"),
                          (["lstm", "--seeds", "0,-1"], "seeds are 0 or more"),
                          (["lstm", "--hidden-sizes", "0"], "at least 1"),
                          # one cell by two names was trained twice, ranked apart
                          (["gru", str(lstm_graph_cells() / "gru.cell")],
                           "gru.cell is gru again (the same equations); give each cell once"),
                          # submitted whole, a grid of millions grew the scheduler unbounded
                          (["lstm", "--seeds", ",".join(map(str, range(1000))),
                            "--hidden-sizes", ",".join(map(str, range(1, 102)))],
                           "1 cell × 101 hidden sizes × 1000 seeds make 101,000 training "
                           "runs, more than the 100,000 a sweep takes")):
        assert message in cli_fails("sweep", *args, "--steps", "1", code=2)
    assert not list(tmp_path.iterdir())


def lstm_graph_cells() -> Path:
    return Path(lstm_graph.__file__).parent / "cells"


def test_a_sweep_keeps_a_few_runs_a_worker_thread_out_at_once() -> None:
    """Every run was submitted at once: the scheduler held the whole grid."""
    configs = sweep_module.grid([("rnn", cell_source("rnn"))], [2], list(range(7)))
    settings = sweep_module.Settings(steps=1, batch=2, eval_every=1)
    with Client(processes=False, n_workers=1, threads_per_worker=1,  # every port on 127.0.0.1
                dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") \
            as client:
        out, done, most = [0], [0], [0]
        submit = client.submit

        def counted(*args: object, **kwargs: object) -> object:
            out[0] += 1
            most[0] = max(most[0], out[0] - done[0])
            return submit(*args, **kwargs)

        client.submit = counted  # type: ignore[method-assign]
        entries = sweep_module.sweep(client, configs, adding(4), settings,
                                     lambda entry, count: done.__setitem__(0, count))
    assert len(entries) == 7 and out[0] == 7
    assert most[0] == sweep_module.IN_FLIGHT * 1  # one worker thread


def test_a_run_that_fails_on_its_worker_is_its_entry_and_the_others_go_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any error of one training run (not only lstm-graph's own) is that run's entry, with
    the error's type; the sweep goes on. Workers are threads here, so they see the patch."""
    real = sweep_module.train

    def flaky(cell: lstm_graph.Cell, task: sweep_module.Task, hidden: int, *args: object,
              **kwargs: object) -> object:
        seed = args[4]
        if seed == 1:
            raise ValueError("a bad batch")
        if seed == 2:
            raise MemoryError
        return real(cell, task, hidden, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sweep_module, "train", flaky)
    configs = sweep_module.grid([("lstm", cell_source("lstm"))], [3], [2, 1, 0])
    settings = sweep_module.Settings(steps=2, batch=4, eval_every=2)
    with Client(processes=False, n_workers=1, threads_per_worker=2,  # every port on 127.0.0.1
                dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") \
            as client:
        entries = sweep_module.sweep(client, configs, adding(6), settings)
    assert [(e.seed, e.error) for e in entries] == [
        (0, None), (1, "ValueError: a bad batch"), (2, "MemoryError")]
    assert entries[0].loss is not None and entries[1].loss is None


def test_a_sweep_whose_every_run_fails_exits_1(cluster: Cluster, inputs: Path,
                                               dask_cli) -> None:
    """It printed its board of failures and exited 0, as if something had been ranked."""
    result = dask_cli("sweep", "rnn", "--task", "adding", "--length", "4", "--steps", "3",
                      "--batch", "2", "--lr", "1e300", "--hidden-sizes", "2", "--dask",
                      cluster.address, cwd=inputs)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "every training run failed (the first: the training loss became nan" in \
        result.stderr
    row = result.stdout.splitlines()[2].split()
    assert row[4] == "failed" and row[6] == "—"  # no parameter count for a run with none


def test_a_board_that_cannot_be_written_is_still_shown(cluster: Cluster, inputs: Path,
                                                       dask_cli) -> None:
    """--out on a full disk: the sweep trained, then said the write failed, and its table
    was nowhere: it is shown first now."""
    result = dask_cli("sweep", "rnn", "--task", "adding", "--length", "4", "--steps", "2",
                      "--batch", "2", "--hidden-sizes", "2", "--dask", cluster.address,
                      "--out", "/dev/full", cwd=inputs)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "/dev/full: cannot write (No space left on device)" in result.stderr
    assert result.stdout.splitlines()[2].split()[:4] == ["1", "rnn", "2", "0"]


def test_every_entry_names_the_compiled_cell_and_the_board_is_valid_json(
        tmp_path: Path) -> None:
    """A failed entry (as a worker that died gets) names the cell as a finished one does;
    a zero baseline gives no ratio ('—', null); NaN held-out losses are null."""
    (tmp_path / "mine.cell").write_text("cell fancy\n" + MINE)
    configs = sweep_module.grid([(str(tmp_path / "mine.cell"),
                                  cell_source(str(tmp_path / "mine.cell")))], [2], [0])
    task = adding(4)
    entry = sweep_module.failed(configs[0], task, "its worker died each time it ran")
    assert configs[0].cell == entry.cell == "fancy"
    done = sweep_module.train_one(configs[0], task, sweep_module.Settings(steps=1, batch=2))
    assert done.cell == "fancy" and done.error is None
    zero = sweep_module.Entry("rnn", "rnn", 2, 0, 6, 0.5, 0.0, 2, 0.1,
                              [(1, float("nan")), (2, 0.5)])
    assert zero.ratio is None
    line = sweep_module.table([zero]).splitlines()[1].split()
    assert line[4:6] == ["0.5000", "—"]
    text = json.dumps(sweep_module.as_json([zero, entry], task, sweep_module.Settings(1)),
                      allow_nan=False)
    board = json.loads(text)["leaderboard"]
    assert board[0]["ratio"] is None and board[0]["evals"] == [[1, None], [2, 0.5]]
    # a failed run has no parameter count nor steps: null, as the table's '—' (it was 0)
    assert board[1]["params"] is None and board[1]["steps"] is None
    assert sweep_module.table([entry]).splitlines()[1].split()[6:8] == ["—", "—"]


def test_a_local_cluster_interrupted_as_it_starts_is_left_to_the_exit_quietly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C while ``--dask local`` started its cluster left the half-made cluster to
    Dask's exit hook, which printed a traceback ("AssertionError: Status.init"): its
    worker processes are killed, it is closed as far as Dask can, and its hook is off."""
    from distributed.deploy.spec import SpecCluster

    killed = []

    class Process:
        def kill(self) -> None:
            killed.append(self)

    class HalfMade:
        shutdown_on_close = True
        workers = {"0": SimpleNamespace(process=SimpleNamespace(process=Process())),
                   "1": SimpleNamespace(process=None)}  # not started yet

        def close(self, timeout: float) -> None:
            raise AssertionError("Status.init")  # as Dask's own close of such a cluster

    half = HalfMade()

    def interrupted() -> object:
        SpecCluster._instances.add(half)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cluster_module._started(interrupted)  # type: ignore[arg-type]
    assert half.shutdown_on_close is False and len(killed) == 1


def test_lstm_graph_run_from_a_source_tree_says_so_as_its_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Imported from a checkout pip never installed, the metadata lookup raised: a Dask
    client printed a traceback, and such a worker was refused though it could run."""
    from importlib import metadata

    from lstm_graph.distributed.jobs import worker_version

    def absent(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", absent)
    assert worker_version() == "unpackaged, from " + str(Path(lstm_graph.__file__).parent)


def test_a_result_lost_with_its_last_worker_before_it_was_fetched_is_no_hang(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard's (or a sweep run's) result, done, whose worker then died before the client
    fetched it goes back to the scheduler to be computed again: ``future.result()`` waited
    for a worker that never came, past --dask-timeout, without bound."""
    from distributed import Client, LocalCluster

    monkeypatch.setattr(cluster_module, "TIMEOUT", 1.0)  # the patience of a plain Client
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as local, Client(local) as client:
        future = client.submit(sum, [1, 2], pure=False)
        assert future.result(timeout=LIMIT) == 3
        local.scale(0)
        deadline = time.monotonic() + LIMIT
        while client.nthreads() and time.monotonic() < deadline:
            time.sleep(0.05)
        began = time.monotonic()
        with pytest.raises(DaskError, match=r"has had no workers for 1 s"):
            cluster_module.result(client, future)
        assert time.monotonic() - began < 1 + 5
