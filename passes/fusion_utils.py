"""Shared machinery of the fusion passes: op classes, use queries, and `outline`.

`outline(ops, pattern)` turns a set of top-level ops of @main into one
`kernel.fused`:

* inputs are the values the group uses but does not define (graph inputs,
  constants, results of other kernels), so the kernel is isolated from above;
* outputs are the group's values used outside it (by later ops or `func.return`);
* the ops are cloned into the body in program order, with their locations;
* `sym_name` is `k<N>_<pattern>`, unique in the module; `sources` lists the
  ONNX node names of the ops (from their locations), in order.

The group must be convex (no path leaves it and comes back); `is_convex`
checks that, and `outline` moves ops that sit between the group's ops and
depend on it to after the new kernel, so dominance holds.

Fusion decisions are not stored in the IR: `explain_fusion` (in
`dsc.passes.explain_fusion`, re-exported here) re-derives, from the fused IR
alone, why each node did not join its neighbour, with the predicates of this
file that the passes also use. That keeps dumps clean and makes the
explanation work on any IR, including a parsed `--dump-ir-dir` file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of
from dsc.passes.base import main_func, require
from dsc.runtime.errors import DscError
from xdsl.dialects import func
from xdsl.dialects.builtin import FusedLoc, ModuleOp, NameLoc
from xdsl.ir import Block, Operation, Region, SSAValue

# ------------------------------------------------------------ op classes

# Per-element ops: each result element depends only on the same (broadcast)
# element of the operands. batch_norm (inference) is a per-channel affine map,
# so it is one too. Softmax, LRN and log-softmax share UnaryOp's signature but
# read whole rows, so they are not.
_NOT_ELEMENTWISE_UNARY = (g.LrnOp, g.SoftmaxOp, g.LogSoftmaxOp)
_ELEMENTWISE_OTHER = (g.BinaryOp, g.WhereOp, g.CastOp, g.BroadcastToOp, g.BatchNormOp)

ACTIVATIONS = (g.ReluOp, g.ClipOp, g.LeakyReluOp, g.SigmoidOp, g.HardSwishOp, g.HardSigmoidOp, g.TanhOp, g.GeluOp)
REDUCTIONS = (g.SoftmaxOp, g.LogSoftmaxOp, g.LayerNormOp, g.ReduceOp)
MATMULS = (g.GemmOp, g.MatMulOp)


def is_elementwise(op: Operation) -> bool:
    if isinstance(op, g.UnaryOp):
        return not isinstance(op, _NOT_ELEMENTWISE_UNARY)
    return isinstance(op, _ELEMENTWISE_OTHER)


def is_compute(op: Operation) -> bool:
    """An op that outline-kernels must put in a kernel (not a constant, view, kernel op or return)."""
    return not isinstance(op, g.ConstantOp | g.ReshapeOp | k.FusedOp | k.TransferOp | k.YieldOp | func.ReturnOp)


# ------------------------------------------------------------ value queries


def shape(v: SSAValue) -> tuple[int, ...]:
    return sig_of(v.type).shape


def numel(v: SSAValue) -> int:
    return int(np.prod(shape(v)))


def is_scalar(v: SSAValue) -> bool:
    return numel(v) == 1


def is_channel_vector(v: SSAValue, like: SSAValue) -> bool:
    """True when `v` broadcast against `like` (N, C, ...) varies only along axis 1."""
    s, t = shape(v), shape(like)
    if len(s) > len(t) or len(t) < 2:
        return False
    aligned = (1,) * (len(t) - len(s)) + s
    return all(d == 1 for i, d in enumerate(aligned) if i != 1) and aligned[1] in (1, t[1])


def num_uses(v: SSAValue) -> int:
    return v.uses.get_length()


def users(v: SSAValue) -> list[Operation]:
    """The distinct graph ops using `v`, in use order; [] if any use is not a graph op of `v`'s block."""
    out: list[Operation] = []
    for use in v.uses:
        op = use.operation
        if not isinstance(op, g.GraphOp) or op.parent_block() is not _block_of(v):
            return []
        if op not in out:
            out.append(op)
    return out


