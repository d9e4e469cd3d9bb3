"""lower-precision: run chosen graph ops in float16 or bfloat16 (automatic mixed precision).

`precision=fp16` computes in float16, `precision=bf16` in bfloat16
(ml_dtypes' NumPy dtype: 8 significant bits, float32's exponent range).
Both follow the same rules below; "float16" stands for the reduced dtype.

Input: graph-dialect IR before fusion (no `kernel.fused`), best after
fold-batchnorm so convolutions carry their folded weights.

Output: float32 ops rewritten to compute in float16, by level:

* O1 (autocast): conv, matmul and gemm run in float16; the ops of the O2
  exception list below stay float32; every other op follows its inputs
  (float16 when its float inputs are float16 activations or constants, as
  PyTorch's autocast runs unlisted ops in their inputs' type), so a
  residual add or an activation between two float16 convolutions adds no
  casts, while a float32 activation keeps an op in float32;
* O2: every float op runs in float16 except softmax, log_softmax,
  layer_norm, reduce_*, exp, log, pow, erf, softplus, lrn and batch_norm
  (the ops whose range or accumulated error float16 cannot carry) and
  graph.cast (kept exact).

At both levels the precision-neutral ops (data movement, relu, max/min,
neg, abs, clip, max pooling) follow their inputs: they run in float16 when
an input already is (and every other float input is float16 or a
constant; at O2 also when all float inputs are constants, as for a gather
from an embedding table), and in float32 when any float input is a float32
activation. Computing them in float16 on float16 data is exact, so a
reshape or relu between two convolutions adds no casts, and a reshape
between two float32 ops adds none either.

Float32 constants consumed by a float16 op are converted at compile time
(a new constant `<key>_fp16` / `<key>_bf16`; finite values beyond the reduced
dtype's range saturate to its largest finite value, +-65504 for float16 as
TensorRT does with weights, so an attention mask's -3.4e38 stays a large
finite negative instead of becoming -inf and 0 * -inf = NaN. bfloat16 needs
this too, although it has float32's exponent range: float32's largest values
above 3.3961e38 round up to inf, and -3.4028e38 = finfo(float32).min is one).
Activations are converted with `graph.cast` only where a float16 region
meets a float32 one, one cast per value and direction, placed right after
the value's definition; cast pairs that cancel (f16 -> f32 -> f16,
bf16 -> f32 -> bf16) are removed and dead constants erased.

Guarantees: graph inputs and outputs keep their types (the outputs are
cast back to float32); float16 convolutions and matmuls accumulate in
float32 in the reference kernels (only their results round to float16);
the reference evaluator computes every bfloat16 op in float32 and rounds its
result to bfloat16. The CUDA backend runs bfloat16 (i16 in memory, f32 in
registers, tensor cores m16n8k16 for GEMMs and convolutions); the CPU
backend refuses bfloat16 tensors with a DscError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import BFLOAT16, sig_of, tensor_type
from dsc.passes.base import require
from dsc.passes.canonicalize import CastOfCastPattern, RemoveIdentityPattern
from dsc.passes.fold_constants import make_constant
from dsc.runtime.errors import DscError
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Block, BlockArgument, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.transforms.dead_code_elimination import region_dce

F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)
F16_MAX = float(np.finfo(np.float16).max)
# precision option -> (reduced dtype, its largest finite value, constant key suffix)
REDUCED = {
    "fp16": (F16, F16_MAX, "fp16"),
    "bf16": (BFLOAT16, float(ml_dtypes.finfo(BFLOAT16).max), "bf16"),
}

REDUCED_O1 = (g.ConvOp, g.MatMulOp, g.GemmOp)
FP32_ONLY = (
    g.SoftmaxOp, g.LogSoftmaxOp, g.LayerNormOp, g.ReduceOp, g.ExpOp, g.LogOp, g.PowOp, g.ErfOp,
    g.SoftplusOp, g.LrnOp, g.BatchNormOp, g.CastOp,
)
PRECISION_NEUTRAL = (
    g.ReshapeOp, g.TransposeOp, g.BroadcastToOp, g.SliceOp, g.ConcatOp, g.PadOp, g.GatherOp, g.WhereOp,
    g.ReluOp, g.MaxOp, g.MinOp, g.NegOp, g.AbsOp, g.ClipOp, g.MaxPoolOp, g.GlobalMaxPoolOp,
)
LEVELS = ("O0", "O1", "O2")


def _dtype(v: SSAValue) -> np.dtype:
    return sig_of(v.type).dtype


def _with_dtype(t: TensorType, dtype) -> TensorType:
    return tensor_type(t.get_shape(), dtype)


def to_reduced_saturating(array: np.ndarray, precision: str = "fp16") -> np.ndarray:
    """float32 data in the reduced dtype, finite values beyond its range clamped to its largest finite value."""
    dtype, limit, _ = REDUCED[precision]
    clipped = np.where(np.isfinite(array), np.clip(array, -limit, limit), array)
    return clipped.astype(dtype)  # limit is exact in float32, so nothing clipped rounds up to inf


def to_fp16_saturating(array: np.ndarray) -> np.ndarray:
    """float32 data as float16, finite values beyond float16's range clamped to +-65504."""
    return to_reduced_saturating(array, "fp16")


