"""Adam with gradient clipping in one pass over the weights.

Clipping to a global norm needs every gradient before any weight moves, so a
step reads the gradients twice: once for the sum of their squares (in float64),
then once more in the same pass that scales each gradient (as PyTorch's
``clip_grad_norm_`` does: :func:`clip_scale`), updates both of Adam's moments and moves the
weight: one read and one write of each weight, moment and gradient, instead of
the dozen array passes the same arithmetic takes in NumPy. It is C, compiled
once per dtype into the private build cache (as the executors' steps are);
where no C compiler is found, NumPy does the same arithmetic in more passes.

The update is PyTorch's ``torch.optim.Adam`` (no weight decay):
``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``,
``w ← w − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)``.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from lstm_graph.errors import BackendError
from lstm_graph.executors import buildcache
from lstm_graph.executors.codegen_c import C_TYPES, Symbol

_POINTERS = ctypes.POINTER(ctypes.c_void_p)
#: The sum of the squares of ``count`` arrays (``pointers``, ``sizes``), in double.
SUM_OF_SQUARES = Symbol("lstm_graph_sum_of_squares",
                        (ctypes.c_ssize_t, _POINTERS, ctypes.POINTER(ctypes.c_ssize_t)),
                        ctypes.c_double)
#: One Adam step on ``count`` weights with their gradients and moments.
ADAM = Symbol("lstm_graph_adam", (ctypes.c_ssize_t, _POINTERS, _POINTERS, _POINTERS, _POINTERS,
                                  ctypes.POINTER(ctypes.c_ssize_t), *(ctypes.c_double,) * 6))
FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")

SOURCE = r"""
#include <math.h>
#include <stddef.h>
typedef @T@ T;

double @SUM@(ptrdiff_t count, void **arrays, const ptrdiff_t *sizes) {
    double total = 0;
    for (ptrdiff_t c = 0; c < count; c++) {
        const T *restrict g = (const T *)arrays[c];
        double sum = 0;
        for (ptrdiff_t i = 0; i < sizes[c]; i++) sum += (double)g[i] * (double)g[i];
        total += sum;
    }
    return total;
}

/* w -= step * m / (sqrt(v) / root + eps), the gradient scaled by `scale` first */
void @ADAM@(ptrdiff_t count, void **weights, void **grads, void **ms, void **vs,
            const ptrdiff_t *sizes, double scale_, double beta1_, double beta2_, double step_,
            double root_, double eps_) {
    const T scale = (T)scale_, beta1 = (T)beta1_, beta2 = (T)beta2_, step = (T)step_;
    const T root = (T)root_, eps = (T)eps_, keep1 = (T)(1 - beta1_), keep2 = (T)(1 - beta2_);
    for (ptrdiff_t c = 0; c < count; c++) {
        T *restrict w = (T *)weights[c], *restrict m = (T *)ms[c], *restrict v = (T *)vs[c];
        const T *restrict g = (const T *)grads[c];
        for (ptrdiff_t i = 0; i < sizes[c]; i++) {
            const T gi = g[i] * scale;
            const T mi = beta1 * m[i] + keep1 * gi;
            const T vi = beta2 * v[i] + keep2 * (gi * gi);
            m[i] = mi;
            v[i] = vi;
            w[i] -= step * (mi / (sqrt(vi) / root + eps));
        }
    }
}
"""


@cache
def _library(dtype: np.dtype) -> Any:
    """The compiled step for ``dtype``, or None without a working C compiler."""
    if buildcache.compiler() is None:
        return None
    source = SOURCE.replace("@T@", C_TYPES[dtype]).replace("@SUM@", SUM_OF_SQUARES.name) \
        .replace("@ADAM@", ADAM.name)
    try:
        library = buildcache.library(source, [FLAGS], f"the fused Adam step ({dtype.name})",
                                     symbols=(SUM_OF_SQUARES.name, ADAM.name))
    except BackendError:
        return None
    return SUM_OF_SQUARES.bind(library), ADAM.bind(library)


def clip_scale(norm: float, max_norm: float) -> float:
    """What every gradient is multiplied by to clip their global ``norm`` to ``max_norm``
    (0: no clipping), exactly as ``torch.nn.utils.clip_grad_norm_`` computes it:
    ``min(1, max_norm / (norm + 1e-6))``."""
    return min(1.0, max_norm / (norm + 1e-6)) if max_norm > 0 else 1.0


def adam_step(weights: Sequence[np.ndarray], grads: Sequence[np.ndarray],
              ms: Sequence[np.ndarray], vs: Sequence[np.ndarray], lr: float, beta1: float,
              beta2: float, eps: float, step: int, max_norm: float) -> float:
    """One Adam step (the ``step``-th) on every weight, in place, its gradient first scaled
    so that the global norm of all ``grads`` is at most ``max_norm`` (0: not clipped);
    returns the norm before clipping. Every array must be C-contiguous, of the weights'
    one float dtype (the C reads them through raw pointers): a ValueError otherwise."""
    dtype = weights[0].dtype
    if not all(a.dtype == dtype and a.flags.c_contiguous
               for group in (weights, grads, ms, vs) for a in group):
        raise ValueError("the fused Adam step updates C-contiguous arrays of the weights' "
                         f"dtype ({dtype}) only")
    found = _library(dtype)
    if found is None:
        return _numpy_step(weights, grads, ms, vs, lr, beta1, beta2, eps, step, max_norm)
    sum_of_squares, adam = found
    count = len(weights)
    sizes = (ctypes.c_ssize_t * count)(*(w.size for w in weights))

    def pointers(arrays: Sequence[np.ndarray]) -> Any:
        return (ctypes.c_void_p * count)(*(a.ctypes.data for a in arrays))

    gradient_pointers = pointers(grads)
    norm = math.sqrt(sum_of_squares(count, gradient_pointers, sizes))
    scale = clip_scale(norm, max_norm)
    adam(count, pointers(weights), gradient_pointers, pointers(ms), pointers(vs), sizes, scale,
         beta1, beta2, lr / (1 - beta1 ** step), math.sqrt(1 - beta2 ** step), eps)
    return norm


def _numpy_step(weights: Sequence[np.ndarray], grads: Sequence[np.ndarray],
                ms: Sequence[np.ndarray], vs: Sequence[np.ndarray], lr: float, beta1: float,
                beta2: float, eps: float, step: int, max_norm: float) -> float:
    """:func:`adam_step` in NumPy (where no C compiler is found)."""
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    scale = clip_scale(norm, max_norm)
    size, root = lr / (1 - beta1 ** step), math.sqrt(1 - beta2 ** step)
    for w, g, m, v in zip(weights, grads, ms, vs):
        dtype = w.dtype.type
        scaled = g * dtype(scale)
        m *= dtype(beta1)
        m += dtype(1 - beta1) * scaled
        v *= dtype(beta2)
        v += dtype(1 - beta2) * (scaled * scaled)
        w -= dtype(size) * (m / (np.sqrt(v) / dtype(root) + dtype(eps)))
    return norm
