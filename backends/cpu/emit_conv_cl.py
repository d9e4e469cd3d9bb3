"""Convolution with output channels as vector lanes, for small output maps (CPU backend).

On a 7x7 output map the pixel-vector path of emit_conv fills 49 of 64 lanes
(4 vectors of 16) and streams its column operand from L2; here the register
block is R output pixels x Vc vectors of W consecutive output channels:

    acc[r][v] += splat(A[p0 + r, k]) * Wt[k, m0 + v*W : m0 + v*W + W]

A is the implicit im2col matrix transposed (pixels x K, K = C/G*kh*kw in
(channel, tap) order), read as scalars; the weights are repacked at compile
time to [G][M/(Vc*W)][K][Vc*W] (zero padded output channels) so that one k
costs Vc aligned vector loads. The A operand:

* "direct" (1x1, stride 1, no padding): A[p, c] = x[c, p], R adjacent scalars
  of an input row;
* "packed" (anything else: strides, padding, 3x3): a block of input channels
  is gathered once per image into a per-thread stack buffer [c*T + tap][P]
  (zeros for padding; index vectors are compile-time constants, the maps
  being small) and reused by every channel block the thread owns. When K
  does not fit the buffer it is blocked and the partial sums of the
  thread's channel blocks wait in a second stack buffer.

Within a block, k runs in chunks whose weight panel (PANEL_BYTES) stays in
L1 while every pixel block of the map uses it; partial sums between chunks
wait in the stack buffer. At batch 1 the chunks are small (PANEL_BYTES_B1),
so the chunk's rows of the input stay in L1 beside the panel, and each tile
prefetches the next panel (the weights come from DRAM once per inference).

Threads split (image run, group, channel block) units: a 1x1 unit runs the
k chunks of its weights over a run of images (the chunk's panel stays in L1
for all their pixels); a packed unit is one image, whose packed blocks serve
all of the thread's channel blocks. The epilogue (epilogue.Epilogue with
lanes_on_rows) reads per-channel operands as vectors, residuals by gathers,
and scatters each vector to its W channels of the NCHW output; the last
channel block masks the channels past M/G. R divides P, so pixel blocks
never overlap (a shifted block would add its overlap's partial sums twice).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from dsc.backends.cpu.epilogue import Epilogue
from dsc.backends.cpu.microkernel import microkernel
from dsc.backends.cpu.vector_ir import add, c64, over_k_blocks, const_mask, content_hash, entry_alloca, gather_v, gep, lanes_of, load_v, mul, prefetch, store_v, zero_vec
from dsc.backends.cpu.irb import F32, I1, I32, KernelBuilder, const_i64, vec

PACK_BYTES = 256 * 1024  # per-thread stack buffer for the gathered im2col block (ResNet-50 1024->2048 /2: 200 KiB)
PART_BYTES = 256 * 1024  # per-thread stack buffer for partial sums (K blocked; 3x3/2 256->256 on 14x14: 196 KiB)
PANEL_BYTES = 24 * 1024  # a k chunk's weight panel, kept in L1 across the pixel blocks ...
PANEL_BYTES_B1 = 3 * 1024  # ... at batch 1, where its input rows must stay in L1 too (ResNet-50's 7x7
# stage alone, 2 threads: 1x1 2048->512 0.48 -> 0.39 ms, 3x3 512 1.05 -> 0.86 ms; in the model
# -0.04..0.14 ms per layer; at batch 8, 3 KiB is 4% slower and 12 KiB no better in the model)
MAX_P = 64  # output maps up to this many pixels take this path (7x7: 49 of 64 pixel lanes) ...
MAX_P_LONG_K = 256  # ... and strided/padded convs up to this many when K >= LONG_K (14x14 3x3/2; 1x1
# convs on 14x14 stay with emit_conv: measured slower here at batch 8, even at batch 1)
LONG_K = 512
FORCE = None  # tests: True / False overrides the choice
PACK_BY_ROWS = True  # tests: False packs with gathers only
FORCE_TILE = None  # tuning: (R, Vc)
PREFETCH_NEXT = True  # tuning: prefetch the next weight panel at batch 1
IMAGE_RUN = 4  # most images a 1x1 unit's weight chunks serve (their input stays in L2: ResNet-50 b8 7x7 1x1 convs -0.2..0.6 ms)


def choose_cl_tile(P: int, mg: int, K: int, w: int, regs: int) -> tuple[int, int] | None:
    """(R pixels, Vc channel vectors), R dividing P (partial sums of a shifted last block
    would count its overlap twice): per k R*Vc FMAs at 2/cycle and R + Vc loads, the
    weight vectors from L1/L2 (R pixels share each), plus a per-tile overhead."""
    if FORCE_TILE is not None:
        return FORCE_TILE
    best = None
    for R in range(4, min(P, 16) + 1):
        if P % R:
            continue
        for Vc in range(1, 5):
            if R * Vc + Vc + 1 > regs:
                continue
            nblk = -(-mg // (Vc * w))
            c = (P // R) * nblk * (K * max(R * Vc / 2, (R + Vc) / 2.5, 4) + 4 * R * Vc + 30)
            key = (c, -R)
            if best is None or key < best[0]:
                best = (key, (R, Vc))
    return None if best is None else best[1]


def _pack_weights(wt: np.ndarray, geo, NBc: int) -> np.ndarray:
    """[M, C/G, kh, kw] -> [G][MBc][K][NBc], output channels zero padded."""
    G, mg = geo.G, geo.mg
    K = geo.cg * geo.T
    MBc = -(-mg // NBc)
    w = np.zeros((G, MBc * NBc, K), np.float32)
    w[:, :mg, :] = np.asarray(wt, np.float32).reshape(G, mg, K)
    return np.ascontiguousarray(w.reshape(G, MBc, NBc, K).transpose(0, 1, 3, 2))


def cl_mode(geo) -> str:
    if geo.KH == geo.KW == 1 and geo.sh == geo.sw == 1 and geo.pt == geo.pl == 0 and geo.OH == geo.H and geo.OW == geo.W:
        return "direct"
    return "packed"


def use_channel_lanes(geo, wt, w_single_use: bool, w: int, regs: int) -> bool:
    """Small output maps with constant weights and channels to fill the lanes."""
    if wt is None or not w_single_use or geo.depthwise or not _fits(geo, w):
        return False
    if choose_cl_tile(geo.P, geo.mg, geo.cg * geo.T, w, regs) is None:
        return False
    if FORCE is not None:
        return FORCE
    if w < 16:  # tuned with AVX-512 (native scatters and gathers); AVX2 and NEON keep emit_conv
        return False
    long_k = cl_mode(geo) == "packed" and geo.cg * geo.T >= LONG_K and geo.P <= MAX_P_LONG_K
    return (geo.P <= MAX_P or long_k) and geo.mg >= 2 * w


def _plan(geo, w: int):
    """(Pp pack row stride, cb channels per pack block, pack blocks)."""
    Pp = geo.P
    cb = min(geo.cg, PACK_BYTES // (geo.T * Pp * 4)) if cl_mode(geo) == "packed" else geo.cg
    return Pp, cb, -(-geo.cg // max(cb, 1))


def _fits(geo, w: int) -> bool:
    """The packed path's buffers: one channel's taps fit the pack, the partial sums theirs."""
    Pp, cb, nkb = _plan(geo, w)
    if cb < 1:
        return False
    return nkb == 1 or -(-geo.mg // (4 * w)) * 4 * w * Pp * 4 <= PART_BYTES


def emit_conv_cl(kb: KernelBuilder, geo, x_ptr, w_index: int, bias_ptr, in_ptrs, epi: Epilogue, tid, nthreads, ctx) -> None:
    b = kb.b
    wl = lanes_of(ctx)
    mode = cl_mode(geo)
    K, T, P, mg = geo.cg * geo.T, geo.T, geo.P, geo.mg
    Pp, cb, nkb = _plan(geo, wl)
    R, Vc = choose_cl_tile(P, mg, K, wl, ctx.target.registers)
    NBc = Vc * wl
    MBc = -(-mg // NBc)
    KC = max(1, (PANEL_BYTES_B1 if geo.N == 1 else PANEL_BYTES) // (NBc * 4))  # k steps per chunk
    wt = ctx.consts[w_index]
    ctx.repack(w_index, _pack_weights(wt, geo, NBc), f"conv_w_cl{NBc}:{content_hash(np.asarray(wt), wt.shape, geo.G)}")
    w_ptr = in_ptrs[w_index]
    nsub = P // R
    pack = entry_alloca(kb, F32, cb * T * Pp, name="im2col_t") if mode == "packed" else None
    chunked = nkb > 1 or cb * T > KC
    # direct: the k chunks run over NI images at a time (their partial sums fit the buffer)
    NI = max(1, min(geo.N, IMAGE_RUN, PART_BYTES // (P * NBc * 4))) if mode == "direct" else 1
    slots = NI if mode == "direct" else (MBc if nkb > 1 else 1)
    part = entry_alloca(kb, F32, slots * P * NBc, name="partial") if chunked else None
    tail = mg - (MBc - 1) * NBc  # channels of the last channel block
    i32v = vec(wl, I32)

    # channel lanes past the end, per vector of the last block
    def chan_masks(is_last):
        out = []
        for v in range(Vc):
            n_on = max(0, min(wl, tail - v * wl))
            out.append(None if n_on == wl else b.select(is_last, const_mask(wl, n_on), const_mask(wl, wl)))
        return out

    # im2col index vectors and padding masks, per (tap, pixel vector): compile-time constants
    PV = -(-P // wl)
    last_lanes = None if P % wl == 0 else const_mask(wl, P % wl)  # rows of the pack are P apart: mask the last vector
    idx_c, msk_c = [], []
    for t in range(T):
        kh, kw = divmod(t, geo.KW)
        ir_, mr = [], []
        for j in range(PV):
            idx, on = [], []
            for ln in range(wl):
                p = j * wl + ln
                oh, ow = divmod(p, geo.OW)
                ih, iw = oh * geo.sh - geo.pt + kh * geo.dh, ow * geo.sw - geo.pl + kw * geo.dw
                ok = p < P and 0 <= ih < geo.H and 0 <= iw < geo.W
                idx.append(ih * geo.W + iw if ok else 0)
                on.append(1 if ok else 0)
            ir_.append(ir.Constant(i32v, idx))
            mr.append(ir.Constant(vec(wl, I1), on))
        idx_c.append(ir_)
        msk_c.append(mr)

    # an output row's inputs for one tap span (OW-1)*sw*... + 1 floats of an input row: when that
    # fits two vectors, a row is one or two masked loads and a lane shuffle (no gather)
    span = (geo.OW - 1) * geo.sw + 1
    by_rows = PACK_BY_ROWS and span <= 2 * wl and geo.OH <= 32 and geo.OW <= wl
    row_mask = const_mask(wl, geo.OW)

    def pack_rows(xc, dst):
        nvec = 1 if span <= wl else 2
        pick = ir.Constant(vec(wl, I32), [min(i * geo.sw, nvec * wl - 1) for i in range(wl)])
        zero = zero_vec(wl)
        for t in range(T):
            kh, kw = divmod(t, geo.KW)
            iw0 = kw * geo.dw - geo.pl
            lmask = [ir.Constant(vec(wl, I1), [1 if 0 <= iw0 + v * wl + i < geo.W and v * wl + i < span else 0 for i in range(wl)]) for v in range(nvec)]
            for oh in range(geo.OH):
                ih = oh * geo.sh - geo.pt + kh * geo.dh
                at = b.add(dst, const_i64(t * Pp + oh * geo.OW))
                if not 0 <= ih < geo.H:
                    store_v(kb, zero, pack, at, row_mask)
                    continue
                parts = [load_v(kb, xc, ih * geo.W + iw0 + v * wl, wl, lmask[v], inbounds=False) for v in range(nvec)]
                val = b.shuffle_vector(parts[0], parts[1] if nvec == 2 else zero, pick)
                store_v(kb, val, pack, at, row_mask)

    def pack_block(x_img, c0, ncb):
        with kb.loop(0, ncb, 1, "pc") as c:
            xc = gep(kb, x_img, b.mul(b.add(c, c64(c0)), const_i64(geo.HW)))
            dst = b.mul(c, const_i64(T * Pp))
            if by_rows:
                pack_rows(xc, dst)
                return
            for t in range(T):
                for j in range(PV):
                    val = gather_v(kb, xc, idx_c[t][j], msk_c[t][j])
                    store_v(kb, val, pack, b.add(dst, const_i64(t * Pp + j * wl)), last_lanes if j == PV - 1 else None)

    units = -(-geo.N // NI) * geo.G * MBc
    lo, hi = kb.thread_range(units, tid, nthreads)

    def tile(x_img, gi, nb, p0, k0, nk, c0, first, last, slot):
        """Pixels p0..p0+R-1 of channel block nb, k steps [k0, k0 + nk) of the pack block at channel c0;
        partial sums in row `slot` of the buffer."""
        m0 = b.mul(nb, const_i64(NBc))
        m_abs = b.add(b.mul(gi, const_i64(mg)), m0)
        masks = chan_masks(b.icmp_unsigned("==", nb, const_i64(MBc - 1))) if tail != NBc else [None] * Vc
        if part is not None:
            poff = b.add(b.mul(slot, const_i64(P * NBc)), b.mul(p0, const_i64(NBc)))
        if bias_ptr is not None:
            start = [load_v(kb, bias_ptr, b.add(m_abs, const_i64(v * wl)), wl, masks[v]) for v in range(Vc)]
        else:
            start = [zero_vec(wl)] * Vc
        accs = []
        for r in range(R):
            row = []
            for v in range(Vc):
                if first is True:
                    row.append(start[v])
                else:
                    pv = kb.load_vec(part, b.add(poff, const_i64(r * NBc + v * wl)), wl)
                    row.append(b.select(first, start[v], pv))
            accs.append(row)
        kabs = add(kb, mul(kb, c0, T), k0)  # k of the chunk's first step in the weights
        wp = gep(kb, w_ptr, add(kb, b.mul(b.add(b.mul(gi, const_i64(MBc)), nb), const_i64(K * NBc)), mul(kb, kabs, NBc)))
        if mode == "direct":
            ab = gep(kb, x_img, add(kb, p0, mul(kb, kabs, geo.HW)))
            a_stride = geo.HW
        else:
            ab = gep(kb, pack, add(kb, p0, mul(kb, k0, Pp)))
            a_stride = Pp

        def a_val(kk, _s, r):
            return kb.load(ab, b.add(b.mul(kk, const_i64(a_stride)), const_i64(r)))

        def b_vec(kk, _s, v):
            at = b.add(b.mul(kk, const_i64(NBc)), const_i64(v * wl))
            if pf_ahead is not None and v * wl * 4 % 64 == 0:
                prefetch(kb, wp, add(kb, at, pf_ahead))
            return kb.load_vec(wp, at, wl)

        # at batch 1 each weight is read once per inference, from DRAM, and the first pixel
        # block of a chunk waits for its panel: every block of the chunk prefetches the next
        # panel's lines for its own k (ResNet-50 b1 7x7 stage: -0.03..0.07 ms per layer; at
        # batch 8 the weights come from L3 for most images and the prefetches cost 0.2 ms)
        pf_ahead = mul(kb, nk, NBc) if PREFETCH_NEXT and geo.N == 1 else None
        accs = microkernel(kb, R, Vc, 0, nk, a_val, b_vec, accs)

        def finish():
            cache: dict = {}
            for r in range(R):
                for v in range(Vc):
                    epi.apply_one(kb, accs[r][v], b.add(m_abs, const_i64(v * wl)), b.add(p0, const_i64(r)), masks[v], cache, v, lanes_on_rows=True)

        def partial():
            for r in range(R):
                for v in range(Vc):
                    kb.store_vec(accs[r][v], part, b.add(poff, const_i64(r * NBc + v * wl)))

        if last is True:
            finish()
        else:
            with b.if_else(last) as (then, otherwise):
                with then:
                    finish()
                with otherwise:
                    partial()

    def and_(a, c):
        if a is True:
            return c
        return a if c is True else b.and_(a, c)

    def image_ptr(n, gi):
        return gep(kb, x_ptr, b.add(b.mul(n, const_i64(geo.C * geo.HW)), b.mul(gi, const_i64(geo.cg * geo.HW))))

    def chunks(nk_blk, first, last, body):
        """body(k0, nk, first, last) over the L1-sized k chunks of a block of nk_blk k steps."""
        if not chunked or (isinstance(nk_blk, int) and nk_blk <= KC):
            body(0, nk_blk, first, last)
            return
        nch = b.udiv(b.add(c64(nk_blk), const_i64(KC - 1)), const_i64(KC))
        with kb.loop(0, nch, 1, "kc") as j:
            k0 = b.mul(j, const_i64(KC))
            nk = kb.smin(const_i64(KC), b.sub(c64(nk_blk), k0))
            body(k0, nk, and_(first, b.icmp_unsigned("==", j, const_i64(0))), and_(last, b.icmp_unsigned("==", j, b.sub(nch, const_i64(1)))))

    def direct_group(u, ilo, ihi):
        """Unit group u = (run of NI images, group); channel blocks [ilo, ihi): each k chunk's
        weight panel serves the pixels of all NI images before the next chunk."""
        gi = b.urem(u, const_i64(geo.G))
        n0 = b.mul(b.udiv(u, const_i64(geo.G)), const_i64(NI))
        ni = const_i64(NI) if geo.N % NI == 0 else kb.smin(const_i64(NI), b.sub(const_i64(geo.N), n0))
        with kb.loop(ilo, ihi, 1, "nb") as nb:

            def body(k0, nk, first, last):
                with kb.loop(0, ni, 1, "img") as nl:
                    n = b.add(n0, nl)
                    x_img = image_ptr(n, gi)
                    epi.begin_tile(kb, n)
                    with kb.loop(0, nsub, 1, "ps") as s:
                        tile(x_img, gi, nb, b.mul(s, const_i64(R)), k0, nk, 0, first, last, nl)

            chunks(geo.cg, True, True, body)

    def packed_image(u, ilo, ihi):
        """Unit group u = (image, group); channel blocks [ilo, ihi) share each packed block."""
        gi = b.urem(u, const_i64(geo.G))
        n = b.udiv(u, const_i64(geo.G))
        x_img = image_ptr(n, gi)
        epi.begin_tile(kb, n)

        def kblock(c0, ncb, first, last):
            pack_block(x_img, c0, ncb)
            with kb.loop(ilo, ihi, 1, "nb") as nb:

                def body(k0, nk, f, l_):
                    with kb.loop(0, nsub, 1, "ps") as s:
                        tile(x_img, gi, nb, b.mul(s, const_i64(R)), k0, nk, c0, f, l_, nb if nkb > 1 else const_i64(0))

                chunks(mul(kb, ncb, T), first, last, body)

        over_k_blocks(kb, nkb, cb, geo.cg, kblock)

    group = direct_group if mode == "direct" else packed_image
    u_lo = b.udiv(lo, const_i64(MBc))
    u_hi = b.udiv(b.add(hi, const_i64(MBc - 1)), const_i64(MBc))
    with kb.loop(u_lo, u_hi, 1, "grp") as u:
        base = b.mul(u, const_i64(MBc))
        group(u, kb.smax(b.sub(lo, base), const_i64(0)), kb.smin(b.sub(hi, base), const_i64(MBc)))


__all__ = ["choose_cl_tile", "emit_conv_cl", "use_channel_lanes"]
