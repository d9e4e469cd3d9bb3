"""Converters of ONNX tensor ops: Concat, Split, Slice, Gather, Pad, Tile,
Constant, ConstantOfShape and Range.

The graph dialect is normalized, so this is mostly index arithmetic: Slice's
negative/clamped/INT_MAX bounds become graph.slice's full-rank
Python-range() bounds, Split becomes one graph.slice per output, Pad's
opset-dependent attributes/inputs become full-rank [begin..., end...] pads,
and Tile becomes reshape + broadcast_to + reshape. Ops that only describe a
constant (Constant, ConstantOfShape, Range) become `graph.constant`.
"""

from __future__ import annotations

import numpy as np

from dsc.dialects import graph as g
from dsc.dialects.tensor_types import tensor_type
from dsc.frontends.onnx.importer import NodeBuilder, converter
from dsc.frontends.onnx.shape import constant as make_constant, emit, int_list, norm_axes, norm_axis, reshape_to, static_input
from dsc.runtime.errors import ShapeError, UnsupportedOpError


@converter("Concat")
def concat(b: NodeBuilder):
    vals = b.inputs()
    # Concat-1 defaulted axis to 1; from opset 4 it is required.
    if b.opset >= 4 and not b.has_attr("axis"):
        raise b.error("attribute 'axis' is required", cls=ShapeError)
    axis = norm_axis(b, b.attr("axis", 1), len(b.sig(0).shape))
    if len(vals) == 1:
        return vals[0]
    return emit(b, g.ConcatOp, vals, axis=axis)


# ---------------------------------------------------------------- slicing


def _slice_op(b: NodeBuilder, x, shape, starts, ends, steps):
    """graph.slice, or x itself when the slice takes everything in order."""
    if list(starts) == [0] * len(shape) and list(ends) == list(shape) and list(steps) == [1] * len(shape):
        return x
    return emit(b, g.SliceOp, [x], starts=tuple(starts), ends=tuple(ends), steps=tuple(steps))


