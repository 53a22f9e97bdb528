"""The explorer page without a browser: its data contract, the SVG tags, size, determinism."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_dot

import lstm_graph
from lstm_graph.explore import Run, build_page
from lstm_graph.explore.data import array_json, budget, keep

pytestmark = needs_dot
ROOT = Path(__file__).resolve().parents[1]

USER_CELL = """\
# A cell of our own: a valve, a memory that keeps <old> & adds new, a read-out.
cell mine
input x
state m, h
output h
preset keep: k
k = sigmoid(linear(x, h[t-1], peep(m[t-1])))   # keep valve
m = k * m[t-1] + (1 - k) * tanh(linear(x))     # keep <old> & add new
h = tanh(linear(m, h[t-1]))                    # read-out
"""


def page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="lstm-graph-trace">(.*?)</script>',
                      page, re.S)
    assert found
    return json.loads(found.group(1))


def make_run(cell, steps=6, sequences=2, inputs=3, hidden=4, dtype="float32", seed=0):
    runner = cell.compile(input_size=inputs, hidden_size=hidden, seed=seed, dtype=dtype)
    x = np.random.default_rng(seed).standard_normal((steps, sequences, inputs)).astype(dtype)
    initial = {s: np.zeros((sequences, hidden), dtype) for s in cell.graph.states}
    return Run(cell, runner.trace(x), x, initial, np.dtype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_page_embeds_every_assignment_exactly(dtype):
    cell = lstm_graph.load_cell("peephole_lstm")
    run = make_run(cell, dtype=dtype)
    data = page_data(build_page(run))
    assert data["cell"] == "peephole_lstm"
    assert data["stages"] == [["f", "i", "g"], ["c"], ["o"], ["h"]]
    assert list(data["values"]) == list(cell.graph.assignments)
    for name, value in run.values.items():
        embedded = np.array(data["values"][name], dtype=dtype)
        assert embedded.shape == value.shape == (6, 2, 4)
        np.testing.assert_array_equal(embedded, value)  # read back bit for bit
    assert data["subsampled"] is None and data["steps"] == [1, 2, 3, 4, 5, 6]


def test_every_value_node_of_both_styles_carries_its_name():
    cell = lstm_graph.compile_source(USER_CELL, "mine.cell")
    page = build_page(make_run(cell))
    for style in ("pipe", "cell"):
        svg = page.split(f'data-style="{style}">', 1)[1].split("</svg>", 1)[0]
        tagged = set(re.findall(r'<g id="[^"]*" class="node"[^>]*data-node="([^"]+)"', svg))
        assert tagged == set(cell.graph.assignments), style
        cells = re.findall(r'<polygon class="u" data-u="(\d+)"', svg)
        assert len(cells) == 4 * len(cell.graph.assignments)  # one strip cell per unit


def test_the_page_references_nothing_outside_itself():
    page = build_page(make_run(lstm_graph.compile_source(USER_CELL, "mine.cell")))
    lowered = page.lower()
    for sign in ("http:", "https:", "//www", " src=", "href=", "@import", "url(", "<link",
                 "fetch(", "xmlhttprequest", "<!doctype svg", "<?xml"):
        assert sign not in lowered, sign
    assert lowered.startswith("<!doctype html>")
    assert "keep &lt;old&gt; &amp; add new" in page  # captions escaped in the diagrams
    assert "<title>" not in page.split("</head>")[1] and "xlink:title" not in page  # no DOT
    # names as tooltips (an edge's link showed 'c[t-1] → c.mul' on hover)


def test_the_page_is_byte_identical_for_the_same_run():
    cell = lstm_graph.load_cell("gru")
    assert build_page(make_run(cell)) == build_page(make_run(cell))


def test_the_page_of_the_budget_example_stays_well_under_two_megabytes():
    cell = lstm_graph.load_cell("peephole_lstm")
    page = build_page(make_run(cell, steps=50, sequences=4, inputs=16, hidden=32))
    assert len(page.encode()) < 1_000_000
    assert page_data(page)["subsampled"] is None


def test_a_run_over_budget_is_cut_and_says_what_was_kept():
    cell = lstm_graph.load_cell("lstm")
    run = make_run(cell, steps=40, sequences=6, hidden=5)
    page = build_page(run, most=2_000)
    data = page_data(page)
    kept = keep(40, 6, {**dict.fromkeys("fighco", 5), "x": 3}, 2_000)
    assert data["kept"] == {"steps": kept.steps, "sequences": 4, "units": None}
    assert data["steps"] == list(range(1, kept.steps + 1)) and data["batch"] == [0, 1, 2, 3]
    assert data["shape"] == {"steps": 40, "sequences": 6}
    np.testing.assert_array_equal(np.array(data["values"]["c"], "float32"),
                                  run.values["c"][: kept.steps, :4])
    assert "the first 4 of 6 sequences" in data["subsampled"]
    assert html.escape(data["subsampled"]) in page.split("<main>")[0]  # said above it all


def test_the_numbers_get_what_the_rest_of_the_page_leaves_of_its_size(monkeypatch):
    """The numbers' budget assumed the rest of a page small: a cell of 58 gates made a
    2.44 MB page that said it was cut "to stay under 2 MB". Here the limit is lowered
    (0.5 MB: the run's numbers alone fill 1.3 MB) instead of the cell made larger."""
    from lstm_graph.explore import page as page_module

    run = make_run(lstm_graph.load_cell("peephole_lstm"), steps=300, sequences=4,
                   inputs=16, hidden=32)
    monkeypatch.setattr(page_module, "PAGE_BYTES", 500_000)
    page, kept = page_module.page_and_kept(run)
    assert 400_000 < len(page.encode()) <= 500_000 and kept.steps < 300
    assert page_data(page)["subsampled"].endswith(", to stay under 2 MB. 'lstm-graph trace' "
                                                  "writes every value.")
    monkeypatch.setattr(page_module, "PAGE_BYTES", 50_000)  # less than its diagrams take
    page, kept = page_module.page_and_kept(run)
    assert len(page.encode()) > 50_000 and "the fewest it holds: its diagrams and the " \
        "paths they light take more than 2 MB" in page_data(page)["subsampled"]
    whole = make_run(lstm_graph.load_cell("peephole_lstm"), steps=3, sequences=1, inputs=1,
                     hidden=1)  # nothing to leave out: the page said nothing
    assert page_data(page_module.page_and_kept(whole)[0])["subsampled"] == (
        "This page holds the whole run and is over 2 MB: its diagrams and the paths they "
        "light take more than that.")


def test_explore_says_on_the_terminal_what_the_page_holds_of_a_long_run(tmp_path, cli_run):
    """A long run's page holds its first steps and sequences: the terminal says so too,
    in the page's own numbers, not only 'wrote p.html (1.53 MB)'."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((600, 6, 8))
            .astype("float32"))
    result = cli_run("explore", "peephole_lstm", "--input", tmp_path / "x.npy", "-H", "48",
                     "--out", tmp_path / "p.html")
    kept = page_data((tmp_path / "p.html").read_text())["kept"]
    assert kept["sequences"] == 4 and kept["steps"] < 600
    assert (f"note: the page shows the first 4 of 6 sequences, steps 1 to {kept['steps']} "
            "of 600, to stay under 2 MB; 'lstm-graph trace' writes every value") in \
        result.stderr
    small = cli_run("explore", "gru", "--sample", "-H", "3", "--out", tmp_path / "s.html")
    assert "note:" not in small.stderr  # nothing was cut


def stage_hint(page: str) -> str:
    found = re.search(r'<p class="hint" id="stage-note">(.*?)</p>', page, re.S)
    assert found
    return html.unescape(" ".join(found.group(1).split()))


@needs_dot
def test_only_the_part_of_a_run_the_page_keeps_is_run_and_it_is_the_whole_run_s():
    """The whole run was traced and differentiated for a page that kept its first steps
    and sequences: 200,000 steps (79 kept) ran for minutes in 5 GB. Only the kept part
    runs now; its values are the whole run's (each sequence its own recurrence, each step
    reading only those before it; a batch of fewer rows may round its sums otherwise in the
    last bits), the initial states' rows too."""
    runner = lstm_graph.load_cell("peephole_lstm").compile(input_size=3, hidden_size=4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20000, 6, 3)).astype("float32")
    start = {"c": rng.standard_normal((6, 4)).astype("float32")}
    calls = []
    trace = runner.trace
    runner.trace = lambda x, *a, **k: calls.append(x.shape) or trace(x, *a, **k)
    data = page_data(runner.explore(x, start).html)
    (shape,) = calls
    kept = data["kept"]
    assert shape == (kept["steps"], kept["sequences"], 3) and kept["steps"] < 2000
    assert data["shape"] == {"steps": 20000, "sequences": 6}
    assert f"the first 4 of 6 sequences, steps 1 to {kept['steps']} of 20000" in \
        data["subsampled"]
    whole = trace(x[: kept["steps"] + 5], start)
    for name, value in data["values"].items():
        np.testing.assert_allclose(np.array(value, dtype="float32"),  # a batch of 4 rows
                                   whole[name][: kept["steps"], :4], rtol=1e-6, atol=1e-6)
    with pytest.raises(lstm_graph.DataError, match=r"state 'c' has shape \(5, 4\), expected "
                                                   r"\(6, 4\)"):
        runner.explore(x, {"c": start["c"][:5]})


