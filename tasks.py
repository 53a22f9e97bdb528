"""Set everything up on a fresh machine, then run the main job or the tests.

    python3 tasks.py demo    # set up, then validate, schedule, draw and run the peephole LSTM
    python3 tasks.py test    # set up, then the static checks and the whole test suite

Needs only Python 3.10+. It creates ``.venv`` and installs lstm-graph into it:
``demo`` with what the main job needs, ``test`` with the test extras too (PyTorch
CPU, onnx, onnxruntime, ...). It installs the system programs they need through
the package manager when they are missing (Graphviz's ``dot``; for ``test``
also Chromium, for the browser tests), logging the package manager's output to
``.venv/setup.log``, and says clearly what to do where it cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
LOG = VENV / "setup.log"
DEMO_OUT = ROOT / "out"

# How each package manager installs a system package, tried in this order.
_INSTALLERS = (
    ("apt-get", [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "{package}"]]),
    ("dnf", [["dnf", "install", "-y", "{package}"]]),
    ("yum", [["yum", "install", "-y", "{package}"]]),
    ("apk", [["apk", "add", "{package}"]]),
    ("pacman", [["pacman", "-S", "--noconfirm", "{package}"]]),
    ("zypper", [["zypper", "--non-interactive", "install", "{package}"]]),
    ("brew", [["brew", "install", "{package}"]]),
)


def say(message: str) -> None:
    print(f"[tasks] {message}", flush=True)


def ensure_venv(extras: str) -> None:
    """A virtual environment with lstm-graph installed (``extras``: "" or "test")."""
    if not PYTHON.exists():
        say(f"creating a virtual environment in {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    stamp = VENV / f".installed-{extras or 'base'}"
    wanted = (ROOT / "pyproject.toml").read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    target = f".[{extras}]" if extras else "."
    what = "and its test dependencies (torch 2.13.0, onnx, onnxruntime, ...)" if extras else \
        "(numpy, networkx, graphviz, click, threadpoolctl)"
    say(f"installing lstm-graph {what} into {VENV}")
    for command in ([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                    [str(PYTHON), "-m", "pip", "install", "-q", "-e", target]):
        subprocess.run(command, check=True, cwd=ROOT)
    stamp.write_text(wanted)


def _install(package: str, program: str) -> bool:
    """Install a system package with the first package manager that can; True if the
    program is there afterwards. Output goes to the log; shown only on failure."""
    sudo = [] if os.name == "nt" or os.geteuid() == 0 else (
        ["sudo", "-n"] if shutil.which("sudo") else None)
    for tool, steps in _INSTALLERS:
        if not shutil.which(tool) or (sudo is None and tool != "brew"):
            continue
        prefix = [] if tool == "brew" else sudo or []
        say(f"installing {package} with {tool} (output in {LOG})")
        with open(LOG, "a") as log:
            for step in steps:
                command = [*prefix, *(part.format(package=package) for part in step)]
                log.write(f"$ {' '.join(command)}\n")
                log.flush()
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
                if done.returncode:
                    break
        if done.returncode:
            tail = LOG.read_text(errors="replace").splitlines()[-15:]
            say(f"{tool} could not install {package}:\n  " + "\n  ".join(tail))
            continue
        if shutil.which(program):
            return True
    return False


def ensure_dot() -> bool:
    """Install Graphviz's dot if it is missing; False (with a message) if that fails."""
    if shutil.which("dot") or _install("graphviz", "dot"):
        return True
    say("Graphviz's 'dot' program is missing and could not be installed here. Install the "
        "'graphviz' package yourself (apt-get install graphviz, brew install graphviz, or see "
        "https://graphviz.org/download/). Without it lstm-graph still writes DOT files "
        "(--format dot); tests that need dot are skipped.")
    return False


#: Where the browser tests look for Chromium (as tests/test_explore_browser.py does).
CHROMIUM = ("chromium", "chromium-browser")


def ensure_chromium() -> bool:
    """Install Chromium for the browser tests if it is missing (Debian's 'chromium'
    package; Playwright drives it, and its own browser download is never used)."""
    if any(shutil.which(name) for name in CHROMIUM) or _install("chromium", "chromium"):
        return True
    say("Chromium is missing and could not be installed here: the tests that open the "
        "explorer page in a browser are skipped. Install the 'chromium' package yourself "
        "(apt-get install chromium) to run them.")
    return False


def note_compiler() -> None:
    """Say when there is no C compiler: the fast native executor is then off."""
    if not any(shutil.which(cc) for cc in (os.environ.get("CC") or "cc", "gcc", "clang")):
        say("no C compiler found (cc, gcc or clang): lstm-graph runs cells with its NumPy "
            "plan instead of the faster native step, and skips the native tests. Install "
            "one (apt-get install gcc, xcode-select --install) to turn it on.")


def demo() -> int:
    """The main job: validate, schedule, draw (both styles) and run the peephole LSTM."""
    ensure_venv("")
    have_dot = ensure_dot()
    note_compiler()
    DEMO_OUT.mkdir(exist_ok=True)
    cli = [str(PYTHON), "-m", "lstm_graph.cli"]
    steps = [
        ["validate", "peephole_lstm"],
        ["schedule", "peephole_lstm"],
        ["render", "peephole_lstm", "--style", "both", "--format", "svg" if have_dot else "dot",
         "--out", str(DEMO_OUT / "peephole_lstm")],
        ["run", "peephole_lstm", "--sample", "--hidden-size", "16", "--seed", "0",
         "--out", str(DEMO_OUT / "peephole_lstm_run.npz")],
    ]
    for step in steps:
        say("$ lstm-graph " + " ".join(step))
        result = subprocess.run([*cli, *step], cwd=ROOT)
        if result.returncode:
            return result.returncode
    say(f"done: diagrams and outputs are in {DEMO_OUT}")
    return 0


def test(extra: list[str]) -> int:
    """Static checks (ruff, mypy), then pytest; ``extra`` goes to pytest."""
    ensure_venv("test")
    ensure_dot()
    ensure_chromium()
    note_compiler()
    for name, command in (("ruff", [str(BIN / "ruff"), "check", "."]),
                          ("mypy", [str(PYTHON), "-m", "mypy"])):
        say(f"$ {name}")
        if subprocess.run(command, cwd=ROOT).returncode:
            say(f"{name} found problems (above); fix them before the tests run")
            return 1
    # one pytest worker per core, at most 4 (pytest-xdist)
    workers = ["-n", str(min(4, os.cpu_count() or 1))]
    return subprocess.run([str(PYTHON), "-m", "pytest", "-rs", *workers, *extra],
                          cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    return demo() if argv[0] == "demo" else test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