def _split_sizes(b: NodeBuilder, dim: int, n_out: int) -> list[int]:
    """Split sizes: given (attribute before 13, input 1 after), else equal parts."""
    split = None
    if b.opset < 13:
        split = b.attr("split")
        if split is None and b.has_input(1):  # Split-1 also took `split` as an input
            split = static_input(b, 1, "split")
    elif b.has_input(1):
        split = static_input(b, 1, "split")
    if split is not None:
        return int_list(split)
    n = int(b.attr("num_outputs", n_out)) if b.opset >= 18 else n_out
    if dim % n == 0:
        return [dim // n] * n
    if b.opset < 18 or not b.has_attr("num_outputs"):
        raise b.error(f"cannot split a dim of {dim} into {n} equal parts", cls=ShapeError)
    # Opset 18 num_outputs: chunks of ceil(dim / n), the last one smaller.
    chunk = -(-dim // n)
    return [chunk] * (n - 1) + [dim - chunk * (n - 1)]


@converter("Split")
def split(b: NodeBuilder):
    x, shape = b.input(0), b.sig(0).shape
    axis = norm_axis(b, b.attr("axis", 0), len(shape))
    sizes = _split_sizes(b, shape[axis], len(b.node.output))
    if any(s < 0 for s in sizes) or sum(sizes) != shape[axis]:
        raise b.error(f"split sizes {sizes} do not add up to the dim {shape[axis]} of axis {axis}", cls=ShapeError)
    if len(sizes) != len(b.node.output):
        raise b.error(f"{len(sizes)} split sizes for {len(b.node.output)} outputs", cls=ShapeError)
    outs, pos = [], 0
    for sz in sizes:
        starts, ends = [0] * len(shape), list(shape)
        starts[axis], ends[axis] = pos, pos + sz
        outs.append(_slice_op(b, x, shape, starts, ends, [1] * len(shape)))
        pos += sz
    return outs


def normalize_slice(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """ONNX Slice bounds on one axis -> Python range() bounds for graph.slice.

    Negative indices count from the end; then bounds clamp to [0, dim] for
    positive steps and to [0, dim-1] / [-1, dim-1] for negative ones (so
    INT_MAX / INT_MIN mean "to the end"). An empty dim yields an empty range.
    """
    if dim == 0:
        return 0, 0
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


def _slice_args(b: NodeBuilder, rank: int):
    """(starts, ends, axes, steps) as int lists, from attributes (opset < 10) or constant inputs."""
    if b.opset < 10:
        starts, ends = b.attr("starts"), b.attr("ends")
        if starts is None or ends is None:
            raise b.error("attributes 'starts' and 'ends' are required", cls=ShapeError)
        axes, steps = b.attr("axes"), None
    else:
        starts, ends = static_input(b, 1, "starts"), static_input(b, 2, "ends")
        axes = static_input(b, 3, "axes") if b.has_input(3) else None
        steps = static_input(b, 4, "steps") if b.has_input(4) else None
    starts, ends = int_list(starts), int_list(ends)
    axes = list(range(len(starts))) if axes is None or len(axes) == 0 else int_list(axes)
    steps = [1] * len(starts) if steps is None else int_list(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise b.error(f"starts, ends, axes and steps differ in length ({len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})", cls=ShapeError)
    if 0 in steps:
        raise b.error("slice step 0", cls=ShapeError)
    return starts, ends, norm_axes(b, axes, rank), steps


@converter("Slice")
def slice_(b: NodeBuilder):
    x, shape = b.input(0), b.sig(0).shape
    r = len(shape)
    starts, ends, steps = [0] * r, list(shape), [1] * r
    for st, en, ax, sp in zip(*_slice_args(b, r)):
        starts[ax], ends[ax] = normalize_slice(shape[ax], st, en, sp)
        steps[ax] = sp
    return _slice_op(b, x, shape, starts, ends, steps)


@converter("Gather")
def gather(b: NodeBuilder):
    # Negative indices stay as they are: graph.gather counts them from the end.
    axis = norm_axis(b, b.attr("axis", 0), len(b.sig(0).shape))
    return emit(b, g.GatherOp, [b.input(0), b.input(1)], axis=axis)


# ---------------------------------------------------------------- padding


def _pad_args(b: NodeBuilder, rank: int):
    """(full-rank pads, mode, value) from the opset's attributes or inputs."""
    mode = b.attr("mode", "constant")
    if b.opset < 11:
        pads = b.attr("paddings" if b.opset < 2 else "pads")
        if pads is None:
            raise b.error("attribute 'pads' is required", cls=ShapeError)
        return int_list(pads), mode, float(b.attr("value", 0.0))
    pads = int_list(static_input(b, 1, "pads"))
    value = 0.0
    if b.has_input(2):
        cv = np.asarray(static_input(b, 2, "constant_value")).reshape(-1)
        value = float(cv[0]) if cv.size else 0.0
    if b.has_input(3):  # opset 18: pads cover only these axes
        axes = norm_axes(b, int_list(static_input(b, 3, "axes")), rank)
        if len(pads) != 2 * len(axes):
            raise b.error(f"{len(pads)} pads for {len(axes)} axes; Pad needs two per axis", cls=ShapeError)
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[rank + a] = pads[i], pads[len(axes) + i]
        pads = full
    return pads, mode, value


@converter("Pad")
def pad(b: NodeBuilder):
    x, shape = b.input(0), b.sig(0).shape
    r = len(shape)
    pads, mode, value = _pad_args(b, r)
    if mode not in ("constant", "reflect", "edge"):
        raise b.error(f"pad mode '{mode}' is not supported", hint="dsc supports constant, reflect and edge", cls=UnsupportedOpError)
    if len(pads) != 2 * r:
        raise b.error(f"{len(pads)} pads for rank {r}; Pad needs {2 * r}", cls=ShapeError)
    if not any(pads):
        return x
    return emit(b, g.PadOp, [x], pads=tuple(pads), mode=mode, value=value)


@converter("Tile")
def tile(b: NodeBuilder):
    x, s = b.input(0), b.sig(0)
    reps = int_list(static_input(b, 1, "repeats"))
    if len(reps) != len(s.shape) or any(n < 0 for n in reps):
        raise b.error(f"repeats {reps} must be {len(s.shape)} non-negative counts, one per axis", cls=ShapeError)
    if all(n == 1 for n in reps):
        return x
    # [d0, d1] -> [1, d0, 1, d1] -> broadcast [n0, d0, n1, d1] -> [n0*d0, n1*d1]:
    # each axis becomes n copies of the whole axis, which is exactly Tile.
    lifted = reshape_to(b, x, [v for d in s.shape for v in (1, d)])
    wide = [v for n, d in zip(reps, s.shape) for v in (n, d)]
    spread = emit(b, g.BroadcastToOp, [lifted], result_types=[tensor_type(wide, s.dtype)])
    return reshape_to(b, spread, [n * d for n, d in zip(reps, s.shape)])


# -------------------------------------------------------------- constants

_CONSTANT_ATTRS = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


@converter("Constant")
def constant(b: NodeBuilder):
    for unsupported in ("sparse_value", "value_string", "value_strings"):
        if b.has_attr(unsupported):
            raise b.error(f"Constant with '{unsupported}' is not supported", hint="dsc computes with dense numeric tensors only", cls=UnsupportedOpError)
    if b.has_attr("value"):
        arr = np.asarray(b.attr("value"))
    else:
        name = next((n for n in _CONSTANT_ATTRS if b.has_attr(n)), None)
        if name is None:
            raise b.error("Constant has no value attribute", cls=ShapeError)
        arr = np.asarray(b.attr(name), dtype=_CONSTANT_ATTRS[name])
    if arr.dtype.kind not in "biuf":
        raise b.error(f"Constant of element type {arr.dtype} is not supported", hint="dsc computes with numeric tensors only", cls=UnsupportedOpError)
    return make_constant(b, arr, b.node.output[0] or f"{b.name}_value")


@converter("ConstantOfShape")
def constant_of_shape(b: NodeBuilder):
    shape = int_list(static_input(b, 0, "shape"))
    if any(d < 0 for d in shape):
        raise b.error(f"negative dim in shape {shape}", cls=ShapeError)
    fill = b.attr("value")
    fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill).reshape(-1)
    return make_constant(b, np.full(shape, fill[0], dtype=fill.dtype), f"{b.name}_fill")


@converter("Range")
def range_(b: NodeBuilder):
    start, limit, delta = (np.asarray(static_input(b, i, w)).reshape(-1)[0] for i, w in enumerate(("start", "limit", "delta")))
    if delta == 0:
        raise b.error("delta is 0", cls=ShapeError)
    # As the ONNX reference: arange on Python scalars, then the inputs' type.
    values = np.arange(start.item(), limit.item(), delta.item()).astype(start.dtype)
    return make_constant(b, values, f"{b.name}_range")
