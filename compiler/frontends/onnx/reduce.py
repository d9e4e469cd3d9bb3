"""Converters of ONNX reductions: ReduceSum/Mean/Max/Min/Prod and ReduceSumSquare.

ONNX moved `axes` from an attribute to an optional input (ReduceSum at opset
13, the others at 18) and added `noop_with_empty_axes` with it. The graph ops
always get explicit, sorted, non-negative axes; "no axes" means every axis,
except under `noop_with_empty_axes`, where the node is the identity.
"""

from __future__ import annotations

from dsc.dialects import graph as g
from dsc.frontends.onnx.importer import NodeBuilder, converter

_REDUCE = {
    "ReduceSum": g.ReduceSumOp,
    "ReduceMean": g.ReduceMeanOp,
    "ReduceMax": g.ReduceMaxOp,
    "ReduceMin": g.ReduceMinOp,
    "ReduceProd": g.ReduceProdOp,
    "ReduceSumSquare": g.ReduceSumOp,  # of x * x
}
# The first opset in which each op takes `axes` as an input instead of an attribute.
_AXES_INPUT_SINCE = {"ReduceSum": 13}


def _axes(b: NodeBuilder, rank: int) -> tuple[int, ...] | None:
    """The normalized axes, or None when the node is a no-op."""
    if b.opset >= _AXES_INPUT_SINCE.get(b.op_type, 18):
        axes = [int(a) for a in b.const(1, "axes").reshape(-1)] if b.has_input(1) else []
    else:
        axes = [int(a) for a in b.attr("axes", [])]
    if not axes:
        return None if b.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    bad = [a for a in axes if not -rank <= a < rank]
    if bad:
        raise b.error(f"axes {bad} are out of range for an input of rank {rank}")
    return tuple(sorted({a % rank for a in axes}))


@converter(*_REDUCE)
def reduce(b: NodeBuilder):
    x = b.input(0)
    axes = _axes(b, len(b.sig(0).shape))
    if b.op_type == "ReduceSumSquare":
        x = b.emit(g.MulOp, [x, x])
    if axes is None:
        return x
    return b.emit(_REDUCE[b.op_type], [x], axes=axes, keepdims=int(b.attr("keepdims", 1)))
