"""fuse-reductions: softmax, layer_norm and reduce_* with their elementwise neighbours.

Input: @main in the graph dialect, after fuse-conv-bn-relu and
fuse-matmul-epilogue (their kernels are left alone); runs before placement.

Output: every top-level `graph.softmax`, `graph.log_softmax`,
`graph.layer_norm` and `graph.reduce_*` is in a `kernel.fused` with pattern
"reduction", together with

* its elementwise producers (transitively) whose results are used only
  inside the kernel and have the shape of the reduction's input: e.g. the
  scale and mask adds before an attention softmax, the residual add before
  a layer norm;
* its chain of elementwise consumers, each the single use of the value
  before it and of the reduction's result shape;
* for a LayerNorm written out as ops,
  reduce_mean, sub, pow 2 (or mul d*d), reduce_mean, add eps, sqrt, div
  (then the scale mul and shift add as consumers), the whole chain: one kernel.

No value is computed twice: a fused producer's every use is in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsc.dialects import graph as g
from dsc.passes.fusion_utils import (
    REDUCTIONS,
    all_uses_in,
    defining_op,
    is_elementwise,
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


def match_layer_norm_ops(m: Operation) -> list[Operation]:
    """The written-out LayerNorm headed by reduce_mean `m`, up to the normalizing div."""
    if not isinstance(m, g.ReduceMeanOp):
        return []
    x = m.input
    d = sole_user(m.result)
    if not isinstance(d, g.SubOp) or d.lhs != x or d.rhs != m.result:
        return []
    us = users(d.result)
    if len(us) != 2 or num_uses(d.result) not in (2, 3):
        return []
    n = next((u for u in us if isinstance(u, g.DivOp) and u.lhs == d.result), None)
    p = next((u for u in us if u is not n), None)
    square = (isinstance(p, g.PowOp) and p.lhs == d.result and is_scalar(p.rhs)) or (isinstance(p, g.MulOp) and p.lhs == p.rhs == d.result)
    if n is None or not square:
        return []
    v = sole_user(p.result)
    if not isinstance(v, g.ReduceMeanOp):
        return []
    chain = [m, d, p, v]
    s = sole_user(v.result)
    if isinstance(s, g.AddOp) and (eps := other_operand(s, v.result)) is not None and is_scalar(eps):
        chain.append(s)
        s = sole_user(s.result)
    if not isinstance(s, g.SqrtOp) or sole_user(s.result) is not n or n.rhs != s.result:
        return []
    return chain + [s, n]


def absorb_producers(group: list[Operation], like: SSAValue) -> list[Operation]:
    """Add elementwise producers of `like`'s shape whose results are used only in the group."""
    members = set(group)
    block = group[0].parent_block()
    changed = True
    while changed:
        changed = False
        for op in list(members):
            for v in op.operands:
                p = defining_op(v)
                if (
                    p is not None and p not in members and p.parent_block() is block and is_elementwise(p)
                    and shape(p.results[0]) == shape(like) and all_uses_in(p, members)
                ):
                    members.add(p)
                    changed = True
    return [op for op in block.ops if op in members]


def absorb_consumers(last: Operation) -> list[Operation]:
    """The chain of single-use elementwise consumers of `last`'s result, of its shape."""
    out = []
    v = last.results[0]
    while (u := sole_user(v)) is not None and is_elementwise(u) and shape(u.results[0]) == shape(v):
        out.append(u)
        v = u.results[0]
    return out


def match_reduction(op: Operation) -> tuple[list[Operation], str] | None:
    if not isinstance(op, REDUCTIONS):
        return None
    core = match_layer_norm_ops(op) or [op]
    group = core + absorb_consumers(core[-1])
    return absorb_producers(group, op.operands[0]), "reduction"


# ------------------------------------------------------------ pass


@dataclass(frozen=True)
class FuseReductionsPass(ModulePass):
    """Fuse each softmax / layer_norm / reduce_* (and written-out LayerNorm) with its elementwise neighbours."""

    name = "fuse-reductions"
    device: str = "cpu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        outline_groups(op, self.name, match_reduction, self.device)
