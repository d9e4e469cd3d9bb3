"""Converters of ONNX shape ops: Reshape, Flatten, Squeeze, Unsqueeze,
Transpose, Expand, Shape and Size.

dsc keeps every shape static, so the ops that take a shape as a tensor
(Reshape, Expand, opset-13 Squeeze/Unsqueeze axes) need that tensor to be a
constant once import-time folding has run; Shape and Size become constants
outright. Flatten, Squeeze and Unsqueeze are all `graph.reshape` (the
dialect has one op for "same elements, new shape").

The axis helpers at the top are shared with `tensor.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from xdsl.ir import SSAValue

from dsc.dialects import graph as g
from dsc.dialects import graph_shapes as S
from dsc.dialects.tensor_types import sig_of, tensor_type
from dsc.frontends.onnx.importer import NodeBuilder, converter
from dsc.runtime.errors import ShapeError, UnsupportedOpError

# ---------------------------------------------------------------- helpers


def norm_axis(b: NodeBuilder, axis: int, rank: int, what: str = "axis") -> int:
    """ONNX axis in [-rank, rank) -> [0, rank), or a ShapeError naming the node."""
    axis = int(axis)
    if not -rank <= axis < rank:
        raise b.error(f"{what} {axis} is out of range for rank {rank}", cls=ShapeError)
    return axis % rank if rank else 0


def norm_axes(b: NodeBuilder, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    """Normalize a list of axes; repeated axes are an error in every ONNX op."""
    out = [norm_axis(b, a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise b.error(f"{what} {list(map(int, axes))} repeat an axis", cls=ShapeError)
    return out


def int_list(arr) -> list[int]:
    """A constant tensor (any rank, any int dtype) as a flat list of Python ints."""
    return [int(v) for v in np.asarray(arr).reshape(-1)]


def static_input(b: NodeBuilder, i: int, what: str) -> np.ndarray:
    """Input i's value, which must be constant after folding (shapes are static in dsc)."""
    arr = b.maybe_const(i)
    if arr is None:
        raise b.error(
            f"the {what} (input {i}) must be constant: dsc compiles static shapes, but it is computed at run time",
            hint="export with fixed input shapes (or pass --input-shape) so the shape computation folds at import",
            cls=UnsupportedOpError,
        )
    return arr


def keep_scalar(v: SSAValue) -> SSAValue:
    """Work around dsc.dialects.tensor_types.Blob turning 0-d arrays into 1-d.

    Blob stores np.ascontiguousarray(array), which promotes a 0-d array to
    shape (1,); the constant then fails to verify against its rank-0 type.
    Until Blob keeps the shape, put the rank-0 view back on constants we make.
    """
    op = v.owner
    if isinstance(op, g.ConstantOp) and op.blob.array is not None:
        shape = sig_of(v.type).shape
        if op.blob.array.shape != shape:
            op.blob.array = op.blob.array.reshape(shape)  # a view: stays read-only
    return v


def constant(b: NodeBuilder, array, hint: str) -> SSAValue:
    """b.constant, keeping rank-0 arrays rank 0 (see keep_scalar)."""
    return keep_scalar(b.constant(np.asarray(array), hint))


def emit(b: NodeBuilder, op_cls, operands, result_types=None, **attrs) -> SSAValue:
    """b.emit, keeping a folded rank-0 result rank 0 (see keep_scalar)."""
    return keep_scalar(b.emit(op_cls, operands, result_types=result_types, **attrs))


def reshape_to(b: NodeBuilder, x, shape: Sequence[int]):
    """graph.reshape of x to `shape`; no op at all when the shape is unchanged."""
    shape = tuple(int(d) for d in shape)
    if tuple(x.type.get_shape()) == shape:
        return x
    return emit(b, g.ReshapeOp, [x], result_types=[tensor_type(shape, sig_of(x.type).dtype)])


# ------------------------------------------------------------------ ops


def _reshape_target(b: NodeBuilder, in_shape: tuple[int, ...], spec: list[int], allowzero: bool) -> tuple[int, ...]:
    """Resolve ONNX Reshape's 0 (copy the input dim) and -1 (infer) entries."""
    out = []
    for i, d in enumerate(spec):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise b.error(f"shape {spec}: 0 at axis {i} copies an input dim, but the input has rank {len(in_shape)}", cls=ShapeError)
            d = in_shape[i]
        elif d < -1:
            raise b.error(f"shape {spec} holds {d}; only -1 (infer) may be negative", cls=ShapeError)
        out.append(d)
    total = math.prod(in_shape)
    if out.count(-1) > 1:
        raise b.error(f"shape {spec} has more than one -1", cls=ShapeError)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise b.error(f"cannot infer the -1 of shape {spec} for an input of shape {list(in_shape)}", cls=ShapeError)
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise b.error(f"shape {spec} (resolved {out}) does not hold the {total} elements of input shape {list(in_shape)}", cls=ShapeError)
    return tuple(out)


