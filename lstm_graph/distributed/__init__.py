"""Scale-out on Dask: a run's batch sharded across workers, and sweeps of training runs.

- :mod:`.jobs` — what one shard computes (``run``, ``trace``, ``grad`` on a slice of the
  batch) and what travels to a worker to compute it: the cell's source text, not a path;
  the weights as arrays. Needs only NumPy: it is what a worker imports.
- :mod:`.chunked` — an ``.npz`` written chunk by chunk through memory-mapped ``.npy``
  files, whole or not at all.
- :mod:`.cluster` — ``--dask ADDRESS``: an in-process ``LocalCluster`` or a scheduler,
  connected within a time limit and checked for workers that can run lstm-graph.
- :mod:`.sharded` — the client's loop: read shards from a memory-mapped input, keep a
  bounded number in flight, write results as they arrive, sum weight gradients in order.
- :mod:`.sweep` — many training runs (cells × seeds × hidden sizes) as Dask tasks, and
  their leaderboard.

Only :mod:`.cluster`, :mod:`.sharded` and :mod:`.sweep` import Dask (the ``dask``
extra of ``pyproject.toml``); the rest of lstm-graph runs without it.
"""

from lstm_graph.errors import LstmGraphError


class DaskError(LstmGraphError):
    """Dask is missing, or the cluster cannot be reached or used, or it lost the work."""
