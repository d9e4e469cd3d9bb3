"""Max and average pooling over 1, 2 or 3 (any number of) spatial axes, NCHW.

Threads split the output rows (N*C planes x the outer spatial output
positions). Each row is vectorized along the output width: 16 adjacent
outputs at once, their taps read with one (stride 1) or `stride` (stride 2..4,
lanes picked with a shuffle) contiguous vector loads per kernel column. Only
the interior of the row, where every tap of every lane lies inside the input,
is vectorized (plus one overlapping block to reach the right end); the few
border outputs take a scalar path that checks each tap. Along the outer
spatial axes the valid tap range of a row is computed once, so padding
costs nothing there.

Padding never wins a max (invalid taps are skipped, an all-padding window
gives the dtype's lowest value as in the reference), and the average's
divisor counts the taps inside the input (count_include_pad=0) or inside the
explicitly padded input (count_include_pad=1), never those ceil_mode adds
past the end padding.
"""

from __future__ import annotations

from dsc.backends.cpu.codegen import llvm_type, op_emitter
from dsc.backends.cpu.loop_ir import (
    alloca,
    compute_type,
    cval,
    is_float,
    load_c,
    par_nest,
    prod,
    row_strides,
    store_c,
    widen,
)
from dsc.backends.cpu.emit_reduce import Fold, lanes
from dsc.backends.cpu.irb import I32, I64, KernelBuilder, const_i64, vec
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of
from dsc.runtime.errors import DscError
from llvmlite import ir

MAX_VEC_STRIDE = 4  # strided rows are read as stride*16 contiguous lanes; beyond this, scalar


def _ceil_div(kb: KernelBuilder, a, d: int):
    """ceil(a / d) for an i64 a of any sign and a constant d > 0."""
    b = kb.b
    if d == 1:
        return a
    q = b.sdiv(a, const_i64(d))
    r = b.srem(a, const_i64(d))
    return b.add(q, b.zext(b.icmp_signed(">", r, const_i64(0)), I64))


def _tap_range(kb: KernelBuilder, base, lo: int, hi: int, k: int, d: int):
    """[k_lo, k_hi): the taps t in [0, k) with lo <= base + t*d < hi."""
    b = kb.b
    k_lo = kb.smax(_ceil_div(kb, b.sub(const_i64(lo), base), d), const_i64(0))
    k_hi = kb.smin(_ceil_div(kb, b.sub(const_i64(hi), base), d), const_i64(k))
    return k_lo, k_hi


def _load_strided(kb: KernelBuilder, ptr, idx, w: int, s: int):
    """w elements ptr[idx], ptr[idx + s], ... (widened to the compute type) from w*s contiguous ones."""
    if s == 1 or w == 1:
        return load_c(kb, ptr, idx, w)
    b = kb.b
    raw = kb.load_vec(ptr, idx, w * s)
    v = b.shuffle_vector(raw, raw, ir.Constant(vec(w, I32), [k * s for k in range(w)]))
    return widen(kb, v)


