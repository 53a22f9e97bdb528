"""The benchmark script: it runs, reports every contender, and rewrites only its table.

It asserts nothing about speed (no test does): only that the report is whole.
"""

from __future__ import annotations

import pytest

from lstm_graph import bench

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


def test_a_block_times_its_runs_and_measures_the_memory_it_grew_by(tmp_path):
    result = bench.time_block("ours", "gru", "small", 3, 2, tmp_path / "y.npy")
    assert len(result["times"]) == 3 and all(t > 0 for t in result["times"])
    assert result["peak_mib"] >= 0
    assert (tmp_path / "y.npy").exists()


def test_a_row_compares_with_the_best_peer_and_reports_the_spread():
    timing = {name: bench.Timing([[t, t], [2 * t, 2 * t]], peak)
              for name, t, peak in (("ours", 1.0, 1.0), ("numpy", 3.0, 2.0),
                                    ("torch", 2.0, 5.0), ("onnxruntime", 4.0, 3.0))}
    row = bench.Row("lstm", "medium", timing, 1e-7)
    assert row.best_peer == "torch" and row.ratio("ours") == 0.5
    assert timing["ours"].spread == (1.0, 2.0)
    line = bench.table([row]).splitlines()[-1]
    assert "| lstm | medium (100, 64, 128, 256) | 1500.00 (1000.00–2000.00) |" in line
    assert "**0.50×**" in line and "1.50× (≤ 2.0×)" in line and "| 1.0 / 5.0 |" in line
    assert "**0.50×** | 0.50× |" in line  # the quietest blocks: 1.0 against 2.0


def test_bench_writes_its_table_between_the_markers_and_keeps_the_rest(tmp_path, capsys):
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Title\n\n{bench.START}\nold table\n{bench.END}\n\nNotes stay.\n")
    assert bench.main(["--cells", "lstm", "--sizes", "small", "--repeat", "1", "--blocks",
                       "1", "--no-reference", "--markdown", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Title\n\n") and text.endswith("\n\nNotes stay.\n")
    assert "old table" not in text
    rows = [line for line in text.splitlines() if line.startswith("| lstm")]
    assert len(rows) == 1 and "small (100, 1, 32, 32)" in rows[0]
    model, _ = bench.cpu()
    assert f"Machine: {model}" in text and "threads for every contender" in text
    assert "ours/best" in capsys.readouterr().out


def test_waiting_for_idle_cpus_gives_up_at_its_limit():
    began = bench.time.monotonic()
    assert bench.wait_idle(0.0) is False
    assert bench.time.monotonic() - began < 1.0
