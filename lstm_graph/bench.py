"""Benchmarks: our executors against PyTorch and onnxruntime, in one process.

    python -m lstm_graph.bench                      # all cells and sizes, printed
    python -m lstm_graph.bench --markdown docs/benchmarks.md

Every executor runs the same weights on the same input; times are medians of
repeated runs after a warm-up, and are reported as **ratios to the best peer
measured in the same run** (a time alone means nothing on a shared machine).
Each row also checks that the outputs agree. Benchmarks are not tests: no
test asserts on time. Needs the test extras (torch, onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import lstm_graph
from lstm_graph.executors.buildcache import compiler
from lstm_graph.executors.native import MAX_NODES
from lstm_graph.formats.importers import to_onnx_tensors, to_torch_state_dict

SIZES = {  # T, B, I, H
    "small": (100, 1, 32, 32),
    "medium": (100, 64, 128, 256),
    "large": (50, 256, 512, 1024),
}
TARGETS = {"small": 10.0, "medium": 1.5, "large": 1.1}
FAMILY = {"lstm": "lstm", "peephole_lstm": "lstm", "gru": "gru"}
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def median_time(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up: plans compile, caches fill
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def interleaved_medians(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each of ``runs``, measured in rounds that take turns.

    On a shared machine the speed drifts over seconds; measuring contenders in turn,
    ``repeat`` rounds, exposes them to the same drift. In each turn a contender runs
    once untimed first, so no one is timed while the previous one's threads still spin
    (OpenBLAS's and onnxruntime's workers busy-wait for a while after a call).
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            run()
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_mib(run: Callable[[], object]) -> float:
    """Peak traced allocation (NumPy buffers included) during one call, in MiB."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@dataclass
class Row:
    cell: str
    size: str
    ours: float
    executor: str
    numpy_plan: float
    reference: float | None
    peers: dict[str, float]
    peak: float
    error: float

    @property
    def best_peer(self) -> float:
        return min(self.peers.values())


def _torch_peer(name: str, weights: dict[str, np.ndarray], x: np.ndarray, threads: int
                ) -> Callable[[], np.ndarray]:
    import torch

    torch.set_num_threads(threads)
    steps, batch, input_size = x.shape
    hidden = weights[next(k for k in weights if k.endswith(".b"))].shape[0]
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[FAMILY[name]](input_size, hidden)
    module.load_state_dict(to_torch_state_dict(lstm_graph.load_cell(name).graph, weights))
    tensor = torch.from_numpy(x)

    def run() -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(module(tensor)[0].numpy())

    return run


def _onnx_peer(name: str, weights: dict[str, np.ndarray], x: np.ndarray, threads: int
               ) -> Callable[[], np.ndarray]:
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    hidden = weights[next(k for k in weights if k.endswith(".b"))].shape[0]
    tensors = to_onnx_tensors(lstm_graph.load_cell(name).graph, weights)
    op = "LSTM" if FAMILY[name] == "lstm" else "GRU"
    inputs = ["X", "W", "R", "B"] + (["", "", "", "P"] if "P" in tensors else [])
    extra: dict[str, Any] = {"linear_before_reset": 1} if op == "GRU" else {}
    node = helper.make_node(op, inputs, ["Y"], hidden_size=hidden, **extra)
    graph = helper.make_graph(
        [node], name, [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in tensors.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"X": x})[0][:, 0]


