"""Indexing and NumPy protocol support of the traced Tensor.

`getitem` implements NumPy basic indexing (ints, slices with steps, None,
...) plus one integer-array index as `graph.slice` + `graph.gather` +
`graph.reshape`. `UFUNCS` and `ARRAY_FUNCTIONS` map NumPy ufuncs and
functions called on traced tensors (`np.exp(t)`, `np.concatenate([t, u])`)
onto Tensor operations; anything else is a TraceError naming the user's line.
"""

from __future__ import annotations

import numpy as np

from dsc.dialects import graph as g
from dsc.frontends.trace.tensor import (
    Tensor,
    _binary,
    _compare,
    _compare_dtype_matmul,
    _logical,
    as_tensor,
    concat,
    floor_divide,
    maximum,
    minimum,
    stack,
    where,
)
from dsc.frontends.trace.tracer import trace_error

# ---------------------------------------------------------------- indexing


def _is_index_array(k) -> bool:
    return isinstance(k, Tensor | np.ndarray | list) and not isinstance(k, bool)


def getitem(x: Tensor, key) -> Tensor:
    """NumPy basic indexing (ints, slices, None, ...) plus one integer index array (a gather)."""
    key = key if isinstance(key, tuple) else (key,)
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    if sum(1 for k in key if k is Ellipsis) > 1:
        raise trace_error("an index can only have one ellipsis ('...')")
    if n_real > x.ndim:
        raise trace_error(f"too many indices ({n_real}) for a tensor of rank {x.ndim}")
    items = []
    for k in key:
        if k is Ellipsis:
            items += [slice(None)] * (x.ndim - n_real)
        else:
            items.append(k)
    items += [slice(None)] * (x.ndim - sum(1 for k in items if k is not None))
    starts, ends, steps, out_dims, gathers = [], [], [], [], []
    axis = 0
    for k in items:
        if k is None:
            out_dims.append(("new",))
            continue
        d = x.shape[axis]
        if isinstance(k, bool | np.bool_):
            raise trace_error("boolean indices give data-dependent shapes, which dsc cannot compile", hint="use dsc.nn.functional.where(mask, x, 0) instead")
        if isinstance(k, int | np.integer):
            i = int(k)
            if not -d <= i < d:
                raise trace_error(f"index {i} is out of bounds for axis {axis} with size {d}")
            i %= d
            starts.append(i)
            ends.append(i + 1)
            steps.append(1)
        elif isinstance(k, slice):
            if any(isinstance(v, Tensor) for v in (k.start, k.stop, k.step)):
                raise trace_error("slice bounds must be Python ints, not traced tensors (the result's shape would depend on data)")
            st, en, sp = k.indices(d)
            starts.append(st)
            ends.append(en)
            steps.append(sp)
            out_dims.append(("axis", axis))
        elif _is_index_array(k):
            idx = as_tensor(k if isinstance(k, Tensor) else np.asarray(k), tr=x._tr)
            if idx.dtype.kind not in "iu":
                raise trace_error(f"index arrays must be integers, got {idx.dtype}", hint="boolean masks give data-dependent shapes; use dsc.nn.functional.where")
            starts.append(0)
            ends.append(d)
            steps.append(1)
            gathers.append((axis, idx))
            out_dims.append(("gather", idx))
        else:
            raise trace_error(f"unsupported index {k!r} ({type(k).__name__})", hint="use ints, slices, None, ... or one integer array")
        axis += 1
    if len(gathers) > 1:
        raise trace_error("more than one index array in one subscript is not supported", hint="index one axis at a time: x[i][:, j]")
    y = x
    full = all(st == 0 and en == d and sp == 1 for st, en, sp, d in zip(starts, ends, steps, x.shape))
    if not full:
        y = x._tr.emit(g.SliceOp, [x], starts=tuple(starts), ends=tuple(ends), steps=tuple(steps))
    for ax, idx in gathers:
        y = x._tr.emit(g.GatherOp, [y, idx], axis=ax)
    shape = []
    for d in out_dims:
        if d[0] == "new":
            shape.append(1)
        elif d[0] == "axis":
            shape.append(len(range(starts[d[1]], ends[d[1]], steps[d[1]])))
        else:
            shape += list(d[1].shape)
    return y.reshape(tuple(shape))


