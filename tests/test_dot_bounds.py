"""Graphviz's dot is bounded: diagrams too large for their style are refused before it
runs, naming the size; it runs under a memory limit and a time limit, in a process group
of its own that is killed whole; whatever stops it is said in one line. A fake ``dot``
(a small script first on PATH) stands in for a slow or greedy one."""

from __future__ import annotations

import os
import stat
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import needs_dot

from lstm_graph import compile_source, load_cell
from lstm_graph.errors import RenderError
from lstm_graph.render import (
    FAST_FROM,
    MAX_NODES,
    dot_timeout,
    node_count,
    render,
    run_dot,
    to_bytes,
)
from lstm_graph.render.scene import Scene


def chain(assignments: int) -> str:
    """A cell whose values form one long chain: the pipe style's worst layout."""
    lines = ["a0 = tanh(linear(x, h[t-1]))"]
    lines += [f"a{k} = tanh(a{k - 1}) * a{k - 1}" for k in range(1, assignments - 1)]
    return "input x\nstate h\noutput h\n" + "\n".join(lines) + f"\nh = a{assignments - 2}\n"


def fake_dot(folder: Path, body: str) -> dict[str, str]:
    """An environment whose PATH finds ``folder/dot``: a Python script running ``body``."""
    folder.mkdir(exist_ok=True)
    program = folder / "dot"
    program.write_text(f"#!{sys.executable}\nimport os, sys, time, resource, subprocess\n{body}")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_a_pipe_diagram_too_large_to_lay_out_is_refused_up_front_naming_its_size(tmp_path,
                                                                                 cli_process):
    (tmp_path / "big.cell").write_text(chain(1001))
    nodes = node_count(render(compile_source(chain(1001), "big.cell"), "pipe").source)
    began = time.monotonic()
    result = cli_process("render", "big.cell", "--style", "pipe", "--out", "big.svg",
                         cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"this pipe-style diagram has {nodes} nodes; Graphviz lays out at most "
        f"{MAX_NODES['pipe']} in this style in reasonable time (the cell style, --style "
        f"cell, draws up to {MAX_NODES['cell']}); write --format dot to lay it out yourself")
    assert time.monotonic() - began < 60 and list(tmp_path.iterdir()) == [tmp_path / "big.cell"]
    result = cli_process("render", "big.cell", "--style", "pipe", "--format", "dot", "--out",
                         "big.dot", cwd=tmp_path)  # DOT needs no layout: written as ever
    assert result.returncode == 0, result.stderr
    assert result.stderr == "wrote big.dot\n" and (tmp_path / "big.dot").stat().st_size > 0


@pytest.mark.parametrize("style", ["pipe", "cell"])
def test_each_state_s_memory_path_is_found_once_a_drawing(style, monkeypatch):
    """The styles ask for the memory's path at every edge they place: found afresh each
    time, a cell of 400 ops took 32 s to draw (quadratic), before any size was checked."""
    found: list[str] = []
    original = Scene._find_pipe_path

    def counted(self: Scene, state: str) -> list[str]:
        found.append(state)
        return original(self, state)

    monkeypatch.setattr(Scene, "_find_pipe_path", counted)
    render(compile_source(chain(400), "long.cell"), style)
    assert found == ["h"]


