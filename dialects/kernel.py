"""The kernel dialect: fused regions of graph ops (the unit of code generation).

After fusion, @main holds only `graph.constant`, `graph.reshape` (views:
no copy, no buffer of their own), `kernel.fused`, `kernel.transfer` and
`func.return`. Each `kernel.fused` is isolated from above: its block
arguments are its inputs, `kernel.yield` gives its results.

    %3 = kernel.fused(%x, %w, %b) {sym_name = "k0_conv_bn_relu", pattern = "conv_bn_relu",
           device = "cpu", sources = ["/conv1/Conv", "/bn1/BatchNormalization", "/relu/Relu"]} :
           (tensor<1x3x224x224xf32>, tensor<64x3x7x7xf32>, tensor<64xf32>) -> tensor<1x64x112x112xf32> {
    ^bb0(%a: tensor<1x3x224x224xf32>, %b: tensor<64x3x7x7xf32>, %c: tensor<64xf32>):
      %0 = graph.conv %a, %b, %c {...} : (...) -> tensor<1x64x112x112xf32>
      %1 = graph.relu %0 : (tensor<1x64x112x112xf32>) -> tensor<1x64x112x112xf32>
      kernel.yield %1 : tensor<1x64x112x112xf32>
    }

`device` is "cpu" when fusion creates a kernel; on GPU targets place-devices
moves kernels to "cuda:0" and inserts transfers. plan-memory
adds `offsets` (byte offset of each result in its device's arena; -1 for a
result that is a graph output and lives in its own buffer).
"""

from __future__ import annotations

from collections.abc import Sequence

from dsc.dialects.tensor_types import type_str
from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, StringAttr, TensorType
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
from xdsl.traits import IsolatedFromAbove, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Returns a kernel's results from its body."""

    name = "kernel.yield"
    values = var_operand_def(TensorType)
    traits = traits_def(IsTerminator(), Pure())
    assembly_format = "($values^ `:` type($values))? attr-dict"

    def __init__(self, *values: SSAValue | Operation):
        super().__init__(operands=[[SSAValue.get(v) for v in values]])


@irdl_op_definition
class FusedOp(IRDLOperation):
    """A fused group of graph ops, compiled as one kernel on one device."""

    name = "kernel.fused"
    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    body = region_def("single_block")
    sym_name = attr_def(StringAttr)
    pattern = attr_def(StringAttr)
    device = attr_def(StringAttr)
    sources = attr_def(ArrayAttr[StringAttr])
    offsets = opt_attr_def(DenseArrayBase)
    traits = traits_def(IsolatedFromAbove(), Pure())
    assembly_format = "`(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs) $body"

    def __init__(
        self,
        inputs: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        body: Region,
        sym_name: str,
        pattern: str,
        sources: Sequence[str],
        device: str = "",
    ):
        super().__init__(
            operands=[list(inputs)],
            result_types=[list(result_types)],
            regions=[body],
            attributes={
                "sym_name": StringAttr(sym_name),
                "pattern": StringAttr(pattern),
                "device": StringAttr(device),
                "sources": ArrayAttr([StringAttr(s) for s in sources]),
            },
        )

    @property
    def source_names(self) -> list[str]:
        return [s.data for s in self.sources.data]

    def verify_(self) -> None:
        block = self.body.block
        if [a.type for a in block.args] != [v.type for v in self.inputs]:
            raise VerifyException(f"kernel.fused @{self.sym_name.data}: block arguments must match the inputs")
        term = block.last_op
        if not isinstance(term, YieldOp):
            raise VerifyException(f"kernel.fused @{self.sym_name.data}: the body must end in kernel.yield")
        got = [v.type for v in term.values]
        want = [r.type for r in self.outputs]
        if got != want:
            raise VerifyException(f"kernel.fused @{self.sym_name.data}: yields {', '.join(map(type_str, got))} but returns {', '.join(map(type_str, want))}")
        if self.offsets is not None and len(self.offsets.get_values()) != len(self.outputs):
            raise VerifyException(f"kernel.fused @{self.sym_name.data}: one offset per result expected")


@irdl_op_definition
class TransferOp(IRDLOperation):
    """Copies a tensor between devices ("cpu", "cuda:0")."""

    name = "kernel.transfer"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    src = attr_def(StringAttr)
    dst = attr_def(StringAttr)
    offsets = opt_attr_def(DenseArrayBase)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, value: SSAValue, src: str, dst: str):
        super().__init__(operands=[value], result_types=[value.type], attributes={"src": StringAttr(src), "dst": StringAttr(dst)})

    def verify_(self) -> None:
        if self.input.type != self.result.type:
            raise VerifyException("kernel.transfer keeps the tensor type")


Kernel = Dialect("kernel", [FusedOp, YieldOp, TransferOp])
