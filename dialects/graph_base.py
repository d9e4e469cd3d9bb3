"""Base classes of the graph dialect and its constant op.

GraphOp gives every op the generic syntax, Python attributes and inferred
result types; ConstantOp holds weights as resource blobs. The ops themselves
are in graph.py (elementwise, data movement, control flow) and graph_nn.py.
"""


from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
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
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    IntegerAttr,
    TensorType,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    attr_def,
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import ConstantLike, Pure
from xdsl.utils.exceptions import VerifyException

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

