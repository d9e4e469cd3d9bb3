"""dce: erase ops whose results are never used.

Input: graph-dialect IR (before or after fusion).

Output: xDSL's region dead code elimination applied to the module: every
pure op (all graph ops, `graph.constant`, `kernel.fused`) none of whose
results reaches a side effect or `func.return` is erased, however long the
dead chain. A `graph.if` whose results are unused and whose branches hold
only pure ops is erased too (xDSL cannot tell, as the op declares no
memory effects).

Guarantees: results are unchanged; @main and its signature are kept (graph
inputs stay even when unused).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsc.dialects import graph as g
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter
from xdsl.traits import IsTerminator, is_side_effect_free
from xdsl.transforms.dead_code_elimination import region_dce


def _is_dead_if(op) -> bool:
    if not isinstance(op, g.IfOp) or any(r.first_use is not None for r in op.results):
        return False
    return all(
        inner.has_trait(IsTerminator) or isinstance(inner, g.IfOp) or is_side_effect_free(inner)
        for inner in op.walk()
        if inner is not op
    )


def erase_dead_ifs(module: ModuleOp) -> bool:
    """Erase unused graph.if ops with pure branches; True if any was erased."""
    erased = False
    while (op := next((o for o in module.walk() if _is_dead_if(o)), None)) is not None:
        Rewriter.erase_op(op)
        erased = True
    return erased


@dataclass(frozen=True)
class DcePass(ModulePass):
    """Erase unused pure ops, constants and pure graph.if ops.

    Input: any dsc IR. Output: every remaining op's results are used (or the
    op has side effects). Results unchanged.
    """

    name = "dce"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        region_dce(op.body)
        while erase_dead_ifs(op):
            region_dce(op.body)
