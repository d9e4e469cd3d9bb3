"""Reductions and normalizations: reduce_{sum,mean,max,min,prod}, softmax,
log_softmax, layer_norm, batch_norm, lrn, global_{avg,max}_pool.

Reductions first collapse the input into alternating runs of kept and
reduced dimensions (size-1 dims dropped, neighbours of one kind merged):

* innermost run reduced ("row" reduction: reduce_sum over the last axes,
  global pooling, layer norm statistics): every output is a fold over a
  contiguous row, vectorized with several independent vector accumulators
  and a horizontal fold at the end; threads split the outputs.
* innermost run kept ("column" reduction: reduce over a leading axis,
  softmax along a non-last axis): outputs are produced in chunks of up to
  four vectors of adjacent columns, each chunk folding the reduced rows
  into vector accumulators; threads split (outer outputs x chunks).

Integer tensors reduce in their own type (mean truncates, as the reference
does); float32 and float64 in theirs; float16 in float32 (the load/store
helpers widen and round back).
Softmax subtracts the row maximum before exp (vmath.exp, no libm in the
loop); layer norm computes mean and variance in two passes in float32.
"""

from __future__ import annotations

import numpy as np
from dsc.backends.cpu import vmath
from dsc.backends.cpu.codegen import llvm_type, op_emitter
from dsc.backends.cpu.loop_ir import (
    VBYTES,
    add_off,
    alloca,
    as_i64,
    compute_type,
    cval,
    elem_bytes,
    fold_range,
    is_float,
    load_c,
    par_nest,
    prod,
    row_strides,
    store_c,
    unflatten,
    vloop,
)
from dsc.backends.cpu.irb import F32, KernelBuilder, const_i64, vec
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import content_key, sig_of
from dsc.runtime.errors import DscError
from llvmlite import ir


