"""Winograd F(4x4, 3x3) convolution for the CPU backend (fused with the conv epilogue).

Kernels whose main op is a 3x3, stride 1, dilation 1, group 1, pad 1 conv with
enough channels (C, M >= MIN_CHANNELS) and constant weights; other convs fall
through to emit_conv (this emitter is registered before it; when the target's
vector is too short for the image width it emits emit_conv's code itself).

Y = A^T [ (G g G^T) . (B^T d B) ] A on 6x6 input tiles d -> 4x4 output tiles:

* weights: U[xi][m][c] = (G g G^T)[xi] at compile time (ctx.repack), laid out
  [M/R][36][C][R] (R output channels of one c adjacent, rows zero padded; a
  channel block's 36 matrices are one sequential stream, prefetched ahead).
* tiles: a lane of a vector is one 4x4 output tile; a block is up to W lanes
  of tiles: `rpb` whole tile rows of one image (tw = ceil(OW/4) <= W tiles a
  row), so the output of a block is a run of whole output rows. Images with
  fewer tile rows than that (7x7) share blocks: the block's tile rows run on
  into the next image (SPAN_IMAGES).
* input transform: per input channel, the 36 values of each lane's 6x6 patch
  are masked gathers (the padding and partial tiles read as 0), B^T d B in
  registers, 36 vectors stored to a per-thread stack buffer V[36][C][W].
* 36 batched GEMMs: M[xi][m] = sum_c U[xi][m][c] V[xi][c] with microkernel.py's
  register-blocked micro-kernel (R rows x 1 vector), R rows of all 36 xi
  staged in a small buffer.
* output transform: A^T M A per output channel, + bias; the 4 columns of a
  tile row are interleaved back into pixel order by shuffles, so every stored
  vector is W consecutive pixels of one output row, and the conv epilogue
  (epilogue.Epilogue: folded BN, residual, activation) runs on it before
  the (masked) store.

Threads split (block, channel chunk) units; a thread transforms a block's
input once for the run of channel chunks it owns.
"""

from __future__ import annotations

import numpy as np
from dsc.backends.cpu.codegen import FUSED_EMITTERS, fused_emitter
from dsc.backends.cpu.emit_conv import (
    _conv_kernel,
    _conv_matches,
    conv_geom,
    conv_layout,
    emit_fused_conv,
)
from dsc.backends.cpu.epilogue import Epilogue, kernel_sources
from dsc.backends.cpu.microkernel import microkernel
from dsc.backends.cpu.vector_ir import FlushDenormals, const_mask, content_hash, entry_alloca, gather_v, gep, lanes_of, prefetch, zero_vec
from dsc.backends.cpu.irb import F32, I1, I32, const_i64, vec
from dsc.dialects import graph as g
from llvmlite import ir

MIN_CHANNELS = 32  # C and M: below, the transforms cost more than the GEMM saves
MAX_V_BYTES = 2 << 20  # per-thread stack buffer of transformed input
MIN_LANE_USE = (
    0.5  # output pixels / (16 x lanes) per block below which the direct conv is emitted
)
# U is one cache line per k of the micro-kernel, 16 FMAs: the hardware prefetchers do not keep
# up, so the kernel asks for the line PF_DIST bytes ahead (ResNet-50 b8 layer-3 3x3 3.7 -> 2.4 ms,
# layer-4 7.1 -> 3.4 ms with SPAN_IMAGES; b1 layers 1-2 -0.07..0.2 ms each)
PF_DIST = 2048
SPAN_IMAGES = True  # small images share blocks of tiles (7x7: 4 images of 4 tiles in 16 lanes)
MIN_BLOCKS = 1  # tuning: blocks of tiles (images x tile-row groups) below which the direct conv is emitted
ROWS = 16  # R: output channels per micro-kernel block

BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    np.float64,
)
GM = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    np.float64,
)
AT = np.array(
    [
        [1, 1, 1, 1, 1, 0],
        [0, 1, -1, 2, -2, 0],
        [0, 1, 1, 4, 4, 0],
        [0, 1, -1, 8, -8, 1],
    ],
    np.float64,
)


def _const_weight(kop, i: int) -> bool:
    v = kop.operands[i]
    while isinstance(v.owner, g.ReshapeOp):
        v = v.owner.input
    return isinstance(v.owner, g.ConstantOp)


