"""The explorer page in a real browser: Chromium from the system, driven by Playwright.

``python3 tasks.py test`` installs Chromium through the system package manager
(Playwright's own browser download cannot reach its servers here); where it is
missing, or Playwright is, these tests skip, saying why. One browser serves the
whole module; every page is opened from disk with every request routed, and any
request that is not ``file:`` or ``data:`` fails the test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_dot

import lstm_graph
from lstm_graph.explore import Run, build_page
from lstm_graph.render import classic, pipe
from lstm_graph.render.scene import build_scene, highlighted
from lstm_graph.render.values import bins

CHROMIUM = next((path for path in map(shutil.which, ("chromium", "chromium-browser")) if path),
                None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LIT = {"pipe": pipe.lit_nodes, "cell": classic.lit_nodes}

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

pytestmark = [
    needs_dot,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (python3 tasks.py "
                       "test installs it with the system package manager)"),
    pytest.mark.skipif(sync_playwright is None, reason="Playwright is not installed "
                       "(pip install playwright; it is in the test extras)"),
]

USER_CELL = """\
# A cell of our own: two memories, one fast and one slow, mixed into the output.
cell two_speed
input x
state fast, slow, h
output h
preset slow: s, slow
k = sigmoid(linear(x, h[t-1]))                       # keep valve
fast = k * fast[t-1] + (1 - k) * tanh(linear(x))     # fast memory
s = sigmoid(linear(h[t-1], peep(slow[t-1])))         # slow valve
slow = s * slow[t-1] + (1 - s) * fast                # slow memory
h = tanh(linear(fast, slow))                         # output
"""


def cells() -> dict[str, lstm_graph.Cell]:
    return {"peephole_lstm": lstm_graph.load_cell("peephole_lstm"),
            "gru": lstm_graph.load_cell("gru"),
            "two_speed": lstm_graph.compile_source(USER_CELL, "two_speed.cell")}


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Each cell's page on disk, with the trace it embeds: name -> (path, cell, values)."""
    folder = tmp_path_factory.mktemp("pages")
    made = {}
    for name, cell in cells().items():
        runner = cell.compile(input_size=3, hidden_size=6, seed=4)
        x = np.random.default_rng(7).standard_normal((12, 3, 3)).astype("float32")
        values = runner.trace(x)
        initial = {s: np.zeros((3, 6), "float32") for s in cell.graph.states}
        path = folder / f"{name}.html"
        path.write_text(build_page(Run(cell, values, x, initial, runner.dtype)), "utf-8")
        made[name] = (path, cell, values)
    return made


def page_of(cell, shape, seed: int, path: Path) -> Path:
    """``path``, holding the page of ``cell`` (H = 4, weights of seed 1) run from zero ``h``
    on x of ``shape`` drawn with ``seed``."""
    runner = cell.compile(input_size=shape[2], hidden_size=4, seed=1)
    x = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    path.write_text(build_page(Run(cell, runner.trace(x), x, {
        "h": np.zeros((shape[1], 4), "float32")}, runner.dtype)), "utf-8")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


class Opened:
    """A page opened from disk, with what it logged and asked of the network."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 950})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.route("**/*", self._route)
        self.page.goto(path.as_uri())

    def _route(self, route) -> None:
        url = route.request.url
        self.requests.append(url)
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            route.abort()

    def svg(self, style: str) -> str:
        return f"svg[data-style={style}]"

    def strip(self, style: str, name: str) -> list[float]:
        """The numbers a node's strip shows now (one cell per unit here: H = 6)."""
        texts = self.page.eval_on_selector_all(
            f'{self.svg(style)} g[data-node="{name}"] polygon.u',
            "cells => cells.map(c => c.dataset.v)")
        return [float(t) for t in texts]

    def classes(self, style: str, kind: str) -> set[str]:
        return set(self.page.eval_on_selector_all(
            f"{self.svg(style)} g.node.{kind}", "nodes => nodes.map(n => n.dataset.id)"))


@pytest.fixture
def opened(browser, pages, request):
    """A fresh tab on the page of ``request.param`` (a cell name)."""
    tab = Opened(browser, pages[request.param][0])
    yield tab
    tab.page.close()


