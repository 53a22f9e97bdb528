"""The training benchmark's machinery at a toy size (no assertion on time: benchmarks are
not tests): blocks in processes of their own, the table, the section it writes."""

from __future__ import annotations

import pytest

from lstm_graph import bench as forward_bench
from lstm_graph.training import bench

SMALL = ["--hidden", "4", "--batch", "2", "--length", "5", "--repeat", "2"]


@pytest.fixture(autouse=True)
def _quick_warm_up(monkeypatch):
    """A toy step of microseconds on a loaded machine may not settle within the warm-up's
    30 s: these tests check the machinery, not the time (the table says it was cut)."""
    monkeypatch.setenv(forward_bench.WARM_UP_ENV, "0.2")


def test_a_block_times_its_steps_and_measures_its_memory():
    for contender in ("ours", "torch"):
        found = bench.step_time(contender, "gru", 4, 2, 5, repeat=3, threads=1)
        assert len(found["times"]) == 3 and all(t > 0 for t in found["times"])
        assert found["peak_mib"] >= 0


def test_the_section_holds_every_cell_against_its_peer_and_leaves_the_rest(tmp_path):
    doc = tmp_path / "training.md"
    doc.write_text(f"before\n{bench.START}\nthe old section\n{bench.END}\nafter\n")
    assert bench.main(["--steps", "0", "--blocks", "1", "--cells", "peephole_lstm",
                       "--markdown", str(doc), *SMALL]) == 0
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old section" not in text
    assert "| peephole_lstm | `nn.LSTM` (no peepholes) |" in text
    assert "each contender in 1 fresh process of its own taking turns" in text
    assert "after a warm-up cut to at most 0.2 s ($LSTM_GRAPH_BENCH_WARM_UP)" in text
    assert "Machine: " in text and "Learning" not in text  # --steps 0: no learning table
    assert "Command: `python -m lstm_graph.training.bench --steps 0 --blocks 1 --cells " \
        f"peephole_lstm --markdown {doc} {' '.join(SMALL)}`" in text


def test_pytorch_is_timed_on_one_thread_too_where_ours_may_take_one(monkeypatch):
    """Ours runs small steps on one thread; PyTorch was held to two there. Its faster count
    is its figure, marked in the table."""
    seen = []

    def run(command, env, **_):
        contender = command[command.index("--contender") + 1]
        count = int(command[command.index("--threads") + 1])
        seen.append((contender, count, env["OMP_NUM_THREADS"]))
        times = [0.001] if contender == "ours" else [0.004 if count == 2 else 0.003]
        return bench.subprocess.CompletedProcess(
            command, 0, f'{{"times": {times}, "peak_mib": 1.0}}\n', "")

    monkeypatch.setattr(bench.subprocess, "run", run)
    found = bench.step_times("lstm", 4, 2, 5, threads=2, repeat=1, blocks=1)
    assert sorted(seen) == [("ours", 2, "2"), ("torch", 1, "1"), ("torch", 2, "2")]
    assert found["torch"].median == 0.003 and "torch on 1 thread" in found
    assert "| 3.00 (3.00–3.00), 1 thread |" in "\n".join(bench.step_table({"lstm": found}))
    seen.clear()
    found = bench.step_times("lstm", 64, 64, 50, threads=2, repeat=1, blocks=1)
    assert sorted(seen) == [("ours", 2, "2"), ("torch", 2, "2")]  # two threads: no choice
