"""fuse-matmul-epilogue: a matmul/gemm with its operand transposes, bias and activation.

Input: @main in the graph dialect, after fuse-conv-bn-relu (any kernels it
made are left alone); runs before placement.

Output: every top-level `graph.matmul` / `graph.gemm` is in a `kernel.fused`
with pattern "matmul_epilogue", holding, each part optional:

* prologue: a `graph.transpose` producing an operand, when the matmul is
  that transpose's only use (the transpose moves into the kernel, where the
  body and `sources` record it);
* bias: `graph.add` of a tensor that broadcasts to the result (a vector or
  row, not a full-shape tensor: a full-shape add is a residual and is left
  for the next kernel, e.g. layer_norm's);
* activation: relu, gelu, tanh, sigmoid, leaky_relu, clip, hard_swish,
  x * sigmoid(x), or the erf GELU as exported by torch,
  x * (1 + erf(x / sqrt 2)) * 0.5 (also with the 0.5 applied to x first).

Every fused intermediate has all its uses inside the kernel (single use,
except x in the GELU / SiLU forms, used twice in the kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsc.dialects import graph as g
from dsc.passes.fuse_conv_bn_relu import match_silu
from dsc.passes.fusion_utils import (
    ACTIVATIONS,
    MATMULS,
    defining_op,
    is_scalar,
    num_uses,
    other_operand,
    outline_groups,
    shape,
    sole_user,
    users,
)
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

# ------------------------------------------------------------ patterns


def match_transposes(op: Operation) -> list[Operation]:
    """The transposes whose only use is `op` (as an operand)."""
    out = []
    for v in op.operands:
        t = defining_op(v)
        if isinstance(t, g.TransposeOp) and t.parent_block() is op.parent_block() and num_uses(v) == 1 and t not in out:
            out.append(t)
    return out


def match_bias(v: SSAValue) -> list[Operation]:
    u = sole_user(v)
    if isinstance(u, g.AddOp) and (b := other_operand(u, v)) is not None and shape(b) != shape(v) and shape(u.result) == shape(v):
        return [u]
    return []


def _scaled(op: Operation | None, v: SSAValue, kinds) -> bool:
    """op is one of `kinds` applied to v and a scalar (v first for div)."""
    if not isinstance(op, kinds) or (s := other_operand(op, v)) is None or not is_scalar(s):
        return False
    return not isinstance(op, g.DivOp) or op.lhs == v


def match_erf_gelu(v: SSAValue) -> list[Operation]:
    """x*(1+erf(x/√2))*0.5 or (0.5*x)*(1+erf(x/√2)) on x = v; v's two uses both in it."""
    us = users(v)
    if len(us) != 2 or num_uses(v) != 2:
        return []
    for d, m in (us, us[::-1]):
        if not _scaled(d, v, (g.DivOp, g.MulOp)):
            continue
        e = sole_user(d.result)
        if not isinstance(e, g.ErfOp):
            continue
        a = sole_user(e.result)
        if not _scaled(a, e.result, g.AddOp):
            continue
        if isinstance(m, g.MulOp) and other_operand(m, v) == a.result and sole_user(a.result) is m:  # x * (1 + erf)
            half = sole_user(m.result)
            return [d, e, a, m] + ([half] if _scaled(half, m.result, g.MulOp) else [])
        if _scaled(m, v, g.MulOp) and (f := sole_user(m.result)) is not None and f is sole_user(a.result) and isinstance(f, g.MulOp):
            return [d, e, a, m, f]  # (0.5 * x) * (1 + erf)
    return []


def match_activation(v: SSAValue) -> list[Operation]:
    u = sole_user(v)
    if isinstance(u, ACTIVATIONS):
        return [u]
    return match_erf_gelu(v) or match_silu(v)


def match_matmul(op: Operation) -> tuple[list[Operation], str] | None:
    if not isinstance(op, MATMULS):
        return None
    group = match_transposes(op) + [op]
    for stage in (match_bias, match_activation):
        group += stage(group[-1].results[0])
    return group, "matmul_epilogue"


# ------------------------------------------------------------ pass


@dataclass(frozen=True)
class FuseMatmulEpiloguePass(ModulePass):
    """Fuse each graph.matmul/gemm with operand transposes, bias add and activation."""

    name = "fuse-matmul-epilogue"
    device: str = "cpu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        outline_groups(op, self.name, match_matmul, self.device)
