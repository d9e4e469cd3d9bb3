"""Elementwise code: single ops with broadcasting, and fused elementwise kernels.

`compute(kb, op, args)` gives the IR of one elementwise graph op on scalars
or vectors; the loop driver walks the output with the innermost (collapsed)
dimension vectorized, each operand read through its broadcast strides. A
kernel of pattern "elementwise" (or any kernel whose ops are all
elementwise) is emitted as one loop whose intermediates never leave
registers.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from dsc.backends.cpu import vmath
from dsc.backends.cpu.codegen import fused_emitter, llvm_type, op_emitter
from dsc.backends.cpu.loop_ir import compute_type, narrow, widen
from dsc.backends.cpu.irb import F16, F32, I1, I32, KernelBuilder, const_i64, vec
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of

UNARY = (
    g.ReluOp, g.SigmoidOp, g.TanhOp, g.ErfOp, g.ExpOp, g.LogOp, g.SqrtOp, g.NegOp, g.AbsOp, g.ReciprocalOp,
    g.FloorOp, g.CeilOp, g.NotOp, g.HardSwishOp, g.SoftplusOp, g.LeakyReluOp, g.HardSigmoidOp, g.ClipOp, g.GeluOp, g.CastOp,
)
BINARY = (
    g.AddOp, g.SubOp, g.MulOp, g.DivOp, g.PowOp, g.MaxOp, g.MinOp, g.AndOp, g.OrOp, g.XorOp,
    g.EqualOp, g.LessOp, g.LessEqualOp, g.GreaterOp, g.GreaterEqualOp,
)
ELEMENTWISE = UNARY + BINARY + (g.WhereOp, g.BroadcastToOp)


def _is_float(t) -> bool:
    t = t.element if isinstance(t, ir.VectorType) else t
    return isinstance(t, ir.FloatType | ir.HalfType | ir.DoubleType)


def _const(like, value):
    t = like.type
    elem = t.element if isinstance(t, ir.VectorType) else t
    c = float(value) if _is_float(elem) else int(value)
    return ir.Constant(t, [c] * t.count) if isinstance(t, ir.VectorType) else ir.Constant(t, c)


_FCMP = {g.EqualOp: "==", g.LessOp: "<", g.LessEqualOp: "<=", g.GreaterOp: ">", g.GreaterEqualOp: ">="}


def compute(kb: KernelBuilder, op, args):
    """IR for one elementwise op on values (scalars or vectors of equal width)."""
    b = kb.b
    x = args[0]
    a = op.py_attrs() if isinstance(op, g.GraphOp) else {}
    fl = _is_float(x.type)
    # unsigned integer tensors compare, divide and clamp without sign
    uns = bool(op.operands) and sig_of(op.operands[-1].type).dtype.kind == "u"
    icmp = b.icmp_unsigned if uns else b.icmp_signed
    match op:
        case g.BroadcastToOp():
            return x
        case g.ReluOp():
            return kb.fmax(x, _const(x, 0)) if fl else b.select(icmp(">", x, _const(x, 0)), x, _const(x, 0))
        case g.SigmoidOp():
            return vmath.sigmoid(kb, x)
        case g.TanhOp():
            return vmath.tanh(kb, x)
        case g.ErfOp():
            return vmath.erf(kb, x)
        case g.ExpOp():
            return vmath.exp(kb, x)
        case g.LogOp():
            return vmath.log(kb, x)
        case g.SqrtOp():
            return kb.sqrt(x)
        case g.NegOp():
            return b.fneg(x) if fl else b.neg(x)
        case g.AbsOp():
            return kb.fabs(x) if fl else b.select(icmp("<", x, _const(x, 0)), b.neg(x), x)
        case g.ReciprocalOp():
            return b.fdiv(_const(x, 1), x)
        case g.FloorOp():
            return kb.floor(x)
        case g.CeilOp():
            return kb.ceil(x)
        case g.NotOp():
            return b.xor(x, _const(x, 1))
        case g.HardSwishOp():
            return b.fmul(x, kb.fmin(kb.fmax(kb.fma(x, _const(x, 1 / 6), _const(x, 0.5)), _const(x, 0)), _const(x, 1)))
        case g.SoftplusOp():
            return vmath.log(kb, b.fadd(_const(x, 1), vmath.exp(kb, x)))
        case g.LeakyReluOp():
            return b.select(b.fcmp_ordered(">=", x, _const(x, 0)), x, b.fmul(x, _const(x, a["alpha"])))
        case g.HardSigmoidOp():
            return kb.fmin(kb.fmax(kb.fma(x, _const(x, a["alpha"]), _const(x, a["beta"])), _const(x, 0)), _const(x, 1))
        case g.ClipOp():
            if fl:
                y = x if a.get("min") is None else kb.fmax(x, _const(x, a["min"]))
                return y if a.get("max") is None else kb.fmin(y, _const(x, a["max"]))
            y = x if a.get("min") is None else b.select(icmp("<", x, _const(x, a["min"])), _const(x, a["min"]), x)
            return y if a.get("max") is None else b.select(icmp(">", y, _const(x, a["max"])), _const(x, a["max"]), y)
        case g.GeluOp():
            if a["approximate"] == "tanh":
                inner = b.fmul(_const(x, 0.7978845608028654), kb.fma(b.fmul(_const(x, 0.044715), b.fmul(x, x)), x, x))
                return b.fmul(b.fmul(_const(x, 0.5), x), b.fadd(_const(x, 1), vmath.tanh(kb, inner)))
            return b.fmul(b.fmul(_const(x, 0.5), x), b.fadd(_const(x, 1), vmath.erf(kb, b.fmul(x, _const(x, 0.7071067811865476)))))
        case g.CastOp():
            return _cast(kb, x, sig_of(op.result.type).dtype)
        case g.WhereOp():
            return b.select(args[0], args[1], args[2])
    y = args[1]
    match op:
        case g.AddOp():
            return b.fadd(x, y) if fl else b.add(x, y)
        case g.SubOp():
            return b.fsub(x, y) if fl else b.sub(x, y)
        case g.MulOp():
            return b.fmul(x, y) if fl else b.mul(x, y)
        case g.DivOp():
            return b.fdiv(x, y) if fl else (b.udiv(x, y) if uns else b.sdiv(x, y))
        case g.PowOp():
            if fl:
                return vmath.pow_(kb, x, y)
            # integer pow through double (exact for the magnitudes ints hold), truncated like ONNX
            dt = ir.VectorType(ir.DoubleType(), x.type.count) if isinstance(x.type, ir.VectorType) else ir.DoubleType()
            conv = b.uitofp if uns else b.sitofp
            r = vmath.pow_(kb, conv(x, dt), conv(y, dt))
            return b.fptoui(r, x.type) if uns else b.fptosi(r, x.type)
        case g.MaxOp():
            return kb.fmax(x, y) if fl else b.select(icmp(">", x, y), x, y)
        case g.MinOp():
            return kb.fmin(x, y) if fl else b.select(icmp("<", x, y), x, y)
        case g.AndOp():
            return b.and_(x, y)
        case g.OrOp():
            return b.or_(x, y)
        case g.XorOp():
            return b.xor(x, y)
    if type(op) in _FCMP:
        pred = _FCMP[type(op)]
        return b.fcmp_ordered(pred, x, y) if fl else icmp(pred, x, y)
    raise NotImplementedError(op.name)


def _cast(kb: KernelBuilder, x, dt: np.dtype):
    b = kb.b
    n = x.type.count if isinstance(x.type, ir.VectorType) else None
    if dt == np.float16:
        # float16 values live in float32 registers: round through half (one rounding, also
        # from float64; integers reach half's range exactly through float32)
        y = x if _is_float(x.type) else _cast(kb, x, np.dtype(np.float32))
        return b.fpext(b.fptrunc(y, vec(n, F16) if n else F16), vec(n, F32) if n else F32)
    to = I1 if dt == np.bool_ else llvm_type(dt)
    to_t = vec(n, to) if n else to
    src_float = _is_float(x.type)
    if dt == np.bool_:
        return b.fcmp_unordered("!=", x, _const(x, 0)) if src_float else b.icmp_signed("!=", x, _const(x, 0))
    if dt.kind == "f":
        if src_float:
            if _bits(to) > _bits(x.type):
                return b.fpext(x, to_t)
            return b.fptrunc(x, to_t) if _bits(to) < _bits(x.type) else x
        elem = x.type.element if n else x.type
        return b.uitofp(x, to_t) if elem == I1 else b.sitofp(x, to_t)
    if src_float:
        return b.fptosi(x, to_t)
    elem = x.type.element if n else x.type
    if elem.width == to.width:
        return x
    if elem == I1:
        return b.zext(x, to_t)
    return b.sext(x, to_t) if to.width > elem.width else b.trunc(x, to_t)


def _bits(t) -> int:
    t = t.element if isinstance(t, ir.VectorType) else t
    return {ir.HalfType: 16, ir.FloatType: 32, ir.DoubleType: 64}[type(t)]


# ------------------------------------------------------------ loop driver


def broadcast_strides(shape: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """Element strides of a row-major `shape` read at the indices of `out` (0 where broadcast)."""
    pad = (1,) * (len(out) - len(shape)) + tuple(shape)
    strides, acc = [0] * len(out), 1
    for d in range(len(out) - 1, -1, -1):
        strides[d] = 0 if pad[d] == 1 and out[d] != 1 else acc
        acc *= pad[d]
    return strides


def collapse(out: tuple[int, ...], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent dims that every operand walks the same way (contiguous or broadcast)."""
    dims = [d for d in range(len(out)) if out[d] != 1] or [len(out) - 1] if out else []
    if not out:
        return [1], [[0] for _ in strides]
    shape = [out[dims[0]]]
    st = [[s[dims[0]]] for s in strides]
    for d in dims[1:]:
        mergeable = all((s[d] == 0 and cur[-1] == 0) or (cur[-1] == s[d] * out[d]) for s, cur in zip(strides, st))
        if mergeable:
            shape[-1] *= out[d]
            for s, cur in zip(strides, st):
                cur[-1] = s[d] if s[d] != 0 else 0
        else:
            shape.append(out[d])
            for s, cur in zip(strides, st):
                cur.append(s[d])
    return shape, st


