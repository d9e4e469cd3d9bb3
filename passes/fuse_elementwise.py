"""fuse-elementwise: maximal groups of elementwise ops become one kernel each.

Input: @main in the graph dialect, after the pattern passes
(fuse-conv-bn-relu, fuse-matmul-epilogue, fuse-reductions), whose kernels
are left alone; runs before placement.

Output: top-level elementwise ops (unary and binary math, comparisons,
where, cast, broadcast_to, batch_norm) are grouped into `kernel.fused` ops
with pattern "elementwise". Groups are chains or DAGs:

* a producer joins its consumers' group when every use of its result is in
  that one group (a single consumer, or several ops that are all in it, as in
  x * sigmoid(x));
* all ops of a group have the same result shape (one iteration space;
  smaller operands are broadcast inputs), while element types may differ (casts);
* groups stay convex (fusing never creates a cycle between kernels).

Groups of one op are left for outline-kernels ("single"); values are never
computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsc.passes.fusion_utils import (
    is_elementwise,
    main_block,
    outline,
    require_unplaced,
    shape,
)
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation
from xdsl.passes import ModulePass

# ------------------------------------------------------------ grouping


def elementwise_groups(block: Block) -> list[list[Operation]]:
    """Groups (in program order) of two or more fusable elementwise ops of `block`."""
    ops = [op for op in block.ops if is_elementwise(op) and len(op.results) == 1]
    group_of: dict[Operation, int] = {op: i for i, op in enumerate(ops)}
    members: dict[int, list[Operation]] = {i: [op] for i, op in enumerate(ops)}
    changed = True
    while changed:
        changed = False
        for p in reversed(ops):  # consumers first: a chain merges in one sweep
            uses = [block.find_ancestor_op_in_block(u.operation) for u in p.results[0].uses]
            gids = {group_of.get(u) for u in uses}
            if len(gids) != 1 or None in gids:
                continue
            gid, mine = gids.pop(), group_of[p]
            if gid == mine or shape(members[gid][0].results[0]) != shape(p.results[0]):
                continue
            # p is its group's sink (its other ops' uses are all inside it), so every
            # edge leaving a group leaves from the sink: merged groups stay convex.
            merged = members[gid] + members[mine]
            for op in members.pop(mine):
                group_of[op] = gid
            members[gid] = merged
            changed = True
    order = {op: i for i, op in enumerate(block.ops)}
    groups = [sorted(m, key=order.__getitem__) for m in members.values() if len(m) > 1]
    return sorted(groups, key=lambda grp: order[grp[0]])


# ------------------------------------------------------------ pass


@dataclass(frozen=True)
class FuseElementwisePass(ModulePass):
    """Fuse maximal single-consumer groups of elementwise ops into kernels."""

    name = "fuse-elementwise"
    device: str = "cpu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require_unplaced(op, self.name)
        block = main_block(op)
        for group in elementwise_groups(block):
            outline(group, "elementwise", self.device)
