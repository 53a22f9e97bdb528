"""The back end: ways of running a cell, all behind one contract.

- :mod:`.contract` — what every executor is built from (:class:`Spec`) and offers
  (:class:`Executor`: ``run``, ``source``, ``name``);
- :mod:`.registry` — the one place that picks an executor;
- :mod:`.interpreter` — the reference interpreter, the definition of the semantics;
- :mod:`.layout`, :mod:`.prepare` — the compiled plans' shared analysis (hoisting, gate
  fusion) and pre-loop work;
- :mod:`.numpy_plan` — the NumPy plan (generated Python);
- :mod:`.codegen_c` — one C generator for a step's element-wise work, with dialects;
- :mod:`.native` (host C) and :mod:`.cuda` (CuPy kernels) — its two back ends;
- :mod:`.buildcache` — the private, self-healing cache of compiled C;
- :mod:`.backends` — the array namespaces (NumPy, CuPy).
"""
