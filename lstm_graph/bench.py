"""Benchmarks: our executors against PyTorch and onnxruntime, each in a process of its own.

    python -m lstm_graph.bench                      # all cells and sizes, printed
    python -m lstm_graph.bench --markdown docs/benchmarks.md

Every contender (our default executor, the NumPy plan, ``torch.nn.LSTM``/``GRU``,
onnxruntime's ``LSTM``/``GRU``, optionally the reference interpreter) runs the
same weights on the same input, and is timed **in a fresh process of its own**:
it builds, warms up, then runs a block of timed repeats, with no other runtime
loaded, so no other runtime's threads can spin against it. Each contender gets
``--blocks`` such processes, taking turns with the others (contender A's block,
then B's, ..., then A's again), so a shared machine's drift touches all alike.
A time is the median of all of a contender's timed runs; the spread is the
range of its blocks' medians. Ratios compare with the best peer measured in the
same run. Peak memory is the process's peak resident set during the block less
its resident set just before the contender is built (its weights, every buffer
it keeps or allocates, and its outputs). Peers and our executor run on
``--threads`` threads. Benchmarks are not tests: no test asserts on time.
Needs the test extras (torch, onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import lstm_graph
from lstm_graph.errors import install_hint
from lstm_graph.executors.buildcache import compiler, compiler_version
from lstm_graph.executors.native import MAX_NODES
from lstm_graph.formats.files import write_section
from lstm_graph.formats.importers import to_onnx_tensors, to_torch_state_dict

SIZES = {  # T, B, I, H
    "small": (100, 1, 32, 32),
    "medium": (100, 64, 128, 256),
    "large": (50, 256, 512, 1024),
}
#: Our default executor's time ÷ the best peer's that the project aims at, at every size.
TARGET = 1.0
#: The NumPy plan's target at medium and large (none at small, where Python's overhead
#: per NumPy call dominates).
NUMPY_TARGETS = {"medium": 2.0, "large": 2.0}
FAMILY = {"lstm": "lstm", "peephole_lstm": "lstm", "gru": "gru"}
CONTENDERS = ("ours", "numpy", "torch", "onnxruntime", "reference")
PEERS = ("torch", "onnxruntime")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: CPU features worth naming in a table header, in this order.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "amx_tile")


# -- one contender, in its own process -------------------------------------------------------

def problem(name: str, size: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The weights and input every contender runs (deterministic: seeded)."""
    steps, batch, input_size, hidden = SIZES[size]
    weights = lstm_graph.load_cell(name).random_weights(input_size, hidden, seed=0)
    x = np.random.default_rng(1).standard_normal((steps, batch, input_size)).astype("float32")
    return weights, x


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


def _ours(executor: str) -> Callable[[str, dict[str, np.ndarray], np.ndarray, int],
                                     Callable[[], np.ndarray]]:
    def make(name: str, weights: dict[str, np.ndarray], x: np.ndarray, threads: int
             ) -> Callable[[], np.ndarray]:
        runner = lstm_graph.load_cell(name).compile(weights=weights, executor=executor)
        runner(x[:1])  # build it outside the timed block (a C build is cached on disk)
        return lambda: runner(x)[0]

    return make


MAKERS = {"ours": _ours("plan"), "numpy": _ours("numpy"), "reference": _ours("reference"),
          "torch": _torch_peer, "onnxruntime": _onnx_peer}


def memory() -> tuple[int, int]:
    """This process's resident set now and its peak since the last :func:`reset_peak`, in
    bytes (Linux's /proc; elsewhere the peak since the start, twice)."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        kib = {line.split(":")[0]: int(line.split()[1]) for line in status
               if line.startswith(("VmRSS:", "VmHWM:"))}
        return kib["VmRSS"] * 1024, kib["VmHWM"] * 1024
    except (OSError, KeyError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak if sys.platform == "darwin" else peak * 1024
        return peak, peak


def reset_peak() -> None:
    """Start the peak resident set afresh from the current one (Linux 4.0 and later)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def time_block(contender: str, name: str, size: str, repeat: int, threads: int,
               output: Path | None = None) -> dict[str, Any]:
    """Build one contender, warm it up, time ``repeat`` runs: ``{"times", "peak_mib"}``.

    Meant to run in a process of its own (see :func:`main`'s ``--contender``); the
    peak is measured from just before the build. ``output``: where to save ``y``.
    """
    weights, x = problem(name, size)
    if contender in PEERS:  # import outside the measured growth, as for our code
        __import__("torch" if contender == "torch" else "onnxruntime")
    reset_peak()
    before, _ = memory()
    run = MAKERS[contender](name, weights, x, threads)
    y = run()  # warm-up
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    if output is not None:
        np.save(output, np.asarray(y))
    return {"times": times, "peak_mib": (memory()[1] - before) / 2**20}