def elementwise_loop(kb: KernelBuilder, out_shape, in_ptrs, in_shapes, out_ptrs, tid, nthreads, body, in_bool, out_bool):
    """Drive `body(values) -> results` over out_shape; operands broadcast; last dim vectorized."""
    b = kb.b
    strides = [broadcast_strides(s, out_shape) for s in in_shapes] + [broadcast_strides(out_shape, out_shape) for _ in out_ptrs]
    shape, st = collapse(tuple(out_shape), strides)
    inner = shape[-1]
    outer = shape[:-1]
    rows = int(np.prod(outer)) if outer else 1
    width = 16 if inner >= 16 else (8 if inner >= 8 else 1)
    # split rows across threads; a single row is split along the inner dim instead
    split_inner = rows == 1
    total = inner if split_inner else rows
    grain = 4096 if split_inner else max(1, 2048 // max(inner, 1))
    lo, hi = kb.thread_range(total, tid, nthreads, grain=grain)
    ptrs = list(in_ptrs) + list(out_ptrs)
    bools = list(in_bool) + list(out_bool)
    n_in = len(in_ptrs)

    # float16 operands compute in float32: widened on load, rounded to half on store
    def load(ptr, idx, w, is_bool, contiguous):
        if not contiguous:
            v = widen(kb, kb.load(ptr, idx))
            v = b.icmp_signed("!=", v, ir.Constant(v.type, 0)) if is_bool else v
            return kb.splat(v, w) if w > 1 else v
        v = widen(kb, kb.load_vec(ptr, idx, w) if w > 1 else kb.load(ptr, idx))
        if is_bool:
            v = b.icmp_signed("!=", v, ir.Constant(v.type, [0] * w) if w > 1 else ir.Constant(v.type, 0))
        return v

    def store(v, ptr, idx, w, is_bool):
        v = narrow(kb, v, ptr.type.pointee)
        if is_bool:
            v = b.zext(v, vec(w, ptr.type.pointee) if w > 1 else ptr.type.pointee)
        if w > 1:
            kb.store_vec(v, ptr, idx)
        else:
            kb.store(v, ptr, idx)

    def row_bases(r):
        bases = [const_i64(0)] * len(ptrs)
        rem = r
        for d in range(len(outer) - 1, -1, -1):
            idx = b.srem(rem, const_i64(outer[d])) if d > 0 else rem
            rem = b.sdiv(rem, const_i64(outer[d])) if d > 0 else rem
            bases = [b.add(bs, b.mul(idx, const_i64(s[d]))) if s[d] else bs for bs, s in zip(bases, st)]
        return bases

    def inner_loop(bases, jlo, jhi):
        def do(j, w):
            vals = [load(p, b.add(bs, b.mul(j, const_i64(s[-1]))) if s[-1] else bs, w, bl, s[-1] == 1) for p, bs, s, bl in zip(ptrs[:n_in], bases[:n_in], st[:n_in], bools[:n_in])]
            res = body(vals)
            for v, p, bs, bl in zip(res, ptrs[n_in:], bases[n_in:], bools[n_in:]):
                store(v, p, b.add(bs, j), w, bl)

        if width > 1:
            vend = b.add(jlo, b.mul(b.sdiv(b.sub(jhi, jlo), const_i64(width)), const_i64(width)))
            with kb.loop(jlo, vend, width, "v") as j:
                do(j, width)
            with kb.loop(vend, jhi, 1, "t") as j:
                do(j, 1)
        else:
            with kb.loop(jlo, jhi, 1, "j") as j:
                do(j, 1)

    if split_inner:
        inner_loop([const_i64(0)] * len(ptrs), lo, hi)
    else:
        with kb.loop(lo, hi, 1, "row") as r:
            inner_loop(row_bases(r), const_i64(0), const_i64(inner))


@op_emitter(*ELEMENTWISE)
def emit_elementwise_op(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    out = sig_of(op.results[0].type)
    ins = [sig_of(v.type) for v in op.operands]
    elementwise_loop(
        kb, out.shape, in_ptrs, [s.shape for s in ins], out_ptrs, tid, nthreads,
        lambda vals: [compute(kb, op, vals)],
        [s.dtype == np.bool_ for s in ins], [out.dtype == np.bool_],
    )


def _all_elementwise(kop: k.FusedOp) -> bool:
    ops = [op for op in kop.body.block.ops if not isinstance(op, k.YieldOp)]
    if not ops or not all(isinstance(op, ELEMENTWISE) or (isinstance(op, g.ConstantOp) and op.array.size == 1) for op in ops):
        return False
    if not block_args_used(kop):
        return False
    shapes = {tuple(r.type.get_shape()) for r in kop.outputs}
    return len(shapes) == 1


def block_args_used(kop: k.FusedOp) -> bool:
    """The fused loop needs at least one tensor input to take its vector width from."""
    return len(kop.body.block.args) > 0


@fused_emitter("elementwise", _all_elementwise)
def emit_fused_elementwise(kb, kop, in_ptrs, out_ptrs, tid, nthreads, ctx):
    block = kop.body.block
    out = sig_of(kop.outputs[0].type)
    ins = [sig_of(a.type) for a in block.args]

    def body(vals):
        env = dict(zip(block.args, vals))
        for op in block.ops:
            if isinstance(op, k.YieldOp):
                return [env[v] for v in op.operands]
            if isinstance(op, g.ConstantOp):
                arr = op.array  # a scalar (see _all_elementwise): becomes a literal
                ref = vals[0]
                w = ref.type.count if isinstance(ref.type, ir.VectorType) else 1
                et = compute_type(llvm_type(arr.dtype))
                c = ir.Constant(et, float(arr.reshape(-1)[0]) if arr.dtype.kind == "f" else int(arr.reshape(-1)[0]))
                env[op.result] = kb.splat(c, w) if w > 1 else c
                continue
            env[op.results[0]] = compute(kb, op, [env[v] for v in op.operands])
        raise AssertionError("no yield")

    elementwise_loop(
        kb, out.shape, in_ptrs, [s.shape for s in ins], out_ptrs, tid, nthreads, body,
        [s.dtype == np.bool_ for s in ins], [sig_of(r.type).dtype == np.bool_ for r in kop.outputs],
    )


def emit_copy(kb: KernelBuilder, src, dst, n: int, tid, nthreads) -> None:
    lo, hi = kb.thread_range(n, tid, nthreads, grain=4096)
    with kb.loop(lo, hi, 1, "c") as i:
        kb.store(kb.load(src, i), dst, i)


__all__ = ["compute", "elementwise_loop", "broadcast_strides", "collapse", "emit_copy", "ELEMENTWISE", "I32"]
