"""NumPy kernels of the reference evaluator: elementwise, reduction and data movement.

Each kernel is `fn(op, *arrays, **attrs)` and returns the result array(s);
the evaluator casts results to the op's declared dtype. Convolution, pooling
and normalization kernels are in `kernels_nn.py`.
"""

from __future__ import annotations

import numpy as np

from dsc.dialects import graph as g
from dsc.reference.evaluator import kernel

def erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): vectorized, unlike math.erf."""
    if not x.size:
        return x
    a = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (np.sign(x) * (1.0 - poly * np.exp(-a * a))).astype(x.dtype)


_UNARY = {
    g.ReluOp: lambda x: np.maximum(x, 0).astype(x.dtype),
    g.SigmoidOp: lambda x: 1 / (1 + np.exp(-x)),
    g.TanhOp: np.tanh,
    g.ErfOp: erf,
    g.ExpOp: np.exp,
    g.LogOp: np.log,
    g.SqrtOp: np.sqrt,
    g.NegOp: np.negative,
    g.AbsOp: np.abs,
    g.ReciprocalOp: np.reciprocal,
    g.FloorOp: np.floor,
    g.CeilOp: np.ceil,
    g.NotOp: np.logical_not,
    g.HardSwishOp: lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    g.SoftplusOp: lambda x: np.log1p(np.exp(x)),
}

_BINARY = {
    g.AddOp: np.add,
    g.SubOp: np.subtract,
    g.MulOp: np.multiply,
    g.PowOp: np.power,
    g.MaxOp: np.maximum,
    g.MinOp: np.minimum,
    g.AndOp: np.logical_and,
    g.OrOp: np.logical_or,
    g.XorOp: np.logical_xor,
    g.EqualOp: np.equal,
    g.LessOp: np.less,
    g.LessEqualOp: np.less_equal,
    g.GreaterOp: np.greater,
    g.GreaterEqualOp: np.greater_equal,
}

for _op, _fn in _UNARY.items():
    kernel(_op)(lambda op, x, _fn=_fn, **a: _fn(x))
for _op, _fn in _BINARY.items():
    kernel(_op)(lambda op, x, y, _fn=_fn, **a: _fn(x, y))


@kernel(g.DivOp)
def _div(op, x, y):
    if x.dtype.kind in "iu":  # ONNX integer division truncates toward zero
        return np.trunc(np.true_divide(x, y)).astype(x.dtype)
    return np.true_divide(x, y)


@kernel(g.LeakyReluOp)
def _leaky_relu(op, x, alpha):
    return np.where(x >= 0, x, x * np.asarray(alpha, x.dtype))


@kernel(g.HardSigmoidOp)
def _hard_sigmoid(op, x, alpha, beta):
    return np.clip(x * np.asarray(alpha, x.dtype) + np.asarray(beta, x.dtype), 0, 1)


@kernel(g.ClipOp)
def _clip(op, x, min=None, max=None):
    if min is not None:
        x = np.maximum(x, np.asarray(min).astype(x.dtype))
    if max is not None:
        x = np.minimum(x, np.asarray(max).astype(x.dtype))
    return x


@kernel(g.GeluOp)
def _gelu(op, x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(np.asarray(2, x.dtype))))


@kernel(g.CastOp)
def _cast(op, x):
    from dsc.dialects.tensor_types import sig_of

    dt = sig_of(op.result.type).dtype
    if x.dtype.kind == "f" and dt.kind in "iu":
        x = np.trunc(x)
    return x.astype(dt)


@kernel(g.WhereOp)
def _where(op, c, x, y):
    return np.where(c, x, y)

from dsc.reference import kernels_data  # noqa: E402,F401

# The nn and reduction kernels register themselves on import.
from dsc.reference import kernels_nn, kernels_reduce  # noqa: E402, F401


# ------------------------------------------------------------------ bfloat16
#
# NumPy has no bfloat16 arithmetic of its own (ml_dtypes' bfloat16 is a 'V'-kind
# dtype: no finfo/iinfo, slow or missing loops for matmul and friends). Every
# kernel therefore sees bfloat16 operands widened to float32 (exact) and
# computes in float32; the evaluator rounds each result to the op's declared
# dtype, so a bfloat16 op rounds once, on the way out, as float16 convolutions
# and reductions do in kernels_nn.py / kernels_reduce.py.

from dsc.dialects.tensor_types import BFLOAT16  # noqa: E402
from dsc.reference.evaluator import KERNELS  # noqa: E402


def _widen_bf16(fn):
    if getattr(fn, "_widens_bf16", False):
        return fn

    def run(op, *args, **attrs):
        if any(getattr(a, "dtype", None) == BFLOAT16 for a in args):
            args = tuple(a.astype(np.float32) if getattr(a, "dtype", None) == BFLOAT16 else a for a in args)
        return fn(op, *args, **attrs)

    run._widens_bf16 = True
    run.__name__ = getattr(fn, "__name__", "kernel")
    run.__doc__ = fn.__doc__
    return run


for _op in list(KERNELS):
    KERNELS[_op] = _widen_bf16(KERNELS[_op])
