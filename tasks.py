"""Set everything up on a fresh machine, then run the main job or the tests.

    python3 tasks.py demo    # render the seed's cell in both styles, validate it, run it
    python3 tasks.py test    # the whole test suite

Needs only Python 3.10+. It creates ``.venv``, installs lstm-graph with its
test dependencies into it, and installs Graphviz's ``dot`` through the system
package manager when it is missing (saying clearly what to do where it can't).
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
DEMO_OUT = ROOT / "out"

# Package managers that can install Graphviz, tried in this order.
_INSTALLERS = (
    ("apt-get", [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "graphviz"]]),
    ("dnf", [["dnf", "install", "-y", "graphviz"]]),
    ("yum", [["yum", "install", "-y", "graphviz"]]),
    ("apk", [["apk", "add", "graphviz"]]),
    ("pacman", [["pacman", "-S", "--noconfirm", "graphviz"]]),
    ("zypper", [["zypper", "--non-interactive", "install", "graphviz"]]),
    ("brew", [["brew", "install", "graphviz"]]),
)


def say(message: str) -> None:
    print(f"[tasks] {message}", flush=True)


def run(*command: str | Path, **kwargs) -> None:
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT, **kwargs)


def ensure_venv() -> None:
    if not PYTHON.exists():
        say(f"creating a virtual environment in {VENV}")
        run(sys.executable, "-m", "venv", VENV)
    stamp = VENV / ".installed"
    wanted = (ROOT / "pyproject.toml").read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    say("installing lstm-graph and its test dependencies (torch 2.13.0 CPU, onnx, ...)")
    run(PYTHON, "-m", "pip", "install", "-q", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "-q", "-e", ".[test]")
    stamp.write_text(wanted)


def ensure_dot() -> bool:
    """Install Graphviz's dot if it is missing; False (with a message) if that fails."""
    if shutil.which("dot"):
        return True
    sudo = [] if os.name == "nt" or os.geteuid() == 0 else (
        ["sudo", "-n"] if shutil.which("sudo") else None)
    for tool, steps in _INSTALLERS:
        if not shutil.which(tool) or (sudo is None and tool != "brew"):
            continue
        prefix = [] if tool == "brew" else sudo
        say(f"Graphviz's dot is missing; installing it with {tool}")
        try:
            for step in steps:
                subprocess.run([*prefix, *step], check=True)
        except (subprocess.CalledProcessError, OSError) as err:
            say(f"{tool} could not install graphviz ({err})")
            continue
        if shutil.which("dot"):
            return True
    say("Graphviz's 'dot' program is missing and could not be installed here. Install the "
        "'graphviz' package yourself (apt-get install graphviz, brew install graphviz, or see "
        "https://graphviz.org/download/). Without it lstm-graph still writes DOT files "
        "(--format dot); tests that need dot are skipped.")
    return False


def note_compiler() -> None:
    """Say when there is no C compiler: the fast native executor is then off."""
    if not any(shutil.which(cc) for cc in (os.environ.get("CC") or "cc", "gcc", "clang")):
        say("no C compiler found (cc, gcc or clang): lstm-graph runs cells with its NumPy "
            "plan instead of the faster native step, and skips the native tests. Install "
            "one (apt-get install gcc, xcode-select --install) to turn it on.")


def demo() -> int:
    """The main job: validate, schedule, render (both styles) and run the seed's cell."""
    have_dot = ensure_dot()
    note_compiler()
    DEMO_OUT.mkdir(exist_ok=True)
    cli = [PYTHON, ROOT / "cli.py"]
    steps = [
        [*cli, "validate", "peephole_lstm"],
        [*cli, "schedule", "peephole_lstm"],
        [*cli, "render", "peephole_lstm", "--style", "both",
         "--format", "svg" if have_dot else "dot", "--out", DEMO_OUT / "peephole_lstm"],
        [*cli, "run", "peephole_lstm", "--sample", "--hidden-size", "16", "--seed", "0",
         "--out", DEMO_OUT / "peephole_lstm_run.npz"],
    ]
    for step in steps:
        say("$ lstm-graph " + " ".join(str(part) for part in step[2:]))
        result = subprocess.run([str(part) for part in step], cwd=ROOT)
        if result.returncode:
            return result.returncode
    say(f"done: diagrams and outputs are in {DEMO_OUT}")
    return 0


def test(extra: list[str]) -> int:
    ensure_dot()
    note_compiler()
    return subprocess.run([str(PYTHON), "-m", "pytest", *extra], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    ensure_venv()
    if argv[0] == "setup":
        return 0 if ensure_dot() else 1
    return demo() if argv[0] == "demo" else test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
