"""The graph dialect: tensor operations with value semantics and static shapes.

One op per tensor-operation family, close to ONNX so import is direct, but
normalized: attributes are always present and explicit (pads as
[begin..., end...], axes non-negative), Flatten/Squeeze/Unsqueeze are
`graph.reshape`, Split is `graph.slice`, Identity and Dropout vanish.

Every op infers its result type from its operands and attributes
(`infer`); the verifier checks the stored result type against it, so a
hand-edited dump with a wrong shape is refused with the op and shapes named.

    %0 = graph.constant dense_resource<conv1_w> : tensor<64x3x7x7xf32>
    %1 = graph.conv %x, %0 {strides = array<i64: 2, 2>, pads = array<i64: 3, 3, 3, 3>,
           dilations = array<i64: 1, 1>, group = 1 : i64}
           : (tensor<1x3x224x224xf32>, tensor<64x3x7x7xf32>) -> tensor<1x64x112x112xf32>
    %2 = graph.relu %1 : (tensor<1x64x112x112xf32>) -> tensor<1x64x112x112xf32>

Shape rules live in `dsc.dialects.graph_shapes`; this file declares the ops.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from dsc.dialects import graph_shapes as S
from dsc.dialects.graph_base import (  # noqa: F401 (re-exported)
    BinaryOp,
    CompareOp,
    ConstantOp,
    GraphOp,
    ReduceOp,
    UnaryOp,
)
from dsc.dialects.graph_nn import (  # noqa: F401 (re-exported)
    AvgPoolOp,
    BatchNormOp,
    ConvOp,
    GemmOp,
    GlobalAvgPoolOp,
    GlobalMaxPoolOp,
    LayerNormOp,
    LogSoftmaxOp,
    LrnOp,
    MatMulOp,
    MaxPoolOp,
    PoolBase,
    ReduceMaxOp,
    ReduceMeanOp,
    ReduceMinOp,
    ReduceProdOp,
    ReduceSumOp,
    SoftmaxOp,
)
from dsc.dialects.tensor_types import (
    DenseBlobAttr,
    sig_of,
    type_str,
)
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    attr_def,
    irdl_op_definition,
    operand_def,
    opt_attr_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import IsTerminator, Pure, RecursiveMemoryEffect
from xdsl.utils.exceptions import VerifyException

# ----------------------------------------------------------- elementwise


def _unary(opname: str, doc: str, **extra):
    cls = type(f"{opname.title().replace('_', '')}Op", (UnaryOp,), {"name": f"graph.{opname}", "__doc__": doc, **extra})
    return irdl_op_definition(cls)


ReluOp = _unary("relu", "max(x, 0)")
SigmoidOp = _unary("sigmoid", "1 / (1 + exp(-x))")
TanhOp = _unary("tanh", "tanh(x)")
ErfOp = _unary("erf", "the Gauss error function")
ExpOp = _unary("exp", "e ** x")
LogOp = _unary("log", "natural logarithm")
SqrtOp = _unary("sqrt", "square root")
NegOp = _unary("neg", "-x")
AbsOp = _unary("abs", "|x|")
ReciprocalOp = _unary("reciprocal", "1 / x")
FloorOp = _unary("floor", "round toward -inf")
CeilOp = _unary("ceil", "round toward +inf")
NotOp = _unary("not", "logical not (bool)")
HardSwishOp = _unary("hard_swish", "x * max(0, min(1, x / 6 + 1 / 2))")
SoftplusOp = _unary("softplus", "log(1 + exp(x))")


@irdl_op_definition
class LeakyReluOp(UnaryOp):
    """x if x >= 0 else alpha * x"""

    name = "graph.leaky_relu"
    alpha = attr_def(FloatAttr)


@irdl_op_definition
class HardSigmoidOp(UnaryOp):
    """max(0, min(1, alpha * x + beta))"""

    name = "graph.hard_sigmoid"
    alpha = attr_def(FloatAttr)
    beta = attr_def(FloatAttr)


@irdl_op_definition
class ClipOp(UnaryOp):
    """min(max(x, min), max); absent bounds are unbounded."""

    name = "graph.clip"
    min = opt_attr_def(FloatAttr)
    max = opt_attr_def(FloatAttr)


@irdl_op_definition
class GeluOp(UnaryOp):
    """x * Phi(x); approximate = "none" (erf) or "tanh"."""

    name = "graph.gelu"
    approximate = attr_def(StringAttr)


@irdl_op_definition
class CastOp(GraphOp):
    """Element type conversion (ONNX Cast semantics: float->int truncates)."""

    name = "graph.cast"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    EXPLICIT_RESULT: ClassVar[bool] = True

    @classmethod
    def infer(cls, ins, attrs):
        S.check(attrs["result"][0].shape == ins[0].shape, "cast keeps the shape")
        return attrs["result"]


def _binary(opname: str, doc: str, base=BinaryOp):
    cls = type(f"{opname.title().replace('_', '')}Op", (base,), {"name": f"graph.{opname}", "__doc__": doc})
    return irdl_op_definition(cls)


AddOp = _binary("add", "lhs + rhs")
SubOp = _binary("sub", "lhs - rhs")
MulOp = _binary("mul", "lhs * rhs")
DivOp = _binary("div", "lhs / rhs (integer division truncates toward zero for ints)")
PowOp = _binary("pow", "lhs ** rhs")
MaxOp = _binary("max", "elementwise maximum")
MinOp = _binary("min", "elementwise minimum")
AndOp = _binary("and", "logical and (bool)")
OrOp = _binary("or", "logical or (bool)")
XorOp = _binary("xor", "logical xor (bool)")
EqualOp = _binary("equal", "lhs == rhs", CompareOp)
LessOp = _binary("less", "lhs < rhs", CompareOp)
LessEqualOp = _binary("less_equal", "lhs <= rhs", CompareOp)
GreaterOp = _binary("greater", "lhs > rhs", CompareOp)
GreaterEqualOp = _binary("greater_equal", "lhs >= rhs", CompareOp)


@irdl_op_definition
class WhereOp(GraphOp):
    """cond ? x : y, broadcasting all three."""

    name = "graph.where"
    cond = operand_def(TensorType)
    x = operand_def(TensorType)
    y = operand_def(TensorType)
    result = result_def(TensorType)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.where(ins)]


# ----------------------------------------------------------- data movement


@irdl_op_definition
class ReshapeOp(GraphOp):
    """Same elements, new shape (the result type). A view, never a copy."""

    name = "graph.reshape"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    EXPLICIT_RESULT: ClassVar[bool] = True

    @classmethod
    def infer(cls, ins, attrs):
        out = attrs["result"][0]
        S.check(int(np.prod(out.shape)) == int(np.prod(ins[0].shape)) and out.dtype == ins[0].dtype, "reshape keeps the element count and dtype")
        return attrs["result"]


@irdl_op_definition
class BroadcastToOp(GraphOp):
    """Broadcast to the result shape (ONNX Expand, after its bidirectional rule)."""

    name = "graph.broadcast_to"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    EXPLICIT_RESULT: ClassVar[bool] = True

    @classmethod
    def infer(cls, ins, attrs):
        out = attrs["result"][0]
        S.check(S.broadcast(ins[0].shape, out.shape) == out.shape, "the input must broadcast to the result shape")
        return attrs["result"]


@irdl_op_definition
class TransposeOp(GraphOp):
    """result[i...] = input[permuted i...]: result dim k is input dim perm[k]."""

    name = "graph.transpose"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    perm = attr_def(DenseArrayBase)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.transpose(ins[0], attrs["perm"])]


@irdl_op_definition
class ConcatOp(GraphOp):
    """Join tensors along `axis`."""

    name = "graph.concat"
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    axis = attr_def(IntegerAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.concat(ins, attrs["axis"])]


@irdl_op_definition
class SliceOp(GraphOp):
    """input[starts[d]:ends[d]:steps[d]] on every axis d, as Python's range()."""

    name = "graph.slice"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    starts = attr_def(DenseArrayBase)
    ends = attr_def(DenseArrayBase)
    steps = attr_def(DenseArrayBase)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.slice_(ins[0], attrs)]


