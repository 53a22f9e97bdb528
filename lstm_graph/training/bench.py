"""The training benchmark: which cells learn the adding problem, and a training step's cost.

    python -m lstm_graph.training.bench                       # printed
    python -m lstm_graph.training.bench --markdown docs/training.md

1. Each of ``lstm``, ``peephole_lstm``, ``gru`` and ``rnn`` trains on the adding
   problem (sequences of 50 steps) with the same settings; the table gives the
   held-out mean squared error against the memoryless baseline (1/6 ≈ 0.167) and
   the time it took. The LSTMs and the GRU get far under the baseline; the plain
   RNN, whose gradient fades geometrically over the 50 steps, does not.
2. One training step (forward, backward through time, clipping, Adam) of our
   ``lstm``, ``gru`` and ``peephole_lstm`` against PyTorch's ``nn.LSTM`` /
   ``nn.GRU`` with a linear readout, ``clip_grad_norm_`` and ``torch.optim.Adam`` at
   the same sizes (PyTorch has no peephole LSTM: ``nn.LSTM`` is its peer, less
   work than ours). Each contender is timed in fresh processes of its own (a
   warm-up, then a block of timed steps), ``--blocks`` of them taking turns with
   the other's, every thread pool on the same threads; the time is the median of
   all its steps, with the range of its blocks' medians, and the peak memory the
   growth of the process's resident set from just before it is built.

A benchmark, not a test: no test asserts on time. Needs the test extras.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import lstm_graph
from lstm_graph.bench import (
    Timing,
    contender_threads,
    growth,
    may_take_fewer,
    memory,
    ms,
    reset_peak,
    thread_environment,
    wait_idle,
    warm_up,
    warm_up_cut,
    warmed,
)
from lstm_graph.errors import OutputError, install_hint
from lstm_graph.executors import gemm_c
from lstm_graph.executors.buildcache import compiler, compiler_version
from lstm_graph.executors.prepare import usable_cpus
from lstm_graph.formats.files import write_section
from lstm_graph.isa import cpu
from lstm_graph.training import adding
from lstm_graph.training.trainer import Trainer, train

CELLS = ("lstm", "peephole_lstm", "gru", "rnn")
START, END = "<!-- training:start -->", "<!-- training:end -->"


def learn(steps: int, hidden: int, batch: int, length: int) -> list[tuple[str, float, float]]:
    """(cell, held-out MSE, seconds) for every cell of :data:`CELLS`."""
    rows = []
    for name in CELLS:
        began = time.perf_counter()
        done = train(lstm_graph.load_cell(name), adding(length), hidden, steps, batch,
                     eval_every=max(1, steps // 10))
        rows.append((name, float(done.evals[-1][1]), time.perf_counter() - began))
        print(f"{name:14} held-out MSE {rows[-1][1]:.4f} in {rows[-1][2]:.0f} s", flush=True)
    return rows


#: Each cell's PyTorch peer: its module (``nn.LSTM`` for the peephole LSTM, which
#: PyTorch does not have).
PEERS = {"lstm": "LSTM", "gru": "GRU", "peephole_lstm": "LSTM"}
STEP_CELLS = tuple(PEERS)


def _block(step: Callable[[], object], repeat: int, before: int) -> dict[str, Any]:
    """Warm ``step`` up (:func:`~lstm_graph.bench.warm_up`, the forward benchmark's rule:
    PyTorch's first training steps can take 2 s each, a settled one 5 ms), then time
    ``repeat`` calls: ``{"times", "peak_mib"}``, the peak's growth from ``before`` (the
    resident set before the contender was built)."""
    warm_up(step)
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return {"times": times, "peak_mib": growth(before)}


def step_time(contender: str, cell: str, hidden: int, batch: int, length: int,
              repeat: int, threads: int) -> dict[str, Any]:
    """One block of training steps of ``contender`` on ``cell`` (``ours``: its
    :class:`Trainer`; ``torch``: its peer module (:data:`PEERS`), a ``nn.Linear``
    readout, ``clip_grad_norm_`` and ``torch.optim.Adam``, on ``threads`` threads) in
    this process."""
    task = adding(length)
    if contender == "torch":  # imported outside the measured growth, as our code is
        import torch
    reset_peak()
    before, _ = memory()
    if contender == "ours":
        trainer = Trainer(lstm_graph.load_cell(cell), task, hidden, batch)
        return _block(trainer.train_step, repeat, before)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    module = getattr(torch.nn, PEERS[cell])(task.input_size, hidden)
    readout = torch.nn.Linear(hidden, task.output_size)
    parameters = [*module.parameters(), *readout.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=2e-3, fused=True)  # its fastest on CPU
    counter = [0]

    def torch_step() -> None:
        counter[0] += 1
        x, target = task.sample(np.random.default_rng([0, counter[0]]), batch)
        optimiser.zero_grad()
        y, _ = module(torch.from_numpy(x.astype(np.float32)))
        loss = torch.mean((readout(y[-1]) - torch.from_numpy(target.astype(np.float32))) ** 2)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()

    return _block(torch_step, repeat, before)


def step_times(cell: str, hidden: int, batch: int, length: int, threads: int, repeat: int,
               blocks: int = 3, idle: float = 0.0) -> dict[str, Timing]:
    """:func:`step_time` of ours and of PyTorch on ``cell``, each block in a fresh process
    of its own (no other runtime loaded, no other thread pool spinning), every pool on
    ``threads``, the contenders taking turns; each block after waiting up to ``idle``
    seconds for the CPUs to be idle."""
    runs = {("ours", threads): Timing(), ("torch", threads): Timing()}
    if may_take_fewer(f"{length}x{batch}x{adding(length).input_size}x{hidden}", threads,
                      cell, "grad"):  # ours may run on one thread: PyTorch is timed there too
        runs[("torch", 1)] = Timing()
    for _ in range(blocks):
        for (contender, count), timing in runs.items():
            if idle > 0:
                wait_idle(idle)
            done = subprocess.run([sys.executable, "-m", "lstm_graph.training.bench",
                                   "--contender", contender, "--cell", cell, "--hidden",
                                   str(hidden), "--batch", str(batch), "--length", str(length),
                                   "--repeat", str(repeat), "--threads", str(count)],
                                  env=thread_environment(count), capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{contender} on {cell} failed:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            timing.blocks.append(result["times"])
            timing.peak_mib = max(timing.peak_mib, result["peak_mib"])
    peer = min((timing for (contender, _), timing in runs.items() if contender == "torch"),
               key=lambda timing: timing.median)
    return {"ours": runs[("ours", threads)], "torch": peer,
            **({"torch on 1 thread": peer} if peer is runs.get(("torch", 1)) else {})}


def step_table(times: dict[str, dict[str, Timing]]) -> list[str]:
    """The training steps' table, one row per cell."""
    lines = ["| cell | PyTorch peer | ours ms | PyTorch ms | ours ÷ PyTorch | peak MiB: ours "
             "/ PyTorch |", "|---|---|---|---|---|---|"]
    for cell, found in times.items():
        ours, torch = found["ours"], found["torch"]
        peer = f"`nn.{PEERS[cell]}`" + (" (no peepholes)" if cell == "peephole_lstm" else "")
        count = ", 1 thread" if "torch on 1 thread" in found else ""
        lines.append(f"| {cell} | {peer} | {ms(ours)} | {ms(torch)}{count} | "
                     f"**{ours.median / torch.median:.2f}×** | "
                     f"{ours.peak_mib:.1f} / {torch.peak_mib:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstm_graph.training.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000,
                        help="training steps per cell for the learning table (0: skip it)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20, help="timed steps per block")
    parser.add_argument("--blocks", type=int, default=3, help="processes per contender")
    parser.add_argument("--cells", default=",".join(STEP_CELLS),
                        help="cells whose training step is timed")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each block, wait up to this long for idle CPUs")
    parser.add_argument("--markdown", type=Path, help="write the results into this file")
    parser.add_argument("--contender", choices=("ours", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--cell", choices=STEP_CELLS, default="lstm", help=argparse.SUPPRESS)
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    if args.contender:  # one block, in the process step_times started for it
        print(json.dumps(step_time(args.contender, args.cell, args.hidden, args.batch,
                                   args.length, args.repeat, args.threads)))
        return 0
    try:
        warm_up_cut()
    except ValueError as err:
        parser.error(str(err))
    try:
        import torch  # noqa: F401
    except ImportError as err:
        print(f"the training benchmark needs the test extras ({err}): {install_hint('test')}",
              file=sys.stderr)
        return 1
    cells = [c for c in args.cells.split(",") if c]
    unknown = sorted(set(cells) - set(STEP_CELLS))
    if unknown:
        parser.error(f"--cells: no PyTorch peer for {', '.join(unknown)} (choose from "
                     f"{', '.join(STEP_CELLS)})")
    args.threads = contender_threads(args.threads)
    rows = learn(args.steps, args.hidden, args.batch, args.length) if args.steps > 0 else []
    times = {}
    for cell in cells:
        times[cell] = step_times(cell, args.hidden, args.batch, args.length, args.threads,
                                 args.repeat, args.blocks, args.wait_idle)
        print(f"{cell}: ours {ms(times[cell]['ours'])} ms, PyTorch "
              f"{ms(times[cell]['torch'])} ms", file=sys.stderr, flush=True)
    baseline = adding(args.length).baseline
    model, extensions = cpu()
    cpus = usable_cpus()
    cc = compiler()
    lines = [START, f"Machine: {model} ({', '.join(extensions)}), {cpus} CPUs; C compiler "
             f"{compiler_version(cc) if cc else 'none'}; Python "
             f"{platform.python_version()}, NumPy {np.__version__}, PyTorch "
             f"{torch.__version__}. Adding problem, T = {args.length}, H = {args.hidden}, batch "
             f"{args.batch}, Adam (lr 2e-3, clip 1.0), float32, seed 0."]
    if rows:
        lines += ["", f"Learning, {args.steps} steps per cell:", "",
                  "| cell | held-out MSE | ÷ baseline (0.167) | time |", "|---|---|---|---|"]
        lines += [f"| {name} | {mse:.4f} | {mse / baseline:.3f} | {seconds:.0f} s |"
                  for name, mse, seconds in rows]
    lines += ["", "One training step (forward, backward through time, clipping, Adam, the "
              f"readout included), {args.threads} threads for both: each contender in "
              f"{args.blocks} fresh process{'es' if args.blocks > 1 else ''} of its own taking "
              f"turns, {args.repeat} timed "
              f"steps each after {warmed()}; ms: median of all steps (range of the blocks' "
              "medians). PyTorch's Adam is its fused one (`fused=True`), its fastest on the "
              "CPU. Where ours may run on one thread (small steps, or a loop back over "
              f"the steps of at most {gemm_c.MAX_ROWS} sequences), PyTorch is timed on 1 "
              "thread too, and its faster count is its figure (\", 1 thread\" beside its ms). "
              "Target: ours ÷ PyTorch ≤ 1.0×.", "", *step_table(times), "",
              f"Command: `{shlex.join(['python', '-m', 'lstm_graph.training.bench', *given])}`",
              END]
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        try:
            write_section(args.markdown, START, END, report)
        except OutputError as err:  # the report was printed above: nothing is lost
            print(err, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
