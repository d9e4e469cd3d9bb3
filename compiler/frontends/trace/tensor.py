"""The traced Tensor: NumPy's habits, recorded as graph-dialect ops.

A `Tensor` exists only while `@dsc.jit` (or the torch frontend) traces a
function: it knows its static shape and dtype, never its values. Operators
follow NumPy: broadcasting, dtype promotion (NumPy 2 rules, decided by NumPy
itself on empty arrays, so Python scalars are "weak": `x_f32 * 2` stays
float32), `@`, basic indexing (ints, slices with steps, `None`, `...`) plus one
integer-array index (a gather), reshape/transpose, reductions with
axis/keepdims. A few torch spellings are accepted too (`view`, `permute`,
`dim=`/`keepdim=`, `transpose(d0, d1)` on rank > 2).

Asking for a value — `float(t)`, `int(t)`, `t.item()`, `np.asarray(t)`,
`print(t)`, `t[...] = v` — raises a `TraceError` naming the user's line.
`bool(t)` of a one-element tensor is allowed: it is a branch point of the
tracer (see tracer.py) and becomes `graph.if`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dsc.dialects import graph as g
from dsc.dialects.tensor_types import Sig
from dsc.frontends.trace.tracer import Tracer, TraceError, current, trace_error


def tracer_of(*xs) -> Tracer:
    for x in xs:
        if isinstance(x, Tensor):
            return x._tr
        if isinstance(x, list | tuple):
            for y in x:
                if isinstance(y, Tensor):
                    return y._tr
    tr = current()
    if tr is None:
        raise trace_error("dsc tensor operations need a trace in progress", hint="call them inside a @dsc.jit function (or a dsc.nn module called on arrays)")
    return tr


def _probe(x):
    """What NumPy's promotion sees for x: a weak Python scalar, or an empty array of x's dtype."""
    if isinstance(x, Tensor):
        return np.empty((0,), x.dtype)
    if isinstance(x, bool | int | float):
        return x
    return np.empty((0,), np.asarray(x).dtype)


def as_tensor(x, dtype=None, tr: Tracer | None = None) -> Tensor:
    """x as a Tensor of `dtype` (cast, or a constant for arrays and scalars)."""
    if isinstance(x, Tensor):
        return x.astype(dtype) if dtype is not None else x
    tr = tr or tracer_of()
    if hasattr(x, "__array__") and not isinstance(x, np.ndarray | np.generic):
        x = np.asarray(x)
    arr = np.asarray(x, dtype=dtype)
    return tr.constant(arr)


def _binary(op_cls, x, y, ufunc) -> Tensor:
    tr = tracer_of(x, y)
    dt = ufunc(_probe(x), _probe(y)).dtype
    return tr.emit(op_cls, [as_tensor(x, dt, tr), as_tensor(y, dt, tr)])


def _compare(op_cls, x, y) -> Tensor:
    tr = tracer_of(x, y)
    dt = np.result_type(_probe(x), _probe(y))
    return tr.emit(op_cls, [as_tensor(x, dt, tr), as_tensor(y, dt, tr)])


def _logical(op_cls, x, y) -> Tensor:
    tr = tracer_of(x, y)
    for v in (x, y):
        if np.result_type(_probe(v)) != np.bool_:
            raise trace_error("&, | and ^ of dsc tensors are logical: both sides must be bool", hint="compare first, e.g. (x > 0) & (y > 0)")
    return tr.emit(op_cls, [as_tensor(x, np.bool_, tr), as_tensor(y, np.bool_, tr)])


def _axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    out = set()
    for a in axes:
        a = int(a)
        if not -ndim <= a < max(ndim, 1):
            raise trace_error(f"axis {a} is out of range for a tensor of rank {ndim}", cls=TraceError)
        out.add(a % ndim if ndim else 0)
    return tuple(sorted(out))


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        return tuple(shape[0])
    return tuple(shape)


_ARRAY_HINT = "keep the computation in dsc tensor ops, or return the tensor from the @dsc.jit function and convert the result"


class Tensor:
    """A value of a traced function: static shape and dtype, no data."""

    __slots__ = ("_tr", "_id", "shape", "dtype")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to the Tensor

    def __init__(self, tracer: Tracer, vid: int, sig: Sig):
        self._tr = tracer
        self._id = vid
        self.shape: tuple[int, ...] = tuple(sig.shape)
        self.dtype: np.dtype = np.dtype(sig.dtype)

    # ---------------------------------------------------------- metadata
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return self.size

    def __len__(self) -> int:
        if not self.shape:
            raise trace_error("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise trace_error("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        return f"dsc.Tensor(shape={self.shape}, dtype={self.dtype}, traced)"

    __hash__ = object.__hash__

    # ------------------------------------------------ values: not while tracing
    def _no_value(self, what: str):
        raise trace_error(f"{what} needs the value of a traced tensor ({'x'.join(map(str, self.shape)) or 'scalar'} {self.dtype}), which is only known when the compiled function runs", hint=_ARRAY_HINT)

    def __float__(self):
        self._no_value("float()")

    def __int__(self):
        self._no_value("int()")

    def __index__(self):
        self._no_value("using a tensor as a Python int (an index, range(), ...)")

    def __complex__(self):
        self._no_value("complex()")

    def item(self):
        self._no_value(".item()")

    def tolist(self):
        self._no_value(".tolist()")

    def numpy(self):
        self._no_value(".numpy()")

    def __array__(self, dtype=None, copy=None):
        self._no_value("converting to a NumPy array (np.asarray, np.array)")

    def __str__(self):
        self._no_value("printing (str(), print(), f-strings)")

    def __format__(self, spec):
        self._no_value("formatting (f-strings, format())")

    def __contains__(self, item):
        self._no_value("`in`")

    def __setitem__(self, key, value):
        raise trace_error("in-place assignment to a traced tensor (t[...] = v) is a side effect dsc cannot trace", hint="build a new tensor, e.g. with dsc.nn.functional.where or concat")

    def __bool__(self) -> bool:
        if self.size != 1:
            raise trace_error(f"the truth value of a tensor with {self.size} elements is ambiguous", hint="reduce it to one element first, e.g. `if x.max() > 0:`")
        cond = self if self.dtype == np.bool_ else self != 0
        return self._tr.decide(cond)

    # ------------------------------------------------------- arithmetic
    def __add__(self, o):
        return _binary(g.AddOp, self, o, np.add)

    def __radd__(self, o):
        return _binary(g.AddOp, o, self, np.add)

    def __sub__(self, o):
        return _binary(g.SubOp, self, o, np.subtract)

    def __rsub__(self, o):
        return _binary(g.SubOp, o, self, np.subtract)

    def __mul__(self, o):
        return _binary(g.MulOp, self, o, np.multiply)

    def __rmul__(self, o):
        return _binary(g.MulOp, o, self, np.multiply)

    def __truediv__(self, o):
        return _binary(g.DivOp, self, o, np.true_divide)

    def __rtruediv__(self, o):
        return _binary(g.DivOp, o, self, np.true_divide)

    def __floordiv__(self, o):
        return floor_divide(self, o)

    def __rfloordiv__(self, o):
        return floor_divide(o, self)

    def __mod__(self, o):
        return self - floor_divide(self, o) * o

    def __rmod__(self, o):
        return o - floor_divide(o, self) * self

    def __pow__(self, o):
        if isinstance(o, int | float) and not isinstance(o, bool) and self.dtype.kind == "f":
            if o == 1:
                return self
            if o == 2:
                return self * self
            if o == 0.5:
                return self.sqrt()
            if o == -1:
                return self._tr.emit(g.ReciprocalOp, [self])
        return _binary(g.PowOp, self, o, np.power)

    def __rpow__(self, o):
        return _binary(g.PowOp, o, self, np.power)

    def __matmul__(self, o):
        return _compare_dtype_matmul(self, o)

    def __rmatmul__(self, o):
        return _compare_dtype_matmul(o, self)

    def __neg__(self):
        return self._tr.emit(g.NegOp, [self])

    def __pos__(self):
        return self

    def __abs__(self):
        return self._tr.emit(g.AbsOp, [self])

    def __invert__(self):
        if self.dtype != np.bool_:
            raise trace_error("~ of a dsc tensor is logical not: the tensor must be bool")
        return self._tr.emit(g.NotOp, [self])

    # ------------------------------------------------------- comparisons
    def __eq__(self, o):  # noqa: D105
        return _compare(g.EqualOp, self, o)

    def __ne__(self, o):
        eq = _compare(g.EqualOp, self, o)
        return eq._tr.emit(g.NotOp, [eq])

    def __lt__(self, o):
        return _compare(g.LessOp, self, o)

    def __le__(self, o):
        return _compare(g.LessEqualOp, self, o)

    def __gt__(self, o):
        return _compare(g.GreaterOp, self, o)

    def __ge__(self, o):
        return _compare(g.GreaterEqualOp, self, o)

    def __and__(self, o):
        return _logical(g.AndOp, self, o)

    __rand__ = __and__

    def __or__(self, o):
        return _logical(g.OrOp, self, o)

    __ror__ = __or__

    def __xor__(self, o):
        return _logical(g.XorOp, self, o)

    __rxor__ = __xor__

    # -------------------------------------------------------- elementwise
    def astype(self, dtype) -> Tensor:
        dt = np.dtype(dtype)
        if dt == self.dtype:
            return self
        return self._tr.emit(g.CastOp, [self], result_types=[Sig(self.shape, dt)])

    def _float(self) -> Tensor:
        return self if self.dtype.kind == "f" else self.astype(np.float64)

    def exp(self):
        return self._tr.emit(g.ExpOp, [self._float()])

    def log(self):
        return self._tr.emit(g.LogOp, [self._float()])

    def sqrt(self):
        return self._tr.emit(g.SqrtOp, [self._float()])

    def tanh(self):
        return self._tr.emit(g.TanhOp, [self._float()])

    def sigmoid(self):
        return self._tr.emit(g.SigmoidOp, [self._float()])

    def relu(self):
        return self._tr.emit(g.ReluOp, [self])

    def abs(self):
        return abs(self)

    def floor(self):
        return self if self.dtype.kind != "f" else self._tr.emit(g.FloorOp, [self])

    def ceil(self):
        return self if self.dtype.kind != "f" else self._tr.emit(g.CeilOp, [self])

    def clip(self, min=None, max=None):
        if self.dtype.kind != "f":
            out = self
            if min is not None:
                out = maximum(out, min)
            if max is not None:
                out = minimum(out, max)
            return out
        return self._tr.emit(g.ClipOp, [self], min=None if min is None else float(min), max=None if max is None else float(max))

    clamp = clip

    # --------------------------------------------------------- reductions
    def _reduce(self, op_cls, axis, keepdims, dim=None, keepdim=None):
        axis = dim if axis is None and dim is not None else axis
        keepdims = bool(keepdim) if keepdim is not None else bool(keepdims)
        if axis is not None and not isinstance(axis, int | np.integer) and len(tuple(axis)) == 0:
            return self  # NumPy: axis=() reduces nothing
        axes = _axes(axis, self.ndim)
        if not axes:
            return self
        return self._tr.emit(op_cls, [self], axes=axes, keepdims=int(keepdims))

    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        x = self.astype(np.int64) if self.dtype == np.bool_ else self
        return x._reduce(g.ReduceSumOp, axis, keepdims, dim, keepdim)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self._float()._reduce(g.ReduceMeanOp, axis, keepdims, dim, keepdim)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self._reduce(g.ReduceMaxOp, axis, keepdims, dim, keepdim)

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self._reduce(g.ReduceMinOp, axis, keepdims, dim, keepdim)

    def prod(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self._reduce(g.ReduceProdOp, axis, keepdims, dim, keepdim)

    def var(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis = dim if axis is None and dim is not None else axis
        keepdims = bool(keepdim) if keepdim is not None else keepdims
        d = self._float() - self._float().mean(axis, keepdims=True)
        return (d * d).mean(axis, keepdims=keepdims)

    def std(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return self.var(axis, keepdims, dim=dim, keepdim=keepdim).sqrt()

    amax, amin = max, min

    # ------------------------------------------------------------- shapes
    def reshape(self, *shape) -> Tensor:
        shape = [int(d) for d in _shape_arg(shape)]
        if shape.count(-1) > 1:
            raise trace_error(f"reshape to {shape}: only one dimension can be -1")
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            if known == 0 or self.size % known:
                raise trace_error(f"cannot reshape a tensor of shape {list(self.shape)} to {shape}", cls=TraceError)
            shape[shape.index(-1)] = self.size // known
        if math.prod(shape) != self.size or any(d < 0 for d in shape):
            raise trace_error(f"cannot reshape a tensor of shape {list(self.shape)} ({self.size} elements) to {shape}")
        if tuple(shape) == self.shape:
            return self
        return self._tr.emit(g.ReshapeOp, [self], result_types=[Sig(tuple(shape), self.dtype)])

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        s, e = start_dim % self.ndim, end_dim % self.ndim
        return self.reshape(self.shape[:s] + (math.prod(self.shape[s : e + 1]),) + self.shape[e + 1 :])

    ravel = flatten

    def transpose(self, *axes) -> Tensor:
        """NumPy: a permutation (none: reversed); two axes of a tensor of another rank: swap them (torch)."""
        axes = _shape_arg(axes)
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        elif len(axes) == 2 and self.ndim != 2:
            return self.swapaxes(*axes)
        return self.permute(*axes)

    def permute(self, *dims) -> Tensor:
        dims = tuple(int(d) % max(self.ndim, 1) for d in _shape_arg(dims))
        if sorted(dims) != list(range(self.ndim)):
            raise trace_error(f"{list(dims)} is not a permutation of the {self.ndim} axes of a tensor of shape {list(self.shape)}")
        if dims == tuple(range(self.ndim)):
            return self
        return self._tr.emit(g.TransposeOp, [self], perm=dims)

    def swapaxes(self, a: int, b: int) -> Tensor:
        perm = list(range(self.ndim))
        a, b = _axes(a, self.ndim)[0], _axes(b, self.ndim)[0]
        perm[a], perm[b] = perm[b], perm[a]
        return self.permute(*perm)

    @property
    def T(self) -> Tensor:
        return self.transpose()

    @property
    def mT(self) -> Tensor:
        return self.swapaxes(-2, -1)

    def squeeze(self, axis=None) -> Tensor:
        axes = [i for i, d in enumerate(self.shape) if d == 1] if axis is None else list(_axes(axis, self.ndim))
        bad = [a for a in axes if self.shape[a] != 1]
        if bad:
            raise trace_error(f"cannot squeeze axis {bad[0]} of size {self.shape[bad[0]]}")
        return self.reshape(tuple(d for i, d in enumerate(self.shape) if i not in axes))

    def expand_dims(self, axis) -> Tensor:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        rank = self.ndim + len(axes)
        pos = sorted(a % rank for a in axes)
        shape = list(self.shape)
        for p in pos:
            shape.insert(p, 1)
        return self.reshape(tuple(shape))

    unsqueeze = expand_dims

    def broadcast_to(self, *shape) -> Tensor:
        shape = tuple(int(d) if d != -1 else self.shape[i - (len(_shape_arg(shape)) - self.ndim)] for i, d in enumerate(_shape_arg(shape)))
        if shape == self.shape:
            return self
        return self._tr.emit(g.BroadcastToOp, [self], result_types=[Sig(shape, self.dtype)])

    expand = broadcast_to

    def contiguous(self) -> Tensor:
        return self

    detach = clone = copy = contiguous

    # ------------------------------------------------------------ indexing
    def __getitem__(self, key) -> Tensor:
        from dsc.frontends.trace.indexing import getitem

        return getitem(self, key)

    # ----------------------------------------------------------- numpy interop
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from dsc.frontends.trace.indexing import UFUNCS

        fn = UFUNCS.get(ufunc)
        if method != "__call__" or fn is None or kwargs:
            raise trace_error(f"np.{ufunc.__name__}{'' if method == '__call__' else '.' + method}{' with ' + ', '.join(kwargs) if kwargs else ''} on a traced tensor is not supported", hint="use the Tensor's operators and methods, or dsc.nn.functional")
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        from dsc.frontends.trace.indexing import ARRAY_FUNCTIONS

        fn = ARRAY_FUNCTIONS.get(func)
        if fn is None:
            raise trace_error(f"np.{func.__name__} on a traced tensor is not supported", hint="use the Tensor's methods or dsc.nn.functional")
        return fn(*args, **kwargs)


def _compare_dtype_matmul(x, y) -> Tensor:
    tr = tracer_of(x, y)
    dt = np.result_type(_probe(x), _probe(y))
    a, b = as_tensor(x, dt, tr), as_tensor(y, dt, tr)
    if a.ndim == 0 or b.ndim == 0:
        raise trace_error("matmul (@) needs operands of rank >= 1; use * for scalars")
    return tr.emit(g.MatMulOp, [a, b])


def floor_divide(x, y) -> Tensor:
    tr = tracer_of(x, y)
    dt = np.floor_divide(_probe(x), _probe(y)).dtype
    if dt.kind == "f":
        q = as_tensor(x, dt, tr) / as_tensor(y, dt, tr)
        return tr.emit(g.FloorOp, [q])
    q = as_tensor(x, np.float64, tr) / as_tensor(y, np.float64, tr)
    return tr.emit(g.FloorOp, [q]).astype(dt)


def maximum(x, y) -> Tensor:
    return _binary(g.MaxOp, x, y, np.maximum)


def minimum(x, y) -> Tensor:
    return _binary(g.MinOp, x, y, np.minimum)


def where(cond, x, y) -> Tensor:
    tr = tracer_of(cond, x, y)
    dt = np.result_type(_probe(x), _probe(y))
    return tr.emit(g.WhereOp, [as_tensor(cond, np.bool_, tr), as_tensor(x, dt, tr), as_tensor(y, dt, tr)])


def concat(xs: Sequence, axis: int = 0) -> Tensor:
    tr = tracer_of(list(xs))
    dt = np.result_type(*[_probe(x) for x in xs])
    ts = [as_tensor(x, dt, tr) for x in xs]
    if len(ts) == 1:
        return ts[0]
    return tr.emit(g.ConcatOp, ts, axis=_axes(axis, ts[0].ndim)[0])


def stack(xs: Sequence, axis: int = 0) -> Tensor:
    tr = tracer_of(list(xs))
    ts = [as_tensor(x, tr=tr) for x in xs]
    rank = ts[0].ndim + 1
    return concat([t.expand_dims(axis % rank) for t in ts], axis % rank)
