"""fold-batchnorm: fold inference batch norms into the conv/gemm before them, or into mul + add.

Input: graph-dialect IR before fusion (best after fold-constants, so
parameters reached through casts are constants).

Output, for every `graph.batch_norm` whose scale, bias, mean and var are
constants (s = scale / sqrt(var + eps), t = bias - mean * s):

* after a `graph.conv` used only by it, with a constant weight (and bias):
  one conv with weight W * s (per output channel) and bias b * s + t;
* after a `graph.gemm` used only by it, with a constant B (and C): one
  gemm with the columns of op(B) scaled by s (rows of B when trans_b) and
  C' = beta * C * s + t, beta = 1;
* otherwise: `x * s + t` as graph.mul and graph.add with constants shaped
  [C, 1, ...] (broadcasting over axis 1, as batch_norm does).

So no batch_norm with constant parameters survives; one whose parameters
are computed at run time is left alone for later passes to lower.

Guarantees: the folded parameters are computed in float64 and rounded once
to the weight dtype, so results match the reference evaluator's to float32
rounding (about 1e-6 relative). The new conv/gemm carries both source
names (a fused location), so kernels and error messages still name the
batch norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of
from dsc.passes.fold_constants import constant_array, make_constant
from xdsl.context import Context
from xdsl.dialects.builtin import FusedLoc, ModuleOp, NameLoc, NoneAttr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

# ---------------------------------------------------------------- helpers


def bn_scale_shift(bn: g.BatchNormOp) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) in float64 with bn(x) = x * s + t per channel; None unless all parameters are constants."""
    params = [constant_array(v) for v in (bn.scale, bn.bias, bn.mean, bn.var)]
    if any(p is None for p in params) or sig_of(bn.result.type).dtype.kind != "f":
        return None
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    eps = bn.py_attrs()["epsilon"]
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


def fused_location(*ops):
    """A location naming every source of `ops` (their NameLocs, fused)."""
    names = []
    for op in ops:
        loc = op.location
        parts = loc.locations.data if isinstance(loc, FusedLoc) else (loc,)
        names += [p for p in parts if isinstance(p, NameLoc)]
    if not names:
        return ops[0].location
    return names[0] if len(names) == 1 else FusedLoc(names, NoneAttr())


def _key_of(value) -> str:
    return value.owner.blob.key


# --------------------------------------------------------------- patterns


class FoldBatchNormIntoConvPattern(RewritePattern):
    """batch_norm(conv(x, W, b)) -> conv(x, W * s, b * s + t)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: g.BatchNormOp, rewriter: PatternRewriter, /):
        conv = bn.input.owner
        if not isinstance(conv, g.ConvOp) or not conv.result.has_one_use():
            return
        w = constant_array(conv.weight)
        b = constant_array(conv.bias) if conv.bias is not None else None
        st = bn_scale_shift(bn)
        if w is None or st is None or (conv.bias is not None and b is None) or w.dtype.kind != "f":
            return
        s, t = st
        w_new = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        b_new = ((b.astype(np.float64) * s if b is not None else 0.0) + t).astype(w.dtype)
        wc = make_constant(w_new, f"{_key_of(conv.weight)}_bn", conv.weight.owner.location)
        bc = make_constant(b_new, f"{_key_of(bn.bias)}_conv_bias", bn.bias.owner.location)
        new = g.ConvOp.make([conv.input, wc, bc], **conv.py_attrs())
        new.location = fused_location(conv, bn)
        rewriter.replace(bn, [wc, bc, new])
        rewriter.erase(conv)


class FoldBatchNormIntoGemmPattern(RewritePattern):
    """batch_norm(gemm(A, B, C)) -> gemm(A, B scaled per output column, beta * C * s + t)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: g.BatchNormOp, rewriter: PatternRewriter, /):
        gemm = bn.input.owner
        if not isinstance(gemm, g.GemmOp) or not gemm.result.has_one_use():
            return
        b = constant_array(gemm.b)
        c = constant_array(gemm.c) if gemm.c is not None else None
        st = bn_scale_shift(bn)
        if b is None or st is None or (gemm.c is not None and c is None) or b.dtype.kind != "f":
            return
        s, t = st
        attrs = gemm.py_attrs()
        # op(B) is [K, N]; the batch norm's channels are the N output columns.
        b_new = (b.astype(np.float64) * (s[:, None] if attrs["trans_b"] else s[None, :])).astype(b.dtype)
        c_new = ((attrs["beta"] * c.astype(np.float64) * s if c is not None else 0.0) + t).astype(b.dtype)
        bc = make_constant(b_new, f"{_key_of(gemm.b)}_bn", gemm.b.owner.location)
        cc = make_constant(c_new, f"{_key_of(bn.bias)}_gemm_bias", bn.bias.owner.location)
        new = g.GemmOp.make([gemm.a, bc, cc], **(attrs | {"beta": 1.0}))
        new.location = fused_location(gemm, bn)
        rewriter.replace(bn, [bc, cc, new])
        rewriter.erase(gemm)


class BatchNormToMulAddPattern(RewritePattern):
    """batch_norm(x) with constant parameters -> x * s + t, s and t shaped [C, 1, ...]."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: g.BatchNormOp, rewriter: PatternRewriter, /):
        st = bn_scale_shift(bn)
        if st is None:
            return
        x = sig_of(bn.input.type)
        shape = (-1,) + (1,) * (len(x.shape) - 2)
        s, t = (v.reshape(shape).astype(x.dtype) for v in st)
        sc = make_constant(s, f"{_key_of(bn.scale)}_bn_scale", bn.scale.owner.location)
        tc = make_constant(t, f"{_key_of(bn.bias)}_bn_shift", bn.bias.owner.location)
        mul = g.MulOp.make([bn.input, sc])
        add = g.AddOp.make([mul, tc])
        mul.location = add.location = bn.location
        rewriter.replace(bn, [sc, tc, mul, add])


# ------------------------------------------------------------------- pass


@dataclass(frozen=True)
class FoldBatchNormPass(ModulePass):
    """Fold constant-parameter batch norms into conv/gemm, else into mul + add.

    Input: graph-dialect IR. Output: no graph.batch_norm with constant
    parameters. Results match the reference to float32 rounding.
    """

    name = "fold-batchnorm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        applier = GreedyRewritePatternApplier(
            [FoldBatchNormIntoConvPattern(), FoldBatchNormIntoGemmPattern(), BatchNormToMulAddPattern()]
        )
        PatternRewriteWalker(applier).rewrite_module(op)