@pytest.mark.parametrize("opened", list(cells()), indirect=True)
def test_the_page_loads_with_no_error_and_no_request_and_draws_the_cell(opened, pages):
    page = opened.page
    assert opened.errors == []
    assert [u for u in opened.requests if not u.startswith(("file:", "data:"))] == []
    assert page.is_visible("svg[data-style=pipe]") and not page.is_visible(
        "svg[data-style=cell]")
    assert page.eval_on_selector_all("svg.diagram g.node", "n => n.length") > 20
    page.click(".seg[data-style=cell]")
    assert page.is_visible("svg[data-style=cell]")
    assert page.eval_on_selector_all(".heatmaps canvas", "c => c.length") == \
        len(opened.page.evaluate("Object.keys(JSON.parse(document.getElementById("
                                 "'lstm-graph-trace').textContent).values)"))
    assert opened.errors == []


@pytest.mark.parametrize("opened", ["peephole_lstm"], indirect=True)
def test_moving_the_time_control_shows_the_trace_at_that_step(opened, pages):
    _, cell, values = pages["peephole_lstm"]
    page = opened.page
    assert opened.strip("pipe", "o") == pytest.approx(values["o"][0, 0], rel=1e-6)
    page.eval_on_selector("#time", "el => { el.value = 7; "
                          "el.dispatchEvent(new Event('input')); }")
    assert page.text_content("#tlabel") == "t = 7 of 12"
    for name in cell.graph.assignments:
        assert opened.strip("pipe", name) == pytest.approx(values[name][6, 0], rel=1e-6)
    page.keyboard.press("ArrowRight")  # the keyboard moves it too
    page.select_option("#batch", "2")  # and the sequence
    for style in ("pipe", "cell"):
        assert opened.strip(style, "c") == pytest.approx(values["c"][7, 2], rel=1e-6)
    page.click("#prev")
    assert opened.strip("pipe", "h") == pytest.approx(values["h"][6, 2], rel=1e-6)


@pytest.mark.parametrize("opened", list(cells()), indirect=True)
def test_the_stage_player_lights_the_nodes_in_schedule_order(opened, pages):
    _, cell, _ = pages[opened.page.url.rsplit("/", 1)[1].removesuffix(".html")]
    scene = build_scene(cell.schedule)
    page = opened.page
    page.clock.install()
    page.reload()
    page.click("#stage-play")
    for number, names in enumerate(cell.schedule.stages, start=1):
        now = opened.classes("pipe", "now")
        assert now == {n.id for n in scene.nodes.values()
                       if n.stage == number and n.role in ("layer", "op")}
        assert set(names) <= now  # the stage's assignments glow
        assert opened.classes("pipe", "later") == {
            n.id for n in scene.nodes.values() if n.stage > number and n.role in ("layer", "op")}
        page.clock.run_for(900)
    assert opened.classes("pipe", "now") == set()  # played through: the step is whole
    assert opened.errors == []


@pytest.mark.parametrize("opened", ["peephole_lstm"], indirect=True)
def test_the_peephole_lstm_output_valve_lights_after_the_new_memory(opened):
    page = opened.page
    page.click("#stage-next")
    page.click("#stage-next")
    assert "c" in opened.classes("cell", "now") and "o" in opened.classes("cell", "later")
    page.click("#stage-next")
    assert "o" in opened.classes("cell", "now") and "c" in opened.classes("cell", "done")


@pytest.mark.parametrize("opened", ["peephole_lstm"], indirect=True)
def test_a_stage_picked_from_the_list_stops_the_player(opened):
    """The finding: a stage clicked (or chosen with Enter) in the list while the stages
    played was passed over by the player's next tick; ‹ and › stopped it already."""
    page = opened.page
    page.clock.install()
    page.reload()
    for pick in ("click", "Enter"):
        page.click("#stage-play")
        page.clock.run_for(900)
        first = page.locator("#stages li").first
        if pick == "click":
            first.click()
        else:
            first.focus()
            page.keyboard.press("Enter")
        shown = opened.classes("pipe", "now")
        page.clock.run_for(3000)
        assert opened.classes("pipe", "now") == shown and "o" in opened.classes("pipe",
                                                                                 "later")
    assert opened.errors == []


