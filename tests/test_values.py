"""Values on the static diagram: heat strips from a trace (render --trace --step --batch),
and the trace's record of the cell that made it."""

from __future__ import annotations

import hashlib
import json
import subprocess

import numpy as np
import pytest
from conftest import needs_dot
from dot_source import nodes

import lstm_graph
from lstm_graph.formats.trace import canonical_text, identity
from lstm_graph.render import palette, render
from lstm_graph.render.scene import build_scene
from lstm_graph.render.values import MAX_CELLS, bins, strip, strips_at


def test_the_value_scale_runs_from_blue_through_white_to_red_and_saturates():
    assert palette.heat(-1) == palette.HEAT_STOPS[0] == palette.heat(-7)
    assert palette.heat(0) == "#f7f7f7"
    assert palette.heat(1) == palette.HEAT_STOPS[-1] == palette.heat(1e30)
    reds = [int(palette.heat(v)[1:3], 16) for v in np.linspace(-1, 0, 9)]
    assert reds == sorted(reds)


def test_a_wide_value_is_binned_into_contiguous_cells():
    assert bins(4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    cut = bins(70)
    assert len(cut) == MAX_CELLS and cut[0] == (0, 3) and cut[-1][1] == 70
    assert all(a == b for (_, a), (b, _) in zip(cut, cut[1:]))
    shown = strip(np.arange(70, dtype="float32") / 70)
    assert shown.colours[0] == palette.heat(1 / 70)  # the mean of units 0, 1, 2


@pytest.fixture(scope="module")
def trace():
    cell = lstm_graph.load_cell("peephole_lstm")
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    return cell, cell.compile(input_size=3, hidden_size=4, seed=1).trace(x)


def test_strips_show_each_value_at_the_step_and_sequence_asked(trace):
    cell, values = trace
    strips = strips_at(build_scene(cell.schedule), values, step=3, batch=1)
    assert set(strips) == set(cell.graph.assignments)
    for name, shown in strips.items():
        assert shown.colours == tuple(palette.heat(float(v)) for v in values[name][2, 1])
        assert shown.note == f"mean {float(np.mean(values[name][2, 1])):+.3g}"


@pytest.mark.parametrize("style", ["pipe", "cell"])
def test_a_diagram_with_values_keeps_every_node_and_says_what_it_shows(trace, style):
    cell, values = trace
    strips = strips_at(build_scene(cell.schedule), values, step=2)
    plain = nodes(render(cell, style).source)
    shown = nodes(render(cell, style, strips=strips, values="step 2, sequence 0").source)
    assert set(plain) == set(shown)
    for name in cell.graph.assignments:
        for colour in strips[name].colours:
            assert colour in shown[name]["label"]
    assert "step 2, sequence 0" in shown["[legend]"]["label"]


def test_render_trace_draws_the_step_asked(tmp_path, trace, cli_run):
    cell, values = trace
    np.savez(tmp_path / "t.npz", **values, **identity(cell.schedule))
    result = cli_run("render", "peephole_lstm", "--trace", tmp_path / "t.npz", "--step", "5",
                     "--batch", "1", "--style", "cell", "--format", "dot")
    assert palette.heat(float(values["o"][4, 1, 0])) in nodes(result.stdout)["o"]["label"]
    assert "step 5, sequence 1" in result.stdout


def test_a_batch_first_trace_is_drawn_at_the_step_and_sequence_asked(tmp_path, cli_run):
    """trace --batch-first writes (B, T, width); render --trace read it as (T, B, width):
    step 2 of sequence 5 drew sequence 1's values at step 6, and step 7 of 20 was
    refused as past the end."""
    x = np.random.default_rng(3).standard_normal((20, 6, 2)).astype("float32")
    np.save(tmp_path / "xt.npy", x)
    np.save(tmp_path / "xb.npy", np.ascontiguousarray(x.transpose(1, 0, 2)))
    for layout, extra in (("t", ()), ("b", ("--batch-first",))):
        cli_run("trace", "peephole_lstm", "--input", tmp_path / f"x{layout}.npy", "-H", "4",
                "--out", tmp_path / f"{layout}.npz", *extra)
    with np.load(tmp_path / "b.npz") as saved:
        assert str(saved["trace.layout"]) == "batch-first" and saved["f"].shape == (6, 20, 4)
    with np.load(tmp_path / "t.npz") as saved:
        assert str(saved["trace.layout"]) == "time-major"
    drawn = [cli_run("render", "peephole_lstm", "--trace", tmp_path / f"{layout}.npz",
                     "--step", "7", "--batch", "5", "--style", "cell", "--format", "dot").stdout
             for layout in "tb"]
    assert drawn[0] == drawn[1] and "step 7, sequence 5" in drawn[0]


@pytest.mark.parametrize("extra", [(), ("--batch-first",)])
def test_a_step_past_a_sequence_s_length_is_not_drawn_as_values(tmp_path, extra, cli_run,
                                                                cli_fails):
    """A trace of sequences of their own lengths holds zeros past each: drawn at such a
    step, every value read 'mean +0' (a sigmoid valve, which is never 0, too). The trace
    records the lengths, and render refuses those steps."""
    x = np.random.default_rng(4).standard_normal((6, 3, 2)).astype("float32")
    if extra:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "lengths.npy", np.array([6, 2, 4]))
    cli_run("trace", "lstm", "--input", tmp_path / "x.npy", "-H", "3", "--lengths",
            tmp_path / "lengths.npy", "--out", tmp_path / "t.npz", *extra)
    with np.load(tmp_path / "t.npz") as saved:
        assert saved["trace.lengths"].tolist() == [6, 2, 4]
    assert f"{tmp_path / 't.npz'}: sequence 1 ended at step 2 (its length); past it the " \
        "trace holds zeros, not values: give a step from 1 to 2" in cli_fails(
            "render", "lstm", "--trace", tmp_path / "t.npz", "--step", "3", "--batch", "1",
            "--format", "dot")
    cli_run("render", "lstm", "--trace", tmp_path / "t.npz", "--step", "2", "--batch", "1",
            "--format", "dot", "--out", tmp_path / "d")
    cli_run("render", "lstm", "--trace", tmp_path / "t.npz", "--step", "6", "--batch", "0",
            "--format", "dot", "--out", tmp_path / "d")
    with np.load(tmp_path / "t.npz") as saved:  # lengths no run has: said as such
        np.savez(tmp_path / "bad.npz", **{**saved, "trace.lengths": np.array([6, 0, -3])})
    assert "'trace.lengths' holds [6, 0, -3]; each sequence's length is from 1 to the " \
        "trace's 6 steps" in cli_fails("render", "lstm", "--trace", tmp_path / "bad.npz",
                                      "--step", "1", "--format", "dot")