def _cpu_times() -> tuple[int, int]:
    """All CPUs' time so far and the idle part of it, in clock ticks (Linux's /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def wait_idle(limit: float, quiet: float = 0.9) -> bool:
    """Wait (at most ``limit`` seconds) until the CPUs were ``quiet`` (idle fraction) for a
    whole second, so that a block does not start while another program loads a shared
    machine; False if it never was, or where /proc/stat cannot be read."""
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            total, idle = _cpu_times()
            time.sleep(1.0)
            total2, idle2 = _cpu_times()
            if (idle2 - idle) >= quiet * max(1, total2 - total):
                return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def thread_environment(threads: int) -> dict[str, str]:
    """This process's environment with every thread pool a contender may start (OpenMP,
    OpenBLAS, MKL, ours) sized to ``threads``: for a contender's own process."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads), LSTM_GRAPH_THREADS=str(threads))


def _in_subprocess(contender: str, name: str, size: str, repeat: int, threads: int,
                   output: Path | None) -> dict[str, Any]:
    """:func:`time_block` in a fresh Python process, with thread pools sized to ``threads``."""
    env = thread_environment(threads)
    command = [sys.executable, "-m", "lstm_graph.bench", "--contender", contender,
               "--cells", name, "--sizes", size, "--repeat", str(repeat),
               "--threads", str(threads)] + (["--output", str(output)] if output else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{contender} on {name} {size} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the report --------------------------------------------------------------------------------

@dataclass
class Timing:
    """One contender's timed runs (seconds), by block, and its peak memory growth."""

    blocks: list[list[float]] = field(default_factory=list)
    peak_mib: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(t for block in self.blocks for t in block)

    @property
    def spread(self) -> tuple[float, float]:
        medians = [statistics.median(block) for block in self.blocks]
        return min(medians), max(medians)


@dataclass
class Row:
    cell: str
    size: str
    timings: dict[str, Timing]
    error: float  # largest |ours - peer| over the peers' outputs

    @property
    def peers(self) -> dict[str, Timing]:
        return {k: v for k, v in self.timings.items() if k in PEERS}

    @property
    def best_peer(self) -> str:
        return min(self.peers, key=lambda k: self.peers[k].median)

    def ratio(self, contender: str) -> float:
        return self.timings[contender].median / self.peers[self.best_peer].median

    def quietest_ratio(self, contender: str) -> float:
        """The ratio of the fastest blocks' medians (each contender's quietest block)."""
        best = min(timing.spread[0] for timing in self.peers.values())
        return self.timings[contender].spread[0] / best


def runs(size: str, repeat: int) -> int:
    """Timed runs per block: ``repeat``; 20 times as many at the small size (a block of
    10 runs of 0.05 ms would last half a millisecond), half as many at the large one."""
    return {"small": 20 * repeat, "large": max(3, repeat // 2)}.get(size, repeat)


def measure(name: str, size: str, repeat: int, blocks: int, threads: int,
            contenders: list[str], idle: float = 0.0) -> Row:
    """Every contender on one cell and size: ``blocks`` processes each, taking turns;
    each after waiting up to ``idle`` seconds for the CPUs to be idle."""
    if name == "peephole_lstm":  # PyTorch has no peephole LSTM
        contenders = [c for c in contenders if c != "torch"]
    timings = {c: Timing() for c in contenders}
    error = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        outputs = {c: Path(scratch, f"{c}.npy") for c in contenders}
        for block in range(blocks):
            for contender in contenders:
                times = repeat if contender != "reference" else max(1, repeat // 3)
                if idle > 0:
                    wait_idle(idle)
                result = _in_subprocess(contender, name, size, times, threads,
                                        outputs[contender] if block == 0 else None)
                timings[contender].blocks.append(result["times"])
                timings[contender].peak_mib = max(timings[contender].peak_mib,
                                                  result["peak_mib"])
        ours = np.load(outputs["ours"])
        for peer in PEERS:
            if peer in contenders:
                error = max(error, float(np.max(np.abs(np.load(outputs[peer]) - ours))))
    return Row(name, size, timings, error)


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


def cpu() -> tuple[str, list[str]]:
    """The CPU's model name and the vector extensions it has (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, [f for f in VECTOR_FLAGS if f in flags]


def machine(threads: int) -> str:
    import numpy
    import onnxruntime
    import torch

    model, extensions = cpu()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cc = compiler()
    return (f"{model} ({', '.join(extensions) or 'no vector extensions listed'}), {cores} "
            f"cores; C compiler {compiler_version(cc) if cc else 'none'}; Python "
            f"{platform.python_version()}, NumPy {numpy.__version__}, PyTorch {torch.__version__}"
            f", onnxruntime {onnxruntime.__version__}; {threads} threads for every contender; "
            "float32")


def ms(timing: Timing | None) -> str:
    """Milliseconds: the median (the blocks' range), 3 decimals below 1 ms, else 2."""
    if timing is None:
        return "—"
    low, high = timing.spread
    digits = 3 if timing.median < 1e-3 else 2
    return f"{timing.median * 1e3:.{digits}f} ({low * 1e3:.{digits}f}–{high * 1e3:.{digits}f})"


def table(rows: list[Row]) -> str:
    lines = ["| cell | size (T, B, I, H) | ours ms | torch ms | onnxruntime ms "
             "| ours ÷ best peer | quietest blocks | NumPy plan ÷ best peer "
             "| reference ÷ best peer | peak MiB: ours / best peer | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.timings
        numpy_ratio = f"{r.ratio('numpy'):.2f}×" if "numpy" in t else "—"
        if "numpy" in t and r.size in NUMPY_TARGETS:
            numpy_ratio += f" (≤ {NUMPY_TARGETS[r.size]}×)"
        reference = f"{r.ratio('reference'):.1f}×" if "reference" in t else "—"
        lines.append(
            f"| {r.cell} | {r.size} {SIZES[r.size]} | {ms(t['ours'])} | {ms(t.get('torch'))} "
            f"| {ms(t.get('onnxruntime'))} | **{r.ratio('ours'):.2f}×** "
            f"| {r.quietest_ratio('ours'):.2f}× | {numpy_ratio} "
            f"| {reference} | {t['ours'].peak_mib:.1f} / {r.peers[r.best_peer].peak_mib:.1f} "
            f"| {r.error:.1e} |")
    return "\n".join(lines)


def report(rows: list[Row], threads: int, repeat: int, blocks: int, nodes: int,
           seconds: float, idle: float = 0.0) -> str:
    """The markdown between the markers: machine, method, table, scale, command."""
    waited = f", each started once the CPUs were idle for a second (waiting up to {idle:g} s)" \
        if idle > 0 else ""
    command = "python -m lstm_graph.bench" + (f" --wait-idle {idle:g}" if idle > 0 else "")
    return (f"{START}\nMachine: {machine(threads)}.\n\nEach contender in its own process, "
            f"{blocks} blocks of {runs('medium', repeat)} timed runs after a warm-up (small: "
            f"{runs('small', repeat)}, large: {runs('large', repeat)}), taking "
            f"turns{waited}; ms: median of all runs (range of "
            f"the blocks' medians); \"quietest blocks\": our fastest block's median ÷ the best "
            f"peer's fastest block's. Target: ours ÷ best peer ≤ {TARGET}× at every size.\n\n"
            f"{table(rows)}\n\n"
            f"Scale: validate, schedule and compile a generated cell of {nodes} nodes: "
            f"**{seconds:.2f} s** (target < 2 s; the default executor compiles cells of "
            f"more than {MAX_NODES} ops to the NumPy plan, not to C).\n\n"
            f"Command: `{command} --markdown docs/benchmarks.md`\n{END}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="lstm,peephole_lstm,gru")
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per block")
    parser.add_argument("--blocks", type=int, default=3, help="processes per contender")
    parser.add_argument("--threads", type=int, default=2, help="every contender's threads")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each block, wait up to this long for idle CPUs "
                             "(a machine shared with other programs)")
    parser.add_argument("--markdown", type=Path, help="write the results into this file")
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender:  # one block of one contender: this process is its own
        print(json.dumps(time_block(args.contender, args.cells, args.sizes, args.repeat,
                                    args.threads, args.output)))
        return 0
    try:
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        print(f"benchmarks need the test extras ({err}): {install_hint('test')}",
              file=sys.stderr)
        return 1
    contenders = [c for c in CONTENDERS if c != "reference" or not args.no_reference]
    rows = []
    for size in args.sizes.split(","):
        for name in args.cells.split(","):
            repeat = runs(size, args.repeat)
            row = measure(name, size, repeat, args.blocks, args.threads, contenders,
                          args.wait_idle)
            rows.append(row)
            print(f"{name:14} {size:6}  ours/best {row.ratio('ours'):6.2f}×  "
                  f"(ours {ms(row.timings['ours'])} ms; NumPy plan "
                  f"{row.ratio('numpy'):.2f}×; best peer {row.best_peer} "
                  f"{ms(row.peers[row.best_peer])} ms)", flush=True)
    nodes, seconds = scale()
    print(f"validate + schedule + compile a {nodes}-node cell: {seconds:.2f} s (target < 2 s)")
    text = report(rows, args.threads, args.repeat, args.blocks, nodes, seconds,
                  args.wait_idle)
    print(text)
    if args.markdown:
        write_section(args.markdown, START, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
