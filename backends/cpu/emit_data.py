"""Data-movement emitters: transpose, concat, slice, gather, pad, reshape (a copy).

Every op here is a copy whose source index is an affine (transpose, slice,
concat, reshape), table-driven (gather) or clamped/reflected (pad) function
of the destination index. They share one shape of loop nest (`par_nest`):
the destination is walked in row-major order, the leading dimensions merged
until there are enough units to split across threads, the rest as plain
nested loops with running offsets, and the innermost (collapsed) dimension
copied with vector loads/stores of 64 bytes (16 x f32, 8 x i64, 64 x i8)
when the source walks it contiguously (forwards, or backwards with a lane
reversal for negative slice steps), element by element otherwise.

The copy helpers are dtype-agnostic (bool is i8 in memory), so int64, int32
and bool tensors move exactly like float32. The generic helpers (`par_nest`,
`vloop`, `fold_range`, `alloca`, ...) are in loop_ir.py, shared with
emit_reduce.py and emit_pool.py.
"""

from __future__ import annotations

import numpy as np
from dsc.backends.cpu.codegen import llvm_type, op_emitter
from dsc.backends.cpu.irb import (
    I32,
    I64,
    KernelBuilder,
    const_i64,
    vec,
)
from dsc.backends.cpu.loop_ir import add_off, copy_lanes, elem_bytes, load_n, par_nest, prod, reverse, row_strides, splat_const, store_n, vloop
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of
from dsc.runtime.errors import DscError
from llvmlite import ir

TILE_TRANSPOSE = True  # transposes in n x n register tiles (False: element by element, for comparison)

# ------------------------------------------------------------ strided copy


def collapse_dims(shape, *stride_lists):
    """Drop size-1 dims and merge neighbours every operand walks as one: (shape, strides...)."""
    keep = [d for d in range(len(shape)) if shape[d] != 1]
    out_shape: list[int] = []
    outs: list[list[int]] = [[] for _ in stride_lists]
    for d in keep:
        if out_shape and all(o[-1] == s[d] * shape[d] for o, s in zip(outs, stride_lists)):
            out_shape[-1] *= shape[d]
            for o, s in zip(outs, stride_lists):
                o[-1] = s[d]
        else:
            out_shape.append(shape[d])
            for o, s in zip(outs, stride_lists):
                o.append(s[d])
    return out_shape, outs


def copy_run(kb: KernelBuilder, src, s_off, s_stride: int, dst, d_off, lo, hi) -> None:
    """dst[d_off + j] = src[s_off + j * s_stride] for j in [lo, hi)."""
    b = kb.b
    w = copy_lanes(dst.type.pointee)
    if s_stride == 1:
        vloop(kb, lo, hi, w, lambda j, n: store_n(kb, load_n(kb, src, b.add(s_off, j), n), dst, b.add(d_off, j)), "cp")
    elif s_stride == -1:
        def rev(j, n):
            if n == 1:
                store_n(kb, kb.load(src, b.sub(s_off, j)), dst, b.add(d_off, j))
            else:  # lanes j..j+n-1 come from s_off-j-n+1 .. s_off-j, reversed
                v = kb.load_vec(src, b.sub(s_off, b.add(j, const_i64(n - 1))), n)
                kb.store_vec(reverse(kb, v), dst, b.add(d_off, j))

        vloop(kb, lo, hi, w, rev, "cr")
    else:
        with kb.loop(lo, hi, 1, "cs") as j:
            kb.store(kb.load(src, add_off(kb, s_off, j, s_stride)), dst, b.add(d_off, j))


def transpose_regs(kb: KernelBuilder, rows: list) -> list:
    """Transpose n vectors of n lanes (n a power of two) in registers: n*log2(n) two-source shuffles.

    Level h swaps the off-diagonal h x h blocks: element (i, l) with bit h
    clear in i and set in l trades places with (i + h, l - h).
    """
    b = kb.b
    n = len(rows)
    rows = list(rows)
    h = n // 2
    while h >= 1:
        lo_mask = [l if not (l & h) else n + l - h for l in range(n)]  # row i: keep lanes without bit h, take row i+h's low ones
        hi_mask = [l + h if not (l & h) else n + l for l in range(n)]  # row i+h: row i's high lanes, keep its own high ones
        lo_c, hi_c = ir.Constant(vec(n, I32), lo_mask), ir.Constant(vec(n, I32), hi_mask)
        for i in range(n):
            if i & h:
                continue
            a, c = rows[i], rows[i + h]
            rows[i], rows[i + h] = b.shuffle_vector(a, c, lo_c), b.shuffle_vector(a, c, hi_c)
        h //= 2
    return rows


