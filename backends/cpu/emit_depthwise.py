"""Depthwise convolution for the CPU backend (group == C: one input channel per output channel).

Per output row, vectors along OW; each tap is a (masked) load of the input
row (two loads and an even-lane shuffle for stride 2, a gather otherwise)
times a splat weight. Masks of border vectors are compile-time constants;
rows in the vertical padding mask whole taps off. Threads split the output
rows. The fused epilogue (epilogue.py) runs on each vector before its store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsc.backends.cpu.epilogue import Epilogue
from dsc.backends.cpu.irb import I1, I32, KernelBuilder, const_i64, vec
from dsc.backends.cpu.vector_ir import add, c64, const_mask, gather_v, gep, iota, lanes_of, load_v, mul, zero_vec
from llvmlite import ir

if TYPE_CHECKING:
    from dsc.backends.cpu.emit_conv import ConvGeom


def emit_conv_depthwise(kb: KernelBuilder, geo: ConvGeom, x_ptr, w_ptr, bias_ptr, epi: Epilogue, tid, nthreads, ctx):
    b = kb.b
    wl = lanes_of(ctx)
    mult = geo.mg  # output channels per input channel
    T = geo.T
    rows = geo.N * geo.M * geo.OH
    lo, hi = kb.thread_range(rows, tid, nthreads, grain=max(1, min(geo.OH, 4)))
    NV = -(-geo.OW // wl)
    tail = geo.OW - (NV - 1) * wl

    # lanes of output vector j whose tap-kw input lies inside the row (compile time); for stride 2,
    # the 2W consecutive inputs the vector is shuffled from
    def hmask(j, kw):
        if geo.sw == 2:
            return [1 if 0 <= j * wl * 2 + i + kw * geo.dw - geo.pl < geo.W and j * wl + i // 2 < geo.OW else 0 for i in range(2 * wl)]
        return [1 if 0 <= (j * wl + i) * geo.sw + kw * geo.dw - geo.pl < geo.W and j * wl + i < geo.OW else 0 for i in range(wl)]

    interior = [(j + 1) * wl <= geo.OW and all(all(hmask(j, kw)) for kw in range(geo.KW)) for j in range(NV)]
    # contiguous run of interior vectors handled by a loop; others unrolled with constant masks
    runs = []
    j = 0
    while j < NV:
        if interior[j]:
            j2 = j
            while j2 < NV and interior[j2]:
                j2 += 1
            runs.append(("loop", j, j2))
            j = j2
        else:
            runs.append(("one", j, j + 1))
            j += 1

    def row_body(rw):
        oh = b.urem(rw, const_i64(geo.OH))
        nm = b.udiv(rw, const_i64(geo.OH))
        m = b.urem(nm, const_i64(geo.M))
        n = b.udiv(nm, const_i64(geo.M))
        c = b.udiv(m, const_i64(mult)) if mult > 1 else m
        epi.begin_tile(kb, n)
        xc = gep(kb, x_ptr, b.add(b.mul(n, const_i64(geo.C * geo.HW)), b.mul(c, const_i64(geo.HW))))
        wts = [kb.splat(kb.load(w_ptr, b.add(b.mul(m, const_i64(T)), const_i64(t))), wl) for t in range(T)]
        bias = kb.splat(kb.load(bias_ptr, m), wl) if bias_ptr is not None else zero_vec(wl)
        ih0 = b.sub(b.mul(oh, const_i64(geo.sh)), const_i64(geo.pt))
        rowp, vmask = [], []
        for kh in range(geo.KH):
            ih = b.add(ih0, const_i64(kh * geo.dh))
            ok = b.icmp_unsigned("<", ih, const_i64(geo.H))
            rowp.append(gep(kb, xc, b.mul(ih, const_i64(geo.W)), inbounds=False))
            vmask.append(ok)
        col_row = b.mul(oh, const_i64(geo.OW))

        def vector(ow0, masks_for):
            """One output vector at ow0 (i64 or int); masks_for(kw) -> constant lane bits or None."""
            acc = bias
            for kh in range(geo.KH):
                for kw in range(geo.KW):
                    bits = masks_for(kw)
                    acc = kb.fma(_dw_load(kb, geo, rowp[kh], ow0, kw, bits, vmask[kh], wl), wts[kh * geo.KW + kw], acc)
            return acc

        for kind, j0, j1 in runs:
            if kind == "loop":
                with kb.loop(j0 * wl, j1 * wl, wl, "ow") as ow0:
                    acc = vector(ow0, lambda kw: None)
                    epi.apply_one(kb, acc, m, b.add(col_row, ow0), None, {}, 0)
            else:
                ow0 = j0 * wl
                acc = vector(ow0, lambda kw, j0=j0: hmask(j0, kw))
                mask = None if j0 < NV - 1 or tail == wl else const_mask(wl, tail)
                epi.apply_one(kb, acc, m, b.add(col_row, const_i64(ow0)), mask, {}, 0)

    with kb.loop(lo, hi, 1, "row") as rw:
        row_body(rw)


def _dw_load(kb: KernelBuilder, geo: ConvGeom, rowp, ow0, kw, bits, row_ok, wl):
    """Input under output lanes ow0.. for tap column kw: x[ih, ow*sw + kw*dw - pl] (0 outside)."""
    b = kb.b
    off = kw * geo.dw - geo.pl
    ok = kb.splat(row_ok, wl)

    def mask_of(bits_part):
        if bits_part is None:
            return ok
        return b.and_(ok, ir.Constant(vec(wl, I1), bits_part))

    if geo.sw == 1:
        start = add(kb, ow0, off)
        return load_v(kb, rowp, start, wl, mask_of(bits), inbounds=False)
    if geo.sw == 2:
        start = add(kb, mul(kb, ow0, 2), off)
        lo_ = load_v(kb, rowp, start, wl, mask_of(bits[:wl] if bits else None), inbounds=False)
        hi_ = load_v(kb, rowp, add(kb, start, wl), wl, mask_of(bits[wl:] if bits else None), inbounds=False)
        return b.shuffle_vector(lo_, hi_, ir.Constant(vec(wl, I32), [2 * i for i in range(wl)]))
    # other strides: gather
    idx = b.add(kb.splat(b.trunc(c64(add(kb, mul(kb, ow0, geo.sw), off)), I32), wl), iota(wl, geo.sw))
    return gather_v(kb, rowp, idx, mask_of(bits))


__all__ = ["emit_conv_depthwise"]
