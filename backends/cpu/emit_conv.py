"""Convolution for the CPU backend: graph.conv alone and fused conv kernels (bias, folded batch
norm, residual add, activation applied in registers before the one store).

Tensors are NCHW (1-D convs are NCW, treated as H = 1). The paths:

* GEMM-like (every conv but depthwise): per image and group, the output
  [M/G, OH*OW] is a matrix product of the weights [M/G, K] (K = C/G*kh*kw,
  repacked at compile time to [G][M/R][K][R]: the R rows of one k adjacent
  for broadcasts) and the implicit im2col matrix [K, OH*OW], run by the
  register-blocked micro-kernel (microkernel.py: R output channels x V vectors
  of W output pixels, pixels flattened over rows so small images waste no
  lanes). How the im2col columns are read:
    - "direct": 1x1, stride 1, no padding: the input rows themselves (the
                next pixel block's rows are prefetched);
    - "taps":   stride 1, OW == W (same padding), up to 3x3: a tap (kh, kw) of a
                pixel vector is the input at a constant offset; lanes that
                fall in the padding are masked off (masked loads, so no
                padded copy of the input);
    - "packed": anything else (strides, valid padding, bigger kernels): a block
                of im2col columns is gathered once per pixel block into a
                per-thread stack buffer [K-block][V*W] (zeros for padding)
                and reused by every output-channel block; K is blocked so
                the buffer stays in L2, partial sums go through the output.
  Threads split (image, group, pixel block, channel block) tiles; the loop
  order keeps the bigger stream in cache (pixel blocks outer, or channel
  blocks outer when the weights outweigh the image: 3x3 256->256 on 14x14).
  Weights are zero padded to whole R-row blocks, so the last channel block
  runs the same code and only skips its missing rows' stores; a last pixel
  block with as many vectors takes its lane mask at run time. That leaves one
  copy of the micro-kernel per kernel in most cases (compile time).
* depthwise (group == C, one input channel per output channel): emit_depthwise.py.
* small output maps (7x7): output channels as lanes, emit_conv_cl.py.

The epilogue (epilogue.Epilogue) sees the output as [N (batch), M (rows),
OH*OW (columns)]: per-channel operands are per-row splats, residuals are
vector loads at the same place as the store. On x86 the steps run with
denormals flushed (vector_ir.FlushDenormals).
"""

from __future__ import annotations

import numpy as np
from dsc.backends.cpu.codegen import fused_emitter, op_emitter
from dsc.backends.cpu.conv_geom import ConvGeom, conv_geom, conv_layout
from dsc.backends.cpu.epilogue import Epilogue, epilogue_arg_shapes, kernel_sources, split_kernel
from dsc.backends.cpu.microkernel import F32_ONLY_HINT, choose_tile, microkernel, tile_cost
from dsc.backends.cpu.vector_ir import (
    over_k_blocks,
    FlushDenormals,
    add,
    branch_variants,
    const_mask,
    content_hash,
    entry_alloca,
    gather_v,
    gep,
    iota,
    lanes_of,
    load_v,
    mul,
    prefetch,
    store_v,
    zero_vec,
)
from dsc.backends.cpu.emit_conv_cl import emit_conv_cl, use_channel_lanes
from dsc.backends.cpu.emit_depthwise import emit_conv_depthwise
from dsc.backends.cpu.irb import F32, I32, I64, KernelBuilder, const_i64, vec
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of
from dsc.runtime.errors import DscError
from llvmlite import ir

F32_DT = np.dtype(np.float32)
PACK_BYTES = 128 * 1024  # per-thread stack buffer of the packed path
PACK_BYTES_L1 = 24 * 1024  # ... for multi-tap convs with K >= 512
L2_BYTES = 1 << 20  # the part of a core's L2 a stream may count on
FORCE_ORDER = None  # tests: "pb" or "mb"
W_PF_DIST = 2048  # tuning: weight prefetch distance (bytes) ...
W_PF_MIN_BYTES = 256 * 1024  # ... for weights of at least this size
ROWS_AHEAD = 8  # tuning: input rows prefetched ahead (ResNet-50 b1 1x1 1024->256 on 14x14 0.41 -> 0.37 ms)
BALANCE = True  # tuning: threads split tiles by modelled cost
OUT_STREAMS = True  # tuning: the output size takes part in the loop order


# ===================================================================== GEMM-like path