def lanes(ct) -> int:
    """Vector lanes for arithmetic in type ct (16 x f32 / i32, 8 x f64 / i64)."""
    return max(1, min(16, VBYTES // elem_bytes(ct)))


def bcast(kb: KernelBuilder, s, w: int):
    return kb.splat(s, w) if w > 1 else s


def nest(kb: KernelBuilder, dims, strides, base, fn) -> None:
    """Nested loops over dims; fn(offset) with offset = base + sum(i_d * strides[d])."""
    if not dims:
        fn(as_i64(base))
        return
    with kb.loop(0, dims[0], 1, "r") as i:
        nest(kb, dims[1:], strides[1:], add_off(kb, base, i, strides[0]), fn)


class Fold:
    """A reduction's identity, combine and finish for compute type ct."""

    def __init__(self, kb: KernelBuilder, kind: str, ct, dtype: np.dtype):
        self.kb, self.kind, self.ct, self.dtype = kb, kind, ct, np.dtype(dtype)
        self.fl = is_float(ct)
        self.unsigned = self.dtype.kind in "ub"
        if kind in ("sum", "mean"):
            self.ident = 0
        elif kind == "prod":
            self.ident = 1
        elif self.fl:
            self.ident = -np.inf if kind == "max" else np.inf
        elif self.dtype == np.bool_:
            self.ident = 0 if kind == "max" else 1
        else:
            info = np.iinfo(self.dtype)
            self.ident = int(info.min if kind == "max" else info.max)
            if self.unsigned or elem_bytes(ct) * 8 < 64:
                # ir.Constant wants the signed value for its width
                bits = elem_bytes(ct) * 8
                self.ident = ((self.ident + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))

    def comb(self, a, c):
        b, kb = self.kb.b, self.kb
        k = self.kind
        if k in ("sum", "mean"):
            return b.fadd(a, c) if self.fl else b.add(a, c)
        if k == "prod":
            return b.fmul(a, c) if self.fl else b.mul(a, c)
        if self.fl:
            return kb.fmax(a, c) if k == "max" else kb.fmin(a, c)
        op = ">" if k == "max" else "<"
        cmp = b.icmp_unsigned(op, a, c) if self.unsigned else b.icmp_signed(op, a, c)
        return b.select(cmp, a, c)

    def finish(self, v, count: int):
        if self.kind != "mean":
            return v
        b = self.kb.b
        w = v.type.count if isinstance(v.type, ir.VectorType) else 1
        if self.fl:
            return b.fdiv(v, cval(self.ct, count, w))
        return b.udiv(v, cval(self.ct, count, w)) if self.unsigned else b.sdiv(v, cval(self.ct, count, w))


def reduce_generic(kb: KernelBuilder, x, y, shape, axes, kind: str, dtype, tid, nthreads) -> None:
    """y = fold over `axes` of x (row-major shape; keepdims does not change the layout)."""
    b = kb.b
    r = len(shape)
    red = set(axes) if len(axes) else set(range(r))
    n_out = prod(shape[d] for d in range(r) if d not in red)
    if n_out == 0:
        return
    et = llvm_type(dtype)
    ct = compute_type(et)
    F = Fold(kb, kind, ct, dtype)
    W = lanes(ct)
    if prod(shape) == 0:  # folding an empty axis: the identity (mean: 0/0)
        val = cval(ct, np.nan if kind == "mean" and F.fl else F.ident)
        par_nest(kb, [n_out], [[1]], [0], tid, nthreads, lambda d, offs: store_c(kb, val, y, offs[0]))
        return
    dims: list[list] = []
    for d in range(r):
        if shape[d] == 1:
            continue
        if dims and dims[-1][1] == (d in red):
            dims[-1][0] *= shape[d]
        else:
            dims.append([shape[d], d in red])
    if not dims:
        dims = [[1, True]]
    xst = row_strides([s for s, _ in dims])
    kept = [(s, st) for (s, rd), st in zip(dims, xst) if not rd]
    reds = [(s, st) for (s, rd), st in zip(dims, xst) if rd]
    count = prod(s for s, _ in reds)
    yst = row_strides([s for s, _ in kept])

    if dims[-1][1]:
        # row reduction: the innermost reduced run is contiguous
        r0 = dims[-1][0]
        outer_reds = reds[:-1]

        def body(digits, offs):
            if not outer_reds:
                v = fold_range(kb, offs[0], r0, W, ct, F.ident, F.comb, lambda i, w: load_c(kb, x, i, w))
            else:
                acc = alloca(kb, ct)
                b.store(cval(ct, F.ident), acc)

                def row(off):
                    v = fold_range(kb, off, r0, W, ct, F.ident, F.comb, lambda i, w: load_c(kb, x, i, w))
                    b.store(F.comb(b.load(acc), v), acc)

                nest(kb, [s for s, _ in outer_reds], [st for _, st in outer_reds], offs[0], row)
                v = b.load(acc)
            store_c(kb, F.finish(v, count), y, offs[1])

        par_nest(kb, [s for s, _ in kept], [[st for _, st in kept], yst], [0, 0], tid, nthreads, body)
        return

    # column reduction: the innermost kept run (size I) is contiguous in x and y
    inner = kept[-1][0]
    outer = kept[:-1]
    ch = min(4 * W, inner // W * W) if inner >= W else inner
    if inner >= 2 * W and prod(s for s, _ in outer) * -(-inner // ch) < 16:
        ch = W  # narrower chunks: enough of them for every thread
    nch = -(-inner // ch)
    tail = inner - (nch - 1) * ch

    def chunk(size, xoff, yoff):
        nv, ns = size // W, size % W
        accs = [alloca(kb, vec(W, ct)) for _ in range(nv)] + [alloca(kb, ct) for _ in range(ns)]
        for k, a in enumerate(accs):
            b.store(cval(ct, F.ident, W if k < nv else 1), a)

        def step(off):
            for k, a in enumerate(accs):
                pos = k * W if k < nv else nv * W + (k - nv)
                v = load_c(kb, x, b.add(off, const_i64(pos)) if pos else off, W if k < nv else 1)
                b.store(F.comb(b.load(a), v), a)

        nest(kb, [s for s, _ in reds], [st for _, st in reds], xoff, step)
        for k, a in enumerate(accs):
            pos = k * W if k < nv else nv * W + (k - nv)
            store_c(kb, F.finish(b.load(a), count), y, b.add(yoff, const_i64(pos)) if pos else yoff)

    def body(digits, offs):
        if tail == ch:
            chunk(ch, offs[0], offs[1])
            return
        if nch == 1:
            chunk(tail, offs[0], offs[1])
            return
        with b.if_else(b.icmp_signed("==", digits[-1], const_i64(nch - 1))) as (last, other):
            with last:
                chunk(tail, offs[0], offs[1])
            with other:
                chunk(ch, offs[0], offs[1])

    par_nest(
        kb, [s for s, _ in outer] + [nch], [[st for _, st in outer] + [ch], yst[:-1] + [ch]], [0, 0], tid, nthreads, body,
    )


_REDUCE_KIND = {g.ReduceSumOp: "sum", g.ReduceMeanOp: "mean", g.ReduceMaxOp: "max", g.ReduceMinOp: "min", g.ReduceProdOp: "prod"}


@op_emitter(*_REDUCE_KIND)
def emit_reduce(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    x = sig_of(op.input.type)
    reduce_generic(kb, in_ptrs[0], out_ptrs[0], x.shape, tuple(op.py_attrs()["axes"]), _REDUCE_KIND[type(op)], x.dtype, tid, nthreads)


@op_emitter(g.GlobalAvgPoolOp, g.GlobalMaxPoolOp)
def emit_global_pool(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    x = sig_of(op.input.type)
    kind = "mean" if isinstance(op, g.GlobalAvgPoolOp) else "max"
    reduce_generic(kb, in_ptrs[0], out_ptrs[0], x.shape, tuple(range(2, len(x.shape))), kind, x.dtype, tid, nthreads)


# ------------------------------------------------------------------ softmax


def _log(kb: KernelBuilder, v):
    return kb.intrinsic("llvm.log", v.type, [v])


@op_emitter(g.SoftmaxOp, g.LogSoftmaxOp)
def emit_softmax(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    b = kb.b
    xs = sig_of(op.input.type)
    shape = xs.shape
    if prod(shape) == 0:
        return
    axis = op.py_attrs()["axis"] % max(len(shape), 1)
    log = isinstance(op, g.LogSoftmaxOp)
    et = llvm_type(xs.dtype)
    if not is_float(et):
        raise DscError(f"{op.name} of {xs.dtype} tensors is not supported on the CPU")
    ct = compute_type(et)
    W = lanes(ct)
    x, y = in_ptrs[0], out_ptrs[0]
    O, A, I = prod(shape[:axis]), shape[axis], prod(shape[axis + 1 :])
    neg_inf = -np.inf

    if I == 1:
        def row(digits, offs):
            off = offs[0]
            m = fold_range(kb, off, A, W, ct, neg_inf, kb.fmax, lambda i, w: load_c(kb, x, i, w))

            def exp_store(i, w):
                e = vmath.exp(kb, b.fsub(load_c(kb, x, i, w), bcast(kb, m, w)))
                if not log:
                    store_c(kb, e, y, i)
                return e

            s = fold_range(kb, off, A, W, ct, 0.0, b.fadd, exp_store)
            end = b.add(off, const_i64(A))
            if log:
                ls = _log(kb, s)
                vloop(kb, off, end, W, lambda i, w: store_c(kb, b.fsub(b.fsub(load_c(kb, x, i, w), bcast(kb, m, w)), bcast(kb, ls, w)), y, i), "ls")
            else:
                rs = b.fdiv(cval(ct, 1.0), s)
                vloop(kb, off, end, W, lambda i, w: store_c(kb, b.fmul(load_c(kb, y, i, w), bcast(kb, rs, w)), y, i), "sm")

        par_nest(kb, [O], [[A]], [0], tid, nthreads, row)
        return

    # softmax along a strided axis: columns of w adjacent elements, walked down the axis
    def column(off, w):
        mx = alloca(kb, vec(w, ct) if w > 1 else ct)
        b.store(cval(ct, neg_inf, w), mx)
        with kb.loop(0, A, 1, "a") as a:
            i = b.add(off, b.mul(a, const_i64(I)))
            b.store(kb.fmax(b.load(mx), load_c(kb, x, i, w)), mx)
        m = b.load(mx)
        sm = alloca(kb, vec(w, ct) if w > 1 else ct)
        b.store(cval(ct, 0.0, w), sm)
        with kb.loop(0, A, 1, "a") as a:
            i = b.add(off, b.mul(a, const_i64(I)))
            e = vmath.exp(kb, b.fsub(load_c(kb, x, i, w), m))
            if not log:
                store_c(kb, e, y, i)
            b.store(b.fadd(b.load(sm), e), sm)
        s = b.load(sm)
        if log:
            ls = _log(kb, s)
        else:
            rs = b.fdiv(cval(ct, 1.0, w), s)
        with kb.loop(0, A, 1, "a") as a:
            i = b.add(off, b.mul(a, const_i64(I)))
            if log:
                store_c(kb, b.fsub(b.fsub(load_c(kb, x, i, w), m), ls), y, i)
            else:
                store_c(kb, b.fmul(load_c(kb, y, i, w), rs), y, i)

    nv, tail = I // W, I % W
    ncol = nv + (1 if tail else 0)

    def task(digits, offs):
        def scalar_tail():
            with kb.loop(0, tail, 1, "tc") as j:
                column(b.add(offs[0], j), 1)

        if not tail:
            column(offs[0], W)
        elif nv == 0:
            scalar_tail()
        else:
            with b.if_else(b.icmp_signed("==", digits[-1], const_i64(nv))) as (last, other):
                with last:
                    scalar_tail()
                with other:
                    column(offs[0], W)

    par_nest(kb, [O, ncol], [[A * I, W]], [0], tid, nthreads, task)


# --------------------------------------------------------------- layer norm


def _param_reader(kb: KernelBuilder, op, i: int, ptr, norm_shape, ctx, ct):
    """fn(j, w) -> the values of parameter operand i at normalized positions j..j+w (or None if absent)."""
    if ptr is None:
        return None
    b = kb.b
    ps = sig_of(op.operands[i].type).shape
    R = prod(norm_shape)
    n = prod(ps)
    if n == R:
        return lambda j, w: load_c(kb, ptr, j, w)
    if n == 1:
        v = load_c(kb, ptr, 0, 1)
        return lambda j, w: bcast(kb, v, w)
    lead = ps[: max(len(ps) - len(norm_shape), 0)]
    if any(d != 1 for d in lead):
        raise DscError(f"{op.name}: parameter shape {list(ps)} reaches past the normalized axes")
    ps = tuple(ps[len(lead):])
    const = ctx.consts[i]
    if const is not None:
        full = np.ascontiguousarray(np.broadcast_to(const.reshape(ps), tuple(norm_shape)))
        ctx.repack(i, full, content_key("ln_param", full))
        return lambda j, w: load_c(kb, ptr, j, w)
    # a broadcast, non-constant parameter: index it element by element
    pad = (1,) * (len(norm_shape) - len(ps)) + ps
    st = row_strides(pad)
    st = [0 if pad[d] == 1 else st[d] for d in range(len(pad))]

    def read(j, w):
        vals = []
        for k in range(w):
            jj = b.add(j, const_i64(k)) if k else j
            digits = unflatten(kb, jj, list(norm_shape))
            off = const_i64(0)
            for d, s in enumerate(st):
                off = add_off(kb, off, digits[d], s)
            vals.append(load_c(kb, ptr, off, 1))
        if w == 1:
            return vals[0]
        v = ir.Constant(vec(w, ct), ir.Undefined)
        for k, s in enumerate(vals):
            v = b.insert_element(v, s, ir.Constant(ir.IntType(32), k))
        return v

    return read


@op_emitter(g.LayerNormOp)
def emit_layer_norm(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    b = kb.b
    xs = sig_of(op.input.type)
    shape = xs.shape
    if prod(shape) == 0:
        return
    a = op.py_attrs()
    axis = a["axis"] % max(len(shape), 1)
    eps = a["epsilon"]
    et = llvm_type(xs.dtype)
    ct = compute_type(et)
    W = lanes(ct)
    x, y = in_ptrs[0], out_ptrs[0]
    norm = shape[axis:]
    O, R = prod(shape[:axis]), prod(norm)
    scale = _param_reader(kb, op, 1, in_ptrs[1], norm, ctx, ct)
    bias = _param_reader(kb, op, 2, in_ptrs[2], norm, ctx, ct) if len(in_ptrs) > 2 else None

    def row(digits, offs):
        off = offs[0]
        s1 = fold_range(kb, off, R, W, ct, 0.0, b.fadd, lambda i, w: load_c(kb, x, i, w))
        mean = b.fdiv(s1, cval(ct, R))

        def sq(i, w):
            d = b.fsub(load_c(kb, x, i, w), bcast(kb, mean, w))
            return b.fmul(d, d)

        s2 = fold_range(kb, off, R, W, ct, 0.0, b.fadd, sq)
        var = b.fdiv(s2, cval(ct, R))
        rstd = b.fdiv(cval(ct, 1.0), kb.sqrt(b.fadd(var, cval(ct, eps))))

        def out(j, w):
            i = b.add(off, j)
            v = b.fmul(b.fmul(b.fsub(load_c(kb, x, i, w), bcast(kb, mean, w)), bcast(kb, rstd, w)), scale(j, w))
            if bias is not None:
                v = b.fadd(v, bias(j, w))
            store_c(kb, v, y, i)

        vloop(kb, 0, R, W, out, "ln")

    par_nest(kb, [O], [[R]], [0], tid, nthreads, row)


# --------------------------------------------------------------- batch norm


@op_emitter(g.BatchNormOp)
def emit_batch_norm(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    b = kb.b
    xs = sig_of(op.input.type)
    shape = xs.shape
    if prod(shape) == 0:
        return
    eps = op.py_attrs()["epsilon"]
    et = llvm_type(xs.dtype)
    ct = compute_type(et)
    W = lanes(ct)
    x, scale, bias, mean, var = in_ptrs
    y = out_ptrs[0]
    N, C, S = shape[0], shape[1], prod(shape[2:])

    def params(idx, w):
        s = b.fdiv(load_c(kb, scale, idx, w), kb.sqrt(b.fadd(load_c(kb, var, idx, w), cval(ct, eps, w))))
        return s, load_c(kb, mean, idx, w), load_c(kb, bias, idx, w)

    if S == 1:  # [N, C]: vectorize along the channels
        def row(digits, offs):
            def cols(j, w):
                s, m, bi = params(j, w)
                i = b.add(offs[0], j)
                store_c(kb, b.fadd(b.fmul(b.fsub(load_c(kb, x, i, w), m), s), bi), y, i)

            vloop(kb, 0, C, W, cols, "bn")

        par_nest(kb, [N], [[C]], [0], tid, nthreads, row)
        return

    def plane(digits, offs):
        s, m, bi = params(digits[1], 1)
        sv, mv, bv = bcast(kb, s, W), bcast(kb, m, W), bcast(kb, bi, W)

        def px(j, w):
            i = b.add(offs[0], j)
            ss, mm, bb = (sv, mv, bv) if w > 1 else (s, m, bi)
            store_c(kb, b.fadd(b.fmul(b.fsub(load_c(kb, x, i, w), mm), ss), bb), y, i)

        vloop(kb, 0, S, W, px, "bn")

    par_nest(kb, [N, C], [[C * S, S]], [0], tid, nthreads, plane)


# ---------------------------------------------------------------------- lrn


def _pow(kb: KernelBuilder, t, beta: float):
    b = kb.b
    if beta == 1.0:
        return t
    if beta == 0.5:
        return kb.sqrt(t)
    if beta == 0.75:
        r = kb.sqrt(t)
        return b.fmul(r, kb.sqrt(r))
    if beta == 0.25:
        return kb.sqrt(kb.sqrt(t))
    w = t.type.count if isinstance(t.type, ir.VectorType) else 1
    return vmath.exp(kb, b.fmul(_log(kb, t), cval(F32 if w == 1 else t.type.element, beta, w)))


@op_emitter(g.LrnOp)
def emit_lrn(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    b = kb.b
    xs = sig_of(op.input.type)
    shape = xs.shape
    if prod(shape) == 0:
        return
    a = op.py_attrs()
    size, alpha, beta, bias = a["size"], a["alpha"], a["beta"], a["bias"]
    et = llvm_type(xs.dtype)
    ct = compute_type(et)
    W = lanes(ct)
    x, y = in_ptrs[0], out_ptrs[0]
    N, C, S = shape[0], shape[1], prod(shape[2:])
    lo_w, hi_w = (size - 1) // 2, size - 1 - (size - 1) // 2
    coef = float(np.float32(alpha / size)) if ct == F32 else alpha / size

    def plane(digits, offs):
        c = digits[1]
        n_off = b.sub(offs[0], b.mul(c, const_i64(S)))  # start of image n
        c_lo = kb.smax(b.sub(c, const_i64(lo_w)), const_i64(0))
        c_hi = kb.smin(b.add(c, const_i64(hi_w + 1)), const_i64(C))

        def px(j, w):
            acc = alloca(kb, vec(w, ct) if w > 1 else ct)
            b.store(cval(ct, 0.0, w), acc)
            with kb.loop(c_lo, c_hi, 1, "lc") as cc:
                v = load_c(kb, x, b.add(b.add(n_off, b.mul(cc, const_i64(S))), j), w)
                b.store(b.fadd(b.load(acc), b.fmul(v, v)), acc)
            t = b.fadd(cval(ct, bias, w), b.fmul(cval(ct, coef, w), b.load(acc)))
            i = b.add(offs[0], j)
            store_c(kb, b.fdiv(load_c(kb, x, i, w), _pow(kb, t, beta)), y, i)

        vloop(kb, 0, S, W, px, "lrn")

    par_nest(kb, [N, C], [[C * S, S]], [0], tid, nthreads, plane)


__all__ = ["Fold", "lanes", "reduce_generic"]