@pytest.mark.parametrize("opened", list(cells()), indirect=True)
def test_clicking_a_node_highlights_the_path_render_highlight_draws(opened, pages):
    _, cell, _ = pages[opened.page.url.rsplit("/", 1)[1].removesuffix(".html")]
    scene = build_scene(cell.schedule)
    page = opened.page
    target = list(cell.graph.assignments)[0]
    for style in ("pipe", "cell"):
        page.click(f".seg[data-style={style}]")
        page.evaluate("scrollTo(0, 0)")  # the diagram right under the controls
        page.click(f'{opened.svg(style)} g[data-id="{target}"]')
        expected = LIT[style](scene, frozenset(highlighted(scene, target)))
        drawn = set(page.eval_on_selector_all(f"{opened.svg(style)} g.node[data-id]",
                                              "n => n.map(x => x.dataset.id)"))
        assert opened.classes(style, "lit") == expected & drawn
        assert "[legend]" in drawn and "[legend]" not in opened.classes(style, "dim")
        edges = page.eval_on_selector_all(
            f"{opened.svg(style)} g.edge",
            "e => e.map(x => [x.dataset.a, x.dataset.b, x.classList.contains('lit')])")
        for a, b, lit in edges:
            assert lit == (a in expected and b in expected), (style, a, b)
        page.keyboard.press("Escape")
        assert opened.classes(style, "lit") == set()
    preset = next(iter(cell.graph.presets))
    page.click(f'#presets button[data-preset="{preset}"]')
    assert opened.classes("cell", "lit") == \
        classic.lit_nodes(scene, frozenset(highlighted(scene, preset))) & drawn


@pytest.mark.parametrize("opened", list(cells()), indirect=True)
def test_hovering_a_strip_shows_the_exact_numbers(opened, pages):
    _, cell, values = pages[opened.page.url.rsplit("/", 1)[1].removesuffix(".html")]
    name = list(cell.graph.assignments)[-1]
    opened.page.hover(f'svg[data-style=pipe] g[data-node="{name}"] polygon.u[data-u="2"]')
    tip = opened.page.text_content("#tip")
    assert f"{name} =" in tip and str(np.float32(values[name][0, 0, 2])) in tip
    assert opened.page.eval_on_selector("#tip .hot", "e => e.textContent").startswith("2")


@pytest.mark.parametrize("opened", ["peephole_lstm"], indirect=True)
def test_the_keyboard_reaches_a_nodes_numbers_and_its_path(opened, pages):
    """A node's numbers and its path were the mouse's alone: Tab now focuses each value
    node (listing its numbers, as hovering does) and Enter lights its path."""
    _, cell, values = pages["peephole_lstm"]
    page = opened.page
    scene = build_scene(cell.schedule)
    focusable = page.eval_on_selector_all('svg[data-style=pipe] g.node[tabindex="0"]',
                                          "n => n.map(x => x.dataset.node || x.dataset.id)")
    assert set(cell.graph.assignments) <= set(focusable)
    page.focus('svg[data-style=pipe] g[data-node="f"]')
    detail = page.text_content("#detail")
    assert "f =" in detail and str(np.float32(values["f"][0, 0, 0])) in detail
    assert page.is_visible("#tip") and page.text_content("#tip") == detail
    page.keyboard.press("Enter")
    assert opened.classes("pipe", "lit") == \
        pipe.lit_nodes(scene, frozenset(highlighted(scene, "f"))) & set(
            page.eval_on_selector_all("svg[data-style=pipe] g.node[data-id]",
                                      "n => n.map(x => x.dataset.id)"))
    page.keyboard.press("Tab")  # on to the next node: the tip follows, the first one's goes
    assert "f =" not in page.text_content("#detail")
    assert opened.errors == []


@pytest.mark.parametrize("opened", ["peephole_lstm"], indirect=True)
def test_a_tip_in_view_follows_the_step_the_keys_move_to(opened, pages):
    """The tip kept the numbers of the step it was opened at while the arrow keys (or the
    player) moved the step: it follows, as the side panel does."""
    _, cell, values = pages["peephole_lstm"]
    opened.page.hover('svg[data-style=pipe] g[data-node="o"] polygon.u[data-u="2"]')
    for _ in range(5):
        opened.page.keyboard.press("ArrowRight")
    tip = opened.page.text_content("#tip")
    assert "step 6, sequence 0" in tip and str(np.float32(values["o"][5, 0, 2])) in tip
    assert tip == opened.page.text_content("#detail")


def test_long_names_wrap_inside_the_page(browser, tmp_path):
    """A 120-character cell name and a 150-character value name ran the title and the
    stage list off a 1400-pixel page (2235 pixels wide)."""
    long = "v" * 150
    source = (f"cell {'n' * 120}\ninput x\nstate h\noutput h\n"
              f"{long} = tanh(linear(x, h[t-1]))\nh = {long} * 0.5\n")
    cell = lstm_graph.compile_source(source, "long.cell")
    tab = Opened(browser, page_of(cell, (3, 1, 3), 1, tmp_path / "long.html"))
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= 1400
    assert tab.page.eval_on_selector_all(
        ".stages li", "items => items.every(i => i.scrollWidth <= i.clientWidth)")
    tab.page.hover('svg[data-style=pipe] g[data-node="h"] polygon.u[data-u="0"]')
    assert tab.page.eval_on_selector("#tip", "t => t.scrollWidth <= t.clientWidth")  # ran out
    assert tab.errors == []
    tab.page.screenshot(path=str(tmp_path / "long.png"), full_page=True)
    tab.page.close()


