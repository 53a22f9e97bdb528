"""The training benchmark: which cells learn the adding problem, and a training step's cost.

    python -m lstm_graph.training.bench                       # printed
    python -m lstm_graph.training.bench --markdown docs/training.md

1. Each of ``lstm``, ``peephole_lstm``, ``gru`` and ``rnn`` trains on the adding
   problem (sequences of 50 steps) with the same settings; the table gives the
   held-out mean squared error against the memoryless baseline (1/6 ≈ 0.167) and
   the time it took. The LSTMs and the GRU get far under the baseline; the plain
   RNN, whose gradient fades geometrically over the 50 steps, does not.
2. One training step (forward, backward, Adam) of our ``lstm`` against PyTorch's
   ``nn.LSTM`` with a linear readout and ``torch.optim.Adam`` at the same sizes,
   each timed in a fresh process of its own after a warm-up, every thread pool on the same threads.

A benchmark, not a test: no test asserts on time. Needs the test extras.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import lstm_graph
from lstm_graph.bench import cpu, thread_environment
from lstm_graph.errors import install_hint
from lstm_graph.formats.files import write_section
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


def _block(step: Callable[[], object], repeat: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def step_time(contender: str, hidden: int, batch: int, length: int, repeat: int) -> float:
    """Median seconds of one training step of ``contender`` (``ours``: the ``lstm`` cell's
    :class:`Trainer`; ``torch``: ``nn.LSTM``, a ``nn.Linear`` readout, ``torch.optim.Adam``,
    the same clipping) in this process, after a warm-up."""
    task = adding(length)
    if contender == "ours":
        return _block(Trainer(lstm_graph.load_cell("lstm"), task, hidden, batch).train_step,
                      repeat)
    import torch

    torch.manual_seed(0)
    module, readout = torch.nn.LSTM(2, hidden), torch.nn.Linear(hidden, 1)
    parameters = [*module.parameters(), *readout.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=2e-3)
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

    return _block(torch_step, repeat)


def step_times(hidden: int, batch: int, length: int, threads: int, repeat: int
               ) -> tuple[float, float]:
    """:func:`step_time` of ours and of PyTorch, each in a fresh process of its own (no
    other runtime loaded, no other thread pool spinning), every pool on ``threads``."""
    found = []
    for contender in ("ours", "torch"):
        done = subprocess.run([sys.executable, "-m", "lstm_graph.training.bench",
                               "--contender", contender, "--hidden", str(hidden), "--batch",
                               str(batch), "--length", str(length), "--repeat", str(repeat)],
                              env=thread_environment(threads), capture_output=True, text=True,
                              check=True)
        found.append(float(done.stdout.split()[-1]))
    return found[0], found[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--markdown", type=Path, help="write the results into this file")
    parser.add_argument("--contender", choices=("ours", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender:  # one block, in the process step_times started for it
        print(step_time(args.contender, args.hidden, args.batch, args.length, args.repeat))
        return 0
    try:
        import torch  # noqa: F401
    except ImportError as err:
        print(f"the training benchmark needs the test extras ({err}): {install_hint('test')}",
              file=sys.stderr)
        return 1
    rows = learn(args.steps, args.hidden, args.batch, args.length)
    ours, theirs = step_times(args.hidden, args.batch, args.length, args.threads, args.repeat)
    baseline = adding(args.length).baseline
    model, extensions = cpu()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [START, f"Machine: {model} ({', '.join(extensions)}), {cpus} CPUs; Python "
             f"{platform.python_version()}, NumPy {np.__version__}. Adding problem, "
             f"T = {args.length}, H = {args.hidden}, batch {args.batch}, {args.steps} steps of "
             "Adam (lr 2e-3, clip 1.0), float32, seed 0.",
             "", "| cell | held-out MSE | ÷ baseline (0.167) | time |", "|---|---|---|---|"]
    lines += [f"| {name} | {mse:.4f} | {mse / baseline:.3f} | {seconds:.0f} s |"
              for name, mse, seconds in rows]
    lines += ["", f"One training step (forward, backward through time, Adam) at these sizes: "
              f"ours {ours * 1e3:.1f} ms, PyTorch `nn.LSTM` {theirs * 1e3:.1f} ms on "
              f"{args.threads} threads (ours ÷ PyTorch {ours / theirs:.2f}×; medians of "
              f"{args.repeat}, each in a process of its own after a warm-up).", "",
              "Command: `python -m lstm_graph.training.bench --markdown docs/training.md`", END]
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        write_section(args.markdown, START, END, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