def _pack_weights(wt: np.ndarray, geo: ConvGeom, R: int) -> np.ndarray:
    """[M, C/G, kh, kw] -> [G][ceil(M/G / R)][K][R], rows zero padded."""
    G, mg = geo.G, geo.mg
    K = geo.cg * geo.T
    MB = -(-mg // R)
    w = np.zeros((G, MB * R, K), np.float32)
    w[:, :mg, :] = np.asarray(wt, np.float32).reshape(G, mg, K)
    return np.ascontiguousarray(w.reshape(G, MB, R, K).transpose(0, 1, 3, 2))


def emit_conv_gemm(kb: KernelBuilder, geo: ConvGeom, x_ptr, w_index: int, bias_ptr, in_ptrs, epi: Epilogue, tid, nthreads, ctx, w_single_use=True):
    b = kb.b
    wl = lanes_of(ctx)
    mode = geo.mode
    K = geo.cg * geo.T
    mg, P, T = geo.mg, geo.P, geo.T
    wt = ctx.consts[w_index]
    packed_w = wt is not None and w_single_use
    R, V = choose_tile(mg, P, K, wl, ctx.target.registers - (2 if mode == "taps" else 0), pad_rows=packed_w)
    NB = V * wl
    MB = -(-mg // R)
    PB = -(-P // NB)
    rt = mg - (MB - 1) * R
    ncol_last = P - (PB - 1) * NB
    vt = -(-ncol_last // wl)
    lane_last = ncol_last - (vt - 1) * wl
    tail_mask = None if lane_last == wl else const_mask(wl, lane_last)

    if packed_w:
        ctx.repack(w_index, _pack_weights(wt, geo, R), f"conv_w_R{R}:{content_hash(np.asarray(wt), wt.shape, geo.G)}")
    w_ptr = in_ptrs[w_index]

    # K blocking (packed mode): cb input channels per block, so the stack buffer stays in L2
    # (an L1-sized block when the taps and a long K amortize the partial sums: 3x3/2 128->128 on 56x56)
    pack_bytes = PACK_BYTES_L1 if T > 1 and K >= 512 else PACK_BYTES
    cb = max(1, min(geo.cg, pack_bytes // (NB * T * 4))) if mode == "packed" else geo.cg
    nkb = -(-geo.cg // cb)
    pack = entry_alloca(kb, F32, cb * T * NB, name="im2col") if mode == "packed" else None

    # Loop order. "pb": pixel blocks outer, channel blocks inner (the block of input / im2col
    # columns is reused from L1 by every channel block). "mb": channel blocks outer (one
    # block of weights stays in L2 across the pixel blocks) when the weights are the bigger
    # stream: small images, many channels (e.g. 3x3 256->256 on 14x14), or when the output
    # outgrows L2 while the input fits: "pb" then writes (and reads residuals) in short
    # segments of M rows at once, more streams than the prefetchers follow (1x1 64->256 on
    # 56x56 with its residual, batch 8: 7.1 -> 4.3 ms).
    w_bytes, x_bytes, y_bytes = mg * K * 4, geo.cg * geo.HW * 4, mg * P * 4
    pb_traffic = w_bytes * (PB if w_bytes > L2_BYTES else 1)
    mb_traffic = x_bytes * (MB if x_bytes > L2_BYTES else 1)
    wide_out = OUT_STREAMS and y_bytes > L2_BYTES and x_bytes <= L2_BYTES
    order = "mb" if mode != "packed" and (pb_traffic > 2 * mb_traffic or wide_out) else "pb"
    if FORCE_ORDER and mode != "packed":
        order = FORCE_ORDER
    inner_n = MB if order == "pb" else PB
    outer_n = geo.N * geo.G * (PB if order == "pb" else MB)
    # threads split the tiles by modelled cost: the last pixel block of an image may hold a few
    # lanes (14x14: 196 = 4 x 48 + 4 pixels) and costs far less than the others
    # (ResNet-50 b1 1x1 1024->256 on 14x14: 0.44 -> 0.39 ms)
    if BALANCE and vt != V:
        unit = 64
        c_tail = max(1, round(unit * tile_cost(K, R, vt, wl) / tile_cost(K, R, V, wl)))
        period, tail = (PB * MB, MB) if order == "pb" else (PB, 1)
        lo, hi = kb.weighted_thread_range(outer_n * inner_n, period, tail, unit, c_tail, tid, nthreads)
    else:
        lo, hi = kb.thread_range(outer_n * inner_n, tid, nthreads)
    i32v = vec(wl, I32)

    def ci(v):
        return ir.Constant(i32v, [v] * wl)

    def pixel_lanes(q0):
        """Per lane of each of the V vectors: q, oh, ow of the output pixel."""
        qv = [b.add(kb.splat(b.trunc(q0, I32), wl), ir.Constant(i32v, [v * wl + i for i in range(wl)])) for v in range(V)]
        ohv = [b.sdiv(q, ci(geo.OW)) for q in qv]
        return qv, ohv, [b.sub(q, b.mul(oh, ci(geo.OW))) for q, oh in zip(qv, ohv)]

    def taps_masks(q0):
        """Lanes of each (tap, vector) whose input lies inside the image (taps mode)."""
        _, ohv, owv = pixel_lanes(q0)
        out = []
        for t in range(T):
            kh, kw = divmod(t, geo.KW)
            row = []
            for v in range(V):
                ih = b.add(ohv[v], ci(kh * geo.dh - geo.pt))
                iw = b.add(owv[v], ci(kw * geo.dw - geo.pl))
                row.append(b.and_(b.icmp_unsigned("<", ih, ci(geo.H)), b.icmp_unsigned("<", iw, ci(geo.W))))  # unsigned: also >= 0
            out.append(row)
        return out

    offs = [(t // geo.KW * geo.dh - geo.pt) * geo.W + t % geo.KW * geo.dw - geo.pl for t in range(T)]

    # weights that stream from L3 or DRAM (every tile reads its channel block's R x K panel once,
    # one cache line per 16/R k): ask for them W_PF_DIST bytes ahead, which runs on into the next
    # tile's panel (ResNet-50 b1 1x1 1024->256 on 14x14 0.445 -> 0.405 ms, 256->1024 0.89 -> 0.71;
    # small weights stay in L1/L2 and only pay for the prefetches: the stem, 64->256)
    w_prefetch = W_PF_DIST and mg * K * 4 >= W_PF_MIN_BYTES

    def a_val_fn(wp, flat=False):
        """A(k, tap, r): k counts input channels (or flattened (channel, tap) pairs when flat)."""
        step = 1 if flat else T
        if packed_w:
            def a(kk, s, r):
                at = add(kb, b.mul(kk, const_i64(step * R)), s * R + r)
                if w_prefetch and r == 0 and s == 0:
                    prefetch(kb, wp, add(kb, at, W_PF_DIST // 4))
                return kb.load(wp, at)

            return a
        return lambda kk, s, r: kb.load(wp, add(kb, b.mul(kk, const_i64(step)), r * K + s))

    def run_block(x_img, gi, q0, masks, mb, nr, nv, mask, c0, ncb, first, last, tail_ok=None):
        """Accumulate input channels [c0, c0 + ncb) into the nr x nv tile (channel block mb, pixels q0..).

        first/last: Python bools, or i1 values when K is blocked at run time (then the
        partial sums of the earlier blocks come from the output, and go back there).
        tail_ok: with zero-padded weights, rows >= rt exist only when this i1 is true (not the
        last channel block); they are computed anyway and neither read nor stored otherwise."""
        row0 = b.mul(mb, const_i64(R))
        m_abs = b.add(b.mul(gi, const_i64(mg)), row0)

        def row_of(r):  # the channel of row r; rows past the end read the last real channel's data
            ch = b.add(m_abs, const_i64(r))
            return ch if tail_ok is None or r < rt else b.select(tail_ok, ch, b.add(m_abs, const_i64(rt - 1)))

        accs = []
        for r in range(nr):
            start = kb.splat(kb.load(bias_ptr, row_of(r)), wl) if bias_ptr is not None else zero_vec(wl)
            if first is True:
                accs.append([start] * nv)
                continue
            row = []
            for v in range(nv):
                part = epi.load_partial(kb, row_of(r), b.add(q0, const_i64(v * wl)), mask if v == nv - 1 else None)
                row.append(b.select(first, start, part))
            accs.append(row)
        if packed_w:
            wp = gep(kb, w_ptr, add(kb, b.mul(b.add(b.mul(gi, const_i64(MB)), mb), const_i64(K * R)), mul(kb, c0, T * R)))
        else:
            wp = gep(kb, w_ptr, add(kb, b.mul(m_abs, const_i64(K)), mul(kb, c0, T)))
        a_val = a_val_fn(wp)
        if mode == "direct":
            xb = gep(kb, x_img, add(kb, q0, mul(kb, c0, geo.HW)))
            # a pixel block's input rows in L2 but not in L1 (1x1 1024->256 on 14x14: 196 KiB): every
            # channel block streams them from L2 again, so ask for row k + ROWS_AHEAD; otherwise
            # prefetch the next pixel block's rows, which come from L3 (56x56 maps)
            rows_ahead = ROWS_AHEAD and x_bytes <= L2_BYTES and geo.cg * NB * 4 > 64 * 1024

            def b_vec(kk, s, v):
                off = add(kb, b.mul(kk, const_i64(geo.HW)), v * wl)
                if order == "pb" and v % (64 // (4 * wl) or 1) == 0:
                    if rows_ahead:
                        prefetch(kb, xb, add(kb, off, ROWS_AHEAD * geo.HW))
                    else:
                        prefetch(kb, xb, add(kb, off, NB))  # the next pixel block's row, streamed by the next tile
                return load_v(kb, xb, off, wl, mask if v == nv - 1 else None)

            accs = microkernel(kb, nr, nv, 0, ncb, a_val, b_vec, accs)
        elif mode == "taps":
            xb = gep(kb, x_img, q0)

            def b_vec(kk, s, v):
                return load_v(kb, xb, add(kb, b.mul(kk, const_i64(geo.HW)), offs[s] + v * wl), wl, masks[s][v], inbounds=False)

            accs = microkernel(kb, nr, nv, 0, ncb, a_val, b_vec, accs, inner=T)
        else:  # the packed block is [ncb * T][NB]: one flat k loop (k = c*T + tap, as the weights)
            accs = microkernel(kb, nr, nv, 0, mul(kb, ncb, T), a_val_fn(wp, flat=True),
                               lambda kk, s, v: kb.load_vec(pack, add(kb, b.mul(kk, const_i64(NB)), v * wl), wl), accs)

        def guarded(fn):  # fn(r) for every row, rows >= rt only when they exist
            for r in range(nr):
                if tail_ok is not None and r == rt:
                    with b.if_then(tail_ok):
                        for r2 in range(rt, nr):
                            fn(r2)
                    return
                fn(r)

        def finish():
            guarded(lambda r: epi.apply(kb, [accs[r]], b.add(m_abs, const_i64(r)), q0, mask))

        def partial():
            def one(r):
                for v in range(nv):
                    epi.store_partial(kb, accs[r][v], b.add(m_abs, const_i64(r)), b.add(q0, const_i64(v * wl)), mask if v == nv - 1 else None)

            guarded(one)

        if last is True:
            finish()
        else:
            branch_variants(kb, [(last, finish), (None, partial)])

    def row_variants(is_last_mb, fn):
        """fn(nr, tail_ok) for the full channel block, or the last (shorter) one: one code path
        when the weights are zero padded to R rows, else two."""
        if rt == R:
            fn(R, None)
        elif packed_w:
            fn(R, b.not_(is_last_mb))
        else:
            branch_variants(kb, [(is_last_mb, lambda: fn(rt, None)), (None, lambda: fn(R, None))])

    def col_variants(is_last_pb, fn):
        """fn(nv, mask) for a full pixel block, or the last one (masked lanes; fewer vectors
        takes a second code path)."""
        if tail_mask is None and vt == V:
            fn(V, None)
        elif vt == V:
            fn(V, b.select(is_last_pb, tail_mask, const_mask(wl, wl)))
        else:
            branch_variants(kb, [(is_last_pb, lambda: fn(vt, tail_mask)), (None, lambda: fn(V, None))])

    def pack_block(x_img, q0, c0, ncb):
        """im2col of input channels [c0, c0 + ncb) for the pixel block at q0 into `pack` [(c*T + tap)][NB]."""
        qv, ohv, owv = pixel_lanes(q0)
        ih0 = [b.sub(b.mul(oh, ci(geo.sh)), ci(geo.pt)) for oh in ohv]
        iw0 = [b.sub(b.mul(ow, ci(geo.sw)), ci(geo.pl)) for ow in owv]
        inside = [b.icmp_signed("<", q, ci(P)) for q in qv]
        xc0 = gep(kb, x_img, mul(kb, c0, geo.HW))
        # stride 2 with whole output rows per vector (e.g. a ResNet stem): a vector's inputs are
        # 2W consecutive floats of one row, two masked loads and an even-lane shuffle, no gather
        rows2 = geo.sw == 2 and geo.dw == 1 and geo.OW % wl == 0
        with kb.loop(0, T, 1, "tap") as t:
            kh = b.udiv(t, const_i64(geo.KW))
            kw = b.sub(t, b.mul(kh, const_i64(geo.KW)))
            dh = kb.splat(b.trunc(b.mul(kh, const_i64(geo.dh)), I32), wl)
            dw = kb.splat(b.trunc(b.mul(kw, const_i64(geo.dw)), I32), wl)
            idx, msk = [], []
            for v in range(V):
                ih = b.add(ih0[v], dh)
                iw = b.add(iw0[v], dw)
                if rows2:  # lane 0's row and column; the lanes' columns follow from it
                    ih_s, iw_s = b.extract_element(ih, ir.Constant(I32, 0)), b.extract_element(iw, ir.Constant(I32, 0))
                    ok = b.and_(b.icmp_unsigned("<", ih_s, ir.Constant(I32, geo.H)), b.extract_element(inside[v], ir.Constant(I32, 0)))
                    cols = [b.add(kb.splat(iw_s, wl), iota(wl, 1)), b.add(kb.splat(iw_s, wl), ir.Constant(i32v, [wl + i for i in range(wl)]))]
                    msk.append([b.and_(b.icmp_unsigned("<", c_, ci(geo.W)), kb.splat(ok, wl)) for c_ in cols])
                    idx.append(b.sext(b.add(b.mul(ih_s, ir.Constant(I32, geo.W)), iw_s), I64))
                    continue
                m = b.and_(b.icmp_unsigned("<", ih, ci(geo.H)), b.icmp_unsigned("<", iw, ci(geo.W)))
                msk.append(b.and_(m, inside[v]))
                idx.append(b.add(b.mul(ih, ci(geo.W)), iw))
            dst = gep(kb, pack, b.mul(t, const_i64(NB)))
            with kb.loop(0, ncb, 1, "pc") as c:
                xc = gep(kb, xc0, b.mul(c, const_i64(geo.HW)))
                for v in range(V):
                    if rows2:
                        lo_ = load_v(kb, xc, idx[v], wl, msk[v][0], inbounds=False)
                        hi_ = load_v(kb, xc, b.add(idx[v], const_i64(wl)), wl, msk[v][1], inbounds=False)
                        val = b.shuffle_vector(lo_, hi_, ir.Constant(vec(wl, I32), [2 * i for i in range(wl)]))
                    else:
                        val = gather_v(kb, xc, idx[v], msk[v])
                    store_v(kb, val, dst, b.add(b.mul(c, const_i64(T * NB)), const_i64(v * wl)))

    def group(u, ilo, ihi):
        """Outer index u, inner indices [ilo, ihi) of this thread."""
        blk = b.urem(u, const_i64(PB if order == "pb" else MB))
        ng = b.udiv(u, const_i64(PB if order == "pb" else MB))
        gi = b.urem(ng, const_i64(geo.G))
        n = b.udiv(ng, const_i64(geo.G))
        x_img = gep(kb, x_ptr, b.add(b.mul(n, const_i64(geo.C * geo.HW)), b.mul(gi, const_i64(geo.cg * geo.HW))))
        epi.begin_tile(kb, n)
        if order == "mb":  # one channel block, a run of pixel blocks
            mb = blk

            def rows(nr, tail_ok):
                with kb.loop(ilo, ihi, 1, "pb") as pb:
                    q0 = b.mul(pb, const_i64(NB))
                    masks = taps_masks(q0) if mode == "taps" else None
                    col_variants(b.icmp_unsigned("==", pb, const_i64(PB - 1)),
                                 lambda nv, mask: run_block(x_img, gi, q0, masks, mb, nr, nv, mask, 0, geo.cg, True, True, tail_ok))

            row_variants(b.icmp_unsigned("==", mb, const_i64(MB - 1)), rows)
            return
        pb = blk  # one pixel block, a run of channel blocks
        q0 = b.mul(pb, const_i64(NB))
        masks = taps_masks(q0) if mode == "taps" else None

        def kblock(c0, ncb, first, last):
            if mode == "packed":
                pack_block(x_img, q0, c0, ncb)

            def cols(nv, mask):
                with kb.loop(ilo, ihi, 1, "mb") as mb:
                    row_variants(b.icmp_unsigned("==", mb, const_i64(MB - 1)),
                                 lambda nr, tail_ok: run_block(x_img, gi, q0, masks, mb, nr, nv, mask, c0, ncb, first, last, tail_ok))

            col_variants(b.icmp_unsigned("==", pb, const_i64(PB - 1)), cols)

        over_k_blocks(kb, nkb, cb, geo.cg, kblock)

    # this thread's tiles [lo, hi) of (outer, inner): whole runs of inner indices per outer index
    u_lo = b.udiv(lo, const_i64(inner_n))
    u_hi = b.udiv(b.add(hi, const_i64(inner_n - 1)), const_i64(inner_n))
    with kb.loop(u_lo, u_hi, 1, "grp") as u:
        base = b.mul(u, const_i64(inner_n))
        group(u, kb.smax(b.sub(lo, base), const_i64(0)), kb.smin(b.sub(hi, base), const_i64(inner_n)))


# ===================================================================== emitters


def _check(op: g.ConvOp) -> ConvGeom:
    geo = conv_geom(op)
    if geo is None:
        raise DscError(f"the CPU backend's graph.conv supports 1-D and 2-D convolutions, not {len(sig_of(op.input.type).shape) - 2}-D")
    bad = [sig_of(v.type).dtype for v in op.operands if sig_of(v.type).dtype != F32_DT]
    if bad:
        raise DscError(f"the CPU backend's graph.conv supports float32 only, not {bad[0]}", hint=F32_ONLY_HINT)
    return geo


def _emit(kb, op: g.ConvOp, geo: ConvGeom, ptrs: dict, w_index: int, in_ptrs, epi: Epilogue, tid, nthreads, ctx, w_single_use: bool):
    with FlushDenormals(kb, ctx):
        if use_channel_lanes(geo, ctx.consts[w_index], w_single_use, lanes_of(ctx), ctx.target.registers):
            emit_conv_cl(kb, geo, ptrs["x"], w_index, ptrs.get("b"), in_ptrs, epi, tid, nthreads, ctx)
        elif geo.depthwise:
            emit_conv_depthwise(kb, geo, ptrs["x"], in_ptrs[w_index], ptrs.get("b"), epi, tid, nthreads, ctx)
        else:
            emit_conv_gemm(kb, geo, ptrs["x"], w_index, ptrs.get("b"), in_ptrs, epi, tid, nthreads, ctx, w_single_use)


@op_emitter(g.ConvOp)
def emit_conv_op(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    geo = _check(op)
    lay = conv_layout(op)
    epi = Epilogue(lay, op.result, [], {}, [(op.result, out_ptrs[0])], lanes_of(ctx))
    ptrs = {"x": in_ptrs[0]}
    if op.bias is not None:
        ptrs["b"] = in_ptrs[2]
    vals = list(op.operands)
    _emit(kb, op, geo, ptrs, 1, in_ptrs, epi, tid, nthreads, ctx, vals.count(vals[1]) == 1)


def _conv_kernel(kop: k.FusedOp):
    parts = split_kernel(kop, (g.ConvOp,))
    if parts is None or parts[0]:
        return None
    _, conv, epi = parts
    index = {a: i for i, a in enumerate(kop.body.block.args)}
    if any(v not in index for v in conv.operands):
        return None
    if conv_geom(conv) is None or any(sig_of(v.type).dtype != F32_DT for v in list(conv.operands) + [conv.result]):
        return None
    return conv, epi, index


def _conv_matches(kop: k.FusedOp) -> bool:
    got = _conv_kernel(kop)
    if got is None:
        return False
    conv, epi, _ = got
    return Epilogue.supported(conv_layout(conv), conv.result, epi, epilogue_arg_shapes(kop), list(kop.body.block.last_op.operands))


@fused_emitter("conv", _conv_matches)
def emit_fused_conv(kb, kop, in_ptrs, out_ptrs, tid, nthreads, ctx):
    conv, epi_ops, index = _conv_kernel(kop)
    geo = conv_geom(conv)
    known = {conv.result} | {op.results[0] for op in epi_ops}
    sources = kernel_sources(kop, in_ptrs, epi_ops, known)
    yields = list(zip(kop.body.block.last_op.operands, out_ptrs))
    epi = Epilogue(conv_layout(conv), conv.result, epi_ops, sources, yields, lanes_of(ctx))
    ptrs = {"x": in_ptrs[index[conv.input]]}
    if conv.bias is not None:
        ptrs["b"] = in_ptrs[index[conv.bias]]
    w_arg = conv.weight
    _emit(kb, conv, geo, ptrs, index[w_arg], in_ptrs, epi, tid, nthreads, ctx, w_arg.uses.get_length() == 1)


__all__ = ["ConvGeom", "conv_geom", "emit_conv_depthwise", "emit_conv_gemm"]
