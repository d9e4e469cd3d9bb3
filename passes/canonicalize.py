"""canonicalize: local simplifications of graph-dialect IR, then dead code removal.

Input: graph-dialect IR (before or after fusion; kernel bodies are
simplified too).

Output: the same computation with these rewrites applied to a fixed point:

    reshape(reshape(x))                       -> reshape(x)
    transpose(transpose(x, p), q)             -> transpose(x, p[q])
    reshape / broadcast_to / cast to x's type -> x
    transpose(x, identity perm)               -> x
    x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1  -> x   (splat constant, x's type unchanged)
    neg(neg(x))                               -> x
    cast(cast(x, A -> B), B -> C)             -> cast(x, A -> C), or x when C == A,
                                                 when A -> B is exact (B holds every A)

and unused pure ops and constants erased (xDSL's region DCE).

Guarantees: every rewrite is exact, so `run_module` results are bit-identical
(one caveat: x + 0 -> x keeps the sign of a -0.0 input, which x + 0 turns
into +0.0; no network's output depends on the sign of zero). Graph inputs
and outputs keep their types; a rewrite that would change the type of a
value is not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of
from dsc.passes.fold_constants import constant_array
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.transforms.dead_code_elimination import region_dce

# ---------------------------------------------------------------- helpers


def is_splat_of(value: SSAValue, scalar: float) -> bool:
    """True if `value` is a numeric constant whose every element equals `scalar`."""
    arr = constant_array(value)
    return arr is not None and arr.size > 0 and arr.dtype.kind in "fiu" and bool(np.all(arr == scalar))


def is_exact_cast(src: np.dtype, dst: np.dtype) -> bool:
    """True if converting src to dst never changes a value (so dst -> X equals src -> X).

    NumPy's "safe" casting is not enough: it calls int64 -> float64 safe,
    which rounds integers above 2**53.
    """
    src, dst = np.dtype(src), np.dtype(dst)
    if src == dst or src.kind == "b":
        return True
    if src.kind == "f":
        return dst.kind == "f" and dst.itemsize >= src.itemsize
    if src.kind in "iu" and dst.kind in "iu":
        if src.kind == dst.kind:
            return dst.itemsize >= src.itemsize
        return src.kind == "u" and dst.itemsize > src.itemsize
    if src.kind in "iu" and dst.kind == "f":
        value_bits = src.itemsize * 8 - (src.kind == "i")
        return value_bits <= np.finfo(dst).nmant + 1
    return False


def _replace_with_value(rewriter: PatternRewriter, op, value: SSAValue) -> None:
    rewriter.replace(op, [], [value])


# --------------------------------------------------------------- patterns


class RemoveIdentityPattern(RewritePattern):
    """reshape / broadcast_to / cast to the input's own type, or an identity transpose -> the input."""

    def match_and_rewrite(self, op, rewriter: PatternRewriter, /):
        if isinstance(op, g.ReshapeOp | g.BroadcastToOp | g.CastOp):
            if op.input.type == op.result.type:
                _replace_with_value(rewriter, op, op.input)
        elif isinstance(op, g.TransposeOp):
            perm = op.py_attrs()["perm"]
            if perm == tuple(range(len(perm))):
                _replace_with_value(rewriter, op, op.input)


class ReshapeOfReshapePattern(RewritePattern):
    """reshape(reshape(x)) -> reshape(x): a view of a view is one view."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.ReshapeOp, rewriter: PatternRewriter, /):
        inner = op.input.owner
        if not isinstance(inner, g.ReshapeOp):
            return
        if inner.input.type == op.result.type:
            _replace_with_value(rewriter, op, inner.input)
            return
        new = g.ReshapeOp.make([inner.input], result_types=[op.result.type])
        new.location = op.location
        rewriter.replace(op, new)


class TransposeOfTransposePattern(RewritePattern):
    """transpose(transpose(x, p), q) -> transpose(x, p[q]) (or x when that is the identity)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.TransposeOp, rewriter: PatternRewriter, /):
        inner = op.input.owner
        if not isinstance(inner, g.TransposeOp):
            return
        p, q = inner.py_attrs()["perm"], op.py_attrs()["perm"]
        # result dim k of the outer op is inner dim q[k], which is x dim p[q[k]]
        perm = tuple(p[k] for k in q)
        if perm == tuple(range(len(perm))):
            _replace_with_value(rewriter, op, inner.input)
            return
        new = g.TransposeOp.make([inner.input], perm=perm)
        new.location = op.location
        rewriter.replace(op, new)


# op class -> (neutral element, True if it may sit on either side)
_NEUTRAL = {g.AddOp: (0, True), g.SubOp: (0, False), g.MulOp: (1, True), g.DivOp: (1, False)}


class ArithmeticIdentityPattern(RewritePattern):
    """x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1 -> x, when broadcasting the constant keeps x's type."""

    def match_and_rewrite(self, op, rewriter: PatternRewriter, /):
        spec = _NEUTRAL.get(type(op))
        if spec is None:
            return
        neutral, commutes = spec
        candidates = [(op.lhs, op.rhs)] + ([(op.rhs, op.lhs)] if commutes else [])
        for x, c in candidates:
            if x.type == op.result.type and is_splat_of(c, neutral):
                _replace_with_value(rewriter, op, x)
                return


class DoubleNegPattern(RewritePattern):
    """neg(neg(x)) -> x."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.NegOp, rewriter: PatternRewriter, /):
        inner = op.input.owner
        if isinstance(inner, g.NegOp):
            _replace_with_value(rewriter, op, inner.input)


class CastOfCastPattern(RewritePattern):
    """cast(cast(x, A -> B), B -> C) -> cast(x, A -> C) when A -> B is exact (x itself when C == A).

    With an exact first cast, B -> C sees exactly x's values, so the pair
    computes A -> C; f32 -> f16 -> f32 is NOT rewritten (the f16 rounds).
    """

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.CastOp, rewriter: PatternRewriter, /):
        inner = op.input.owner
        if not isinstance(inner, g.CastOp):
            return
        x = inner.input
        if not is_exact_cast(sig_of(x.type).dtype, sig_of(inner.result.type).dtype):
            return
        if x.type == op.result.type:
            _replace_with_value(rewriter, op, x)
            return
        new = g.CastOp.make([x], result_types=[op.result.type])
        new.location = op.location
        rewriter.replace(op, new)


PATTERNS: tuple[type[RewritePattern], ...] = (
    RemoveIdentityPattern,
    ReshapeOfReshapePattern,
    TransposeOfTransposePattern,
    ArithmeticIdentityPattern,
    DoubleNegPattern,
    CastOfCastPattern,
)


# ------------------------------------------------------------------- pass


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    """Apply the graph canonicalization patterns to a fixed point, then region DCE.

    Input: graph-dialect IR. Output: no reshape/transpose/cast chain or
    identity op of the kinds listed in this module's docstring is left;
    results are exact.
    """

    name = "canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        applier = GreedyRewritePatternApplier([p() for p in PATTERNS])
        PatternRewriteWalker(applier, post_walk_func=region_dce).rewrite_module(op)
