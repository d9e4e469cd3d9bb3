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
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
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
    opt_operand_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import ConstantLike, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

from dsc.dialects import graph_shapes as S
from dsc.dialects.tensor_types import (
    ELIDE_LIMIT,
    ELIDED,
    Blob,
    DenseBlobAttr,
    Sig,
    from_attr,
    numpy_dtype,
    sig_of,
    tensor_type,
    to_attr,
    type_of_sig,
    type_str,
)

# ------------------------------------------------------------------ base


class GraphOp(IRDLOperation):
    """Base of graph ops: generic syntax, Python attributes, inferred types."""

    assembly_format = "operands attr-dict `:` functional-type(operands, results)"
    traits = traits_def(Pure())

    # Ops whose result type is not a function of operands and attributes
    # (reshape, cast, broadcast_to) set this; their `infer` only checks.
    EXPLICIT_RESULT: ClassVar[bool] = False

    @classmethod
    def infer(cls, ins: list[Sig], attrs: dict) -> list[Sig]:
        raise NotImplementedError(f"{cls.name} has no shape inference")

    def py_attrs(self) -> dict:
        """Attributes as Python values (tuples, ints, floats, strings)."""
        return {k: from_attr(v) for k, v in self.attributes.items()}

    def in_sigs(self) -> list[Sig]:
        return [sig_of(o.type) for o in self.operands]

    @classmethod
    def make(
        cls,
        operands: Sequence[SSAValue | Operation],
        result_types: Sequence[Attribute] | None = None,
        **attrs,
    ):
        """Create the op from Python attributes, inferring result types."""
        values = [SSAValue.get(o) for o in operands]
        attributes = {k: to_attr(v) for k, v in attrs.items() if v is not None}
        ins = [sig_of(v.type) for v in values]
        py = {k: from_attr(v) for k, v in attributes.items()}
        if result_types is None:
            result_types = [type_of_sig(s) for s in cls.infer(ins, py)]
        elif cls.EXPLICIT_RESULT:
            cls.infer(ins, py | {"result": [sig_of(t) for t in result_types]})
        return cls.create(operands=values, result_types=list(result_types), attributes=attributes)

    def verify_(self) -> None:
        ins = self.in_sigs()
        outs = [sig_of(r.type) for r in self.results]
        attrs = self.py_attrs()
        try:
            if self.EXPLICIT_RESULT:
                self.infer(ins, attrs | {"result": outs})
                return
            expected = self.infer(ins, attrs)
        except S.ShapeMismatch as e:
            raise VerifyException(f"{self.name}: {e} (operands: {', '.join(type_str(o.type) for o in self.operands)})") from None
        if [tuple(e) for e in expected] != [tuple(o) for o in outs]:
            want = ", ".join(type_str(type_of_sig(e)) for e in expected)
            got = ", ".join(type_str(r.type) for r in self.results)
            raise VerifyException(f"{self.name}: result type {got} does not match the inferred {want}")


class UnaryOp(GraphOp):
    """Elementwise op of one tensor; the result has the operand's type."""

    input = operand_def(TensorType)
    result = result_def(TensorType)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.unary(ins)]


class BinaryOp(GraphOp):
    """Elementwise op of two tensors with NumPy broadcasting."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.binary(ins)]


class CompareOp(BinaryOp):
    """Elementwise comparison with broadcasting; the result is bool."""

    @classmethod
    def infer(cls, ins, attrs):
        return [Sig(S.binary(ins).shape, np.dtype(bool))]


class ReduceOp(GraphOp):
    """Reduction over `axes` (empty: all axes), keeping them when `keepdims`."""

    input = operand_def(TensorType)
    result = result_def(TensorType)
    axes = attr_def(DenseArrayBase)
    keepdims = attr_def(IntegerAttr)

    @classmethod
    def infer(cls, ins, attrs):
        return [S.reduce(ins[0], attrs["axes"], attrs["keepdims"])]


# ------------------------------------------------------------- constants


@irdl_op_definition
class ConstantOp(IRDLOperation):
    """A constant tensor (weights, shapes, scalars).

        %w = graph.constant dense_resource<fc_w> : tensor<1000x2048xf32>
        %s = graph.constant dense<[1, -1]> : tensor<2xi64>

    Up to `INLINE_LIMIT` elements print inline; larger ones as resources
    whose bytes follow the module in `{-# dialect_resources #-}`.
    """

    name = "graph.constant"
    value = prop_def(DenseBlobAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), ConstantLike())
    INLINE_LIMIT: ClassVar[int] = 16

    @classmethod
    def from_array(cls, array: np.ndarray, key: str) -> ConstantOp:
        array = np.asarray(array)
        return cls.create(properties={"value": DenseBlobAttr(Blob(key, array))}, result_types=[tensor_type(array.shape, array.dtype)])

    @property
    def blob(self) -> Blob:
        return self.value.data

    @property
    def array(self) -> np.ndarray:
        from dsc.runtime.errors import IRError

        if self.blob.array is None:
            raise IRError(
                f"constant {self.blob.key} ({type_str(self.result.type)}) has no data: it was elided from the dump it was parsed from",
                hint="re-dump without --elide-constants-larger-than to keep every weight",
            )
        return self.blob.array

    def verify_(self) -> None:
        arr = self.blob.array
        if arr is not None:
            want = tensor_type(arr.shape, arr.dtype)
            if want != self.result.type:
                raise VerifyException(f"graph.constant {self.blob.key}: data {type_str(want)} does not match result {type_str(self.result.type)}")

    def print(self, printer) -> None:
        arr = self.blob.array
        t = self.result.type
        printer.print_string(" ")
        if arr is not None and arr.size <= self.INLINE_LIMIT and arr.dtype.kind in "fiub":
            printer.print_attribute(_dense_literal(arr, t))
        else:
            limit = ELIDE_LIMIT.get()
            key = ELIDED if arr is None or (limit is not None and arr.size > limit) else self.blob.key
            printer.print_string("dense_resource<")
            printer.print_resource_handle("builtin", key)
            printer.print_string("> : ")
            printer.print_attribute(t)

    @classmethod
    def parse(cls, parser) -> ConstantOp:
        attr = parser.parse_attribute()
        if isinstance(attr, DenseIntOrFPElementsAttr):
            t = attr.type
            dt = numpy_dtype(t.get_element_type())
            vals = np.array(attr.get_values(), dtype=np.int64 if dt == np.bool_ else dt)
            arr = vals.astype(dt).reshape(tuple(t.get_shape()))
            from dsc.dialects.tensor_types import content_key

            return cls.from_array(arr, content_key("cst", arr))
        if isinstance(attr, DenseResourceAttr):
            op = cls.create(properties={"value": DenseBlobAttr(Blob(attr.resource_handle.data, None))}, result_types=[attr.type])
            return op
        parser.raise_error("graph.constant expects dense<...> or dense_resource<...> : tensor<...>")


def _dense_literal(arr: np.ndarray, t: TensorType) -> Attribute:
    vals = arr.reshape(-1)
    if arr.dtype == np.bool_:
        vals = vals.astype(np.int64)
    lst = [float(v) for v in vals] if arr.dtype.kind == "f" else [int(v) for v in vals]
    return DenseIntOrFPElementsAttr.from_list(t, lst)


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
