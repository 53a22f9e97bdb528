"""onnxruntime, imported so that it leaves nothing in the user's files.

Importing onnxruntime makes ``Microsoft/DeveloperTools/.onnxruntime/`` (a device id
and a database) in ``$XDG_CACHE_HOME`` or ``~/.cache``, and a ``.ses`` file (a session
id) in ``$TMPDIR`` or ``/tmp``, and every session it runs goes on using the places it
found then: a check of ``export --format onnx`` left them in the user's home and
temporary directory, which lstm-graph must not touch (nothing the tool did not make).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from types import ModuleType

#: The variables onnxruntime finds its cache directory (before ``$HOME/.cache``) and
#: its temporary directory (before ``/tmp``) by.
PLACES_ENV = ("XDG_CACHE_HOME", "TMPDIR")


def onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, imported with ``$XDG_CACHE_HOME`` and ``$TMPDIR`` set,
    for the import alone, to a private temporary directory removed right after (its
    sessions write nothing in either place later); an ImportError where it is not
    installed, as ``import`` gives.
    """
    loaded = sys.modules.get("onnxruntime")
    if loaded is not None:
        return loaded
    scratch = tempfile.mkdtemp(prefix="lstm-graph-onnxruntime-")
    before = {name: os.environ.get(name) for name in PLACES_ENV}
    os.environ.update(dict.fromkeys(PLACES_ENV, scratch))
    try:
        module = importlib.import_module("onnxruntime")
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
        shutil.rmtree(scratch, ignore_errors=True)
    return module
