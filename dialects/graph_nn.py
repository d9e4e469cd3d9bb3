"""Neural-network ops of the graph dialect: conv, batch norm, gemm/matmul, pooling, normalization, reductions."""


from __future__ import annotations

from dsc.dialects import graph_shapes as S
from dsc.dialects.graph_base import GraphOp, ReduceOp, UnaryOp
from dsc.dialects.tensor_types import (
    Sig,
)
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    TensorType,
)
from xdsl.irdl import (
    attr_def,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    result_def,
)

# -------------------------------------------------------------------- nn


@irdl_op_definition
class ConvOp(GraphOp):
    """N-d convolution, NCHW, weight [M, C/group, k...], optional bias [M]."""

    name = "graph.conv"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    strides = attr_def(DenseArrayBase)
    pads = attr_def(DenseArrayBase)
    dilations = attr_def(DenseArrayBase)
    group = attr_def(IntegerAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.conv(ins, attrs)]


@irdl_op_definition
class BatchNormOp(GraphOp):
    """Inference batch norm over axis 1: (x - mean) / sqrt(var + eps) * scale + bias."""

    name = "graph.batch_norm"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    result = result_def(TensorType)
    epsilon = attr_def(FloatAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.batch_norm(ins)]


@irdl_op_definition
class GemmOp(GraphOp):
    """alpha * op(A) @ op(B) + beta * C, op = transpose when trans_a/trans_b."""

    name = "graph.gemm"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    result = result_def(TensorType)
    alpha = attr_def(FloatAttr)
    beta = attr_def(FloatAttr)
    trans_a = attr_def(IntegerAttr)
    trans_b = attr_def(IntegerAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.gemm(ins, attrs)]


@irdl_op_definition
class MatMulOp(GraphOp):
    """NumPy matmul: batched, broadcasting the batch dimensions."""

    name = "graph.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.matmul(ins)]


class PoolBase(GraphOp):
    input = operand_def(TensorType)
    result = result_def(TensorType)
    kernel_shape = attr_def(DenseArrayBase)
    strides = attr_def(DenseArrayBase)
    pads = attr_def(DenseArrayBase)
    dilations = attr_def(DenseArrayBase)
    ceil_mode = attr_def(IntegerAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.pool(ins[0], attrs)]


@irdl_op_definition
class MaxPoolOp(PoolBase):
    """Max pooling over the spatial axes (padding never wins)."""

    name = "graph.max_pool"


@irdl_op_definition
class AvgPoolOp(PoolBase):
    """Average pooling; count_include_pad decides the divisor at the borders."""

    name = "graph.avg_pool"
    count_include_pad = attr_def(IntegerAttr)


class GlobalPoolBase(GraphOp):
    input = operand_def(TensorType)
    result = result_def(TensorType)

    @classmethod
    def infer(cls, ins, attrs):
        x = ins[0]
        S.check(len(x.shape) >= 3, "global pooling needs N, C and spatial axes")
        return [Sig(x.shape[:2] + (1,) * (len(x.shape) - 2), x.dtype)]


@irdl_op_definition
class GlobalAvgPoolOp(GlobalPoolBase):
    """Mean over all spatial axes, kept as size 1."""

    name = "graph.global_avg_pool"


@irdl_op_definition
class GlobalMaxPoolOp(GlobalPoolBase):
    """Max over all spatial axes, kept as size 1."""

    name = "graph.global_max_pool"


@irdl_op_definition
class LrnOp(UnaryOp):
    """Local response normalization across channels (ONNX LRN)."""

    name = "graph.lrn"
    size = attr_def(IntegerAttr)
    alpha = attr_def(FloatAttr)
    beta = attr_def(FloatAttr)
    bias = attr_def(FloatAttr)


@irdl_op_definition
class SoftmaxOp(UnaryOp):
    """exp(x - max) / sum(exp(x - max)) along `axis`."""

    name = "graph.softmax"
    axis = attr_def(IntegerAttr)


@irdl_op_definition
class LogSoftmaxOp(UnaryOp):
    """log(softmax(x)) along `axis`."""

    name = "graph.log_softmax"
    axis = attr_def(IntegerAttr)


@irdl_op_definition
class LayerNormOp(GraphOp):
    """Normalize over axes [axis, rank), then * scale (+ bias)."""

    name = "graph.layer_norm"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    axis = attr_def(IntegerAttr)
    epsilon = attr_def(FloatAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.unary(ins[:1])]


def _reduce(opname: str, doc: str):
    return irdl_op_definition(type(f"Reduce{opname.title()}Op", (ReduceOp,), {"name": f"graph.reduce_{opname}", "__doc__": doc}))


ReduceSumOp = _reduce("sum", "sum over axes")
ReduceMeanOp = _reduce("mean", "mean over axes")
ReduceMaxOp = _reduce("max", "max over axes")
ReduceMinOp = _reduce("min", "min over axes")
ReduceProdOp = _reduce("prod", "product over axes")