def sole_user(v: SSAValue) -> Operation | None:
    """The graph op that is `v`'s only use, when `v` has exactly one use, in `v`'s own block."""
    if num_uses(v) != 1:
        return None
    op = next(iter(v.uses)).operation
    if not isinstance(op, g.GraphOp) or op.parent_block() is not _block_of(v):
        return None
    return op


def other_operand(op: Operation, v: SSAValue) -> SSAValue | None:
    """For a binary op with `v` as exactly one operand, the other operand."""
    a, b = op.operands
    if a == v and b != v:
        return b
    if b == v and a != v:
        return a
    return None


def defining_op(v: SSAValue) -> Operation | None:
    return v.owner if isinstance(v.owner, Operation) else None


def _block_of(v: SSAValue) -> Block | None:
    return v.owner.parent_block() if isinstance(v.owner, Operation) else v.owner


def all_uses_in(op: Operation, group: set[Operation]) -> bool:
    """True when every use of `op`'s results is (nested) inside an op of `group`."""
    block = op.parent_block()
    for r in op.results:
        for use in r.uses:
            top = block.find_ancestor_op_in_block(use.operation)
            if top is None or top not in group:
                return False
    return bool(op.results) and any(r.uses for r in op.results)


# ------------------------------------------------------------ node names


def node_names(op: Operation) -> list[str]:
    """ONNX node names recorded in `op`'s location (several for a fused location)."""
    return _loc_names(getattr(op, "location", None))


def _loc_names(loc) -> list[str]:
    if isinstance(loc, NameLoc):
        return [loc.desc.data]
    if isinstance(loc, FusedLoc):
        return [n for sub in loc.locations for n in _loc_names(sub)]
    return []


def source_names(ops: Iterable[Operation]) -> list[str]:
    """Ordered, de-duplicated node names of `ops` and the ops nested in them."""
    out: list[str] = []
    for op in ops:
        for inner in op.walk():
            for n in node_names(inner):
                if n not in out:
                    out.append(n)
    return out


# ------------------------------------------------------------ outlining


def _top(block: Block, v: SSAValue) -> Operation | None:
    """The op of `block` that defines `v` or contains its definition (None: a block argument of `block`)."""
    owner = v.owner
    if isinstance(owner, Block):
        if owner is block:
            return None
        owner = owner.parent_op()
        if owner is None:
            return None
    return block.find_ancestor_op_in_block(owner)


def _deep_operands(op: Operation) -> Iterable[SSAValue]:
    for inner in op.walk():
        yield from inner.operands


def _span(block: Block, group: set[Operation]) -> tuple[list[Operation], list[Operation]]:
    """(group ops in program order, non-group ops between the first and the last of them)."""
    ordered, between, pending = [], [], []
    for op in block.ops:
        if op in group:
            ordered.append(op)
            between += pending
            pending = []
            if len(ordered) == len(group):
                break
        elif ordered:
            pending.append(op)
    return ordered, between


def _dependents(block: Block, group: set[Operation], between: list[Operation]) -> list[Operation]:
    """The ops of `between` that depend, directly or not, on the group."""
    tainted: set[Operation] = set()
    for op in between:
        if any((d := _top(block, v)) is not None and (d in group or d in tainted) for v in _deep_operands(op)):
            tainted.add(op)
    return [op for op in between if op in tainted]


def is_convex(ops: Iterable[Operation]) -> bool:
    """True when no path of ops outside the group leads from the group back into it."""
    group = set(ops)
    if not group:
        return True
    block = next(iter(group)).parent_block()
    ordered, between = _span(block, group)
    if len(ordered) != len(group):
        return False
    tainted = set(_dependents(block, group, between))
    return not any(_top(block, v) in tainted for op in ordered for v in _deep_operands(op))