def test_a_page_of_a_stack_says_which_layer_and_direction_it_shows(tmp_path, cli_run):
    """Only the terminal said it: the page of a reverse layer numbered its steps as the
    direction runs them (step 1: x's last) under a title that said nothing of it."""
    cli_run("explore", "lstm", "--sample", "-H", "4", "--direction", "reverse", "--out",
            tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    data = page_data(page)
    assert data["reverse"] is True
    said = "The page shows layer 1 of 1 layer, reverse: it reads its input from the last " \
        "step, so its step t is x's step T + 1 − t."
    assert data["shows"] == said and html.escape(said) in page.split("<main>")[0]
    cli_run("explore", "gru", "--sample", "-H", "4", "--layers", "2", "--direction",
            "bidirectional", "--out", tmp_path / "b.html")
    data = page_data((tmp_path / "b.html").read_text())
    assert data["shows"] == "The page shows layer 1, forward direction, of 2 layers, " \
        "bidirectional." and data["reverse"] is False
    # from Python, each unit's page says which it is as the command line's does (they
    # said nothing; a unit number out of range was an IndexError, -1 the last unit)
    runner = lstm_graph.load_cell("gru").compile(input_size=3, hidden_size=4, layers=2,
                                                 direction="bidirectional")
    last = runner.unit_runner(3)
    assert last.unit_of == ("The page shows layer 2, reverse direction, of 2 layers, "
                            "bidirectional: it reads its input from the last step, so its "
                            "step t is x's step T + 1 − t.", True)
    assert runner.unit_runner(0).unit_of[0] == data["shows"]  # the command line's
    x = np.random.default_rng(0).standard_normal((5, 2, 8)).astype("float32")  # layer 1's y
    data = page_data(last.explore(x).html)
    assert data["shows"] == last.unit_of[0] and data["reverse"] is True
    for wrong in (4, -1, "a", 1.0):
        with pytest.raises(lstm_graph.DataError, match=r"this runner has 4 units, numbered in "
                           r"h_n order \(0: layer 1, 1: layer 1, reverse, 2: layer 2, 3: "
                           r"layer 2, reverse\)"):
            runner.unit_runner(wrong)


def test_the_stage_note_says_what_this_cells_schedule_shows():
    """On a cell that is not the article's, the note spoke of "its peephole LSTM"."""
    mine = stage_hint(build_page(make_run(lstm_graph.compile_source(USER_CELL, "mine.cell"))))
    assert "In this cell stage 3 (h) waits for the new m" in mine
    assert "peephole" not in mine and "output valve" not in mine
    gru = stage_hint(build_page(make_run(lstm_graph.load_cell("gru"))))
    assert "no stage reads a state's new value" in gru and "(h[t-1])" in gru
    article = stage_hint(build_page(make_run(lstm_graph.load_cell("peephole_lstm"))))
    assert "stage 3 (o) waits for the new c, and stage 4 (h) for the new c" in article
    assert "This is the peephole LSTM of Shi Yan's" in article
    # the article's cell by its equations, under any name and layout
    text = (ROOT / "lstm_graph" / "cells" / "peephole_lstm.cell").read_text()
    renamed = lstm_graph.compile_source(text.replace("cell peephole_lstm", "cell yours")
                                        .replace("# forget valve", ""), "yours.cell")
    assert "This is the peephole LSTM" in stage_hint(build_page(make_run(renamed)))


def test_units_are_cut_last_when_even_a_few_steps_are_too_many():
    assert keep(100, 8, dict.fromkeys("abc", 50_000), budget(np.dtype("float32"))).units == 1041


def test_numbers_round_trip_and_nan_and_infinity_stay_valid_json():
    values = np.array([0.1, -2.5e-7, np.nan, np.inf, -np.inf, 3.4028235e38], "float32")
    text = array_json(values, np.dtype("float32"))
    assert text == "[0.1,-2.5e-07,null,1e999,-1e999,3.4028235e+38]"
    back = np.array([np.nan if v is None else v for v in json.loads(text)], "float32")
    np.testing.assert_array_equal(back, values)


def test_explore_command_writes_the_page(tmp_path, cli_run):
    result = cli_run("explore", "gru", "--sample", "-H", "5", "-I", "3", "--out",
                     tmp_path / "deep" / "gru.html")
    data = page_data((tmp_path / "deep" / "gru.html").read_text())
    assert np.array(data["values"]["h"]).shape == (20, 2, 5)
    assert np.array(data["input"]["x"]).shape == (20, 2, 3)
    assert "wrote" in result.stderr and result.stdout == ""


@needs_dot
def test_explore_writes_through_dev_stdout_into_a_file(tmp_path):
    """``--out /dev/stdout > page.html`` was refused as a name without .html (a pipe was
    taken, a file that stdout is was not)."""
    with open(tmp_path / "page.html", "wb") as page:
        done = subprocess.run([sys.executable, "-m", "lstm_graph.cli", "explore", "gru",
                               "--sample", "-H", "3", "-I", "2", "--out", "/dev/stdout"],
                              stdout=page, stderr=subprocess.PIPE, text=True, timeout=120,
                              cwd=ROOT)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "page.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert np.array(page_data(text)["values"]["h"]).shape == (20, 2, 3)


def test_explore_takes_a_sequence_its_weights_and_its_start_state(tmp_path, cli_run):
    cell = lstm_graph.load_cell("lstm")
    weights = cell.random_weights(3, 4, seed=5)
    np.savez(tmp_path / "w.npz", **weights)
    x = np.random.default_rng(1).standard_normal((7, 3)).astype("float32")  # one sequence
    np.save(tmp_path / "x.npy", x)
    start = {"c": np.full(4, 0.5, "float32"), "h": np.zeros(4, "float32")}
    np.savez(tmp_path / "s.npz", **start)
    cli_run("explore", "lstm", "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--state", tmp_path / "s.npz", "--out", tmp_path / "p.html")
    data = page_data((tmp_path / "p.html").read_text())
    expected = cell.compile(weights=weights).trace(x, start)
    np.testing.assert_array_equal(np.array(data["values"]["c"], "float32")[:, 0],
                                  expected["c"])
    assert data["initial"]["c"] == [[0.5] * 4]


@pytest.mark.parametrize("args, message", [
    (["--out", "p.svg"], "the page is HTML"),
    (["--input", "x.npy", "-I", "3", "--out", "p.html"], "--input-size is the I of --sample"),
    (["--out", "p.html"], "give exactly one of --input FILE and --sample"),
])
def test_explore_usage_errors(args, message, cli_fails, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert message in cli_fails("explore", "lstm", "-H", "3", *args, code=2)
    assert list(tmp_path.iterdir()) == []


def test_the_page_charts_the_gradient_reaching_each_state_from_the_last_step(tmp_path,
                                                                             cli_run):
    cell = lstm_graph.load_cell("lstm")
    weights = cell.random_weights(3, 4, seed=2)
    np.savez(tmp_path / "w.npz", **weights)
    x = np.random.default_rng(3).standard_normal((7, 2, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    cli_run("explore", "lstm", "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--out", tmp_path / "p.html")
    data = page_data((tmp_path / "p.html").read_text())
    grad_y = np.zeros((7, 2, 4), "float32")
    grad_y[-1] = 1  # the loss: the sum of the last step's output
    found = cell.compile(weights=weights).grad(x, grad_y, record=True)
    for state in ("c", "h"):
        expected = np.linalg.norm(found.values[state].astype(np.float64), axis=-1)
        np.testing.assert_allclose(np.array(data["gradients"][state]), expected, rtol=1e-6)
    assert data["gradients"]["c"][0][0] < data["gradients"]["c"][-1][0]  # it fades going back


@needs_dot
def test_a_batch_first_runner_explores_as_its_time_major_twin(tmp_path, cli_run):
    """It was refused as 'this runner is 1 layer, forward: explore one of them'; the
    command line said 'the page shows layer 1 of 1 layer, forward'."""
    cell = lstm_graph.load_cell("gru")
    x = np.random.default_rng(4).standard_normal((5, 3, 2)).astype("float32")
    first = cell.compile(input_size=2, hidden_size=3, batch_first=True).explore(
        np.swapaxes(x, 0, 1))
    assert first.html == cell.compile(input_size=2, hidden_size=3).explore(x).html
    np.save(tmp_path / "xb.npy", np.swapaxes(x, 0, 1))
    done = cli_run("explore", "gru", "--input", tmp_path / "xb.npy", "-H", "3",
                   "--batch-first", "--out", tmp_path / "page.html")
    assert "note" not in done.stderr and done.stderr.startswith("gru: 5 steps, 3 sequences")
    assert (tmp_path / "page.html").read_text() == first.html


@needs_dot
def test_explore_from_python_takes_allow_nonfinite_and_save_refuses_a_non_path(tmp_path):
    """The NaN message says to allow non-finite numbers, which Runner.explore could not;
    ``save(5)`` was a bare TypeError."""
    runner = lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=3)
    x = np.ones((4, 1, 2), "float32")
    x[1, 0, 0] = np.nan
    with pytest.raises(lstm_graph.DataError, match=r"pass --allow-nonfinite"):
        runner.explore(x)
    page = runner.explore(x, allow_nonfinite=True)
    for bad in (5, None):
        with pytest.raises(lstm_graph.LstmGraphError, match="save takes the path of the page"):
            page.save(bad)  # type: ignore[arg-type]
    assert page.save(tmp_path / "p.html").read_text() == page.html


@needs_dot
def test_a_cell_too_large_to_draw_shows_as_text_in_a_notebook():
    """``_repr_svg_`` raised the RenderError (IPython printed its traceback)."""
    big = lstm_graph.compile_source(
        "cell big\ninput x\nstate h\noutput h\n"
        + "".join(f"a{i} = tanh(linear(x, h[t-1]))\n" for i in range(150))
        + "s0 = a0\n" + "".join(f"s{i} = s{i - 1} + a{i}\n" for i in range(1, 150))
        + "h = s149\n", "big.cell")
    from lstm_graph.render import to_bytes

    with pytest.raises(lstm_graph.LstmGraphError, match="has 456 nodes"):
        to_bytes(big.render("pipe"), "svg")
    assert big._repr_svg_() is None
