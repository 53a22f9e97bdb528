"""Shared helpers for the tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from lstm_graph import CellError, compile_source
from lstm_graph.executors.buildcache import compiler
from lstm_graph.export.runtime import onnxruntime

HEADER = "cell t\ninput x\nstate c, h\noutput h\n"


def pytest_configure(config: pytest.Config) -> None:
    """The suite never touches the user's build cache: builds go to a directory of its own
    (the doctests under lstm_graph/ included), removed at the end. pytest-xdist's workers
    share the one their controller made (they inherit its environment): a library that
    tests on both workers need is compiled once (a run kept apart built 58 of its 782
    libraries twice), as two processes of a user share a cache. onnxruntime is imported
    as the product imports it, leaving nothing in the user's cache or temporary directory."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        os.environ["LSTM_GRAPH_CACHE"] = tempfile.mkdtemp(prefix="lstm-graph-test-cache-")
    try:  # before any test module imports it: it would write into ~/.cache otherwise
        onnxruntime()
    except ImportError:
        pass


def pytest_unconfigure(config: pytest.Config) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        shutil.rmtree(os.environ.pop("LSTM_GRAPH_CACHE", ""), ignore_errors=True)

def interrupt_after(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
    """``module.name`` sends this process SIGINT right after it returns: a Ctrl-C at that
    very moment (the window between making a file and the code that removes it)."""
    made = getattr(module, name)

    def interrupted(*args, **kwargs):
        found = made(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return found

    monkeypatch.setattr(module, name, interrupted)


needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot program is not installed")

#: Tests of the native executor need a C compiler; without one they skip, saying so.
needs_compiler = pytest.mark.skipif(
    compiler() is None,
    reason="no C compiler (cc, gcc, clang or $CC): the native executor is off here")


def invoke_cli(*args, input: str | None = None, env: dict[str, str] | None = None):
    """The command line in this process: click's result, with ``.exit_code``, ``.stdout``
    and ``.stderr`` apart (arguments may be paths); ``input`` is fed to stdin, ``env`` sets
    environment variables for this call only. The ``cli`` fixture; called directly only
    where a fixture cannot be asked for (a module-scoped fixture)."""
    from click.testing import CliRunner

    from lstm_graph.cli.commands import group

    return CliRunner(env=env).invoke(group, [str(a) for a in args], input=input)


@pytest.fixture
def cli():
    """The command line in this process: ``cli(*args)`` is :func:`invoke_cli`."""
    return invoke_cli


@pytest.fixture
def cli_run(cli):
    """``cli`` that must succeed: a failure shows what the command said."""
    def run(*args, input: str | None = None, env: dict[str, str] | None = None):
        result = cli(*args, input=input, env=env)
        assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)
        return result

    return run


@pytest.fixture
def cli_fails(cli):
    """``cli`` that must fail the way a user's mistake does: exit ``code`` (1, or 2 for
    usage), no traceback and no exception escaping the command; gives stderr, for the test
    to check the message."""
    def fails(*args, code: int = 1, input: str | None = None,
              env: dict[str, str] | None = None) -> str:
        result = cli(*args, input=input, env=env)
        assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
        assert "Traceback" not in result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            result.exception
        return result.stderr

    return fails


@pytest.fixture
def cli_refused(cli_fails, tmp_path):
    """``cli_fails`` (exit 1) writing to ``tmp_path/out/y.npz``: a refused command leaves no
    output, not even the directory it would have made (outputs are whole or absent)."""
    def refused(*args, env: dict[str, str] | None = None) -> str:
        out = tmp_path / "out" / "y.npz"
        stderr = cli_fails(*args, "--out", out, env=env)
        assert not out.parent.exists(), sorted(out.parent.iterdir())
        return stderr

    return refused


#: How a test starts the command line as a process of its own (``cli_process``, Popen).
CLI_COMMAND = [sys.executable, "-m", "lstm_graph.cli"]


@pytest.fixture
def cli_process():
    """The command line as a separate process, for what ``cli`` cannot show: a fresh
    interpreter (hash seeds, imports), its own working directory, environment variables
    a child program inherits (PATH, limits), real file descriptors and signals.
    ``cli_process(*args, cwd=...)`` gives the CompletedProcess; ``env`` is added to this
    environment; ``text=False`` keeps stdout and stderr as bytes."""
    def run(*args, cwd: str | os.PathLike[str], env: dict[str, str] | None = None,
            timeout: float = 120, text: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI_COMMAND, *map(str, args)], cwd=cwd, capture_output=True,
                              text=text, timeout=timeout, env={**os.environ, **(env or {})})

    return run


def executor_params(executors):
    """``executors`` as pytest params, "native" marked to skip without a C compiler."""
    return [pytest.param(e, marks=needs_compiler) if e == "native" else e for e in executors]


def cell_errors(body: str, header: str = HEADER) -> list[tuple[int, int, str]]:
    """``(line, col, message)`` of every error a cell source raises (test helper)."""
    with pytest.raises(CellError) as info:
        compile_source(header + textwrap.dedent(body), "t.cell")
    return [(d.line, d.col, d.message) for d in info.value.diagnostics if d.severity == "error"]


# Hypothesis profiles: CI runs the fuzzers long enough to matter (issue: at least
# 2,000 examples); HYPOTHESIS_PROFILE=long runs them for a night's worth locally.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile("ci", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=50_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "dev"))
