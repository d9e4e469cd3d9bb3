"""fold-constants: evaluate graph ops whose operands are all constants at compile time.

Input: graph-dialect IR (any phase before fusion; ops inside `graph.if`
branches and `kernel.fused` bodies are folded too when their operands are
constants).

Output: every graph op whose operands are all `graph.constant` (with data)
and whose result has at most `max_elements` elements is replaced by a
`graph.constant` holding the value the reference evaluator computes for it
(`dsc.reference.evaluator.evaluate_op`, so folding can never disagree with
the oracle). New constants are named `content_key(<op>, data)`: equal data
gets equal keys, so `cse` merges them. A `graph.if` with a constant
condition is replaced by the ops of the branch it takes. Constants left
without uses are erased.

Guarantees: results are bit-identical to evaluating the original ops; an
op whose evaluation fails (no reference kernel, bad constant data) is left
as it is, so folding never turns a model that compiles into one that does
not. `max_elements` keeps folding from materializing absurdly large tensors
(a broadcast of a scalar to a huge shape) while still folding whole weight
transforms (transposes, casts, reshapes of 4M-element weights).

This file also holds the constant helpers the other graph-opt passes use
(`constant_array`, `make_constant`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import content_key, sig_of
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

# ---------------------------------------------------------------- helpers


def constant_array(value: SSAValue | None) -> np.ndarray | None:
    """The data of a value defined by a `graph.constant`; None for anything else
    (including a constant whose bytes were elided from the dump it came from)."""
    if value is None:
        return None
    op = value.owner
    if isinstance(op, g.ConstantOp):
        return op.blob.array
    return None


def make_constant(array: np.ndarray, hint: str, location: Attribute | None = None) -> g.ConstantOp:
    """A `graph.constant` for computed data, keyed by `content_key(hint, data)`."""
    array = np.asarray(array)
    op = g.ConstantOp.from_array(array, content_key(hint, array))
    if op.blob.array.shape != array.shape:  # Blob's np.ascontiguousarray makes 0-d data 1-d
        op.blob.array = op.blob.array.reshape(array.shape)
    if location is not None:
        op.location = location
    return op


def num_elements(value: SSAValue) -> int:
    return int(np.prod(sig_of(value.type).shape, dtype=np.int64))


# --------------------------------------------------------------- patterns


@dataclass
class FoldGraphOpPattern(RewritePattern):
    """op(constant, ..., constant) -> constant, computed by the reference evaluator."""

    max_elements: int

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /):
        if not isinstance(op, g.GraphOp) or not op.operands:
            return
        arrays = [constant_array(v) for v in op.operands]
        if any(a is None for a in arrays):
            return
        if any(num_elements(r) > self.max_elements for r in op.results):
            return
        from dsc.reference import kernels as _  # noqa: F401  (registers the kernels)
        from dsc.reference.evaluator import evaluate_op

        try:
            with np.errstate(all="ignore"):  # x/0 folds to inf exactly as it evaluates at run time
                outs = evaluate_op(op, arrays)
        except Exception:  # noqa: BLE001 (no kernel, or constant data the op rejects: leave it to run time)
            return
        hint = op.name.removeprefix("graph.")
        consts = [make_constant(a, hint, op.location) for a in outs]
        rewriter.replace(op, consts, [c.result for c in consts])


class FoldConstantIfPattern(RewritePattern):
    """graph.if with a constant condition -> the ops of the branch it takes."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.IfOp, rewriter: PatternRewriter, /):
        cond = constant_array(op.cond)
        if cond is None or cond.size == 0:
            return
        region = op.then_region if bool(cond.reshape(-1)[0]) else op.else_region
        block = region.block
        term = block.last_op
        assert isinstance(term, g.YieldOp)
        values = list(term.values)
        rewriter.erase(term)
        rewriter.inline_block(block, InsertPoint.before(op))
        rewriter.replace(op, [], values)


# ------------------------------------------------------------------- pass


@dataclass(frozen=True)
class FoldConstantsPass(ModulePass):
    """Replace graph ops of constant operands by the constants they compute.

    Input: graph-dialect IR. Output: no graph op left whose operands are all
    constants (except ones over `max_elements` or the evaluator rejects);
    unused constants erased. Values are bit-identical to the reference
    evaluator's.
    """

    name = "fold-constants"

    max_elements: int = 1 << 22

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        patterns = GreedyRewritePatternApplier([FoldGraphOpPattern(self.max_elements), FoldConstantIfPattern()])
        PatternRewriteWalker(patterns).rewrite_module(op)