def test_screenshots_of_three_cells(browser, pages, tmp_path):
    """One look at each page (saved in the test's temporary folder), as a reader sees it."""
    for name, (path, _, _) in pages.items():
        tab = Opened(browser, path)
        tab.page.keyboard.press("ArrowRight")
        tab.page.click("#stage-next")
        shot = tmp_path / f"{name}.png"
        tab.page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000 and tab.errors == []
        tab.page.close()


def test_float64_numbers_fit_their_columns(browser, tmp_path):
    """Seventeen digits ran over the next column's index and number in the tip and the
    panel, in float64; the columns are now as wide as the widest number shown."""
    cell = lstm_graph.load_cell("gru")
    runner = cell.compile(input_size=3, hidden_size=33, seed=4, dtype="float64")
    x = np.random.default_rng(7).standard_normal((4, 2, 3))
    path = tmp_path / "gru64.html"
    path.write_text(build_page(Run(cell, runner.trace(x), x, {"h": np.zeros((2, 33))},
                                   runner.dtype)), "utf-8")
    tab = Opened(browser, path)
    tab.page.hover('svg[data-style=pipe] g[data-node="h"] polygon.u[data-u="2"]')
    spans = tab.page.eval_on_selector_all(
        "#tip .grid span", "s => s.map(e => [e.scrollWidth, e.clientWidth, e.textContent])")
    assert len(spans) > 8 and any(len(text) > 20 for _, _, text in spans)
    assert all(scroll <= width for scroll, width, _ in spans), spans
    assert tab.errors == []
    tab.page.close()


def test_hovering_a_strip_cell_of_many_units_lists_them_all(browser, tmp_path):
    """A strip has 32 cells: one of 1,400 units holds 43 or 44 of them, and the tip listed
    48 numbers from 8 before the cell's first, so its last units were never listed."""
    cell = lstm_graph.load_cell("rnn")
    runner = cell.compile(input_size=3, hidden_size=1400, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 3)).astype("float32")
    path = tmp_path / "wide.html"
    path.write_text(build_page(Run(cell, runner.trace(x), x, {"h": np.zeros((1, 1400),
                                                                             "float32")},
                                   runner.dtype)), "utf-8")
    tab = Opened(browser, path)
    first, stop = bins(1400)[31]
    tab.page.hover('svg[data-style=pipe] g[data-node="h"] polygon.u[data-u="31"]')
    hot = tab.page.eval_on_selector_all("#tip .grid span.hot", "s => s.map(e => "
                                        "e.querySelector('i').textContent)")
    assert hot == [str(k) for k in range(first, stop)] and stop - first > 40
    assert tab.errors == []
    tab.page.close()


def test_every_state_gets_a_gradient_chart_even_one_no_gradient_reaches(browser, tmp_path):
    """A state whose gradient is 0 at every step was left out without a word; a size at
    one step alone, with none beside it, was a line of no length: now a point."""
    cell = lstm_graph.load_cell("gru")
    runner = cell.compile(input_size=3, hidden_size=4, seed=4)
    x = np.random.default_rng(7).standard_normal((5, 2, 3)).astype("float32")
    alone = np.zeros((5, 2))
    alone[4] = 0.5  # only the last step: as a state the loss reads at that step alone
    path = tmp_path / "flow.html"
    path.write_text(build_page(Run(cell, runner.trace(x), x, {"h": np.zeros((2, 4), "float32")},
                                   runner.dtype, {"h": alone})), "utf-8")
    tab = Opened(browser, path)
    charts = tab.page.eval_on_selector_all("#gradients svg", "s => s.map(e => e.outerHTML)")
    assert len(charts) == 1 and "circle" in charts[0] and 'r="2.5"' in charts[0]
    tab.page.close()
    path.write_text(build_page(Run(cell, runner.trace(x), x, {"h": np.zeros((2, 4), "float32")},
                                   runner.dtype, {"h": np.zeros((5, 2))})), "utf-8")
    tab = Opened(browser, path)
    texts = tab.page.eval_on_selector_all("#gradients > *", "s => s.map(e => e.textContent)")
    assert texts == ["‖∂L/∂h‖: 0 at every step of this sequence"] and tab.errors == []
    # said as text, not drawn in a chart 24 px tall stretched to a chart's 140
    assert tab.page.eval_on_selector("#gradients > *", "e => e.tagName") == "P"
    tab.page.close()