def test_a_diagram_a_notebook_shows_is_drawn_by_the_trusted_bounded_dot(tmp_path,
                                                                        monkeypatch):
    """``cell.render(...)`` is what a notebook shows, by the graphviz package's display
    methods: they ran the first ``dot`` on PATH (here one in a directory anyone may write
    in), without a bound, and drew a diagram too large for its style for minutes."""
    ran = tmp_path / "ran.log"
    shared = tmp_path / "shared"
    fake_dot(shared, f"open({str(ran)!r}, 'a').write('ran'); print('<svg/>')")
    shared.chmod(0o777)
    monkeypatch.setenv("PATH", f"{shared}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the PATH entry left out is said once a process
        diagram = load_cell("lstm").render("cell")
        shown = diagram._repr_mimebundle_()
        assert list(shown) == ["image/svg+xml"] and "<title>lstm_cell</title>" in \
            shown["image/svg+xml"]
        assert diagram.pipe(format="png").startswith(b"\x89PNG")
        with pytest.raises(RenderError, match=r"written by lstm_graph\.render\.save\("):
            diagram.render("lstm", format="png")  # the package's own, refused
        with pytest.raises(RenderError, match="graphviz's unflatten, which would run"):
            diagram.unflatten(stagger=3)
        too_large = render(compile_source(chain(150), "c.cell"), "pipe")
        began = time.monotonic()
        (reason,) = too_large._repr_mimebundle_().values()
    assert reason.startswith("this pipe-style diagram has ") and time.monotonic() - began < 5
    assert not ran.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["shared"]


def test_the_limits_follow_each_style(tmp_path, monkeypatch):
    cell = compile_source(chain(150), "c.cell")
    nodes = node_count(render(cell, "pipe").source)
    assert MAX_NODES["pipe"] < nodes <= MAX_NODES["cell"]
    with pytest.raises(RenderError, match=f"this pipe-style diagram has {nodes} nodes"):
        to_bytes(render(cell, "pipe"), "svg")
    monkeypatch.setenv("PATH", fake_dot(tmp_path, "sys.stdin.read(); print('<svg/>')")["PATH"])
    assert to_bytes(render(cell, "cell"), "svg") == b"<svg/>\n"  # the cell style: drawn


def test_a_large_diagram_is_laid_out_with_the_cheap_settings_and_a_small_one_as_ever(
        tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_dot(tmp_path, "sys.stdin.read(); print(sys.argv[1:])")
                       ["PATH"])
    small = compile_source(chain(5), "s.cell")
    assert to_bytes(render(small, "pipe"), "svg").decode().strip() == "['-Tsvg']"
    large = compile_source(chain(FAST_FROM // 2 + 2), "l.cell")
    assert "'-Gsplines=line'" in to_bytes(render(large, "pipe"), "svg").decode()


def test_dot_past_its_time_is_killed_with_everything_it_started(tmp_path, cli_process):
    """A dot that hangs, having started a child of its own: both are gone after the limit,
    the message says which limit and how to change it, and no diagram is written."""
    pids = tmp_path / "pids"
    env = fake_dot(tmp_path / "bin", f"""
child = subprocess.Popen(["sleep", "300"])
open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
time.sleep(300)
""")
    began = time.monotonic()
    result = cli_process("render", "lstm", "--style", "cell", "--out", "d.svg", cwd=tmp_path,
                         env={**env, "LSTM_GRAPH_DOT_TIMEOUT": "1"})
    assert time.monotonic() - began < 30
    assert result.returncode == 1, result.stderr
    nodes = node_count(render(load_cell("lstm"), "cell").source)
    assert result.stderr.strip() == (
        f"Graphviz's dot took longer than 1 s on this diagram ({nodes} nodes) and was "
        "stopped (LSTM_GRAPH_DOT_TIMEOUT sets the limit); write --format dot")
    for pid in map(int, pids.read_text().split()):  # gone, or dead and not yet reaped
        status = Path(f"/proc/{pid}/stat")
        assert not status.exists() or status.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert not (tmp_path / "d.svg").exists()


def test_dot_gets_the_memory_limit_and_running_out_of_it_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_dot(tmp_path, """
sys.stdin.read()
limit = resource.getrlimit(resource.RLIMIT_AS)[0]
if limit > 400 * 2**20:
    print(limit)
    sys.exit(0)
try:
    bytearray(2**31)
except MemoryError:
    sys.stderr.write("out of memory\\n")
    sys.exit(1)
""")["PATH"])
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "4G")
    assert run_dot("digraph {}", "svg") == f"{4 * 2**30}\n".encode()
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "300M")
    with pytest.raises(RenderError) as raised:
        run_dot("digraph {}", "svg")
    assert str(raised.value) == (
        "Graphviz's dot ran out of memory on this diagram (0 nodes), within the 315 MB of "
        "memory it may take (LSTM_GRAPH_MAX_BYTES sets the limit); write --format dot")


