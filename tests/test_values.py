"""Values on the static diagram: heat strips from a trace (render --trace --step --batch)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from dot_source import nodes

import lstm_graph
from lstm_graph.cli import main
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
    assert "step 2, sequence 0" in shown["legend"]["label"]


def test_render_trace_draws_the_step_asked(tmp_path, trace):
    cell, values = trace
    np.savez(tmp_path / "t.npz", **values)
    runner = CliRunner()
    result = runner.invoke(main, ["render", "peephole_lstm", "--trace", str(tmp_path / "t.npz"),
                                  "--step", "5", "--batch", "1", "--style", "cell",
                                  "--format", "dot"])
    assert result.exit_code == 0, result.output
    assert palette.heat(float(values["o"][4, 1, 0])) in nodes(result.stdout)["o"]["label"]
    assert "step 5, sequence 1" in result.stdout


@pytest.mark.parametrize("args, code, message", [
    (["--step", "6"], 1, "holds steps 1 to 5; there is no step 6"),
    (["--step", "1", "--batch", "2"], 1, "holds sequences 0 to 1; there is no sequence 2"),
    ([], 2, "needs --step T"),
])
def test_render_trace_errors(tmp_path, trace, args, code, message):
    np.savez(tmp_path / "t.npz", **trace[1])
    result = CliRunner().invoke(main, ["render", "peephole_lstm", "--format", "dot", "--style",
                                       "pipe", "--trace", str(tmp_path / "t.npz"), *args])
    assert result.exit_code == code and message in result.stderr, result.output


def test_a_trace_of_another_cell_or_step_without_trace_is_refused(tmp_path, trace):
    np.savez(tmp_path / "t.npz", **trace[1])
    runner = CliRunner()
    result = runner.invoke(main, ["render", "gru", "--format", "dot", "--style", "pipe",
                                  "--trace", str(tmp_path / "t.npz"), "--step", "1"])
    assert result.exit_code == 1 and "has no values for r, z" in result.stderr
    result = runner.invoke(main, ["render", "gru", "--format", "dot", "--style", "pipe",
                                  "--step", "1"])
    assert result.exit_code == 2 and "give --trace" in result.stderr