@pytest.mark.parametrize("args, code, message", [
    (["--step", "6"], 1, "holds steps 1 to 5; there is no step 6"),
    (["--step", "1", "--batch", "2"], 1, "holds sequences 0 to 1; there is no sequence 2"),
    ([], 2, "needs --step T"),
])
def test_render_trace_errors(tmp_path, trace, args, code, message, cli_fails):
    np.savez(tmp_path / "t.npz", **trace[1], **identity(trace[0].schedule))
    stderr = cli_fails("render", "peephole_lstm", "--format", "dot", "--style", "pipe",
                       "--trace", tmp_path / "t.npz", *args, code=code)
    assert message in stderr, stderr


def test_an_older_trace_of_another_cell_or_step_without_trace_is_refused(tmp_path, trace,
                                                                         cli_fails):
    np.savez(tmp_path / "t.npz", **trace[1])  # as lstm-graph wrote traces before 'cell'
    assert "has no values for r, z" in cli_fails("render", "gru", "--format", "dot", "--style",
                                                 "pipe", "--trace", tmp_path / "t.npz",
                                                 "--step", "1")
    assert "give --trace" in cli_fails("render", "gru", "--format", "dot", "--style", "pipe",
                                       "--step", "1", code=2)


def test_a_weights_file_given_as_a_trace_is_refused_without_a_warning_first(tmp_path, cli):
    """A weights file has no cell entries either, but it is no older trace: the refusal
    (no values of the cell's) comes alone, not after a warning that it will be drawn."""
    runner = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4)
    np.savez(tmp_path / "w.npz", **runner.weights)
    result = cli("render", "lstm", "--format", "dot", "--style", "pipe", "--trace",
                 tmp_path / "w.npz", "--step", "1")
    assert result.exit_code == 1
    assert result.stderr == (f"{tmp_path / 'w.npz'} has no values for f, i, g, o, c, h; it "
                             "was not recorded from cell 'lstm' (make it with 'lstm-graph "
                             "trace lstm ... --out trace.npz')\n")
    np.save(tmp_path / "x.npy", np.ones((3, 2, 4), "float32"))  # it was --state's hint
    result = cli("render", "lstm", "--format", "dot", "--trace", tmp_path / "x.npy", "--step",
                 "1")
    assert result.exit_code == 1 and result.stderr == (
        f"{tmp_path / 'x.npy'}: is an .npy file, one array; this takes a trace, the .npz of "
        "every value that 'lstm-graph trace' writes\n")


def test_a_stack_s_trace_is_said_as_one(tmp_path, cli_run, cli_fails):
    """Its values are under each layer's prefix (l0.f): it was said to be another cell's,
    to be made with the very command that had made it."""
    cli_run("trace", "lstm", "--sample", "-H", "3", "--layers", "2", "--out",
            tmp_path / "t.npz")
    said = cli_fails("render", "lstm", "--format", "dot", "--trace", tmp_path / "t.npz",
                     "--step", "2")
    assert "t.npz is the trace of a stack (each layer's values under its own prefix: l0.f, " \
        "…), and the diagram draws one cell" in said and "not recorded" not in said


