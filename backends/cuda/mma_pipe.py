"""Tensor-core GEMM: a multi-stage `cp.async` pipeline, `ldmatrix` fragments, `mma.sync`.

    C[z][m, n] = Σ_k A(z, m, k) · B(z, k, n),   f32 accumulators

m16n8k16 for f16 / bf16 operands, m16n8k8 for tf32 (float32 operands with
`--tf32`). Operands are gemm.py's (strided views) and conv.py's (implicit
im2col, NCHW or a channels-last copy); grid, block tiles and split-K as
chosen by mma.choose_mma_tiling.

* Shared memory holds `stages` k-tiles of 64 bytes of k per row (BK = 32
  16-bit values or 16 tf32), or 128 for long K on sm_90 (mma.row_bytes). Each operand tile is stored in the orientation
  of its memory: [row][k] when the operand is contiguous along k (weights,
  row-major activations, channels-last im2col), [k][row] when it is
  contiguous along its row index (an NCHW image read by a 1x1 convolution,
  row-major B of a matmul). Rows are padded so that fragment reads fall in
  distinct banks.
* Operands whose 16-byte (or 8-byte) runs are contiguous and aligned
  (`vectors_ok`) are copied global -> shared by `cp.async` (no registers,
  zero-filled past the edges), `stages - 1` tiles ahead of the math. Others
  (the NCHW im2col of a 3x3 convolution, K not a multiple of 8) are loaded
  into registers one tile ahead and stored after the tile's math.
* Fragments come from `ldmatrix.x4` (plain for [row][k], `.trans` for a
  16-bit [k][row]; 32-bit [k][row] data is read word by word). tf32
  fragments are rounded to nearest (cp.async copies raw f32 bits, which the
  tensor cores would truncate).
* The epilogue goes through shared memory: the warps write their
  accumulators to a [BM][BN] f32 tile, then consecutive threads take
  consecutive n (16 per loop iteration, so their loads overlap), so the fused
  epilogue's loads and stores are coalesced along the output's contiguous
  dimension. A channels-last output (contiguous along m) is staged [BN][BM]
  instead and each thread takes 8 consecutive m of one n (`_epilogue_runs`):
  its channels-last residual and output move as 16-byte vectors.

The loop (S = stages, one barrier per k-tile):

    prologue: tiles 0 .. S-2 in flight
    for kt: wait for tile kt; barrier
            issue tile kt+S-1 (into the buffer tile kt-1 used)
            MMAs of tile kt
            register-staged pieces of tile kt+S-1 -> shared
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from dsc.backends.cuda.ew import f32_to_bf16, load_elem
from dsc.backends.cuda.gpubuilder import F32, I8, I32, GpuBuilder, c32, cf
from dsc.backends.cuda import mma
from dsc.backends.cuda.mma import block_tile, close_k_loop, open_k_loop
from dsc.dialects.tensor_types import BFLOAT16
from llvmlite import ir

I16 = ir.IntType(16)
F16 = ir.HalfType()
EPI_UNROLL = 16  # epilogue elements per thread and loop iteration (16 vs 8: ResNet-50 fp16 batch 32 2.38 vs 2.44 ms)
ROUND_TF32 = True  # round tf32 fragments to nearest (the tensor cores would truncate the raw f32 bits)
RUN = 8  # consecutive m per thread in the epilogue of a channels-last output (16-byte f16 / bf16 vectors)
# runs per thread and loop iteration of that epilogue: their residual loads in flight together (H200, ResNet-50
# fp16 batch 32 on wgmma: the K = 64 residual convolutions 0.050 -> 0.040 ms with 8 against 2; 1.302 -> 1.255 ms)
RUN_UNROLL = 8


@dataclass(frozen=True)
class Geometry:
    """Element size dependent shapes: k values per stage (BK) and per MMA, padding, copy width."""

    eb: int  # bytes per element in shared memory
    row_bytes: int = mma.ROW_BYTES  # bytes of k per row and stage (mma.row_bytes)

    @property
    def BK(self) -> int:
        return self.row_bytes // self.eb  # = mma.stage_depth

    @property
    def kstep(self) -> int:  # k per MMA: m16n8k16 (16-bit) or m16n8k8 (tf32)
        return 32 // self.eb

    @property
    def vec(self) -> int:  # elements per 16-byte copy
        return 16 // self.eb

    def pad(self, row_k: bool) -> int:
        """Elements of padding per row: [row][k] rows of 80 bytes; [k][row] rows of 32-bit data padded by 8
        words (a fragment's scalar reads (k = t, row = g) then hit 32 banks), 16-bit by 8 values (ldmatrix)."""
        return 16 // self.eb if row_k or self.eb == 2 else 8

    def tile_bytes(self, rows: int) -> int:
        """One stage of one operand, the larger of its two orientations."""
        return self.eb * max(rows * (self.BK + self.pad(True)), self.BK * (rows + self.pad(False)))


def geometry(kind: str, row_bytes: int = mma.ROW_BYTES) -> Geometry:
    return Geometry(4 if kind == "tf32" else 2, row_bytes)


@dataclass(frozen=True)
class PipeConfig:
    BM: int
    BN: int
    WM: int  # warp tile
    WN: int
    stages: int
    min_blocks: int = 2

    @property
    def warps(self) -> int:
        return (self.BM // self.WM) * (self.BN // self.WN)

    @property
    def threads(self) -> int:
        return 32 * self.warps

    def stage_bytes(self, geo: Geometry) -> int:
        return geo.tile_bytes(self.BM) + geo.tile_bytes(self.BN)

    def smem_bytes(self, geo: Geometry) -> int:
        return max(self.stages * self.stage_bytes(geo), 4 * self.BM * (self.BN + 8))


PIPE_BIG = PipeConfig(128, 128, 64, 32, stages=3)
PIPE_WIDE = PipeConfig(64, 128, 32, 64, stages=3)
PIPE_MID = PipeConfig(64, 64, 32, 32, stages=4, min_blocks=4)
PIPE_SMALL = PipeConfig(32, 32, 16, 16, stages=4, min_blocks=4)
PIPE_CONFIGS = [PIPE_BIG, PIPE_WIDE, PIPE_MID, PIPE_SMALL]


class _Tile:
    """How one operand's k-tile travels: orientation in shared memory and copy scheme."""

    def __init__(self, op, rows: int, limit: int, k_major_rows: bool, kind: str, T: int, extent_rows: int, K: int, geo: Geometry, swizzle: bool = False):
        BK = self.BK = geo.BK
        self.op, self.rows, self.limit, self.a_side = op, rows, limit, k_major_rows
        self.eb, self.row_bytes = geo.eb, geo.row_bytes
        # [row][k] when the operand is contiguous along k, else [k][row]
        self.row_k = (op.contig == 1) == k_major_rows
        # `swizzle` (wgmma.py): [row][k] rows of exactly row_bytes, 16-byte chunks XOR-swizzled by row
        self.swizzle = swizzle and self.row_k
        self.pitch = BK if self.swizzle else BK + geo.pad(True) if self.row_k else rows + geo.pad(False)
        want = {"bf16": BFLOAT16, "f16": np.dtype(np.float16), "tf32": np.dtype(np.float32)}[kind]
        extent = K if self.row_k else extent_rows
        self.same = np.dtype(op.dtype) == want
        # copies of 16 bytes, else 8 (e.g. a stem's 4 padded channels), else elements through registers
        self.vec = 0
        for w in (geo.vec, geo.vec // 2):
            runs = (BK if self.row_k else rows) // w
            if self.same and (rows * BK) % (w * T) == 0 and runs > 0 and op.vectors_ok(w, extent):
                self.vec, self.runs = w, runs
                break
        self.per = rows * BK // (T * (self.vec or 1))

    def piece(self, b, idx):
        """(row, kk) of piece idx: consecutive pieces walk the operand's contiguous index."""
        if self.vec:
            q, p = b.urem(idx, c32(self.runs)), b.udiv(idx, c32(self.runs))
            q = b.mul(q, c32(self.vec))
        else:
            n = self.BK if self.row_k else self.rows
            q, p = b.urem(idx, c32(n)), b.udiv(idx, c32(n))
        return (p, q) if self.row_k else (q, p)

    def sidx(self, b, row, kk):
        """Element index in the stage's tile."""
        if self.swizzle:  # byte a = row * W + kk * eb, chunk bits 4.. XOR-ed by bits 7.. (wgmma's W-byte swizzle)
            a = b.add(b.mul(row, c32(self.row_bytes)), b.mul(kk, c32(self.eb)))
            a = b.xor(a, b.and_(b.lshr(a, c32(3)), c32(self.row_bytes - 16)))
            return b.udiv(a, c32(self.eb))
        return b.add(b.mul(row, c32(self.pitch)), kk) if self.row_k else b.add(b.mul(kk, c32(self.pitch)), row)


def element(gb: GpuBuilder, kind: str, v):
    """An f32 (or f16) value as the shared-memory element of `kind`."""
    b = gb.b
    if kind == "f16":
        return b.fptrunc(v, F16) if v.type != F16 else v
    if kind == "tf32":
        return gb.to_tf32(v)
    return f32_to_bf16(gb, v)


def issue(gb: GpuBuilder, tile: _Tile, r0, k0, k_hi, hs, base, kind: str) -> list:
    """cp.async copies of this thread's pieces of the k-tile at k0 (vector operands) into the tile at element
    `base` of `hs`; returns (pointer, value) of the register-staged others, to be stored after the math."""
    b = gb.b
    elem = hs.type.pointee
    tid, T = gb.tid(), gb.threads
    regs = []
    for e in range(tile.per):
        row, kk = tile.piece(b, b.add(tid, c32(e * T)))
        r, k = b.add(r0, row), b.add(k0, kk)
        ok = b.and_(b.icmp_signed("<", r, c32(tile.limit)), b.icmp_signed("<", k, k_hi))
        off, valid = tile.op.addr(gb, r, k) if tile.a_side else tile.op.stage_addr(gb, k0, kk, r)
        if valid is not None:
            ok = b.and_(ok, valid)
        safe = b.select(ok, off, c32(0))
        dst = b.gep(hs, [b.add(base, tile.sidx(b, row, kk))], inbounds=True)
        if tile.vec:
            gb.cp_async(dst, b.gep(tile.op.ptr, [safe], inbounds=True), ok, tile.eb * tile.vec)  # tf32: raw f32 bits
            continue
        if tile.same and kind != "tf32":  # already the shared-memory element: move the bits
            v = b.load(b.gep(tile.op.ptr, [safe], inbounds=True))
            v = b.select(ok, v, ir.Constant(elem, 0.0 if kind == "f16" else 0))
        else:
            v = load_elem(gb, tile.op.ptr, safe, tile.op.dtype)
            if v.type != F32:
                v = b.sitofp(v, F32) if isinstance(v.type, ir.IntType) else b.fpext(v, F32)
            v = element(gb, kind, b.select(ok, v, cf(0.0)))
        regs.append((dst, v))
    return regs


def emit_pipelined_mma_body(gb: GpuBuilder, cfg: PipeConfig, M: int, N: int, K: int, A, B, epi, split: int, nz: int, kind: str, m_fastest: bool = False, epi_run=None, row_bytes: int = mma.ROW_BYTES):
    """The body of a pipelined tensor-core GEMM kernel; grid = (ceil(N/BN), ceil(M/BM), nz*split), cfg.threads threads.

    `m_fastest`: consecutive threads of the epilogue take consecutive m (an output contiguous along m);
    with `epi_run(gb, z, m, n, accs)` and M a multiple of RUN, each thread takes RUN consecutive m at a
    time (vector loads and stores of a channels-last output and residual). `row_bytes`: bytes of k per
    shared-memory row and stage (mma.row_bytes; a tap-major operand's stage must match)."""
    b = gb.b
    T, S = cfg.threads, cfg.stages
    BM, BN, WM, WN = cfg.BM, cfg.BN, cfg.WM, cfg.WN
    geo = geometry(kind, row_bytes)
    BK, KS = geo.BK, geo.kstep
    elem = {"f16": F16, "bf16": I16, "tf32": I32}[kind]  # the shared-memory element
    MT, NT = WM // 16, WN // 8
    tid = gb.tid()
    lane = b.and_(tid, c32(31))
    warp = b.lshr(tid, c32(5))
    g, t = b.lshr(lane, c32(2)), b.and_(lane, c32(3))  # an MMA fragment's row and column group
    wcols = BN // WN
    wm = b.udiv(warp, c32(wcols))
    wn = b.urem(warp, c32(wcols))
    m0, n0, z, s, k_lo, k_hi = block_tile(gb, BM, BN, BK, K, split, A, B)
    smem = gb.shared(I8, cfg.smem_bytes(geo), "pipe")
    hs = b.bitcast(smem, elem.as_pointer(smem.type.addrspace))
    ta = _Tile(A, BM, M, True, kind, T, M, K, geo)
    tb = _Tile(B, BN, N, False, kind, T, N, K, geo)
    a_elems, b_elems = geo.tile_bytes(BM) // geo.eb, geo.tile_bytes(BN) // geo.eb
    stage_elems = a_elems + b_elems

    def tile_base(stage, which):
        """Element offset of operand `which` (0: A, 1: B) in shared buffer `stage` (i32)."""
        return b.add(b.mul(stage, c32(stage_elems)), c32(0 if which == 0 else a_elems))

    def store_regs(regs):
        for dst, v in regs:
            b.store(v, dst)

    def issue_stage(kt_stage, k0):
        ra = issue(gb, ta, m0, k0, k_hi, hs, tile_base(kt_stage, 0), kind)
        rb = issue(gb, tb, n0, k0, k_hi, hs, tile_base(kt_stage, 1), kind)
        gb.cp_async_commit()
        return ra + rb

    # prologue: tiles 0 .. S-2
    for st in range(S - 1):
        store_regs(issue_stage(c32(st), b.add(k_lo, c32(st * BK))))
    loop = open_k_loop(gb, k_lo, k_hi, MT * NT * 4)
    k0 = loop.k0
    accs = [[loop.accs[(i * NT + j) * 4 : (i * NT + j) * 4 + 4] for j in range(NT)] for i in range(MT)]
    kt = b.sdiv(b.sub(k0, k_lo), c32(BK))
    cur = b.urem(kt, c32(S))
    gb.cp_async_wait(S - 2)
    gb.barrier()
    ahead = b.urem(b.add(kt, c32(S - 1)), c32(S))
    regs = issue_stage(ahead, b.add(k0, c32((S - 1) * BK)))
    # fragments: ldmatrix.x4, lane l addressing row (l % 8) of matrix l / 8; for tf32 in [k][row] (no
    # transposing ldmatrix for 32-bit data) single 32-bit reads at (k = t (+4), row = g (+8))
    r8, j8 = b.and_(lane, c32(7)), b.lshr(lane, c32(3))
    j_lo, j_hi = b.and_(j8, c32(1)), b.lshr(j8, c32(1))
    acc = [[list(accs[i][j]) for j in range(NT)] for i in range(MT)]
    abase, bbase = tile_base(cur, 0), tile_base(cur, 1)
    half_k = KS // 2  # k of one 8x8 matrix of 16-bit values (4 words)
    words = b.bitcast(hs, I32.as_pointer(hs.type.addrspace))

    def word_at(base, tile, row, kk):
        return b.load(b.gep(words, [b.add(base, tile.sidx(b, row, kk))], inbounds=True))

    for ks in range(BK // KS):
        afr = []
        for i in range(MT):
            mrow = b.add(b.mul(wm, c32(WM)), c32(16 * i))
            if ta.row_k:  # matrices (rows +0/+8 by j_lo, k +0/+half by j_hi)
                row, kk = b.add(mrow, b.add(r8, b.shl(j_lo, c32(3)))), b.add(c32(KS * ks), b.mul(j_hi, c32(half_k)))
            elif kind == "tf32":  # [k][m]: a = A(g, t), A(g+8, t), A(g, t+4), A(g+8, t+4)
                k_ = b.add(c32(KS * ks), t)
                m_ = b.add(mrow, g)
                afr.append([word_at(abase, ta, m_, k_), word_at(abase, ta, b.add(m_, c32(8)), k_), word_at(abase, ta, m_, b.add(k_, c32(4))), word_at(abase, ta, b.add(m_, c32(8)), b.add(k_, c32(4)))])
                continue
            else:  # [k][m], transposed: matrix j covers m +8*j_lo, k +8*j_hi
                row, kk = b.add(mrow, b.shl(j_lo, c32(3))), b.add(c32(KS * ks), b.add(r8, b.shl(j_hi, c32(3))))
            afr.append(gb.ldmatrix_x4(b.gep(hs, [b.add(abase, ta.sidx(b, row, kk))], inbounds=True), trans=not ta.row_k))
        bfr = []
        for jj in range(0, NT, 2):
            ncol = b.add(b.mul(wn, c32(WN)), c32(8 * jj))
            if tb.row_k:  # [n][k]: matrix j covers n-tile jj + j_hi, k +half by j_lo
                row, kk = b.add(ncol, b.add(r8, b.shl(j_hi, c32(3)))), b.add(c32(KS * ks), b.mul(j_lo, c32(half_k)))
            elif kind == "tf32":  # [k][n]: b = B(t, g), B(t+4, g)
                k_ = b.add(c32(KS * ks), t)
                for d in (0, 8):
                    n_ = b.add(ncol, b.add(g, c32(d)))
                    bfr.append([word_at(bbase, tb, n_, k_), word_at(bbase, tb, n_, b.add(k_, c32(4)))])
                continue
            else:  # [k][n], transposed
                row, kk = b.add(ncol, b.shl(j_hi, c32(3))), b.add(c32(KS * ks), b.add(r8, b.shl(j_lo, c32(3))))
            q = gb.ldmatrix_x4(b.gep(hs, [b.add(bbase, tb.sidx(b, row, kk))], inbounds=True), trans=not tb.row_k)
            bfr += [q[0:2], q[2:4]]
        if kind == "tf32" and ROUND_TF32:  # cp.async brought raw f32 bits: round each fragment word to tf32 (as cvt.rna)
            afr = [[gb.to_tf32(b.bitcast(w, F32)) for w in fr] for fr in afr]
            bfr = [[gb.to_tf32(b.bitcast(w, F32)) for w in fr] for fr in bfr]
        for i in range(MT):
            for j in range(NT):
                acc[i][j] = gb.mma(kind, afr[i], bfr[j], acc[i][j])
    store_regs(regs)
    close_k_loop(gb, loop, b.add(k0, c32(BK)), [v for i in range(MT) for j in range(NT) for v in acc[i][j]])

    # epilogue through shared memory: accumulators -> Cs[BM][BN + 8] -> consecutive n per thread
    gb.cp_async_wait(0)
    gb.barrier()
    cells = [(accs[i][j][2 * h], accs[i][j][2 * h + 1], row, col) for i, j, h, row, col in _fragment_cells(b, cfg, wm, wn, g, t)]
    emit_epilogue(gb, cfg, M, N, m0, n0, z, s, cells, smem, epi, m_fastest, epi_run)


def emit_epilogue(gb: GpuBuilder, cfg, M: int, N: int, m0, n0, z, s, cells, smem, epi, m_fastest: bool, epi_run) -> None:
    """The tensor-core kernels' epilogue (this one's and wgmma.py's), after a barrier that frees `smem`:
    `cells`: (v0, v1, m, n) of each accumulator pair a thread holds, at block coordinates (m, n) and
    (m, n + 1). Staged through shared memory, then stored by `epi` (or `epi_run`) in coalesced order."""
    b = gb.b
    T, BM, BN = cfg.threads, cfg.BM, cfg.BN
    tid = gb.tid()
    cs = b.bitcast(smem, F32.as_pointer(smem.type.addrspace))
    if m_fastest and epi_run is not None and M % RUN == 0 and BM % RUN == 0:
        _epilogue_runs(gb, cfg, M, N, m0, n0, z, cells, cs, epi_run)
        return
    # walking n: rows padded by 8 (float2 fragment writes, conflict-free row reads); walking m: by 1
    # (column reads hit 32 banks; fragment writes as single words)
    LDC = BN + (1 if m_fastest else 8)
    for v0, v1, row, col in cells:
        p = b.gep(cs, [b.add(b.mul(row, c32(LDC)), col)], inbounds=True)
        if m_fastest:
            b.store(v0, p)
            b.store(v1, b.gep(p, [c32(1)], inbounds=True))
            continue
        v2 = ir.VectorType(F32, 2)
        vec = b.insert_element(b.insert_element(ir.Constant(v2, None), v0, c32(0)), v1, c32(1))
        b.store(vec, b.bitcast(p, v2.as_pointer(p.type.addrspace)), align=8)
    gb.barrier()
    checked = not (M % BM == 0 and N % BN == 0)
    per = BM * BN // T
    unroll = min(per, EPI_UNROLL)  # independent elements per iteration: their global loads overlap
    with gb.loop32(0, per, unroll, "ep") as e:
        for u in range(unroll):
            idx = b.add(tid, b.mul(b.add(e, c32(u)), c32(T)))
            if m_fastest:
                r, c = b.urem(idx, c32(BM)), b.udiv(idx, c32(BM))
            else:
                r, c = b.udiv(idx, c32(BN)), b.urem(idx, c32(BN))
            v = b.load(b.gep(cs, [b.add(b.mul(r, c32(LDC)), c)], inbounds=True))
            m, n = b.add(m0, r), b.add(n0, c)
            if checked:
                with b.if_then(b.and_(b.icmp_signed("<", m, c32(M)), b.icmp_signed("<", n, c32(N)))):
                    epi(gb, z, m, n, v, s)
            else:
                epi(gb, z, m, n, v, s)



def _fragment_cells(b, cfg: PipeConfig, wm, wn, g, t):
    """(i, j, h, m, n) of each accumulator pair this thread holds: MMA tile (i, j), half h (rows +8),
    the pair at block coordinates (m, n) and (m, n + 1)."""
    for i in range(cfg.WM // 16):
        for j in range(cfg.WN // 8):
            for h in range(2):
                row = b.add(b.mul(wm, c32(cfg.WM)), b.add(c32(16 * i + 8 * h), g))
                col = b.add(b.mul(wn, c32(cfg.WN)), b.add(c32(8 * j), b.shl(t, c32(1))))
                yield i, j, h, row, col


def _epilogue_runs(gb: GpuBuilder, cfg, M: int, N: int, m0, n0, z, cells, cs, epi_run):
    """The epilogue of a channels-last output: accumulators -> Cs[BN][BM + 4] (m contiguous), then each
    thread takes RUN consecutive m of one n (two 16-byte shared loads), consecutive threads consecutive
    runs, and `epi_run` moves the run's channels-last operands as vectors."""
    b = gb.b
    T, BM, BN = cfg.threads, cfg.BM, cfg.BN
    LDM = BM + 4  # fragment writes (m = g, n = 2t) land in banks 8t + g; run reads stay 16-byte aligned
    for v0, v1, row, col in cells:
        p = b.gep(cs, [b.add(b.mul(col, c32(LDM)), row)], inbounds=True)
        b.store(v0, p)
        b.store(v1, b.gep(p, [c32(LDM)], inbounds=True))
    gb.barrier()
    runs_m = BM // RUN
    per = BM * BN // RUN
    v4 = ir.VectorType(F32, 4)
    checked = not (M % BM == 0 and N % BN == 0)
    each = -(-per // T)  # runs per thread
    unroll = min(each, RUN_UNROLL)
    unroll = unroll if each % unroll == 0 else 1
    with gb.loop32(0, each, unroll, "ep") as e:
        for u in range(unroll):
            idx = b.add(gb.tid(), b.mul(b.add(e, c32(u)), c32(T)))
            r, c = b.urem(idx, c32(runs_m)), b.udiv(idx, c32(runs_m))
            m, n = b.add(m0, b.mul(r, c32(RUN))), b.add(n0, c)
            inside = b.icmp_unsigned("<", idx, c32(per)) if per % T else None
            if checked:
                ok = b.and_(b.icmp_signed("<", m, c32(M)), b.icmp_signed("<", n, c32(N)))
                inside = ok if inside is None else b.and_(inside, ok)
            with b.if_then(inside) if inside is not None else nullcontext():
                base = b.add(b.mul(c, c32(LDM)), b.mul(r, c32(RUN)))
                vals = []
                for q in range(RUN // 4):
                    p = b.gep(cs, [b.add(base, c32(4 * q))], inbounds=True)
                    vec = b.load(b.bitcast(p, v4.as_pointer(p.type.addrspace)), align=16)
                    vals += [b.extract_element(vec, c32(k)) for k in range(4)]
                epi_run(gb, z, m, n, vals)


__all__ = ["emit_epilogue", "issue", "PipeConfig", "PIPE_BIG", "PIPE_WIDE", "PIPE_MID", "PIPE_SMALL", "PIPE_CONFIGS", "emit_pipelined_mma_body", "geometry"]
