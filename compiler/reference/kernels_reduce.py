"""NumPy kernels of the reference evaluator: reductions (sum, mean, max, min, prod).

`axes` is explicit (empty means every axis). Reducing an empty axis gives the
operation's identity, as ONNX specifies: 0 for sum, 1 for prod, and for max
and min the lowest and highest value of the dtype (-inf and +inf for floats).
"""

from __future__ import annotations

import numpy as np

from dsc.dialects import graph as g
from dsc.reference.evaluator import kernel


def _axes(x: np.ndarray, axes) -> tuple[int, ...]:
    return tuple(axes) if axes else tuple(range(x.ndim))


def _acc(x: np.ndarray):
    """Accumulate float16 in float32; everything else in its own dtype."""
    return np.float32 if x.dtype == np.float16 else x.dtype


@kernel(g.ReduceSumOp)
def _reduce_sum(op, x, *, axes, keepdims):
    return np.sum(x, axis=_axes(x, axes), keepdims=bool(keepdims), dtype=_acc(x))


@kernel(g.ReduceProdOp)
def _reduce_prod(op, x, *, axes, keepdims):
    return np.prod(x, axis=_axes(x, axes), keepdims=bool(keepdims), dtype=_acc(x))


@kernel(g.ReduceMeanOp)
def _reduce_mean(op, x, *, axes, keepdims):
    return np.mean(x, axis=_axes(x, axes), keepdims=bool(keepdims), dtype=_acc(x))


def _extreme(dtype: np.dtype, highest: bool):
    if dtype == np.bool_:
        return highest
    if dtype.kind == "f":
        return np.inf if highest else -np.inf
    info = np.iinfo(dtype)
    return info.max if highest else info.min


@kernel(g.ReduceMaxOp)
def _reduce_max(op, x, *, axes, keepdims):
    # `initial` makes an empty reduction return the identity instead of raising.
    return np.max(x, axis=_axes(x, axes), keepdims=bool(keepdims), initial=_extreme(x.dtype, False))


@kernel(g.ReduceMinOp)
def _reduce_min(op, x, *, axes, keepdims):
    return np.min(x, axis=_axes(x, axes), keepdims=bool(keepdims), initial=_extreme(x.dtype, True))