@irdl_op_definition
class GatherOp(GraphOp):
    """Take `indices` (negative counts from the end) along `axis`."""

    name = "graph.gather"
    input = operand_def(TensorType)
    indices = operand_def(TensorType)
    result = result_def(TensorType)
    axis = attr_def(IntegerAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.gather(ins, attrs["axis"])]


@irdl_op_definition
class PadOp(GraphOp):
    """Pad by pads = [begin..., end...] (negative crops); mode constant|reflect|edge."""

    name = "graph.pad"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    pads = attr_def(DenseArrayBase)
    mode = attr_def(StringAttr)
    value = attr_def(FloatAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.pad(ins[0], attrs["pads"])]


# ---------------------------------------------------------- control flow


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminates a `graph.if` branch with the branch's results."""

    name = "graph.yield"
    values = var_operand_def(TensorType)
    traits = traits_def(IsTerminator(), Pure())
    assembly_format = "($values^ `:` type($values))? attr-dict"

    def __init__(self, *values: SSAValue | Operation):
        super().__init__(operands=[[SSAValue.get(v) for v in values]])


@irdl_op_definition
class IfOp(IRDLOperation):
    """Data-dependent branch: runs `then` when the bool scalar `cond` is true.

    Both branches yield values of the result types.
    """

    name = "graph.if"
    cond = operand_def(TensorType)
    output = var_result_def(TensorType)
    then_region = region_def("single_block")
    else_region = region_def("single_block")
    traits = traits_def(RecursiveMemoryEffect())  # as pure as its branches

    def __init__(self, cond: SSAValue, result_types: Sequence[Attribute], then_region: Region, else_region: Region):
        super().__init__(operands=[cond], result_types=[list(result_types)], regions=[then_region, else_region])

    def verify_(self) -> None:
        c = sig_of(self.cond.type)
        if c.dtype != np.bool_ or int(np.prod(c.shape)) != 1:
            raise VerifyException(f"graph.if: the condition must be a one-element bool tensor, got {type_str(self.cond.type)}")
        for region, label in ((self.then_region, "then"), (self.else_region, "else")):
            term = region.block.last_op
            if not isinstance(term, YieldOp):
                raise VerifyException(f"graph.if: the {label} branch must end in graph.yield")
            got = [v.type for v in term.values]
            if got != [r.type for r in self.output]:
                raise VerifyException(f"graph.if: the {label} branch yields {', '.join(map(type_str, got))}, the op returns {', '.join(type_str(r.type) for r in self.output)}")


Graph = Dialect(
    "graph",
    [
        ConstantOp,
        ReluOp, SigmoidOp, TanhOp, ErfOp, ExpOp, LogOp, SqrtOp, NegOp, AbsOp, ReciprocalOp, FloorOp, CeilOp,
        NotOp, HardSwishOp, SoftplusOp, LeakyReluOp, HardSigmoidOp, ClipOp, GeluOp, CastOp,
        AddOp, SubOp, MulOp, DivOp, PowOp, MaxOp, MinOp, AndOp, OrOp, XorOp,
        EqualOp, LessOp, LessEqualOp, GreaterOp, GreaterEqualOp, WhereOp,
        ConvOp, BatchNormOp, GemmOp, MatMulOp, MaxPoolOp, AvgPoolOp, GlobalAvgPoolOp, GlobalMaxPoolOp,
        LrnOp, SoftmaxOp, LogSoftmaxOp, LayerNormOp,
        ReduceSumOp, ReduceMeanOp, ReduceMaxOp, ReduceMinOp, ReduceProdOp,
        ReshapeOp, BroadcastToOp, TransposeOp, ConcatOp, SliceOp, GatherOp, PadOp,
        YieldOp, IfOp,
    ],
    [DenseBlobAttr],
)