@op_emitter(g.MaxPoolOp, g.AvgPoolOp)
def emit_pool(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    b = kb.b
    xs, ys = sig_of(op.input.type), sig_of(op.result.type)
    a = op.py_attrs()
    K, S, D, P = a["kernel_shape"], a["strides"], a["dilations"], a["pads"]
    nsp = len(K)
    is_max = isinstance(op, g.MaxPoolOp)
    include_pad = bool(a.get("count_include_pad", 0))
    et = llvm_type(xs.dtype)
    ct = compute_type(et)
    if not is_max and not is_float(ct):
        raise DscError(f"graph.avg_pool of {xs.dtype} tensors is not supported on the CPU")
    if prod(ys.shape) == 0:
        return
    N, C = xs.shape[:2]
    X, Y = xs.shape[2:], ys.shape[2:]
    F = Fold(kb, "max" if is_max else "sum", ct, xs.dtype)
    W = lanes(ct)
    x, y = in_ptrs[0], out_ptrs[0]
    xst = row_strides(X)
    IW, OW, KW, SW, DW, PW, PWE = X[-1], Y[-1], K[-1], S[-1], D[-1], P[nsp - 1], P[2 * nsp - 1]

    # output columns whose every tap (and every lane of the strided load) lies inside the row
    v_lo = -(-PW // SW)
    v_max = min((IW - SW - (KW - 1) * DW + PW) // SW - (W - 1), OW - W)
    use_vec = W > 1 and SW <= MAX_VEC_STRIDE and v_max >= v_lo

    def row(digits, offs):
        x_plane, y_row = offs[0], offs[1]
        # outer spatial axes: the valid tap range of this row, and its divisor share
        ranges, count = [], None
        for j in range(nsp - 1):
            base = b.sub(b.mul(digits[1 + j], const_i64(S[j])), const_i64(P[j]))
            k_lo, k_hi = _tap_range(kb, base, 0, X[j], K[j], D[j])
            ranges.append((base, k_lo, k_hi))
            if not is_max:
                c_lo, c_hi = _tap_range(kb, base, -P[j], X[j] + P[nsp + j], K[j], D[j]) if include_pad else (k_lo, k_hi)
                cj = kb.smax(b.sub(c_hi, c_lo), const_i64(0))
                count = cj if count is None else b.mul(count, cj)

        def taps(fn, j=0, off=None):
            """fn(row_offset) for each valid tap of the outer spatial axes (offset of input column 0)."""
            off = x_plane if off is None else off
            if j == nsp - 1:
                fn(off)
                return
            base, k_lo, k_hi = ranges[j]
            with kb.loop(k_lo, k_hi, 1, f"k{j}") as t:
                pos = b.add(base, b.mul(t, const_i64(D[j])) if D[j] != 1 else t)
                taps(fn, j + 1, b.add(off, b.mul(pos, const_i64(xst[j]))))

        def finish(acc, count_w, w):
            if is_max:
                return acc
            n = count_w if count is None else b.mul(count, count_w)
            n = b.sitofp(kb.smax(n, const_i64(1)), ct)
            return b.fdiv(acc, kb.splat(n, w) if w > 1 else n)

        def vec_block(ow):
            acc = alloca(kb, vec(W, ct))
            b.store(cval(ct, F.ident, W), acc)
            col0 = b.sub(b.mul(ow, const_i64(SW)), const_i64(PW))

            def tap(off):
                start = b.add(off, col0)
                v = b.load(acc)
                for kw in range(KW):
                    v = F.comb(v, _load_strided(kb, x, b.add(start, const_i64(kw * DW)) if kw else start, W, SW))
                b.store(v, acc)

            taps(tap)
            store_c(kb, finish(b.load(acc), const_i64(KW), W), y, b.add(y_row, ow))

        def scalar_cols(lo, hi):
            if hi <= lo:
                return
            with kb.loop(lo, hi, 1, "ow") as ow:
                col0 = b.sub(b.mul(ow, const_i64(SW)), const_i64(PW))
                acc = alloca(kb, ct)
                b.store(cval(ct, F.ident), acc)
                cols = []
                for kw in range(KW):
                    iw = b.add(col0, const_i64(kw * DW)) if kw else col0
                    ok = b.and_(b.icmp_signed(">=", iw, const_i64(0)), b.icmp_signed("<", iw, const_i64(IW)))
                    cols.append((kb.smin(kb.smax(iw, const_i64(0)), const_i64(IW - 1)), ok, iw))

                def tap(off):
                    v = b.load(acc)
                    for iw_c, ok, _ in cols:
                        v = F.comb(v, b.select(ok, load_c(kb, x, b.add(off, iw_c), 1), cval(ct, F.ident)))
                    b.store(v, acc)

                taps(tap)
                count_w = const_i64(0)
                if not is_max:
                    for _, ok, iw in cols:
                        if include_pad:
                            ok = b.and_(b.icmp_signed(">=", iw, const_i64(-PW)), b.icmp_signed("<", iw, const_i64(IW + PWE)))
                        count_w = b.add(count_w, b.zext(ok, I64))
                store_c(kb, finish(b.load(acc), count_w, 1), y, b.add(y_row, ow))

        if use_vec:
            scalar_cols(0, v_lo)
            with kb.loop(v_lo, v_max + 1, W, "owv") as ow:
                vec_block(ow)
            if (v_max - v_lo) % W:
                vec_block(const_i64(v_max))  # overlaps the previous block; same values
            scalar_cols(v_max + W, OW)
        else:
            scalar_cols(0, OW)

    ysp = row_strides(Y)
    par_nest(kb, [N * C] + list(Y[:-1]), [[prod(X)] + [0] * (nsp - 1), [prod(Y)] + ysp[:-1]], [0, 0], tid, nthreads, row)


__all__ = ["emit_pool"]
