"""In a notebook: a real one, built with nbformat and executed by nbclient on an ipykernel
kernel, whose outputs are a cell's diagram (SVG with its nodes), its schedule as the
``schedule`` command prints it, and the explorer page inline (its trace data in an iframe's
srcdoc, nothing loaded from anywhere); the inline page is opened in Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil

import pytest
from conftest import needs_dot

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the test extras")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the test extras")
pytest.importorskip("ipykernel", reason="ipykernel is in the test extras")

pytestmark = needs_dot

CODE = [
    "import numpy as np\nimport lstm_graph",
    "cell = lstm_graph.load_cell('peephole_lstm')\ncell",
    "cell.schedule",
    "runner = cell.compile(input_size=3, hidden_size=4, seed=0)\n"
    "runner.explore(np.random.default_rng(0).standard_normal((6, 2, 3)).astype('float32'))",
    "cell.render('cell')",
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code) for code in CODE]
    folder = tmp_path_factory.mktemp("notebook")
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    client.execute()
    nbformat.validate(notebook)
    return notebook


def data(notebook, index):
    """The rich output of a notebook cell: its display data by MIME type."""
    outputs = notebook.cells[index].outputs
    assert [o.output_type for o in outputs] == ["execute_result"], outputs
    return outputs[0].data


def test_a_cell_shows_its_pipe_diagram_with_its_nodes(executed):
    svg = data(executed, 1)["image/svg+xml"]
    assert svg.lstrip().startswith(("<?xml", "<svg", "<!--"))
    titles = set(re.findall(r"<title>([^<]+)</title>", svg))
    assert {"f", "i", "g", "c", "o", "h"} <= titles
    assert "forget valve" in svg


def test_a_schedule_prints_as_the_schedule_command_does(executed, cli_run):
    shown = data(executed, 2)["text/plain"]
    printed = cli_run("schedule", "peephole_lstm").stdout
    assert shown == printed.rstrip("\n")


def test_explore_shows_the_self_contained_page_inline(executed):
    shown = data(executed, 3)["text/html"]
    assert shown.startswith("<iframe") and 'sandbox="allow-scripts"' in shown
    page = html.unescape(re.search(r'srcdoc="([^"]*)"', shown).group(1))
    trace = re.search(r'<script type="application/json" id="lstm-graph-trace">(.*?)</script>',
                      page, re.DOTALL)
    assert trace is not None
    found = json.loads(trace.group(1))
    assert found["cell"] == "peephole_lstm"
    assert found["stages"] == [["f", "i", "g"], ["c"], ["o"], ["h"]]
    assert len(found["values"]["c"]) == 6  # T steps
    assert not re.search(r'(src|href)="https?:', page)  # nothing fetched


def test_the_other_style_renders_inline_too(executed):
    assert "image/svg+xml" in data(executed, 4)


CHROMIUM = next((path for path in map(shutil.which, ("chromium", "chromium-browser")) if path),
                None)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (python3 tasks.py test "
                    "installs it with the system package manager)")
def test_the_inline_page_works_in_a_browser_and_fetches_nothing(executed, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    shown = data(executed, 3)["text/html"]
    (tmp_path / "notebook.html").write_text(f"<!doctype html><html><body>{shown}</body></html>")
    requests, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))

        def route(r):
            requests.append(r.request.url)
            r.continue_() if r.request.url.startswith(("file:", "data:", "about:")) \
                else r.abort()

        page.route("**/*", route)
        page.goto((tmp_path / "notebook.html").as_uri())
        frame = page.frame_locator("iframe")
        frame.locator('svg[data-style=pipe] g[data-node="c"]').first.wait_for()
        page.screenshot(path=str(tmp_path / "notebook.png"))
        browser.close()
    assert not errors
    assert all(url.startswith(("file:", "data:", "about:")) for url in requests)


def test_an_unknown_style_is_a_mistake_said_not_a_diagram_left_out():
    import lstm_graph
    from lstm_graph.errors import RenderError
    from lstm_graph.notebook import cell_svg

    with pytest.raises(RenderError, match="unknown style 'bogus'; the styles are pipe, cell"):
        cell_svg(lstm_graph.load_cell("lstm"), "bogus")
