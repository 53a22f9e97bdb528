"""Run the lstm-graph command line from a checkout: ``python cli.py --help``."""

from lstm_graph.cli import main

if __name__ == "__main__":
    main()
