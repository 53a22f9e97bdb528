"""onnxruntime, imported so that it leaves nothing in the user's files.

Importing onnxruntime makes ``Microsoft/DeveloperTools/.onnxruntime/`` (a device id
and a database) in ``$XDG_CACHE_HOME`` or ``~/.cache``, and every session it runs
goes on using the place it found then: a check of ``export --format onnx`` left them
in the user's home, which lstm-graph must not touch (nothing the tool did not make).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from types import ModuleType

#: The variable onnxruntime finds its cache directory by, before ``$HOME/.cache``.
CACHE_ENV = "XDG_CACHE_HOME"


def onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, imported with ``$XDG_CACHE_HOME`` set, for the import
    alone, to a private temporary directory removed right after (its sessions write
    nothing there later); an ImportError where it is not installed, as ``import`` gives.
    """
    loaded = sys.modules.get("onnxruntime")
    if loaded is not None:
        return loaded
    scratch = tempfile.mkdtemp(prefix="lstm-graph-onnxruntime-")
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = scratch
    try:
        module = importlib.import_module("onnxruntime")
    finally:
        if before is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = before
        shutil.rmtree(scratch, ignore_errors=True)
    return module
