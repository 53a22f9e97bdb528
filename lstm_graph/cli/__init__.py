"""The command line (``lstm-graph …``, ``python -m lstm_graph.cli …``).

:mod:`.app` holds the click group and turns errors into messages; each sibling
module adds one family of commands to it, and :mod:`.commands` imports them all.
This module stays light: :func:`main` imports the commands itself, so that a Ctrl-C
in the half second their imports take ends with a line, as one during a command does,
not with a traceback.
"""

from __future__ import annotations

import sys


def main(args: list[str] | None = None) -> None:
    """The console script: the command line on ``args`` (where None, ``sys.argv[1:]``)."""
    try:
        from lstm_graph.cli.commands import group
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; no output was written\n")
        sys.exit(130)
    group(args)


__all__ = ["main"]