def test_dot_killed_by_a_signal_or_failing_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_dot(tmp_path, "sys.stdin.read(); os.abort()")["PATH"])
    with pytest.raises(RenderError, match="Graphviz's dot was killed by SIGABRT on this "
                       "diagram"):
        run_dot("digraph {}", "svg")
    monkeypatch.setenv("PATH", fake_dot(tmp_path, "sys.stdin.read(); sys.exit(3)")["PATH"])
    with pytest.raises(RenderError, match=r"Graphviz's dot failed \(exit status 3\): it "
                       "printed nothing"):
        run_dot("digraph {}", "svg")


def test_a_bad_dot_timeout_is_said(monkeypatch):
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv("LSTM_GRAPH_DOT_TIMEOUT", bad)
        with pytest.raises(RenderError, match=f"LSTM_GRAPH_DOT_TIMEOUT='{bad}' is not a "
                           "number of seconds above 0"):
            run_dot("digraph {}", "svg")


@needs_dot
def test_a_dot_timeout_past_a_day_is_a_day(monkeypatch):
    """30 days (or 1e9 s, or inf) raised OverflowError from the wait, its milliseconds past
    an int32: a traceback, nothing drawn."""
    for long in ("2592000", "1e9", "9999999999", "inf"):
        monkeypatch.setenv("LSTM_GRAPH_DOT_TIMEOUT", long)
        assert dot_timeout() == 86400
        assert b"</svg>" in run_dot("digraph { a -> b }", "svg")


@needs_dot
def test_the_real_dot_takes_the_cheap_settings(tmp_path):
    """A chain past FAST_FROM nodes, laid out by the real dot with FAST_FLAGS."""
    cell = compile_source(chain(FAST_FROM // 2 + 2), "c.cell")
    assert FAST_FROM <= node_count(render(cell, "pipe").source) <= MAX_NODES["pipe"]
    assert b"</svg>" in to_bytes(render(cell, "pipe"), "svg")


@needs_dot  # explore asks for dot before anything else
def test_explore_refuses_a_cell_too_large_to_draw_before_it_runs(tmp_path, cli_process):
    (tmp_path / "big.cell").write_text(chain(1001))
    result = cli_process("explore", "big.cell", "--sample", "-H", "2", "--out", "page.html",
                         cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "this pipe-style diagram has" in result.stderr
    assert "the page draws both styles" in result.stderr and "--style" not in result.stderr
    assert "steps" not in result.stderr  # refused before the run said what it ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.cell"]


def test_a_label_or_tooltip_longer_than_graphviz_reads_is_refused_before_dot(tmp_path,
                                                                             cli_process):
    """A caption of 3,500 '&' (17,500 characters as an HTML label) validated, and then
    render and explore failed with Graphviz's own syntax error ("longer than 16384?")."""
    (tmp_path / "amp.cell").write_text("input x\nstate h\noutput h\n"
                                       f"h = tanh(linear(x, h[t-1]))  # {'&' * 3500}\n")
    assert cli_process("validate", "amp.cell", cwd=tmp_path).returncode == 0
    result = cli_process("render", "amp.cell", "--style", "pipe", "--out", "amp.svg",
                         cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith(
        "this diagram has a label, name or tooltip of 17,5"), result.stderr
    assert "Graphviz reads at most 16,384: shorten the longest names or captions" in \
        result.stderr and not (tmp_path / "amp.svg").exists()
    assert cli_process("render", "amp.cell", "--style", "pipe", "--format", "dot", "--out",
                       "amp.dot", cwd=tmp_path).returncode == 0  # DOT: written as ever
    explored = cli_process("explore", "amp.cell", "--sample", "-H", "2", "--out", "a.html",
                           cwd=tmp_path)  # its own advice: explore has no --format
    assert explored.returncode == 1 and "shorten the longest names or captions; the page " \
        "draws both styles" in explored.stderr and "or write --format" not in explored.stderr