# ---------------------------------------------------------------- numpy protocol tables


def _unary_fn(method):
    return lambda x: getattr(as_tensor(x), method)()


UFUNCS = {
    np.add: lambda a, b: _binary(g.AddOp, a, b, np.add),
    np.subtract: lambda a, b: _binary(g.SubOp, a, b, np.subtract),
    np.multiply: lambda a, b: _binary(g.MulOp, a, b, np.multiply),
    np.true_divide: lambda a, b: _binary(g.DivOp, a, b, np.true_divide),
    np.floor_divide: floor_divide,
    np.power: lambda a, b: as_tensor(a) ** b if isinstance(a, Tensor) else _binary(g.PowOp, a, b, np.power),
    np.maximum: maximum,
    np.minimum: minimum,
    np.matmul: _compare_dtype_matmul,
    np.negative: lambda a: -as_tensor(a),
    np.absolute: lambda a: abs(as_tensor(a)),
    np.square: lambda a: as_tensor(a) * a,
    np.exp: _unary_fn("exp"),
    np.log: _unary_fn("log"),
    np.sqrt: _unary_fn("sqrt"),
    np.tanh: _unary_fn("tanh"),
    np.floor: _unary_fn("floor"),
    np.ceil: _unary_fn("ceil"),
    np.equal: lambda a, b: _compare(g.EqualOp, a, b),
    np.not_equal: lambda a, b: as_tensor(a) != b,
    np.less: lambda a, b: _compare(g.LessOp, a, b),
    np.less_equal: lambda a, b: _compare(g.LessEqualOp, a, b),
    np.greater: lambda a, b: _compare(g.GreaterOp, a, b),
    np.greater_equal: lambda a, b: _compare(g.GreaterEqualOp, a, b),
    np.logical_and: lambda a, b: _logical(g.AndOp, a, b),
    np.logical_or: lambda a, b: _logical(g.OrOp, a, b),
    np.logical_xor: lambda a, b: _logical(g.XorOp, a, b),
    np.logical_not: lambda a: ~as_tensor(a, np.bool_),
}


def _method(name):
    return lambda a, *args, **kw: getattr(as_tensor(a), name)(*args, **kw)


ARRAY_FUNCTIONS = {
    np.concatenate: lambda xs, axis=0: concat(xs, axis),
    np.stack: lambda xs, axis=0: stack(xs, axis),
    np.where: where,
    np.sum: _method("sum"),
    np.mean: _method("mean"),
    np.max: _method("max"),
    np.amax: _method("max"),
    np.min: _method("min"),
    np.amin: _method("min"),
    np.prod: _method("prod"),
    np.var: _method("var"),
    np.std: _method("std"),
    np.reshape: lambda a, shape=None, *args, **kw: as_tensor(a).reshape(shape if shape is not None else kw["newshape"]),
    np.transpose: lambda a, axes=None: as_tensor(a).transpose(*(axes or ())),
    np.swapaxes: _method("swapaxes"),
    np.squeeze: _method("squeeze"),
    np.expand_dims: _method("expand_dims"),
    np.clip: lambda a, a_min=None, a_max=None, **kw: as_tensor(a).clip(kw.get("min", a_min), kw.get("max", a_max)),
    np.broadcast_to: lambda a, shape: as_tensor(a).broadcast_to(shape),
    np.shape: lambda a: as_tensor(a).shape,
    np.ndim: lambda a: as_tensor(a).ndim,
    np.size: lambda a: as_tensor(a).size,
}
