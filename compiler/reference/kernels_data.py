"""NumPy kernels of the reference evaluator for data movement: reshape,
broadcast_to, transpose, concat, slice, gather and pad.

These define what the graph dialect's data-movement ops mean, so they follow
the op definitions literally (graph.slice bounds are Python range() bounds,
graph.pad pads are [begin..., end...] with negative values cropping) rather
than reimplementing ONNX; the ONNX-specific normalization lives in the
importer. Results are fresh arrays, never views of an operand, because the
evaluator keeps constants read-only.
"""

from __future__ import annotations

import numpy as np

from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of
from dsc.reference.evaluator import kernel


@kernel(g.ReshapeOp)
def _reshape(op, x):
    # The target shape is the result type (the op has no shape attribute).
    return np.reshape(x, sig_of(op.result.type).shape)


@kernel(g.BroadcastToOp)
def _broadcast_to(op, x):
    # broadcast_to gives a read-only view with zero strides: materialize it.
    return np.broadcast_to(x, sig_of(op.result.type).shape).copy()


@kernel(g.TransposeOp)
def _transpose(op, x, perm):
    return np.ascontiguousarray(np.transpose(x, perm))


@kernel(g.ConcatOp)
def _concat(op, *xs, axis):
    return np.concatenate(xs, axis=axis)


def _range_slice(start: int, end: int, step: int) -> slice:
    """The Python slice that visits exactly range(start, end, step).

    A plain slice(start, end, step) is wrong for end == -1 (a negative stop
    counts from the end in a slice, but means "past index 0" in range()), so
    the stop is rebuilt from the range's last element.
    """
    r = range(start, end, step)
    if len(r) == 0:
        return slice(0, 0)
    stop = r[-1] + (1 if step > 0 else -1)
    return slice(r[0], None if stop < 0 else stop, step)


@kernel(g.SliceOp)
def _slice(op, x, starts, ends, steps):
    return x[tuple(_range_slice(*b) for b in zip(starts, ends, steps))].copy()


@kernel(g.GatherOp)
def _gather(op, x, indices, axis):
    # np.take counts negative indices from the end, as ONNX Gather does, and
    # raises on indices outside [-dim, dim).
    return np.take(x, indices.astype(np.int64), axis=axis)


@kernel(g.PadOp)
def _pad(op, x, pads, mode, value):
    r = x.ndim
    begin, end = pads[:r], pads[r:]
    # Negative pads crop first (as onnxruntime does), so reflect/edge padding
    # of the other side sees the cropped tensor.
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begin, end)))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
    return np.pad(x, width, mode=mode)