def measure(name: str, size: str, repeat: int, threads: int, reference: bool) -> Row:
    steps, batch, input_size, hidden = SIZES[size]
    cell = lstm_graph.load_cell(name)
    weights = cell.random_weights(input_size, hidden, seed=0)
    x = np.random.default_rng(1).standard_normal((steps, batch, input_size)).astype("float32")
    ours = cell.compile(weights=weights)
    y = ours(x)[0]
    numpy_plan = cell.compile(weights=weights, executor="numpy")
    runs: dict[str, Callable[[], object]] = {"ours": lambda: ours(x),
                                             "numpy": lambda: numpy_plan(x)}
    error = 0.0
    candidates = {"onnxruntime": _onnx_peer}
    if name != "peephole_lstm":  # PyTorch has no peephole LSTM
        candidates["torch"] = _torch_peer
    for peer, make in candidates.items():
        runs[peer] = make(name, weights, x, threads)
        error = max(error, float(np.max(np.abs(runs[peer]() - y))))
    medians = interleaved_medians(runs, repeat)
    ours_time, numpy_time = medians.pop("ours"), medians.pop("numpy")
    peers = medians
    reference_time = None
    if reference:
        slow = cell.compile(weights=weights, executor="reference")
        reference_time = median_time(lambda: slow(x), max(1, repeat // 3))
    first_run = peak_mib(lambda: cell.compile(weights=weights)(x))  # every buffer it keeps
    return Row(name, size, ours_time, ours.ran_with or "", numpy_time, reference_time, peers,
               first_run, error)


def scale(nodes: int = 10_000) -> tuple[int, float]:
    """Seconds to validate, schedule and compile a generated cell of about ``nodes`` nodes."""
    assignments = nodes * 2400 // 10_206  # measured: 2400 assignments give 10,206 nodes
    lines = ["cell scale", "input x", "state c, h", "output h"]
    previous = "h[t-1]"
    for k in range(assignments):
        lines.append(f"v{k} = sigmoid(linear(x, {previous}, peep(c[t-1])))" if k % 4 == 0
                     else f"v{k} = tanh({previous}) * c[t-1] + 0.5 * {previous}")
        previous = f"v{k}"
    lines += [f"c = {previous} * c[t-1]", f"h = tanh(c) * {previous}"]
    source = "\n".join(lines) + "\n"
    began = time.perf_counter()
    cell = lstm_graph.compile_source(source, "scale.cell")
    cell.compile(input_size=4, hidden_size=8).compiled(2)
    return len(cell.graph.nodes), time.perf_counter() - began


def machine(threads: int) -> str:
    import numpy
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os
    import subprocess


    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cc = compiler()
    if cc:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
        cc = version.splitlines()[0] if version else cc
    return (f"{cpu}, {cores} cores; Python {platform.python_version()}, NumPy {numpy.__version__}, "
            f"C compiler {cc or 'none'}, PyTorch {torch.__version__} ({threads} threads), "
            f"onnxruntime {onnxruntime.__version__} ({threads} threads), float32")


def table(rows: list[Row]) -> str:
    lines = ["| cell | size (T, B, I, H) | ours ms | torch ms | onnxruntime ms | ours ÷ best peer "
             "| target | NumPy plan ÷ best peer | reference ÷ best peer | peak MiB "
             "| max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        torch_ms = f"{r.peers['torch'] * 1e3:.2f}" if "torch" in r.peers else "—"
        ref = f"{r.reference / r.best_peer:.1f}×" if r.reference else "—"
        lines.append(
            f"| {r.cell} | {r.size} {SIZES[r.size]} | {r.ours * 1e3:.2f} | {torch_ms} | "
            f"{r.peers['onnxruntime'] * 1e3:.2f} | **{r.ours / r.best_peer:.2f}×** | "
            f"≤ {TARGETS[r.size]}× | {r.numpy_plan / r.best_peer:.2f}× | {ref} | "
            f"{r.peak:.1f} | {r.error:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="lstm,peephole_lstm,gru")
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="peers' threads")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--markdown", type=Path, help="write the results into this file")
    args = parser.parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        print(f"benchmarks need the test extras (pip install 'lstm-graph[test]'): {err}",
              file=sys.stderr)
        return 1
    rows = []
    for size in args.sizes.split(","):
        for name in args.cells.split(","):
            repeat = args.repeat if size != "large" else max(3, args.repeat // 2)
            row = measure(name, size, repeat, args.threads, not args.no_reference)
            rows.append(row)
            print(f"{name:14} {size:6}  ours/best {row.ours / row.best_peer:6.2f}×  "
                  f"(ours {row.ours * 1e3:.2f} ms, {row.executor}; NumPy plan "
                  f"{row.numpy_plan / row.best_peer:.2f}×; best peer "
                  f"{row.best_peer * 1e3:.2f} ms)", flush=True)
    nodes, seconds = scale()
    print(f"validate + schedule + compile a {nodes}-node cell: {seconds:.2f} s (target < 2 s)")
    executors = sorted({r.executor for r in rows})
    report = (f"{START}\nMachine: {machine(args.threads)}. \"ours\" is the default executor "
              f"(ran with: {', '.join(executors)}).\n\n{table(rows)}\n\n"
              f"Scale: validate, schedule and compile a generated cell of {nodes} nodes: "
              f"**{seconds:.2f} s** (target < 2 s; the default executor compiles cells of "
              f"more than {MAX_NODES} ops to the NumPy plan, not to C).\n\n"
              f"Command: `python -m lstm_graph.bench --markdown docs/benchmarks.md`\n{END}")
    print(report)
    if args.markdown:
        text = args.markdown.read_text() if args.markdown.exists() else f"{START}\n{END}\n"
        before, _, rest = text.partition(START)
        _, _, after = rest.partition(END)
        from lstm_graph.formats.files import write_atomic

        write_atomic(args.markdown, (before + report + after).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