#: A named pre-activation, then its activation: one box draws both values.
FOLDED = "cell folded\ninput x\nstate h\noutput h\na = linear(x, h[t-1])\nh = tanh(a)\n"


def test_a_box_of_two_values_lights_in_both_stages_and_shows_both(browser, tmp_path):
    """The box drawing ``a`` and ``h`` was tagged with ``a``'s stage alone: nothing glowed
    while ``h``'s stage played, and hovering it showed ``h``'s numbers only."""
    cell = lstm_graph.compile_source(FOLDED, "folded.cell")
    runner = cell.compile(input_size=3, hidden_size=4, seed=1)
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype("float32")
    tab = Opened(browser, page_of(cell, x.shape, 2, tmp_path / "folded.html"))
    page = tab.page
    for stage in (1, 2):
        page.click("#stage-next")
        assert "h" in tab.classes("pipe", "now"), stage
    page.hover(f'{tab.svg("pipe")} g[data-id="h"] text')
    detail = page.text_content("#detail")
    assert "h = tanh(a)" in detail and "a = linear" in detail
    # each heatmap states a scale that holds its largest value (rounded up, not to nearest)
    values = runner.trace(x)
    for name in ("a", "h"):
        caption = page.text_content(f'.map[data-name="{name}"] >> xpath=..')
        stated = float(caption.split("±")[1])
        assert np.abs(values[name][:, 0]).max() <= stated
    assert tab.errors == []
    tab.page.close()


@pytest.mark.parametrize("opened", ["peephole_lstm"], indirect=True)
def test_the_browser_keeps_its_shortcuts_and_the_unit_field_can_be_retyped(opened):
    """Ctrl+S started the stage player (and the page could not be saved), Alt+→ moved the
    step; a cleared unit field was rewritten to 0 at once, and 2.7 hid every chart."""
    page = opened.page
    prevented = page.evaluate("""() => ["s", "ArrowRight"].map((key) => {
        const event = new KeyboardEvent("keydown", {key, ctrlKey: key === "s",
                                                    altKey: key !== "s", cancelable: true});
        document.dispatchEvent(event);
        return event.defaultPrevented;
    })""")
    assert prevented == [False, False] and page.text_content("#tlabel") == "t = 1 of 12"
    assert opened.classes("pipe", "now") == set()
    page.fill("#unit", "")
    assert page.input_value("#unit") == ""  # left to be typed into
    page.fill("#unit", "2.7")
    assert page.eval_on_selector_all("#lines svg", "s => s.length") == 2  # c and h, unit 2
    assert "unit 2" in page.text_content("#lines")
    assert opened.errors == []


@pytest.mark.parametrize("width", [420, 375])
def test_a_narrow_window_keeps_the_time_control_on_the_page(browser, pages, width):
    """At a phone's 375 pixels the heatmaps' captions (one line each) ran the page 13
    pixels wide, their scales cut off, and the hover tip (380 pixels) off its right edge:
    the captions wrap, the tip is as wide as the window allows."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(pages["peephole_lstm"][0].as_uri())
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    box = page.eval_on_selector("#tlabel", "e => e.getBoundingClientRect().right")
    assert box <= width
    assert page.eval_on_selector_all(
        ".heatmaps figcaption", "cs => cs.every(c => c.getBoundingClientRect().right <= "
        f"{width} && c.scrollWidth <= c.clientWidth)")
    node = page.locator('svg[data-style=pipe] g[data-node="c"]')
    node.scroll_into_view_if_needed()
    node.hover()
    tip = page.locator("#tip").bounding_box()
    assert tip is not None and tip["x"] >= 0 and tip["x"] + tip["width"] <= width
    page.close()


def test_a_negative_zero_keeps_its_sign_on_the_page(browser, tmp_path):
    """Embedded as -0.0 and shown as "0" (JavaScript's String(-0))."""
    cell = lstm_graph.compile_source("cell neg\ninput x\nstate h\noutput h\nh = h[t-1] * -1\n",
                                     "neg.cell")
    tab = Opened(browser, page_of(cell, (2, 1, 3), 0, tmp_path / "neg.html"))
    assert tab.strip("pipe", "h") == [0.0] * 4
    shown = tab.page.eval_on_selector_all('svg[data-style=pipe] g[data-node="h"] polygon.u',
                                          "cells => cells.map(c => c.dataset.v)")
    assert shown == ["-0"] * 4 and tab.errors == []
    tab.page.close()
