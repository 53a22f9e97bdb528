"""The unrolled view: K steps side by side, the memory pipe and the line running through."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import needs_dot
from dot_source import edges, nodes

import lstm_graph
from lstm_graph.render import palette, to_bytes, unrolled

ROOT = Path(__file__).resolve().parents[1]


def plain_label(attrs: dict[str, str]) -> str:
    """``c<SUB>t+1</SUB>`` -> ``c_t+1``."""
    return re.sub(r"<[^>]*>", "", attrs["label"].replace("<SUB>", "_"))


def test_the_memory_runs_through_on_the_top_row_labelled_step_by_step():
    source = unrolled(lstm_graph.load_cell("lstm"), 3).source
    top = source.split("subgraph pipe {")[1].split("}")[0]
    drawn = nodes(source)
    labels = [plain_label(drawn[n]) for n in ("c[t-1]@0", "c[t]@0", "c[t]@1", "c[t]@2")]
    assert labels == ["c_t-1", "c_t", "c_t+1", "c_t+2"]
    order = [top.index(f'"{n}"') for n in ("c[t-1]@0", "c.mul@0", "c[t]@0", "c.mul@1",
                                           "c[t]@1", "c[t]@2")]
    assert order == sorted(order)
    assert "rank=max" in top


def test_the_hidden_state_runs_through_on_its_own_line():
    source = unrolled(lstm_graph.load_cell("peephole_lstm"), 3).source
    line = source.split("subgraph bus {")[1].split("}")[0]
    for name in ("h[t-1]@0", "h[t]@0", "h[t]@1", "h[t]@2"):
        assert f'"{name}"' in line
    assert [plain_label(nodes(source)[n]) for n in ("h[t-1]@0", "h[t]@0", "h[t]@2")] == \
        ["h_t-1", "h_t", "h_t+2"]
    assert [plain_label(nodes(source)[f"x@{k}"]) for k in range(3)] == ["x_t", "x_t+1", "x_t+2"]


@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_values_between_steps_arrive_green_and_leave_dashed(name):
    cell = lstm_graph.load_cell(name)
    drawn = [e for e in edges(unrolled(cell, 3).source) if e[2].get("style") != "invis"]
    for state in cell.graph.states:
        for k in range(2):  # the new value of step k is the old value of step k+1
            between = f"{state}[t]@{k}"
            into = [a for s, d, a in drawn if d == between and a.get("dir") != "back"] + \
                [a for s, d, a in drawn if s == between and a.get("dir") == "back"]
            out = [a for s, d, a in drawn if s == between and a.get("dir") != "back"] + \
                [a for s, d, a in drawn if d == between and a.get("dir") == "back"]
            assert into and all(a["color"] == palette.NEW_STATE for a in into), between
            assert out and all(a.get("style") == "dashed" for a in out), between


def test_one_step_unrolled_is_the_same_picture_as_the_plain_pipe_style():
    cell = lstm_graph.load_cell("gru")
    one = nodes(unrolled(cell, 1).source)
    assert {plain_label(one[n]) for n in ("h[t-1]", "h[t]")} == {"h_t-1", "h_t"}


def test_unrolled_dot_is_byte_identical_across_processes(cli_process):
    outputs = set()
    for seed in ("1", "2"):
        result = cli_process("render", "peephole_lstm", "--unroll", "3", "--format", "dot",
                             cwd=ROOT, env={"PYTHONHASHSEED": seed}, text=False)
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    assert len(outputs) == 1


@needs_dot
@pytest.mark.parametrize("steps", [2, 4])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_every_builtin_unrolls_into_a_wide_svg(name, steps):
    svg = to_bytes(unrolled(lstm_graph.load_cell(name), steps), "svg")
    root = ET.fromstring(svg)
    width, height = (float(root.attrib[k].rstrip("pt")) for k in ("width", "height"))
    assert width > 1.5 * height


def test_render_unroll_writes_one_diagram(tmp_path, cli_run):
    cli_run("render", "lstm", "--unroll", "3", "--out", tmp_path / "u.dot")
    assert [p.name for p in tmp_path.iterdir()] == ["u.dot"]
    cli_run("render", "lstm", "--unroll", "2", "--format", "dot", "--out", tmp_path / "base")
    assert (tmp_path / "base.unrolled2.dot").is_file()


@pytest.mark.parametrize("args, message", [
    (["--unroll", "3", "--style", "cell"], "--unroll draws the pipe style"),
    (["--unroll", "3", "--highlight", "forget"], "does not combine"),
    (["--unroll", "0"], "0 is not in the range"),
    (["--unroll", "9"], "9 is not in the range"),
])
def test_render_unroll_usage_errors(args, message, cli_fails):
    assert message in cli_fails("render", "lstm", "--format", "dot", *args, code=2)


@needs_dot
def test_render_unroll_without_out_prints_the_svg(cli_run):
    result = cli_run("render", "gru", "--unroll", "3")
    root = ET.fromstring(result.stdout.encode())
    assert root.tag.endswith("svg")
    assert "t+2" in result.stdout  # the third step's subscripts
