"""Converters of ONNX elementwise ops: arithmetic, comparisons, activations, Cast, Where."""

from __future__ import annotations

import numpy as np

from dsc.dialects import graph as g
from dsc.dialects.tensor_types import tensor_type
from dsc.frontends.onnx.importer import NodeBuilder, converter

_UNARY = {
    "Relu": g.ReluOp,
    "Sigmoid": g.SigmoidOp,
    "Tanh": g.TanhOp,
    "Erf": g.ErfOp,
    "Exp": g.ExpOp,
    "Log": g.LogOp,
    "Sqrt": g.SqrtOp,
    "Neg": g.NegOp,
    "Abs": g.AbsOp,
    "Reciprocal": g.ReciprocalOp,
    "Floor": g.FloorOp,
    "Ceil": g.CeilOp,
    "Not": g.NotOp,
    "HardSwish": g.HardSwishOp,
    "Softplus": g.SoftplusOp,
}

_BINARY = {
    "Add": g.AddOp,
    "Sub": g.SubOp,
    "Mul": g.MulOp,
    "Div": g.DivOp,
    "Pow": g.PowOp,
    "And": g.AndOp,
    "Or": g.OrOp,
    "Xor": g.XorOp,
    "Equal": g.EqualOp,
    "Less": g.LessOp,
    "LessOrEqual": g.LessEqualOp,
    "Greater": g.GreaterOp,
    "GreaterOrEqual": g.GreaterEqualOp,
}

_VARIADIC = {"Max": g.MaxOp, "Min": g.MinOp, "Sum": g.AddOp}


@converter(*_UNARY)
def unary(b: NodeBuilder):
    return b.emit(_UNARY[b.op_type], [b.input(0)])


def _legacy_broadcast(b: NodeBuilder, lhs, rhs):
    """Opset < 7 Add/Mul/...: broadcast=1 with axis aligns rhs at `axis`."""
    if b.opset >= 7 or not b.attr("broadcast", 0) or not b.has_attr("axis"):
        return rhs
    lr, rr = len(lhs.type.get_shape()), len(rhs.type.get_shape())
    axis = b.attr("axis") % lr
    trailing = lr - axis - rr
    if trailing > 0:
        shape = tuple(rhs.type.get_shape()) + (1,) * trailing
        rhs = b.emit(g.ReshapeOp, [rhs], result_types=[tensor_type(shape, b.sig(1).dtype)])
    return rhs


@converter(*_BINARY)
def binary(b: NodeBuilder):
    lhs, rhs = b.input(0), b.input(1)
    rhs = _legacy_broadcast(b, lhs, rhs)
    if b.op_type == "Pow" and b.sig(1).dtype != b.sig(0).dtype:
        rhs = b.emit(g.CastOp, [rhs], result_types=[tensor_type(rhs.type.get_shape(), b.sig(0).dtype)])
    return b.emit(_BINARY[b.op_type], [lhs, rhs])


@converter(*_VARIADIC)
def variadic(b: NodeBuilder):
    vals = b.inputs()
    acc = vals[0]
    for v in vals[1:]:
        acc = b.emit(_VARIADIC[b.op_type], [acc, v])
    return acc


@converter("Mean")
def mean(b: NodeBuilder):
    vals = b.inputs()
    acc = vals[0]
    for v in vals[1:]:
        acc = b.emit(g.AddOp, [acc, v])
    n = b.constant(np.asarray(len(vals), dtype=b.sig(0).dtype))
    return b.emit(g.DivOp, [acc, n])


@converter("LeakyRelu")
def leaky_relu(b: NodeBuilder):
    return b.emit(g.LeakyReluOp, [b.input(0)], alpha=float(b.attr("alpha", 0.01)))


@converter("HardSigmoid")
def hard_sigmoid(b: NodeBuilder):
    return b.emit(g.HardSigmoidOp, [b.input(0)], alpha=float(b.attr("alpha", 0.2)), beta=float(b.attr("beta", 0.5)))


@converter("Clip")
def clip(b: NodeBuilder):
    if b.opset < 11:
        lo, hi = b.attr("min"), b.attr("max")
    else:
        lo = b.const(1, "min") if b.has_input(1) else None
        hi = b.const(2, "max") if b.has_input(2) else None
    lo = None if lo is None else float(np.asarray(lo).reshape(-1)[0])
    hi = None if hi is None else float(np.asarray(hi).reshape(-1)[0])
    return b.emit(g.ClipOp, [b.input(0)], min=lo, max=hi)


@converter("Gelu")
def gelu(b: NodeBuilder):
    return b.emit(g.GeluOp, [b.input(0)], approximate=b.attr("approximate", "none"))


@converter("Cast")
def cast(b: NodeBuilder):
    import onnx

    to = onnx.helper.tensor_dtype_to_np_dtype(b.attr("to"))
    x = b.input(0)
    if np.dtype(to) == b.sig(0).dtype:
        return x
    return b.emit(g.CastOp, [x], result_types=[tensor_type(x.type.get_shape(), to)])


@converter("Where")
def where(b: NodeBuilder):
    return b.emit(g.WhereOp, [b.input(0), b.input(1), b.input(2)])


@converter("Identity", "Dropout")
def identity(b: NodeBuilder):
    x = b.input(0)
    if b.op_type == "Dropout" and len(b.node.output) > 1 and b.node.output[1]:
        mask = b.constant(np.ones(x.type.get_shape(), dtype=bool), f"{b.name}_mask")
        return [x, mask]
    return [x]
