"""Depthwise convolutions on the GPU (one input channel per group): not GEMMs, a direct kernel computes
each output from its KH x KW window, with the convolution's fused epilogue (conv.py's `epi_store`).

2-D maps of at least DW_STRIP columns run in row strips (`_emit_depthwise_rows`: each thread DW_STRIP
neighbouring outputs of one row, each window input loaded once); others one thread per output.
"""

from __future__ import annotations

import numpy as np

from dsc.backends.cuda.ew import contiguous_strides, load_elem
from dsc.backends.cuda.gemm import _mul, _unravel
from dsc.backends.cuda.gpubuilder import c32, cf
from dsc.dialects.tensor_types import sig_of


DW_STRIP = 4  # outputs along a row per thread of a 2-D depthwise convolution


def _emit_depthwise_rows(ctx, grp, conv, epi_store, a):
    """2-D depthwise convolution: each thread computes DW_STRIP neighbouring outputs of one row, loading each
    input of their windows once (a 3x3 stride-1 strip of 4 reads 3x6 inputs instead of 4x9)."""
    xs, ws = sig_of(conv.input.type), sig_of(conv.weight.type)
    out = sig_of(conv.result.type).shape
    batch, cout, OH, OW = out
    H, W = xs.shape[2], xs.shape[3]
    mg = cout // int(a["group"])
    KH, KW = ws.shape[2], ws.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = a["strides"], a["pads"][:2], a["dilations"]
    R = DW_STRIP
    strips = -(-OW // R)
    total = batch * cout * OH * strips
    span = (R - 1) * sw + (KW - 1) * dw + 1  # input columns a strip's windows cover

    def body(gb, ptrs):
        b = gb.b
        X, Wt = ptrs[grp.index[conv.input]], ptrs[grp.index[conv.weight]]
        with gb.grid_stride(total) as e:
            st = b.urem(e, c32(strips))
            row = b.udiv(e, c32(strips))  # (batch, channel, oh)
            oh = b.urem(row, c32(OH))
            bc = b.udiv(row, c32(OH))
            co, bi = b.urem(bc, c32(cout)), b.udiv(bc, c32(cout))
            ci = b.udiv(co, c32(mg)) if mg > 1 else co
            ow0 = b.mul(st, c32(R))
            plane = b.mul(b.add(b.mul(bi, c32(xs.shape[1])), ci), c32(H * W))
            iw0 = b.sub(b.mul(ow0, c32(sw)), c32(pw))
            accs = [cf(0.0)] * R
            for kh in range(KH):
                ih = b.add(b.sub(b.mul(oh, c32(sh)), c32(ph)), c32(kh * dh))
                row_ok = b.icmp_unsigned("<", ih, c32(H))
                base = b.add(plane, b.mul(ih, c32(W)))
                xrow = []
                for j in range(span):
                    iw = b.add(iw0, c32(j))
                    ok = b.and_(row_ok, b.icmp_unsigned("<", iw, c32(W)))
                    v = load_elem(gb, X, b.select(ok, b.add(base, iw), c32(0)), xs.dtype)
                    xrow.append(b.select(ok, v, cf(0.0)))
                for kw in range(KW):
                    wv = load_elem(gb, Wt, b.add(b.mul(co, c32(KH * KW)), c32(kh * KW + kw)), ws.dtype)
                    for r in range(R):
                        accs[r] = gb.fma(xrow[r * sw + kw * dw], wv, accs[r])
            nrow = b.mul(b.add(b.mul(bi, c32(OH)), oh), c32(OW))  # n of (batch, oh, 0)
            for r in range(R):
                ow = b.add(ow0, c32(r))
                with b.if_then(b.icmp_unsigned("<", ow, c32(OW))):
                    epi_store(gb, ptrs, c32(0), co, b.add(nrow, ow), accs[r])

    ctx.launch("dwconv", ctx.refs, (min(-(-total // 256), 65535 * 4), 1, 1), 256, body, "depthwise conv (row strips)")


def emit_depthwise(ctx, grp, conv, epi_store, a) -> None:
    """Direct convolution, one thread per output element (groups with one input channel each)."""
    if len(sig_of(conv.input.type).shape) == 4 and sig_of(conv.result.type).shape[3] >= DW_STRIP:
        _emit_depthwise_rows(ctx, grp, conv, epi_store, a)
        return
    xs = sig_of(conv.input.type)
    ws = sig_of(conv.weight.type)
    out = sig_of(conv.result.type).shape
    nd = len(xs.shape) - 2
    groups = int(a["group"])
    cout = ws.shape[0]
    mg = cout // groups
    kern = ws.shape[2:]
    ksz = int(np.prod(kern, dtype=np.int64))
    strides, pads, dil = list(a["strides"]), list(a["pads"]), list(a["dilations"])
    total = int(np.prod(out, dtype=np.int64))
    opl = int(np.prod(out[2:], dtype=np.int64))
    plane = int(np.prod(xs.shape[2:], dtype=np.int64))
    sp = contiguous_strides(xs.shape[2:])

    def body(gb, ptrs):
        b = gb.b
        X = ptrs[grp.index[conv.input]]
        W = ptrs[grp.index[conv.weight]]
        with gb.grid_stride(total) as e:
            co_full = b.udiv(e, c32(opl))
            bi = b.udiv(co_full, c32(cout))
            co = b.urem(co_full, c32(cout))
            p = b.urem(e, c32(opl))
            ci = b.udiv(co, c32(mg)) if mg > 1 else co
            oc = _unravel(b, p, out[2:])
            xbase = b.mul(b.add(b.mul(bi, c32(xs.shape[1])), ci), c32(plane))
            wbase = b.mul(co, c32(ksz))
            acc = cf(0.0)
            for r in range(ksz):
                kc = np.unravel_index(r, kern)
                valid = None
                off = xbase
                for d in range(nd):
                    pos = b.add(_mul(b, oc[d], strides[d]), c32(int(kc[d]) * dil[d] - pads[d]))
                    ok = b.icmp_unsigned("<", pos, c32(xs.shape[2 + d]))
                    valid = ok if valid is None else b.and_(valid, ok)
                    off = b.add(off, _mul(b, pos, sp[d]))
                safe = b.select(valid, off, c32(0))
                xv = load_elem(gb, X, safe, xs.dtype)
                wv = load_elem(gb, W, b.add(wbase, c32(r)), ws.dtype)
                acc = gb.fma(b.select(valid, xv, cf(0.0)), wv, acc)
            # epilogue at (batch, channel, position): z = 0, m = channel, n = batch*opl + p
            n = b.add(b.mul(bi, c32(opl)), p)
            epi_store(gb, ptrs, c32(0), co, n, acc)

    # coords_of for depthwise takes m = full output channel: groups treated as 1
    ctx.launch("dwconv", ctx.refs, (min(-(-total // 256), 65535 * 4), 1, 1), 256, body, "depthwise conv")


__all__ = ["DW_STRIP", "emit_depthwise"]