@converter("Reshape")
def reshape(b: NodeBuilder):
    # Opset 1-4 carried the shape as an attribute; from opset 5 it is input 1.
    spec = b.attr("shape", []) if b.opset < 5 else static_input(b, 1, "target shape")
    allowzero = bool(b.attr("allowzero", 0))
    target = _reshape_target(b, b.sig(0).shape, int_list(spec), allowzero)
    return reshape_to(b, b.input(0), target)


@converter("Flatten")
def flatten(b: NodeBuilder):
    shape = b.sig(0).shape
    r = len(shape)
    axis = int(b.attr("axis", 1))
    if not -r <= axis <= r:  # axis == rank is allowed: everything goes to the outer dim
        raise b.error(f"axis {axis} is out of range for rank {r}", cls=ShapeError)
    axis = axis + r if axis < 0 else axis
    return reshape_to(b, b.input(0), (math.prod(shape[:axis]), math.prod(shape[axis:])))


def _axes_arg(b: NodeBuilder) -> list[int] | None:
    """Squeeze/Unsqueeze axes: an attribute before opset 13, input 1 from 13 on."""
    if b.opset < 13:
        axes = b.attr("axes")
        return None if axes is None else [int(a) for a in axes]
    if not b.has_input(1):
        return None
    return int_list(static_input(b, 1, "axes"))


@converter("Squeeze")
def squeeze(b: NodeBuilder):
    shape = b.sig(0).shape
    axes = _axes_arg(b)
    if axes is None:  # no axes: drop every size-1 dim
        drop = {i for i, d in enumerate(shape) if d == 1}
    else:
        drop = set(norm_axes(b, axes, len(shape)))
        bad = [a for a in sorted(drop) if shape[a] != 1]
        if bad:
            raise b.error(f"cannot squeeze axes {bad} of shape {list(shape)}: their size is not 1", cls=ShapeError)
    return reshape_to(b, b.input(0), [d for i, d in enumerate(shape) if i not in drop])


@converter("Unsqueeze")
def unsqueeze(b: NodeBuilder):
    shape = b.sig(0).shape
    axes = _axes_arg(b)
    if axes is None:
        raise b.error("axes are required", cls=ShapeError)
    # Axes index the *output*, whose rank is input rank + number of axes.
    rank = len(shape) + len(axes)
    new = set(norm_axes(b, axes, rank))
    rest = iter(shape)
    return reshape_to(b, b.input(0), [1 if i in new else next(rest) for i in range(rank)])


@converter("Transpose")
def transpose(b: NodeBuilder):
    r = len(b.sig(0).shape)
    perm = b.attr("perm")
    perm = list(range(r))[::-1] if perm is None else norm_axes(b, perm, r, "perm")
    if perm == list(range(r)):
        return b.input(0)
    return emit(b, g.TransposeOp, [b.input(0)], perm=tuple(perm))


@converter("Expand")
def expand(b: NodeBuilder):
    x, s = b.input(0), b.sig(0)
    spec = tuple(int_list(static_input(b, 1, "shape")))
    # Expand broadcasts both ways: a 1 in `shape` keeps the input's dim.
    try:
        out = S.broadcast(s.shape, spec)
    except S.ShapeMismatch as e:
        raise b.error(f"input shape {list(s.shape)} cannot be expanded to {list(spec)}: {e}", cls=ShapeError) from None
    if out == s.shape:
        return x
    return emit(b, g.BroadcastToOp, [x], result_types=[tensor_type(out, s.dtype)])


@converter("Shape")
def shape_(b: NodeBuilder):
    shape = b.sig(0).shape
    r = len(shape)
    # Opset 15 start/end: negative counts from the end, then clamp to [0, rank].
    start, end = int(b.attr("start", 0)), b.attr("end")
    end = r if end is None else int(end)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return constant(b, np.asarray(shape[start:end], dtype=np.int64), f"{b.name}_shape")


@converter("Size")
def size(b: NodeBuilder):
    return constant(b, np.asarray(math.prod(b.sig(0).shape), dtype=np.int64), f"{b.name}_size")
