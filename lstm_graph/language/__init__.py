"""The front end: ``.cell`` text → a checked :class:`~lstm_graph.ir.CellGraph`.

:mod:`~lstm_graph.language.parser` reads the text (never evaluating it),
:mod:`~lstm_graph.language.directives` the ``preset`` and ``gates`` lines, and
:mod:`~lstm_graph.language.validate` checks the graph before anything orders
or runs it. Every problem is a diagnostic at ``file:line:col``.
"""