def _geo_ok(conv, geo) -> bool:
    if geo is None or geo.KH != 3 or geo.H == 1:
        return False
    pads = list(conv.py_attrs()["pads"])
    return (
        geo.KH == geo.KW == 3
        and geo.sh == geo.sw == 1
        and geo.dh == geo.dw == 1
        and geo.G == 1
        and pads == [1, 1, 1, 1]
        and geo.OH == geo.H
        and geo.OW == geo.W
        and geo.C >= MIN_CHANNELS
        and geo.M >= MIN_CHANNELS
        and 36 * geo.C * 64 <= MAX_V_BYTES
    )


def _matches(kop) -> bool:
    got = _conv_kernel(kop)
    if got is None:
        return False
    conv, _, index = got
    if not _geo_ok(conv, conv_geom(conv)):
        return False
    return _const_weight(kop, index[conv.weight]) and _conv_matches(kop)


def transform_weights(wt: np.ndarray, R: int) -> np.ndarray:
    """[M, C, 3, 3] -> U [ceil(M/R)][36][C][R] (xi = 6*a + b), rows zero padded: a block of
    R output channels reads its 36 matrices as one sequential stream."""
    M, C = wt.shape[:2]
    MB = -(-M // R)
    u = np.einsum("ai,mcij,bj->abmc", GM, np.asarray(wt, np.float64), GM).reshape(
        36, M, C
    )
    out = np.zeros((36, MB * R, C), np.float32)
    out[:, :M] = u
    return np.ascontiguousarray(out.reshape(36, MB, R, C).transpose(1, 0, 3, 2))


def _lincomb(kb, coefs, xs, w):
    b = kb.b
    acc = None
    for c, x in zip(coefs, xs):
        c = float(c)
        if c == 0:
            continue
        if acc is None:
            acc = x if c == 1 else b.fmul(x, kb.splat(ir.Constant(F32, c), w))
        elif c == 1:
            acc = b.fadd(acc, x)
        elif c == -1:
            acc = b.fsub(acc, x)
        else:
            acc = kb.fma(x, kb.splat(ir.Constant(F32, c), w), acc)
    return acc if acc is not None else zero_vec(w)


def _transform(kb, mat, X, w):
    """mat @ X @ mat^T for a matrix of vectors X (lists)."""
    n = len(X[0])
    tmp = [
        [_lincomb(kb, row, [X[i][j] for i in range(len(X))], w) for j in range(n)]
        for row in mat
    ]
    return [[_lincomb(kb, row, tmp[p], w) for row in mat] for p in range(len(mat))]


@fused_emitter("winograd", _matches)
def emit_fused_winograd(kb, kop, in_ptrs, out_ptrs, tid, nthreads, ctx):
    conv, epi_ops, index = _conv_kernel(kop)
    geo = conv_geom(conv)
    wl = lanes_of(ctx)
    w_index = index[conv.weight]
    wt = ctx.consts[w_index]
    tw, th = -(-geo.OW // 4), -(-geo.OH // 4)
    # tile rows per block; images with fewer tile rows than a block holds share blocks (a
    # block's global tile rows g run over the images: image g // th, tile row g % th)
    span = tw <= wl and th < wl // tw and SPAN_IMAGES
    rpb = (min(wl // tw, geo.N * th) if span else min(wl // tw, th)) if tw <= wl else 0
    nblk = (-(-geo.N * th // rpb) if span else geo.N * -(-th // rpb)) if rpb else 0
    # lanes doing useful work: small images alone (7x7 at batch 1: 4 tiles in 16 lanes) lose
    # to the direct conv. A single block of tiles (14x14 at batch 1) streams every transformed
    # weight (4x the direct conv's bytes) for one vector of tiles: it pays with U prefetched
    # (ResNet-50 b1 layer-3 3x3: 0.84 ms direct, 0.44 Winograd; 0.83 without the prefetch)
    if (
        wt is None
        or not rpb
        or geo.N * geo.OH * geo.OW < MIN_LANE_USE * 16 * wl * nblk
        or nblk < MIN_BLOCKS
    ):
        return emit_fused_conv(kb, kop, in_ptrs, out_ptrs, tid, nthreads, ctx)
    b = kb.b
    known = {conv.result} | {op.results[0] for op in epi_ops}
    sources = kernel_sources(kop, in_ptrs, epi_ops, known)
    yields = list(zip(kop.body.block.last_op.operands, out_ptrs))
    epi = Epilogue(conv_layout(conv), conv.result, epi_ops, sources, yields, wl)
    x_ptr = in_ptrs[index[conv.input]]
    bias_ptr = in_ptrs[index[conv.bias]] if conv.bias is not None else None

    N, C, M, H, W = geo.N, geo.C, geo.M, geo.H, geo.W
    OH, OW = geo.OH, geo.OW
    R = ROWS
    MB = -(-M // R)
    ngr = -(-th // rpb)  # blocks per image (without span)
    ms = min(
        MB, max(1, -(-8 // nblk))
    )  # channel chunks per block: enough units for the threads
    mbs = -(-MB // ms)
    ms = -(-MB // mbs)
    ctx.repack(
        w_index,
        transform_weights(wt, R),
        f"wino43m_R{R}:{content_hash(np.asarray(wt), wt.shape)}",
    )
    w_ptr = in_ptrs[w_index]

    i32v = vec(wl, I32)
    i1v = vec(wl, I1)

    def ci(vals):
        return ir.Constant(i32v, vals if isinstance(vals, list) else [vals] * wl)

    with FlushDenormals(kb, ctx):
        vbuf = entry_alloca(kb, F32, 36 * C * wl, name="wino_v")
        mbuf = entry_alloca(kb, F32, 36 * R * wl, name="wino_m")
        lo, hi = kb.thread_range(nblk * ms, tid, nthreads)
        u_lo = b.udiv(lo, const_i64(ms))
        u_hi = b.udiv(b.add(hi, const_i64(ms - 1)), const_i64(ms))
        lanes = [(l // tw, l % tw) for l in range(wl)]
        lane_on = [l < rpb * tw for l in range(wl)]
        with kb.loop(u_lo, u_hi, 1, "wblk") as u:
            base = b.mul(u, const_i64(ms))
            c_lo = kb.smax(b.sub(lo, base), const_i64(0))
            c_hi = kb.smin(b.sub(hi, base), const_i64(ms))
            if span:  # block u: global tile rows g0 .. g0 + rpb - 1
                g0 = b.mul(u, const_i64(rpb))
                n = b.udiv(g0, const_i64(th))
                gv = b.add(kb.splat(b.trunc(g0, I32), wl), ci([r for r, _ in lanes]))
                n_lane = b.sub(b.udiv(gv, ci(th)), kb.splat(b.trunc(n, I32), wl))  # image, from the block's first
                trv = b.urem(gv, ci(th))
                lane_in = b.icmp_signed("<", gv, ci(N * th))
            else:
                n = b.udiv(u, const_i64(ngr))
                tr0 = b.mul(b.urem(u, const_i64(ngr)), const_i64(rpb))  # first tile row of the block
                trv = b.add(kb.splat(b.trunc(tr0, I32), wl), ci([r for r, _ in lanes]))
                lane_in = b.icmp_signed("<", trv, ci(th))

            def row_of(rr):
                """(image, tile row, exists) of the block's tile row rr."""
                if not span:
                    return n, b.add(tr0, const_i64(rr)), None
                g = b.add(g0, const_i64(rr))
                ok = b.icmp_signed("<", g, const_i64(N * th))
                return kb.smin(b.udiv(g, const_i64(th)), const_i64(N - 1)), b.urem(g, const_i64(th)), ok

            rows = [row_of(rr) for rr in range(rpb)]
            epi.begin_tile(kb, n)  # span: again per tile row, at its stores

            # ---- input transform: V[xi][c][lane]
            lane_ok = b.and_(lane_in, ir.Constant(i1v, [1 if x else 0 for x in lane_on]))
            ih0 = b.sub(b.mul(trv, ci(4)), ci(1))
            idx, msk = [], []
            for i in range(6):
                ih = b.add(ih0, ci(i))
                row_ok = b.and_(lane_ok, b.icmp_unsigned("<", ih, ci(H)))
                for j in range(6):
                    iw = [4 * t - 1 + j for _, t in lanes]
                    col_ok = ir.Constant(i1v, [1 if 0 <= x < W else 0 for x in iw])
                    at = b.add(b.mul(ih, ci(W)), ci(iw))
                    idx.append(b.add(at, b.mul(n_lane, ci(C * H * W))) if span else at)
                    msk.append(b.and_(row_ok, col_ok))
            x_img = gep(kb, x_ptr, b.mul(n, const_i64(C * H * W)))
            with kb.loop(0, C, 1, "wc") as c:
                xc = gep(kb, x_img, b.mul(c, const_i64(H * W)))
                d = [
                    [gather_v(kb, xc, idx[i * 6 + j], msk[i * 6 + j]) for j in range(6)]
                    for i in range(6)
                ]
                v = _transform(kb, BT, d, wl)
                for a in range(6):
                    for bb in range(6):
                        kb.store_vec(
                            v[a][bb],
                            vbuf,
                            b.add(
                                b.mul(c, const_i64(wl)),
                                const_i64((a * 6 + bb) * C * wl),
                            ),
                        )

            # ---- per block of R output channels: 36 GEMMs, output transform, epilogue
            with kb.loop(
                b.mul(c_lo, const_i64(mbs)),
                kb.smin(b.mul(c_hi, const_i64(mbs)), const_i64(MB)),
                1,
                "wmb",
            ) as mb:
                with kb.loop(0, 36, 1, "xi") as xi:
                    wp = gep(
                        kb,
                        w_ptr,
                        b.mul(b.add(b.mul(mb, const_i64(36)), xi), const_i64(C * R)),
                    )
                    vp = gep(kb, vbuf, b.mul(xi, const_i64(C * wl)))

                    def a_val(kk, s, r, wp=wp):
                        at = b.add(b.mul(kk, const_i64(R)), const_i64(r))
                        if PF_DIST and r == 0:  # one line of U per k, streamed: ask for it early
                            prefetch(kb, wp, b.add(at, const_i64(PF_DIST // 4)))
                        return kb.load(wp, at)
                    accs = microkernel(
                        kb,
                        R,
                        1,
                        0,
                        C,
                        a_val,
                        lambda kk, s, v_: kb.load_vec(vp, b.mul(kk, const_i64(wl)), wl),
                        [[zero_vec(wl)] for _ in range(R)],
                    )
                    for r in range(R):
                        kb.store_vec(
                            accs[r][0],
                            mbuf,
                            b.add(b.mul(xi, const_i64(R * wl)), const_i64(r * wl)),
                        )
                nrows = kb.smin(
                    const_i64(R), b.sub(const_i64(M), b.mul(mb, const_i64(R)))
                )
                with kb.loop(0, nrows, 1, "wr") as r:
                    m = b.add(b.mul(mb, const_i64(R)), r)
                    X = [
                        [
                            kb.load_vec(
                                mbuf,
                                b.add(
                                    b.mul(r, const_i64(wl)),
                                    const_i64((a * 6 + bb) * R * wl),
                                ),
                                wl,
                            )
                            for bb in range(6)
                        ]
                        for a in range(6)
                    ]
                    Y = _transform(kb, AT, X, wl)
                    if bias_ptr is not None:
                        bias = kb.splat(kb.load(bias_ptr, m), wl)
                        Y = [[b.fadd(y, bias) for y in row] for row in Y]
                    caches = [{} for _ in range(rpb)]  # per tile row: its image's per-channel operands
                    for p in range(4):
                        # pixel order of tile row p: element 4*l + q = Y[p][q][l]
                        a01 = b.shuffle_vector(
                            Y[p][0],
                            Y[p][1],
                            ir.Constant(
                                vec(2 * wl, I32),
                                [(s % 2) * wl + s // 2 for s in range(2 * wl)],
                            ),
                        )
                        a23 = b.shuffle_vector(
                            Y[p][2],
                            Y[p][3],
                            ir.Constant(
                                vec(2 * wl, I32),
                                [(s % 2) * wl + s // 2 for s in range(2 * wl)],
                            ),
                        )
                        for rr in range(rpb):
                            n_rr, tr_rr, ok_rr = rows[rr]
                            if span:
                                epi.begin_tile(kb, n_rr)
                            oh = b.add(b.mul(tr_rr, const_i64(4)), const_i64(p))
                            ok = b.icmp_signed("<", oh, const_i64(OH))
                            row_ok = kb.splat(ok if ok_rr is None else b.and_(ok, ok_rr), wl)
                            for v0 in range(0, OW, wl):
                                ncol = min(wl, OW - v0)
                                sel = []
                                for k in range(wl):
                                    s = rr * 4 * tw + v0 + k
                                    l, q = divmod(s, 4)
                                    sel.append(
                                        (2 * l + q if q < 2 else 2 * wl + 2 * l + q - 2)
                                        if k < ncol
                                        else 0
                                    )
                                val = b.shuffle_vector(a01, a23, ir.Constant(i32v, sel))
                                mask = b.and_(row_ok, const_mask(wl, ncol))
                                epi.apply_one(
                                    kb,
                                    val,
                                    m,
                                    b.add(b.mul(oh, const_i64(OW)), const_i64(v0)),
                                    mask,
                                    caches[rr],
                                    0,
                                )


__all__ = ["emit_fused_winograd", "transform_weights"]


def _ahead_of_conv() -> None:
    """Importing emit_conv above registered its conv emitter first: try this one before it."""
    entry = next(e for e in FUSED_EMITTERS if e[0] == "winograd")
    FUSED_EMITTERS.remove(entry)
    at = next(
        (i for i, e in enumerate(FUSED_EMITTERS) if e[0] == "conv"), len(FUSED_EMITTERS)
    )
    FUSED_EMITTERS.insert(at, entry)


_ahead_of_conv()