class ExactRoundTripCastPattern(RewritePattern):
    """cast(cast(x: bf16 -> f32) -> bf16) -> x: float32 holds every bfloat16 exactly.

    canonicalize's CastOfCastPattern does the same for float16; it does not
    know bfloat16 (a NumPy 'V'-kind dtype), so this pass cancels those pairs itself.
    """

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.CastOp, rewriter: PatternRewriter, /):
        inner = op.input.owner
        if isinstance(inner, g.CastOp) and inner.input.type == op.result.type and _dtype(inner.result) == F32 and _dtype(op.result) == BFLOAT16:
            rewriter.replace(op, [], [inner.input])


# ---------------------------------------------------------------- rewriter


@dataclass
class PrecisionRewriter:
    """Walks blocks in order, rewriting ops to the reduced dtype and casting at region boundaries."""

    level: str
    precision: str = "fp16"
    lowered: set[SSAValue] = field(default_factory=set)  # float16 values standing for float32 ones
    casts: dict[tuple[SSAValue, str], SSAValue] = field(default_factory=dict)
    half_consts: dict[SSAValue, SSAValue] = field(default_factory=dict)

    @property
    def low(self) -> np.dtype:
        return REDUCED[self.precision][0]

    # -- decisions

    def wants_low(self, op: Operation) -> bool:
        if not isinstance(op, g.GraphOp) or isinstance(op, g.ConstantOp):
            return False
        involved = [v for v in (*op.operands, *op.results) if _dtype(v) == F32 or v in self.lowered]
        if not involved:
            return False
        if isinstance(op, PRECISION_NEUTRAL):
            float_ins = [v for v in op.operands if _dtype(v) == F32 or v in self.lowered]
            if not all(v in self.lowered or isinstance(v.owner, g.ConstantOp) for v in float_ins):
                return False
            # O2 lowers every op anyway (a gather from a constant table included);
            # O1 only continues a float16 region.
            return self.level == "O2" or any(v in self.lowered for v in float_ins)
        if isinstance(op, FP32_ONLY):
            return False
        if self.level == "O1" and not isinstance(op, REDUCED_O1):
            # autocast: continue a float16 region when every float input is float16 or a constant
            float_ins = [v for v in op.operands if _dtype(v) == F32 or v in self.lowered]
            return any(v in self.lowered for v in float_ins) and all(v in self.lowered or isinstance(v.owner, g.ConstantOp) for v in float_ins)
        return True

    # -- conversions (memoized: one cast per value and direction)

    def _insert_after_def(self, value: SSAValue, op: Operation) -> None:
        if isinstance(value, BlockArgument):
            Rewriter.insert_op(op, InsertPoint.at_start(value.block))
        else:
            Rewriter.insert_op(op, InsertPoint.after(value.owner))

    def as_half(self, v: SSAValue) -> SSAValue:
        if v in self.lowered or _dtype(v) != F32:
            return v
        if (hit := self.half_consts.get(v)) is not None:
            return hit
        if isinstance(v.owner, g.ConstantOp) and v.owner.blob.array is not None:
            c = v.owner
            suffix = REDUCED[self.precision][2]
            new = make_constant(to_reduced_saturating(c.blob.array, self.precision), f"{c.blob.key}_{suffix}", c.location)
            self._insert_after_def(v, new)
            self.half_consts[v] = new.result
            return new.result
        return self._cast(v, self.low)

    def as_full(self, v: SSAValue) -> SSAValue:
        return self._cast(v, F32) if v in self.lowered else v

    def _cast(self, v: SSAValue, dtype: np.dtype) -> SSAValue:
        key = (v, dtype.str)
        if (hit := self.casts.get(key)) is None:
            cast = g.CastOp.make([v], result_types=[_with_dtype(v.type, dtype)])
            cast.location = v.owner.location if isinstance(v.owner, Operation) else cast.location
            self._insert_after_def(v, cast)
            hit = self.casts[key] = cast.result
        return hit

    # -- the walk

    def run_block(self, block: Block) -> None:
        for op in list(block.ops):
            for region in op.regions:
                for inner in region.blocks:
                    self.run_block(inner)
            if self.wants_low(op):
                self.lower(op)
            else:
                new_operands = [self.as_full(v) for v in op.operands]
                if any(a is not b for a, b in zip(new_operands, op.operands)):
                    op.operands = new_operands

    def lower(self, op: g.GraphOp) -> None:
        operands = [self.as_half(v) for v in op.operands]
        result_types = None
        if op.EXPLICIT_RESULT:
            result_types = [_with_dtype(r.type, self.low) if _dtype(r) == F32 else r.type for r in op.results]
        new = type(op).make(operands, result_types, **op.py_attrs())
        new.location = op.location
        Rewriter.insert_op(new, InsertPoint.before(op))
        for old, res in zip(op.results, new.results, strict=True):
            if _dtype(old) == F32 and _dtype(res) == self.low:
                self.lowered.add(res)
            old.replace_all_uses_with(res)
        Rewriter.erase_op(op)