# -- which cell a trace came from ----------------------------------------------------------

@pytest.fixture
def trace_file(tmp_path, cli_run):
    """``trace_file(SPEC)``: ``lstm-graph trace SPEC`` written to ``tmp_path / "t.npz"``."""
    def write(spec):
        cli_run("trace", spec, "--sample", "-I", "3", "-H", "4", "--out", tmp_path / "t.npz")
        return tmp_path / "t.npz"

    return write


def test_a_trace_records_its_cell_as_text_read_without_pickle(trace_file):
    path = trace_file("peephole_lstm")
    with np.load(path, allow_pickle=False) as saved:
        name, digest = saved["cell"], saved["cell.sha256"]
        assert name.shape == () and name.dtype.kind == "U" and str(name) == "peephole_lstm"
        assert str(digest) == hashlib.sha256(canonical_text(
            lstm_graph.load_cell("peephole_lstm").schedule).encode()).hexdigest()


def test_render_refuses_the_trace_of_another_cell_naming_both(trace_file, cli, cli_run):
    """The finding: render --trace drew another cell's trace silently (here the names
    of lstm's values are all in the peephole LSTM's trace, so nothing else notices)."""
    path = trace_file("peephole_lstm")
    result = cli("render", "lstm", "--trace", path, "--step", "1", "--format", "dot",
                 "--style", "cell")
    assert result.exit_code == 1 and result.stdout == ""
    assert isinstance(result.exception, SystemExit)
    assert f"{path} was traced from cell 'peephole_lstm'" in result.stderr
    assert "not from cell 'lstm'" in result.stderr and "its values are another cell's" in \
        result.stderr
    good = cli_run("render", "peephole_lstm", "--trace", path, "--step", "1", "--format",
                   "dot", "--style", "cell")
    assert "warning" not in good.stderr, good.stderr


MINE = "input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))   # {caption}\n"


def test_a_trace_of_a_cell_whose_equations_changed_since_is_refused(tmp_path, trace_file,
                                                                    cli_run, cli_fails):
    spec = tmp_path / "mine.cell"
    spec.write_text(MINE.format(caption="first"))
    path = trace_file(spec)
    spec.write_text("# reformatted, recaptioned: the same equations\ninput x\nstate h\n"
                    "output h\nh = tanh( linear(x,h[t-1]) )  # second\n")
    cli_run("render", spec, "--trace", path, "--step", "2", "--format", "dot", "--style",
            "pipe")
    spec.write_text("input x\nstate h\noutput h\nh = sigmoid(linear(x, h[t-1]))\n")
    stderr = cli_fails("render", spec, "--trace", path, "--step", "2", "--format", "dot",
                       "--style", "pipe")
    assert "was traced from cell 'mine' with other equations" in stderr
    assert "than cell 'mine' has now" in stderr


def test_the_canonical_text_keeps_equations_and_drops_layout():
    def text(source):
        return canonical_text(lstm_graph.compile_source(source, "c.cell").schedule)

    base = ("input x\nstate h\noutput h\na = relu(linear(x))\nb = tanh(linear(h[t-1]))\n"
            "h = a * b * 0.5\n")
    assert text(base) == text("# a comment\ncell other\ninput x\nstate h\noutput h\n"
                              "b = tanh(linear(h[t-1]))   # swapped with a: the same stage\n"
                              "a = relu(linear(x))\nh = (a * b) * 0.5\n")
    assert text(base) != text(base.replace("0.5", "0.5000001"))  # exact numbers
    assert text(base) != text(base.replace("a * b", "b * a"))  # operand order counts
    assert text(base) != text(base.replace("relu", "tanh"))
    leaky = base.replace("relu(linear(x))", "leaky_relu(linear(x), 0.1)")
    assert text(leaky) != text(leaky.replace("0.1", "0.2"))  # an op's attributes count
    assert "alpha=0.1" in text(leaky)


def test_an_older_trace_without_its_cell_is_drawn_with_a_warning(tmp_path, trace, cli_run):
    cell, values = trace
    np.savez(tmp_path / "old.npz", **values)
    result = cli_run("render", "peephole_lstm", "--trace", tmp_path / "old.npz", "--step", "1",
                     "--format", "dot", "--style", "cell")
    assert "warning: " in result.stderr and "does not say which cell it was traced from" in \
        result.stderr and "unchecked" in result.stderr
    assert result.stdout.startswith("digraph")


