"""Training cells and watching their gradients flow.

- :mod:`.tasks` — the adding problem, the copy task, a user's ``.npz``;
- :mod:`.trainer` — a readout, Adam, clipping, checkpoints (:func:`train`);
- :mod:`.plots` — loss curves and gradient-flow charts (PNG or SVG);
- :mod:`.gradflow` — how much gradient reaches each step, per state;
- :mod:`.bench` — the training benchmark (``python -m lstm_graph.training.bench``).
"""

from lstm_graph.training.tasks import Task, adding, copy, from_file, named
from lstm_graph.training.trainer import Trained, train

__all__ = ["Task", "Trained", "adding", "copy", "from_file", "named", "train"]
