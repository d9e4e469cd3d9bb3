"""Shared helpers of dsc's passes: finding @main, checking pass order, building ops.

A pass is a frozen-dataclass `ModulePass` (options are fields:
`my-pass{tile-size=32}` <-> `tile_size: int = 32`) whose docstring states its
input, output and guarantees. Passes that need an earlier pass call
`require(module, ...)` at the start of `apply`.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.runtime.errors import DscError


class PassOrderError(DscError):
    """A pass ran on IR that an earlier pass should have produced."""


def main_func(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise DscError("the module has no func.func @main")


def top_ops(module: ModuleOp) -> list[Operation]:
    """The ops directly in @main's body, in order."""
    return list(main_func(module).body.block.ops)


def is_fused(module: ModuleOp) -> bool:
    """True once every compute op of @main sits inside a kernel.fused."""
    return all(isinstance(op, g.ConstantOp | g.ReshapeOp | k.FusedOp | k.TransferOp | func.ReturnOp) for op in top_ops(module))


def require(module: ModuleOp, pass_name: str, condition: bool, what: str) -> None:
    if not condition:
        raise PassOrderError(f"pass '{pass_name}' needs {what}", hint="run the passes in the order `dsc compile --print-pipeline` shows")