# ------------------------------------------------------------------- pass


@dataclass(frozen=True)
class LowerPrecisionPass(ModulePass):
    """Mixed precision: float16 (fp16) or bfloat16 (bf16) compute for the ops `level` selects, float32 elsewhere.

    Input: graph-dialect IR without kernel.fused. Output: reduced-precision ops
    with casts only at reduced/float32 boundaries; graph signature unchanged.
    """

    name = "lower-precision"

    precision: str = "fp16"
    level: str = "O1"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.precision not in REDUCED:
            raise DscError(f"lower-precision: unknown precision '{self.precision}'", hint="use precision=fp16 or precision=bf16")
        if self.level not in LEVELS:
            raise DscError(f"lower-precision: unknown level '{self.level}'", hint=f"use one of {', '.join(LEVELS)}")
        require(op, self.name, not any(isinstance(o, k.FusedOp) for o in op.walk()), "graph ops that are not fused yet (run it before fuse-*)")
        if self.level == "O0":
            return
        walker = PrecisionRewriter(self.level, self.precision)
        for inner in op.body.blocks:
            walker.run_block(inner)
        cleanup = GreedyRewritePatternApplier([RemoveIdentityPattern(), CastOfCastPattern(), ExactRoundTripCastPattern()])
        PatternRewriteWalker(cleanup, post_walk_func=region_dce).rewrite_module(op)
