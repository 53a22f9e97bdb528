"""Diagrams: golden DOT, edges faithful to the IR, highlights, SVG, and the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import needs_dot
from dot_source import edges, nodes

import lstm_graph
from lstm_graph.ir import EdgeKind
from lstm_graph.render import gallery, palette, render, to_bytes
from lstm_graph.render.scene import build_scene, highlighted

ROOT = Path(__file__).resolve().parents[1]
DIAGRAMS = ROOT / "diagrams"
STYLES = ["pipe", "cell"]
OWN_CELL = """\
# A cell of our own: two memories, one fast and one slow, mixed into the output.
cell two_speed
input x
state fast, slow, h
output h
k = sigmoid(linear(x, h[t-1]))                       # keep valve
fast = k * fast[t-1] + (1 - k) * tanh(linear(x))     # fast memory
s = sigmoid(linear(h[t-1], peep(slow[t-1])))         # slow valve
slow = s * slow[t-1] + (1 - s) * fast                # slow memory
h = tanh(linear(fast, slow))                         # output
"""


def cells():
    return [lstm_graph.load_cell(n) for n in lstm_graph.builtin_names()] + [
        lstm_graph.compile_source(OWN_CELL, "two_speed.cell")]


@pytest.mark.parametrize("name", sorted(gallery()))
def test_committed_dot_files_are_up_to_date(name):
    cell_name, style, preset = gallery()[name]
    expected = to_bytes(render(lstm_graph.load_cell(cell_name), style, highlight=preset), "dot")
    committed = (DIAGRAMS / f"{name}.dot").read_bytes()
    assert committed == expected, f"diagrams/{name}.dot is stale: run " \
                                  "'lstm-graph render --all --out diagrams'"


def test_gallery_has_svg_beside_every_dot():
    for name in gallery():
        assert (DIAGRAMS / f"{name}.svg").is_file(), name


def test_dot_is_byte_identical_across_processes_and_hash_seeds(cli_process):
    outputs = set()
    for seed in ("1", "2", "3"):
        result = cli_process("render", "peephole_lstm", "--style", "cell", "--format", "dot",
                             "--highlight", "memory", "--stages", cwd=ROOT,
                             env={"PYTHONHASHSEED": seed}, text=False)
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    assert len(outputs) == 1


@needs_dot
def test_a_pdf_holds_no_date_so_the_same_diagram_gives_the_same_bytes():
    pdf = to_bytes(render(lstm_graph.load_cell("lstm"), "cell"), "pdf")
    assert pdf.startswith(b"%PDF-") and b"/Producer" in pdf
    assert b"CreationDate" not in pdf and b"ModDate" not in pdf
    offsets = re.findall(rb"^(\d{10}) 00000 n", pdf, re.MULTILINE)  # the xref table
    assert offsets and all(pdf[int(o):].split(b" ", 2)[2].startswith(b"obj")
                           for o in offsets)  # each still points at its object


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("cell", cells(), ids=lambda c: c.name)
def test_every_ir_edge_is_drawn_dashed_exactly_when_old_and_green_exactly_when_new_state(
        cell, style):
    graph = cell.graph
    drawn: dict[tuple[str, str], dict[str, str]] = {}
    for _src, _dst, attrs in edges(render(cell, style).source):
        for part in (p for p in attrs.get("tooltip", "").split("; ") if " → " in p):
            src, dst = part.split(" → ")
            drawn[src, dst] = attrs
    scene = build_scene(cell.schedule)
    expected = {(u, v) for u, v, _ in graph.edges() if scene.owner[u] != scene.owner[v]}
    assert set(drawn) == expected
    for (src, dst), attrs in drawn.items():
        dashed = "dashed" in attrs.get("style", "")
        assert dashed == (graph.edge_kind(src, dst) is EdgeKind.OLD), (src, dst)
        green = attrs["color"] == palette.NEW_STATE
        assert green == (src in graph.states), (src, dst)


def test_peephole_cell_style_shows_the_output_valve_waiting_for_new_memory():
    source = render(lstm_graph.load_cell("peephole_lstm"), "cell").source
    by_pair = {(s, d): a for s, d, a in edges(source)}
    assert by_pair["[cell]", "o"]["color"] == palette.NEW_STATE  # new memory, solid green
    assert "style" not in by_pair["[cell]", "o"]
    # old memory into the forget valve: from c_{t-1}, written against the ranks
    assert by_pair["f", "c[t-1]"]["style"] == "dashed" and by_pair["f", "c[t-1]"]["dir"] == "back"
    assert by_pair["c", "[cell]"]["color"] == palette.NEW_STATE


def test_pipe_style_puts_the_memory_on_one_straight_top_row():
    source = render(lstm_graph.load_cell("lstm"), "pipe").source
    top = source.split("subgraph pipe {")[1].split("}")[0]
    assert "rank=max" in top
    order = [name for name in ('"c[t-1]"', '"c.mul"', "\tc [", '"c[t]"') if name in top]
    assert len(order) == 4
    assert [top.index(n) for n in order] == sorted(top.index(n) for n in order)
    pipe = {(s, d): a for s, d, a in edges(source)}
    assert pipe["c[t-1]", "c.mul"]["penwidth"] == palette.PIPE_WIDTH
    assert pipe["c", "c[t]"]["penwidth"] == palette.PIPE_WIDTH


def test_gru_and_rnn_pipes_carry_h():
    for name in ("gru", "rnn"):
        scene = build_scene(lstm_graph.load_cell(name).schedule)
        assert scene.memory_state() == "h"


@pytest.mark.parametrize("style", STYLES)
def test_highlight_changes_colours_only(style):
    cell = lstm_graph.load_cell("peephole_lstm")
    plain, lit = render(cell, style).source, render(cell, style, highlight="forget").source
    assert set(nodes(plain)) == set(nodes(lit))
    plain_edges = [(s, d, a.get("style")) for s, d, a in edges(plain)]
    assert plain_edges == [(s, d, a.get("style")) for s, d, a in edges(lit)]
    lit_nodes = nodes(lit)
    assert lit_nodes["f"]["color"] == palette.HIGHLIGHT
    assert lit_nodes["o"]["color"] == palette.FADED


def test_the_pipe_style_bus_is_lit_only_where_it_carries_what_is_lit():
    """c[t-1] lights the forget and input valves through their peepholes, not the bus of
    x and h[t-1] into them; x lights the bus up to the last valve."""
    cell = lstm_graph.load_cell("peephole_lstm")
    for target, lit in (("c[t-1]", False), ("x", True)):
        pairs = {(s, d): a for s, d, a in edges(render(cell, "pipe", highlight=target).source)}
        bus = [a["color"] for (s, d), a in pairs.items() if s.startswith("[bus ") and "color" in a]
        assert bus and set(bus) == {palette.HIGHLIGHT if lit else palette.FADED}, target


def test_the_pipe_style_bus_takes_a_source_a_layer_reads_twice_once():
    """A layer reading h[t-1] as an input and through a peephole drew two dashed arcs
    from h[t-1] onto the bus, which carries it once to every layer."""
    cell = lstm_graph.compile_source(
        "input x\nstate m, h\noutput h\na = sigmoid(linear(x, h[t-1], peep(h[t-1])))\n"
        "m = a * m[t-1] + (1 - a) * tanh(linear(x, h[t-1]))\nh = tanh(m)\n", "pk.cell")
    pairs = [(s, d) for s, d, _ in edges(render(cell, "pipe").source)]
    onto = [(s, d) for s, d in pairs if s == "h[t-1]" and d.startswith("[bus ")]
    assert onto == [("h[t-1]", "[bus a]")]


@pytest.mark.parametrize("style", STYLES)
def test_an_operand_read_twice_is_drawn_as_two_arrows(style):
    """p * p squares p: one arrow into the × read as a one-input op; p - p subtracts the
    second."""
    cell = lstm_graph.compile_source("input x\nstate h\noutput h\np = tanh(linear(x, h[t-1]))"
                                     "\nw = p * p\nq = p - p\nh = w + q\n", "sq.cell")
    pairs = [(s, d, a) for s, d, a in edges(render(cell, style).source)]
    assert [(s, d) for s, d, _ in pairs].count(("p", "w")) == 2
    into_q = [a for s, d, a in pairs if (s, d) == ("p", "q")]
    assert len(into_q) == 2 and ["headlabel" in a for a in into_q] == [False, True]


@pytest.mark.parametrize("style", STYLES)
def test_a_function_s_numbers_are_drawn_where_they_are_not_its_defaults(style):
    cell = lstm_graph.compile_source(
        "input x\nstate h\noutput h\nf = hard_sigmoid(linear(x, h[t-1]), beta=0.6)\n"
        "h = leaky_relu(f, 0.1) + leaky_relu(f) + clip(f, 3)\n", "n.cell")
    labels = " ".join(a.get("label", "") for a in nodes(render(cell, style).source).values())
    below = '<BR/><FONT POINT-SIZE="9">'
    assert labels.count(below) == 3, labels  # the default alpha of leaky_relu(f) not shown
    for words in ("β=0.6", "α=0.1", "threshold=3"):
        assert f"{below}{words}</FONT>" in labels


@pytest.mark.parametrize("style", ["pipe", "cell"])
def test_constants_are_drawn_as_the_cell_file_writes_them(style):
    """``:g`` drew 0.1234567 as 0.123457 and 1234567 as 1.23457e+06: two cells that
    differ only in such a constant were drawn alike."""
    def labels(constant: str) -> str:
        cell = lstm_graph.compile_source(
            f"input x\nstate h\noutput h\ng = tanh(linear(x, h[t-1])) * {constant}\n"
            "h = g + 1234567 + h[t-1] * 1e-7\n", "k.cell")
        return " ".join(a.get("label", "") for a in nodes(render(cell, style).source).values())

    first, second = labels("0.1234567"), labels("0.1234568")
    assert first != second
    for shown in ("0.1234567", "1234567", "1e-07"):
        assert f"{shown}<" in first, first


def test_highlight_presets_follow_the_article_figures():
    scene = build_scene(lstm_graph.load_cell("peephole_lstm").schedule)
    forget = highlighted(scene, "forget")
    assert {"f", "c.mul", "c", "c[t-1]", "x", "h[t-1]"} <= forget
    assert "o" not in forget and "g" not in forget
    memory = highlighted(scene, "memory")
    assert {"f", "i", "g", "c", "c[t]"} <= memory and "o" not in memory
    output = highlighted(scene, "output")
    assert {"o", "h", "h[t]", "c"} <= output and "f" not in output


def test_unknown_highlight_and_inapplicable_preset_are_clear_errors():
    gru = lstm_graph.load_cell("gru")
    with pytest.raises(lstm_graph.RenderError, match="nothing named 'forget' to highlight in "
                       "cell 'gru'; choose its presets reset, update, candidate, memory or"):
        render(gru, "pipe", highlight="forget")
    with pytest.raises(lstm_graph.RenderError, match="nothing named 'q'"):
        render(gru, "cell", highlight="q")
    with pytest.raises(lstm_graph.RenderError, match=r"'forgt' to highlight in cell 'lstm' "
                                                     r"\(did you mean 'forget'\?\)"):
        render(lstm_graph.load_cell("lstm"), "pipe", highlight="forgt")


def test_stages_writes_stage_numbers():
    source = render(lstm_graph.load_cell("peephole_lstm"), "cell", stages=True).source
    o_label = nodes(source)["o"]["label"]
    assert palette.stage_mark(3) in o_label


@pytest.mark.parametrize("style", STYLES)
def test_a_box_drawing_values_of_two_stages_shows_both_numbers(style):
    """The finding: ``a = linear(x, h[t-1])`` (stage 1) and ``f = sigmoid(a)`` (stage 2)
    are drawn as one σ box, which showed ① alone, read as the valve running in stage 1
    (the explorer's page said "1 2" for it); it shows ①②, as the schedule has them."""
    cell = lstm_graph.compile_source("cell split\ninput x\nstate h\noutput h\n"
                                     "a = linear(x, h[t-1])\nf = sigmoid(a)\n"
                                     "h = f * tanh(linear(x, h[t-1]))\n", "split.cell")
    assert cell.schedule.stage_of("a") == 1 and cell.schedule.stage_of("f") == 2
    label = nodes(render(cell, style, stages=True).source)["f"]["label"]
    assert palette.stage_mark(1) + palette.stage_mark(2) in label


@needs_dot
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("cell", cells(), ids=lambda c: c.name)
def test_svg_parses_as_xml(cell, style):
    svg = to_bytes(render(cell, style, stages=True), "svg")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    width, height = (int(root.attrib[k].rstrip("pt")) for k in ("width", "height"))
    assert 0 < height < 1.2 * width  # fits a page or a slide


def test_cli_render_dot_to_stdout_and_files(tmp_path, cli_run):
    result = cli_run("render", "gru", "--style", "pipe", "--format", "dot")
    assert result.stdout.startswith("digraph gru_pipe {")
    cli_run("render", "lstm", "--format", "dot", "--out", tmp_path / "lstm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lstm.cell.dot", "lstm.pipe.dot"]
    cli_run("render", "rnn", "--style", "cell", "--format", "dot", "--out",
            tmp_path / "exact.dot")
    assert (tmp_path / "exact.dot").read_text().startswith("digraph rnn_cell")


def test_cli_render_errors(cli_fails):
    assert "nothing named 'nope'" in cli_fails("render", "gru", "--highlight", "nope",
                                               "--format", "dot", "--style", "cell")
    assert "Error: --all takes no SPEC and needs --out DIRECTORY" in cli_fails(
        "render", "--all", code=2)


def test_missing_dot_program_says_how_to_install_and_that_dot_format_works(tmp_path,
                                                                           cli_process):
    result = cli_process("render", "lstm", "--out", tmp_path / "x", cwd=ROOT,
                         env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "apt-get install graphviz" in result.stderr and "--format dot" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- diagram polish ---------------------------------------------------------------------

DELTA_CELL = """\
# A minimal gated unit that reports how much its state moved.
cell delta
input x
state h
output d
f = sigmoid(linear(x, h[t-1]))             # forget valve
n = tanh(linear(x, f * h[t-1]))            # candidate
h = f * h[t-1] + (1 - f) * n               # keep <old> & add new
d = h - h[t-1]                             # change
e = relu(x) - 1                            # unused on purpose
"""


def delta_cell():
    return lstm_graph.compile_source(DELTA_CELL, "delta.cell")


@pytest.mark.parametrize("style", STYLES)
def test_a_number_an_op_alone_reads_is_written_on_its_side_of_the_op(style):
    gru = nodes(render(lstm_graph.load_cell("gru"), style).source)
    assert "1" not in gru and "1−" in gru["h.sub"]["label"]  # 1 - z: no loose constant
    mine = nodes(render(delta_cell(), style).source)
    assert "−1" in mine["e"]["label"]  # relu(x) - 1


@pytest.mark.parametrize("style", STYLES)
def test_the_operand_a_subtraction_takes_away_is_marked_on_its_edge(style):
    drawn = edges(render(delta_cell(), style).source)
    signs = {a["tooltip"]: a.get("headlabel", "") + a.get("taillabel", "")
             for _, _, a in drawn if a.get("tooltip", "").endswith("→ d")}
    assert "−" in signs["h[t-1] → d"] and "−" not in signs["h → d"]


@needs_dot
@pytest.mark.parametrize("style", STYLES)
def test_captions_with_markup_characters_are_escaped(style):
    dot = render(delta_cell(), style, highlight="h", stages=True)
    assert "keep &lt;old&gt; &amp; add new" in dot.source
    assert b"keep &lt;old&gt; &amp; add new" in to_bytes(dot, "svg")  # dot accepted it


@needs_dot
@pytest.mark.parametrize("style", STYLES)
def test_backslashes_in_captions_and_names_are_drawn_as_written(style, tmp_path):
    """Graphviz reads ``\\N`` in a label as the node's name, ``\\G`` as the graph's."""
    path = tmp_path / "q\\G.cell"
    path.write_text("input x\nstate h\noutput h\n"
                    "h = tanh(linear(x, h[t-1]))  # keep \\N, \\G and \\\n")
    cell = lstm_graph.load_cell(path)
    svg = to_bytes(render(cell, style), "svg").decode()
    assert ">keep \\N, \\G and \\<" in svg and ">q\\G<" in svg


@pytest.mark.parametrize("style", STYLES)
def test_the_legend_explains_the_highlight_colour_and_stage_marks_when_shown(style):
    cell = lstm_graph.load_cell("peephole_lstm")
    plain = nodes(render(cell, style).source)["[legend]"]["label"]
    assert "path of" not in plain and "stage" not in plain
    shown = nodes(render(cell, style, highlight="forget", stages=True).source)["[legend]"]
    assert palette.HIGHLIGHT in shown["label"] and "path of forget" in shown["label"]
    assert palette.stage_mark(1) in shown["label"] and "stage" in shown["label"]



@pytest.mark.parametrize("style", STYLES)
def test_a_value_named_legend_is_drawn_as_itself_beside_the_legend(style):
    cell = lstm_graph.compile_source("input x\nstate c, h\noutput h\n"
                                     "legend = sigmoid(linear(x, h[t-1]))\n"
                                     "c = legend * c[t-1] + tanh(linear(x, h[t-1]))\n"
                                     "h = tanh(c) * legend\n", "leg.cell")
    source = render(cell, style).source
    drawn = nodes(source)
    assert ">σ<" in drawn["legend"]["label"] and "TABLE" not in drawn["legend"]["label"]
    assert "<TABLE" in drawn["[legend]"]["label"].upper()
    assert any("legend" in pair for pair in ((s, d) for s, d, _ in edges(source)))

def test_pipe_style_runs_h_along_its_own_line_from_the_left_to_the_right():
    source = render(lstm_graph.load_cell("lstm"), "pipe").source
    line = source.split("subgraph bus {")[1].split("}")[0]
    assert '"h[t-1]"' in line and '"h[t]"' in line  # in and out on the line's row
    assert line.index('"h[t-1]"') < line.index('"[bus f]"')
    by_pair = {(s, d): a for s, d, a in edges(source)}
    assert "style" in by_pair["h[t-1]", "[bus f]"]  # enters the bus, dashed
    assert ("[bus o]", "h[t]") in by_pair  # the line ends right of the bus
    top = source.split("subgraph pipe {")[1].split("}")[0]
    assert '"[out h]"' in top  # and leaves upwards too, as the output


def test_cell_style_gives_every_reader_of_an_input_its_own_label():
    for name in lstm_graph.builtin_names():
        cell = lstm_graph.load_cell(name)
        drawn = edges(render(cell, "cell").source)
        layers = {n.id for n in build_scene(cell.schedule).nodes.values() if n.role == "layer"}
        for src, dst, attrs in drawn:  # no edge crosses from a shared node into a layer
            assert attrs.get("style") == "invis" or \
                not ({src, dst} & {"x", "h[t-1]"} and {src, dst} & layers), (name, src)
        for src, dst, attrs in drawn:
            if src.startswith("[in "):
                assert src == f"[in {dst}]" and attrs["tailport"].endswith(":e")


def test_cell_style_old_memory_leaves_c_t_minus_1_beside_the_memory_sum_not_the_cell():
    """The finding: three dashed edges left the Cell's left side across the ``+ → Cell``
    edge. The old memory now leaves a label c_{t-1} in the rank of the op that makes the
    new memory, on the side of its readers; nothing dashed touches the Cell."""
    source = render(lstm_graph.load_cell("peephole_lstm"), "cell").source
    drawn = edges(source)
    assert not [a for s, d, a in drawn if "[cell]" in (s, d) and a.get("style") == "dashed"]
    old = sorted(a["tooltip"] for s, d, a in drawn if "c[t-1]" in (s, d) and
                 a.get("style") == "dashed")
    assert old == ["c[t-1] → c.mul", "c[t-1] → f.linear", "c[t-1] → i.linear"]
    rank = source.split("subgraph memory {")[1].split("}")[0]
    assert "rank=same" in rank and '"c[t-1]" -> c [style=invis]' in rank  # above the +
    gru = render(lstm_graph.load_cell("gru"), "cell").source
    # the GRU's layers read h[t-1] beside them; only the memory pipe reads it from h_{t-1},
    # which sits below the +, since z * h[t-1] is its second operand
    assert [a["tooltip"] for s, d, a in edges(gru) if "h[t-1]" in (s, d) and
            a.get("style") == "dashed"] == ["h[t-1] → h.mul2"]
    assert 'h -> "h[t-1]" [style=invis]' in gru.split("subgraph memory {")[1]


@pytest.mark.parametrize("cell", cells(), ids=lambda c: c.name)
def test_cell_style_carries_the_memory_to_the_next_step_on_one_labelled_arc(cell):
    drawn = edges(render(cell, "cell").source)
    memory = build_scene(cell.schedule).memory_state()
    assert not [e for e in drawn if e[0] == e[1]]  # no self-loop on the Cell
    (arc,) = [a for s, d, a in drawn if a.get("style") == "dotted"]
    assert [(s, d) for s, d, a in drawn if a is arc] == [(f"{memory}[t-1]", "[cell]")]
    assert arc["dir"] == "back" and arc["color"] == palette.NEW_STATE  # from the Cell
    assert "to the next step" in arc["label"]


@needs_dot
def test_cell_style_places_c_t_minus_1_above_the_memory_sum_and_h_t_minus_1_below(tmp_path):
    """Where dot puts them (its plain output): on the side of the old memory's readers."""
    for name, memory, above in (("peephole_lstm", "c", True), ("gru", "h", False)):
        plain = to_bytes(render(lstm_graph.load_cell(name), "cell"), "dot")
        result = subprocess.run(["dot", "-Tplain"], input=plain, capture_output=True,
                                check=True)
        y = {line.split()[1].strip('"'): float(line.split()[3])
             for line in result.stdout.decode().splitlines() if line.startswith("node ")}
        assert (y[f"{memory}[t-1]"] > y[memory]) == above, name  # plain's y grows upwards


def test_gru_pipe_style_brings_h_t_minus_1_down_the_left_onto_the_line():
    """The finding: the dashed h_{t-1} edge to the candidate's recurrent half cut across
    the middle. Layers that weigh the memory's old value now read it from the line."""
    source = render(lstm_graph.load_cell("gru"), "pipe").source
    drawn = edges(source)
    line = source.split("subgraph bus {")[1].split("}")[0]
    assert '"[line h[t-1]]"' in line
    assert line.index('"[line h[t-1]]"') < line.index('"[bus r]"')  # the far left
    from_pipe = [(d, a) for s, d, a in drawn if s == "h[t-1]" or d == "h[t-1]"]
    assert sorted(d for d, _ in from_pipe) == ["h.mul2", "h[t-1]"]  # the pipe, and down
    down = next(a for d, a in from_pipe if d == "h[t-1]")
    assert down["style"] == "dashed" and down["dir"] == "back"
    assert ("[line h[t-1]]", "b") in {(s, d) for s, d, _ in drawn}
    lstm = render(lstm_graph.load_cell("peephole_lstm"), "pipe").source
    assert "[line " not in lstm  # an LSTM's layers do not weigh c[t-1]: peepholes look up


@pytest.mark.parametrize("style", STYLES)
def test_the_legend_says_what_a_highlight_lights(style):
    cell = lstm_graph.load_cell("peephole_lstm")
    legend = {name: nodes(render(cell, style, highlight=name).source)["[legend]"]["label"]
              for name in ("memory", "forget", "output")}
    assert "path of memory: what makes c (a new state ends the step)" in legend["memory"]
    assert "path of forget: what feeds f and what it feeds, up to the new states" in \
        legend["forget"]
    assert "what feeds o, h and what they feed" in legend["output"]
    for source in ("x", "c[t-1]"):  # nothing in the step feeds them (it said it did)
        shown = nodes(render(cell, style, highlight=source).source)["[legend]"]["label"]
        assert f"path of {source}: what {source} feeds, up to the new states" in shown
    scene = build_scene(cell.schedule)
    memory = highlighted(scene, "memory")
    assert not {"o", "h", "h.tanh"} & memory  # it lights what it says, no more


# -- the render command -------------------------------------------------------------------

@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@needs_dot
def test_render_without_out_writes_both_styles_here_and_one_style_to_stdout(in_tmp, cli_run):
    result = cli_run("render", "lstm")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["lstm.cell.svg", "lstm.pipe.svg"]
    assert "wrote lstm.pipe.svg" in result.stderr and result.stdout == ""
    for path in in_tmp.iterdir():
        path.unlink()
    result = cli_run("render", "lstm", "--style", "both")  # the default, said: the same
    assert sorted(p.name for p in in_tmp.iterdir()) == ["lstm.cell.svg", "lstm.pipe.svg"]
    result = cli_run("render", "lstm", "--style", "cell")
    assert result.stdout.startswith("<?xml")
    ET.fromstring(result.stdout.encode())


def test_render_both_styles_to_stdout_is_a_usage_error_about_styles(cli_fails):
    stderr = cli_fails("render", "lstm", "--style", "both", "--out", "-", code=2)
    assert "--style both draws two diagrams" in stderr and "--format dot" not in stderr


@needs_dot
def test_render_writes_every_diagram_or_none(in_tmp, cli_fails):
    """A second target that cannot be written (a directory) is found before the first is
    written: no half of a pair left behind."""
    (in_tmp / "b.cell.svg").mkdir()
    assert "b.cell.svg: is a directory" in cli_fails("render", "lstm", "--out", "b")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["b.cell.svg"]


def test_render_out_dash_is_stdout_and_an_empty_highlight_is_wrong_usage(in_tmp, cli_run,
                                                                          cli_fails):
    shown = cli_run("render", "lstm", "--style", "cell", "--format", "dot", "--out", "-")
    assert shown.stdout.startswith("digraph") and list(in_tmp.iterdir()) == []
    assert "both styles (the default) draw two diagrams, and stdout takes one" in cli_fails(
        "render", "lstm", "--out", "-", code=2)
    assert "/dev/null/x/coupled_lstm.pipe.dot: /dev/null is not a directory" in cli_fails(
        "render", "--all", "--out", "/dev/null/x")
    assert "--highlight is empty" in cli_fails("render", "lstm", "--highlight=", code=2)
    assert "would be a file named '-'" in cli_fails("run", "lstm", "-I", "2", "-H", "3",
                                                    "--sample", "--out", "-", code=2)
    assert list(in_tmp.iterdir()) == []


def test_render_never_makes_base_names_out_of_a_device_or_link(in_tmp, cli_run, cli_fails):
    fifo = in_tmp / "pipe"
    os.mkfifo(fifo)
    link = in_tmp / "link"
    link.symlink_to("target.svg")
    for out in (fifo, link):
        assert "two diagrams need two files" in cli_fails("render", "lstm", "--out", out, code=2)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["link", "pipe"]
    cli_run("render", "lstm", "--style", "pipe", "--out", link)
    assert (in_tmp / "target.svg").read_text().startswith("<?xml")


def test_render_takes_the_format_from_the_suffix_of_out(in_tmp, cli_run):
    cli_run("render", "lstm", "--style", "cell", "--out", "foo.png")
    assert [p.name for p in in_tmp.iterdir()] == ["foo.png"]
    assert (in_tmp / "foo.png").read_bytes().startswith(b"\x89PNG")
    cli_run("render", "lstm", "--out", "both.pdf")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["both.cell.pdf", "both.pipe.pdf",
                                                       "foo.png"]


def test_render_refuses_a_suffix_that_contradicts_the_format_or_is_not_ours(in_tmp, cli_fails):
    assert "names a .svg file, but --format png" in cli_fails(
        "render", "lstm", "--out", "a.svg", "--format", "png", code=2)
    assert "not .jpg" in cli_fails("render", "lstm", "--out", "a.jpg", code=2)
    assert "Error: --out is empty; give a file, a base name or a directory" in cli_fails(
        "render", "lstm", "--out", "", code=2)
    assert list(in_tmp.iterdir()) == []


def test_render_creates_output_directories(in_tmp, cli_run):
    cli_run("render", "gru", "--format", "dot", "--out", "gallery/")
    assert sorted(p.name for p in (in_tmp / "gallery").iterdir()) == ["gru.cell.dot",
                                                                     "gru.pipe.dot"]
    cli_run("render", "rnn", "--style", "pipe", "--out", "deep/er/r.dot")
    assert (in_tmp / "deep/er/r.dot").is_file()


@needs_dot
def test_render_all_checks_every_file_before_it_writes_one(in_tmp, cli_fails):
    """A directory where the 28th file goes left 27 written; a file given as --out was
    'cannot create the directory'."""
    (in_tmp / "g" / "rnn.cell.svg").mkdir(parents=True)
    assert "rnn.cell.svg: is a directory" in cli_fails("render", "--all", "--out", "g/")
    assert [p.name for p in (in_tmp / "g").iterdir()] == ["rnn.cell.svg"]
    (in_tmp / "afile").write_text("mine")
    assert "--out afile is not a directory; --all writes the gallery into one" in cli_fails(
        "render", "--all", "--out", "afile", code=2)
    assert (in_tmp / "afile").read_text() == "mine"
    # a diagram's name, not there yet: a directory named gallery.svg was made
    assert "--out gallery.svg is not a directory" in cli_fails(
        "render", "--all", "--out", "gallery.svg", code=2)
    assert not (in_tmp / "gallery.svg").exists()


@needs_dot
def test_render_all_creates_its_directory(in_tmp, cli_run):
    cli_run("render", "--all", "--out", "new/gallery")
    assert {p.name for p in (in_tmp / "new/gallery").iterdir()} == \
        {f"{name}.{kind}" for name in gallery() for kind in ("dot", "svg")}


def test_stage_marks_past_ten_are_written_in_digits():
    """⑪–⑳ drew as empty boxes in the fonts Graphviz finds on common systems."""
    assert [palette.stage_mark(k) for k in (1, 10, 11, 23)] == ["①", "⑩", "(11)", "(23)"]


def test_the_cell_box_grows_to_hold_a_long_memory_name():
    """It was 76 points whatever the name: cell_memory_state ran past it onto the edges."""
    source = ("cell long\ninput x\nstate h, cell_memory_state\noutput h\n"
              "f = sigmoid(linear(x, h[t-1]))\n"
              "cell_memory_state = f * cell_memory_state[t-1] + tanh(linear(x, h[t-1]))\n"
              "h = tanh(cell_memory_state)\n")
    cell = lstm_graph.compile_source(source, "long.cell")
    widths = [int(w) for w in re.findall(r'TD WIDTH="(\d+)" HEIGHT="60"',
                                         render(cell, "cell").source)]
    assert widths and widths[0] >= 7 * len("cell_memory_state")
    assert 'TD WIDTH="76" HEIGHT="60"' in render(lstm_graph.load_cell("lstm"), "cell").source


def test_a_pipe_style_caption_fades_with_its_edge_under_a_highlight():
    """Captions kept their colour beside faded edges ("output" under --highlight forget);
    the cell style's faded."""
    source = render(lstm_graph.load_cell("peephole_lstm"), "pipe", highlight="forget").source
    assert f'COLOR="{palette.FADED}">output<' in source
    assert f'COLOR="{palette.CAPTION}">memory pipe<' in source  # its edge is on the path
    plain = render(lstm_graph.load_cell("peephole_lstm"), "pipe").source
    assert f'COLOR="{palette.CAPTION}">output<' in plain
