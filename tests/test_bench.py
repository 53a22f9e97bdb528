"""The benchmark script: it runs, reports every contender, and rewrites only its table.

It asserts nothing about speed (no test does): only that the report is whole.
"""

from __future__ import annotations

import pytest

from lstm_graph import bench

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


def test_interleaved_medians_time_every_contender_in_turns():
    calls: list[str] = []
    runs = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    medians = bench.interleaved_medians(runs, repeat=3)
    assert set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())
    assert calls == ["a", "a", "b", "b"] * 3  # an untimed call, then the timed one


def test_bench_writes_its_table_between_the_markers_and_keeps_the_rest(tmp_path, capsys):
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Title\n\n{bench.START}\nold table\n{bench.END}\n\nNotes stay.\n")
    assert bench.main(["--cells", "lstm,gru", "--sizes", "small", "--repeat", "1",
                       "--no-reference", "--markdown", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Title\n\n") and text.endswith("\n\nNotes stay.\n")
    assert "old table" not in text
    rows = [line for line in text.splitlines() if line.startswith("| lstm") or
            line.startswith("| gru")]
    assert len(rows) == 2 and all("small (100, 1, 32, 32)" in row for row in rows)
    assert "ours/best" in capsys.readouterr().out
