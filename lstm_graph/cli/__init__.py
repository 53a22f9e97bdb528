"""The command line (``lstm-graph …``, ``python -m lstm_graph.cli …``).

:mod:`.app` holds the click group and turns errors into messages; each sibling
module adds one family of commands to it, and :mod:`.commands` imports them all.
This module stays light: :func:`main` imports the commands itself, so that a Ctrl-C
in the half second their imports take ends with a line, as one during a command does,
not with a traceback; and once the command has ended it ignores Ctrl-C, which would
otherwise kill the exiting process without a word.
"""

from __future__ import annotations

import signal
import sys
import threading


def main(args: list[str] | None = None) -> None:
    """The console script: the command line on ``args`` (where None, ``sys.argv[1:]``)."""
    try:
        from lstm_graph.cli.commands import group
    except KeyboardInterrupt:
        if sys.stderr is not None:  # None where it was closed when the process started
            sys.stderr.write("interrupted; no output was written\n")
        sys.exit(130)
    try:
        group(args)
    except SystemExit:  # the command is over, its outputs whole and said: a Ctrl-C in the
        if threading.current_thread() is threading.main_thread():  # exit would kill it
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # without a word
        raise


__all__ = ["main"]
