"""Run the lstm-graph command line from a checkout: ``python cli.py --help``.

It uses the packages of the Python that runs it: the project's environment
(``python3 tasks.py demo`` makes it; then ``.venv/bin/python cli.py …``) or any
Python where ``pip install .`` has installed lstm-graph's dependencies.
"""

import sys

try:
    from lstm_graph.cli import main
except ModuleNotFoundError as err:
    if (err.name or "").split(".")[0] == "lstm_graph":
        raise
    sys.exit(f"lstm-graph needs the Python package '{err.name}', which {sys.executable} does "
             "not have. Use the project's environment: run 'python3 tasks.py demo' once, then "
             "'.venv/bin/python cli.py ...' (or '.venv/bin/lstm-graph ...'); or install "
             "lstm-graph into this Python: pip install .")

if __name__ == "__main__":
    main()
