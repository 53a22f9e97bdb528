"""Holding Ctrl-C and SIGTERM back across a few statements that must not be cut apart.

The command line turns SIGINT and SIGTERM into exceptions, which Python raises between
any two bytecodes of the main thread. Where a step and its undoing must go together (a
temporary file made, and the ``try`` that removes it entered; a compiler started, and
its process known), such a signal is noted instead, and acted on once the step is done:
the same exception, raised where the code is ready for it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: The signals held back: Ctrl-C, and SIGTERM, which the command line raises as an exception.
HELD = (signal.SIGINT, signal.SIGTERM)


def hold(held: list[int]) -> dict[int, Any]:
    """Handlers that note the signals of :data:`HELD` in ``held`` in place of the current
    ones where those are Python's (in the main thread, the only one whose handlers Python
    runs: an ignored signal stays ignored, a default one stays the kernel's); the ones
    they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {number: signal.signal(number, lambda signum, frame: held.append(signum))
            for number in HELD if callable(signal.getsignal(number))}


def restore(previous: dict[int, Any], held: list[int]) -> None:
    """The handlers back, then each held signal given to them, as if it came now."""
    try:
        for number, handler in previous.items():
            signal.signal(number, handler)
    finally:  # again, where a signal came between two of them and its handler raised
        for number, handler in previous.items():
            if signal.getsignal(number) is not handler:
                signal.signal(number, handler)
    for number in held:
        signal.raise_signal(number)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """The block runs whole; a signal that came during it is acted on as it ends (an
    exception raised at the ``with``'s end, where the caller's ``try`` should be ready).

    >>> import os
    >>> try:
    ...     with held():
    ...         os.kill(os.getpid(), signal.SIGINT)
    ...         print("the block went on")
    ... except KeyboardInterrupt:
    ...     print("then Ctrl-C")
    the block went on
    then Ctrl-C
    """
    noted: list[int] = []
    previous = hold(noted)
    try:
        yield
    finally:
        restore(previous, noted)