def _tiled_transpose(kb: KernelBuilder, src, dst, shape, ss, ds, s_base, d_base, p: int, n: int, tid, nthreads) -> None:
    """strided_copy where the destination's inner dim j is strided in the source but outer dim p is not.

    n x n tiles: n source vectors along p (one per j) are transposed in
    registers into n destination vectors along j (one per p). Threads split
    (the other outer dims x blocks of p); partial tiles go element by element.
    """
    b = kb.b
    J, sj = shape[-1], ss[-1]
    P, dp = shape[p], ds[p]
    others = [d for d in range(len(shape) - 1) if d != p]
    npb = -(-P // n)
    ptail = P - (npb - 1) * n
    jfull = J // n * n

    def scalar(s_off, d_off, np_, jlo, jhi):
        with kb.loop(0, np_, 1, "tp") as pp:
            s_row, d_row = b.add(s_off, pp), b.add(d_off, b.mul(pp, const_i64(dp)))
            with kb.loop(jlo, jhi, 1, "tj") as j:
                kb.store(kb.load(src, b.add(s_row, b.mul(j, const_i64(sj)))), dst, b.add(d_row, j))

    def full(s_off, d_off):
        if jfull:
            with kb.loop(0, jfull, n, "tj") as j0:
                s0 = b.add(s_off, b.mul(j0, const_i64(sj)))
                rows = [kb.load_vec(src, b.add(s0, const_i64(k * sj)) if k else s0, n) for k in range(n)]
                d0 = b.add(d_off, j0)
                for k, v in enumerate(transpose_regs(kb, rows)):
                    kb.store_vec(v, dst, b.add(d0, const_i64(k * dp)) if k else d0)
        if J > jfull:
            scalar(s_off, d_off, n, jfull, J)

    def body(digits, offs):
        if ptail == n:
            full(offs[0], offs[1])
            return
        if npb == 1:
            scalar(offs[0], offs[1], ptail, 0, J)
            return
        with b.if_else(b.icmp_signed("==", digits[-1], const_i64(npb - 1))) as (last, other):
            with last:
                scalar(offs[0], offs[1], ptail, 0, J)
            with other:
                full(offs[0], offs[1])

    dims = [shape[d] for d in others] + [npb]
    par_nest(kb, dims, [[ss[d] for d in others] + [n], [ds[d] for d in others] + [n * dp]], [s_base, d_base], tid, nthreads, body)


def strided_copy(kb: KernelBuilder, src, dst, shape, s_strides, s_base: int, d_strides, d_base: int, tid, nthreads) -> None:
    """dst[d_base + sum(o*d_strides)] = src[s_base + sum(o*s_strides)] over every o in shape, this thread's share."""
    if prod(shape) == 0:
        return
    cshape, (ss, ds) = collapse_dims(list(shape), list(s_strides), list(d_strides))
    if not cshape:  # one element
        cshape, ss, ds = [1], [1], [1]
    inner, si, di = cshape[-1], ss[-1], ds[-1]
    outer = cshape[:-1]
    # 32-byte tile rows (8 x f32): with 64-byte rows, sources strided by a non-multiple of 64 bytes
    # split half the loads and stores across cache lines, which measured 3x slower than no tiling
    n = max(2, min(16, 32 // elem_bytes(dst.type.pointee)))
    if TILE_TRANSPOSE and di == 1 and si not in (1, -1) and inner >= n:
        # a transpose: tile with an outer dim the source walks contiguously
        cands = [p for p in range(len(outer)) if ss[p] == 1 and outer[p] >= n]
        if cands:
            _tiled_transpose(kb, src, dst, cshape, ss, ds, s_base, d_base, cands[-1], n, tid, nthreads)
            return
    if di != 1:  # the destination is walked in its own order by construction; be safe anyway
        outer, inner, si = cshape, 1, 1
        ss, ds = ss + [0], ds + [0]
    if prod(outer) < 4 and inner >= 4096:
        # few long rows: every thread copies its part of each row
        lo, hi = kb.thread_range(inner, tid, nthreads, grain=1024)

        def rows(digits, offs):
            copy_run(kb, src, offs[0], si, dst, offs[1], lo, hi)

        par_nest(kb, outer, [ss[:-1], ds[:-1]], [s_base, d_base], const_i64(0), const_i64(1), rows)
        return
    par_nest(
        kb, outer, [ss[:-1], ds[:-1]], [s_base, d_base], tid, nthreads,
        lambda digits, offs: copy_run(kb, src, offs[0], si, dst, offs[1], 0, inner),
    )


# ------------------------------------------------------------------ emitters


@op_emitter(g.ReshapeOp)
def emit_reshape(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    n = prod(sig_of(op.result.type).shape)
    strided_copy(kb, in_ptrs[0], out_ptrs[0], [n], [1], 0, [1], 0, tid, nthreads)


@op_emitter(g.TransposeOp)
def emit_transpose(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    x = sig_of(op.input.type)
    perm = op.py_attrs()["perm"]
    out = [x.shape[p] for p in perm]
    xs = row_strides(x.shape)
    strided_copy(kb, in_ptrs[0], out_ptrs[0], out, [xs[p] for p in perm], 0, row_strides(out), 0, tid, nthreads)


@op_emitter(g.SliceOp)
def emit_slice(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    x = sig_of(op.input.type)
    a = op.py_attrs()
    out = sig_of(op.result.type).shape
    xs = row_strides(x.shape)
    base, st = 0, []
    for d, (start, step) in enumerate(zip(a["starts"], a["steps"])):
        if out[d]:
            base += start * xs[d]
        st.append(step * xs[d])
    strided_copy(kb, in_ptrs[0], out_ptrs[0], out, st, base, row_strides(out), 0, tid, nthreads)


@op_emitter(g.ConcatOp)
def emit_concat(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    axis = op.py_attrs()["axis"]
    out = sig_of(op.result.type).shape
    os_ = row_strides(out)
    pos = 0
    for v, p in zip(op.operands, in_ptrs):
        s = sig_of(v.type).shape
        if prod(s):
            strided_copy(kb, p, out_ptrs[0], s, row_strides(s), 0, os_, pos * os_[axis], tid, nthreads)
        pos += s[axis]


@op_emitter(g.GatherOp)
def emit_gather(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    b = kb.b
    x = sig_of(op.input.type)
    idx = sig_of(op.indices.type)
    axis = op.py_attrs()["axis"]
    outer, size, inner = prod(x.shape[:axis]), x.shape[axis], prod(x.shape[axis + 1 :])
    nidx = prod(idx.shape)
    if outer * nidx * inner == 0:
        return
    src, ind, dst = in_ptrs[0], in_ptrs[1], out_ptrs[0]
    unsigned = idx.dtype.kind == "u"

    def body(digits, offs):
        k = kb.load(ind, offs[1])
        if k.type != I64:
            k = b.zext(k, I64) if unsigned else b.sext(k, I64)
        if not unsigned:  # negative indices count from the end (numpy take / ONNX Gather)
            k = b.select(b.icmp_signed("<", k, const_i64(0)), b.add(k, const_i64(size)), k)
        # out-of-range indices are an error in the reference; clamp rather than read wild memory
        k = kb.smin(kb.smax(k, const_i64(0)), const_i64(size - 1))
        s_off = b.add(offs[0], b.mul(k, const_i64(inner)) if inner != 1 else k)
        if inner == 1:
            kb.store(kb.load(src, s_off), dst, offs[2])
        else:
            copy_run(kb, src, s_off, 1, dst, offs[2], 0, inner)

    # [outer, nidx] rows of `inner` contiguous elements
    par_nest(kb, [outer, nidx], [[size * inner, 0], [0, 1], [nidx * inner, inner]], [0, 0, 0], tid, nthreads, body)


def _pad_map(kb: KernelBuilder, t, c: int, mode: str):
    """Index into a (cropped) axis of size c for padded position t (i64): (index, in_range flag)."""
    b = kb.b
    inside = b.and_(b.icmp_signed(">=", t, const_i64(0)), b.icmp_signed("<", t, const_i64(c)))
    if mode == "constant":
        return t, inside
    if mode == "edge" or c == 1:
        return kb.smin(kb.smax(t, const_i64(0)), const_i64(max(c - 1, 0))), None
    period = 2 * (c - 1)  # reflect: numpy's rule, also for pads wider than the axis
    m = b.srem(t, const_i64(period))
    m = b.select(b.icmp_signed("<", m, const_i64(0)), b.add(m, const_i64(period)), m)
    return b.select(b.icmp_signed(">=", m, const_i64(c)), b.sub(const_i64(period), m), m), None


@op_emitter(g.PadOp)
def emit_pad(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    b = kb.b
    x = sig_of(op.input.type)
    out = sig_of(op.result.type).shape
    a = op.py_attrs()
    pads, mode = a["pads"], a["mode"]
    r = len(x.shape)
    if prod(out) == 0:
        return
    if r == 0:
        kb.store(kb.load(in_ptrs[0], 0), out_ptrs[0], 0)
        return
    et = llvm_type(x.dtype)
    value = np.asarray(a.get("value", 0.0)).astype(x.dtype)
    fill = float(value) if x.dtype.kind == "f" else int(value)
    # crop first (negative pads), then pad the cropped tensor
    lo = [max(-pads[d], 0) for d in range(r)]
    crop = [x.shape[d] - lo[d] - max(-pads[r + d], 0) for d in range(r)]
    pb = [max(pads[d], 0) for d in range(r)]
    if mode != "constant" and any(c == 0 for c in crop):
        raise DscError(f"graph.pad: {mode} padding of an empty axis")
    xs = row_strides(x.shape)
    src, dst = in_ptrs[0], out_ptrs[0]
    W, cW, pW = out[-1], crop[-1], pb[-1]
    w = copy_lanes(et)
    base0 = sum(lo[d] * xs[d] for d in range(r))

    def fill_run(d_off, jlo, jhi):
        vloop(kb, jlo, jhi, w, lambda j, n: store_n(kb, splat_const(et, fill, n), dst, b.add(d_off, j)), "pf")

    def row(digits, offs):
        d_off = offs[0]
        valid = None
        s_off = const_i64(base0)
        for d in range(r - 1):
            t = b.sub(digits[d], const_i64(pb[d])) if pb[d] else digits[d]
            i, ok = _pad_map(kb, t, crop[d], mode)
            s_off = add_off(kb, s_off, i, xs[d])
            if ok is not None:
                valid = ok if valid is None else b.and_(valid, ok)

        def copy_row():
            # left and right borders, then the interior as a contiguous copy
            for jlo, jhi in ((0, min(pW, W)), (pW + cW, W)):
                if jhi <= jlo:
                    continue
                if mode == "constant":
                    fill_run(d_off, jlo, jhi)
                    continue
                with kb.loop(jlo, jhi, 1, "pe") as j:
                    i, _ = _pad_map(kb, b.sub(j, const_i64(pW)), cW, mode)
                    kb.store(kb.load(src, b.add(s_off, i)), dst, b.add(d_off, j))
            mid_hi = min(pW + cW, W)
            if mid_hi > pW:
                # dst[pW + j] = src[s_off + j]
                copy_run(kb, src, s_off, 1, dst, b.add(d_off, const_i64(pW)), 0, mid_hi - pW)

        if valid is None:
            copy_row()
        else:
            with b.if_else(valid) as (then, other):
                with then:
                    copy_row()
                with other:
                    fill_run(d_off, 0, W)

    outer = list(out[:-1])
    par_nest(kb, outer + [1], [row_strides(out)[:-1] + [0]], [0], tid, nthreads, row)


__all__ = ["strided_copy"]