@pytest.mark.parametrize("entries, message", [
    ({"cell": np.arange(3.0), "cell.sha256": np.array("0" * 64)},
     "'cell' is float64 of shape (3,); a trace holds it as one short text"),
    ({"cell": np.array("peephole_lstm")}, "has 'cell' but no 'cell.sha256'"),
    ({"trace.layout": np.array("sideways")}, "'trace.layout' is 'sideways'; a trace's "
     "values are time-major or batch-first"),
])
def test_a_trace_with_malformed_cell_entries_is_refused(tmp_path, trace, entries, message,
                                                        cli_fails):
    np.savez(tmp_path / "bad.npz", **trace[1], **entries)
    stderr = cli_fails("render", "peephole_lstm", "--trace", tmp_path / "bad.npz", "--step",
                       "1", "--format", "dot", "--style", "cell")
    assert message in stderr, stderr


@pytest.mark.parametrize("value, message", [
    (np.zeros((5, 2, 0), "float32"), "'f' is float32 of shape (5, 2, 0); a trace holds each "
     "value as real numbers of shape (steps, sequences, units), none of them 0"),
    (np.full((5, 2, 4), "a"), "'f' is <U1 of shape (5, 2, 4)"),
    (np.zeros((5, 2, 4), "complex64"), "'f' is complex64 of shape (5, 2, 4)"),
    (np.zeros((4, 2, 4), "float32"), "'f' has shape (4, 2, 4) and 'i' (5, 2, 4)"),
])
def test_a_trace_whose_values_are_damaged_is_refused_naming_the_value(
        tmp_path, trace, value, message, cli_fails):
    """A trace whose cell entries match but whose values do not (a division by zero, a
    TypeError, or a complex number's real part drawn with a warning)."""
    cell, values = trace
    np.savez(tmp_path / "bad.npz", **{**values, "f": value}, **identity(cell.schedule))
    stderr = cli_fails("render", "peephole_lstm", "--trace", tmp_path / "bad.npz", "--step",
                       "1", "--format", "dot", "--style", "cell")
    assert message in stderr and "Traceback" not in stderr and "Warning" not in stderr, stderr


def test_a_trace_s_cell_name_is_quoted_on_one_line_with_nothing_a_terminal_acts_on(
        tmp_path, trace, cli_fails):
    cell, values = trace
    entries = {"cell": np.array("\x1b[31mEVIL\nline2 \u202e"), "cell.sha256": np.array("0" * 64)}
    np.savez(tmp_path / "bad.npz", **values, **entries)
    stderr = cli_fails("render", "peephole_lstm", "--trace", tmp_path / "bad.npz", "--step",
                       "1", "--format", "dot", "--style", "cell")
    assert "traced from cell '\\x1b[31mEVIL\\nline2 \\u202e'" in stderr, stderr
    assert stderr.count("\n") == 1 and "\x1b" not in stderr and "\u202e" not in stderr


def _caption_clears_its_node(source: str, caption: str) -> None:
    """Where dot puts ``caption`` (an edge's tail label) and the node the edge leaves: no
    point of the caption's box lies inside that node's ellipse."""
    laid = json.loads(subprocess.run(["dot", "-Tjson"], input=source.encode(),
                                     capture_output=True, check=True).stdout)
    places = {o["name"]: o for o in laid["objects"]}
    names = {o["_gvid"]: o["name"] for o in laid["objects"]}
    found = 0
    for edge in laid.get("edges", []):
        for draw in edge.get("_tldraw_", []):
            if draw["op"] == "T" and draw["text"] == caption:
                node = places[names[edge["tail"]]]
                cx, cy = map(float, node["pos"].split(","))
                a, b = float(node["width"]) * 36, float(node["height"]) * 36
                x, y, width = *draw["pt"], draw["width"]
                left = x - {"l": 0, "c": width / 2, "r": width}[draw["align"]]
                corners = [(left + dx, y + dy) for dx in (0, width / 2, width) for dy in (-2, 9)]
                assert all(((px - cx) / a) ** 2 + ((py - cy) / b) ** 2 > 1
                           for px, py in corners), (caption, draw, node["pos"], a, b)
                found += 1
    assert found == 1, caption


@needs_dot
@pytest.mark.parametrize("name", ["peephole_lstm", "gru"])
def test_the_pipe_caption_stays_clear_of_its_op_with_or_without_values(name):
    """The finding: with a heat strip the memory sum grows, and its "memory pipe" caption,
    set a fixed distance above the pipe where it leaves the op, was drawn across it."""
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(0).standard_normal((3, 1, 3)).astype("float32")
    values = cell.compile(input_size=3, hidden_size=4, seed=1).trace(x)
    strips = strips_at(build_scene(cell.schedule), values, step=2)
    for drawn in (render(cell, "pipe"), render(cell, "pipe", strips=strips, values="step 2")):
        _caption_clears_its_node(drawn.source, "memory pipe")
