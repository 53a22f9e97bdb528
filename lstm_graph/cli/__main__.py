"""``python -m lstm_graph.cli``: the command line."""

from lstm_graph.cli import main

main()