def fresh_name(block: Block, pattern: str) -> str:
    taken = {op.sym_name.data for op in block.ops if isinstance(op, k.FusedOp)}
    n = len(taken)
    while f"k{n}_{pattern}" in taken:
        n += 1
    return f"k{n}_{pattern}"


def outline(ops: Sequence[Operation], pattern: str, device: str = "cpu") -> k.FusedOp:
    """Replace the (convex) group `ops` of one block by a kernel.fused; returns it."""
    group = set(ops)
    block = ops[0].parent_block()
    if block is None or any(op.parent_block() is not block for op in ops):
        raise DscError("outline: the ops of a kernel must be top-level ops of one block")
    ordered, between = _span(block, group)
    moved = _dependents(block, group, between)
    if any(_top(block, v) in set(moved) for op in ordered for v in _deep_operands(op)):
        names = ", ".join(op.name for op in ordered)
        raise DscError(f"outline: the group [{names}] is not convex (a path leaves it and comes back)", hint="this is a dsc bug in a fusion pattern")

    inputs: list[SSAValue] = []
    for op in ordered:
        for v in _deep_operands(op):
            if _top(block, v) not in group and v not in inputs:
                inputs.append(v)
    outputs = [r for op in ordered for r in op.results if any(block.find_ancestor_op_in_block(u.operation) not in group for u in r.uses)]

    body = Block(arg_types=[v.type for v in inputs])
    mapper: dict[SSAValue, SSAValue] = dict(zip(inputs, body.args))
    for op in ordered:
        body.add_op(op.clone(mapper))
    body.add_op(k.YieldOp(*[mapper[r] for r in outputs]))
    fused = k.FusedOp(inputs, [r.type for r in outputs], Region(body), fresh_name(block, pattern), pattern, source_names(ordered), device)

    block.insert_op_after(fused, ordered[-1])
    anchor: Operation = fused
    for op in moved:  # they used group values: they now follow the kernel
        op.detach()
        block.insert_op_after(op, anchor)
        anchor = op
    for r, new in zip(outputs, fused.outputs):
        r.replace_all_uses_with(new)
    for op in reversed(ordered):
        block.detach_op(op)
    for op in reversed(ordered):
        op.erase(safe_erase=False)
    return fused


def main_block(module: ModuleOp) -> Block:
    return main_func(module).body.block


def require_unplaced(module: ModuleOp, pass_name: str) -> None:
    """Fusion runs before placement and memory planning (no transfers, no offsets yet)."""
    placed = any(isinstance(op, k.TransferOp) or (isinstance(op, k.FusedOp) and op.offsets is not None) for op in main_block(module).ops)
    require(module, pass_name, not placed, "IR before placement and memory planning (no kernel.transfer, no kernel offsets)")


def outline_groups(module: ModuleOp, pass_name: str, match, device: str) -> int:
    """Walk @main's top-level ops in order and outline each group that `match` finds.

    `match(op)` returns `(ops, pattern)` (the group, `op` among them) or None.
    A group that is not convex is left alone. Returns the number of kernels made.
    """
    require_unplaced(module, pass_name)
    block = main_block(module)
    made = 0
    for op in list(block.ops):
        if op.parent_block() is not block:  # already outlined with an earlier group
            continue
        found = match(op)
        if not found:
            continue
        group = list(dict.fromkeys(found[0]))
        if not is_convex(group):
            continue
        outline(group, found[1], device)
        made += 1
    return made


def explain_fusion(module: ModuleOp, onnx_nodes: Sequence[str] | None = None) -> list[dict]:
    """Per ONNX node: its kernel, or why it was not fused (see dsc.passes.explain_fusion)."""
    from dsc.passes import explain_fusion as ex

    return ex.explain_fusion(module, onnx_nodes)


def format_explanation(rows: list[dict]) -> str:
    """The rows of `explain_fusion` as a table for the command line."""
    from dsc.passes import explain_fusion as ex

    return ex.format_explanation(rows)
