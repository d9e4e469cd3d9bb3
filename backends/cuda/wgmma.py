"""Hopper tensor-core GEMM (sm_90a): `wgmma.mma_async`, both operands read from swizzled shared memory.

The GEMM of mma_pipe.py (same operands, block tiles, grid, split-K and
epilogue), its math done by warpgroups (4 warps, 128 threads) instead of
warps: one `wgmma.mma_async.m64nNk16` (k8 for tf32) multiplies a 64-row
slice of the block's A tile by N columns of its B tile, reading both from
shared memory through matrix descriptors, no fragments in registers.

* Shared memory: `stages` k-tiles; each operand tile [row][k] in rows of
  exactly W = 128 bytes (BK = 64 16-bit values; W = 64 where mma.row_bytes
  says so), each 16-byte chunk c of row r stored at chunk c ^ (r % 8)
  (128-byte rows; (r / 2) % 4 for 64-byte rows): wgmma's K-major swizzled
  layout (descriptor layout 1 / 2, stride between 8-row groups 8 W). Tiles
  start at multiples of 1024 bytes, where the swizzle pattern starts.
* Both operands must be contiguous along k and copied by 16-byte cp.async
  (weights, channels-last im2col, row-major activations); others go to
  mma_pipe.py (`emit_wgmma_body` returns False before emitting anything).
* The loop (S stages, L = S - 1 - INFLIGHT tiles loaded ahead, one barrier
  per k-tile):

      prologue: tiles 0 .. L-1 in flight
      for kt: wait for tile kt; fence.proxy.async; barrier
              issue tile kt+L (into the buffer of tile kt-1-INFLIGHT, whose wgmmas every warpgroup has waited for)
              wgmma.fence; the k-steps of tile kt; commit; wait until INFLIGHT batches remain

  After the loop: wait for all, then the accumulators (laid out as
  mma.sync's m16n8 fragments, see GpuBuilder.wgmma) go through
  mma_pipe.emit_epilogue.
"""

from __future__ import annotations

from dsc.backends.cuda.gpubuilder import I8, I32, I64, GpuBuilder, c32
from dsc.backends.cuda.mma import block_tile, close_k_loop, open_k_loop
from dsc.backends.cuda.mma_pipe import F16, I16, PipeConfig, _Tile, emit_epilogue, geometry, issue
from llvmlite import ir

# tf32: the tensor cores read the raw f32 bits that cp.async brought (truncated to tf32; mma_pipe rounds them)
KINDS = ("f16", "bf16", "tf32")
LAYOUT = {128: 1, 64: 2, 32: 3}  # descriptor layout code of a swizzle width in bytes
# H200, ResNet-50 fp16 batch 32 (CUDA-graph replay): 3 stages, waiting for each k-tile's wgmmas before the next
# tile's (two tiles' copies in flight, two 128x128 blocks per multiprocessor) 1.238 ms; 4 stages with one
# batch in flight 1.317, 4 / 0 1.387, 5 / 1 1.377; mma.sync 1.740
INFLIGHT = 0  # wgmma batches left running while the next k-tile's copies are issued
STAGES = 3


def plan(cfg: PipeConfig) -> tuple[int, int, int] | None:
    """(warpgroups along m, along n, n per wgmma) for a block tile of cfg's shape and threads, or None."""
    wgs = cfg.threads // 128
    if cfg.threads % 128 or cfg.BM % 64 or wgs % (cfg.BM // 64):
        return None
    wg_m = cfg.BM // 64
    wg_n = wgs // wg_m
    wn = cfg.BN // wg_n
    if cfg.BN % wg_n or wn % 8 or wn > 256:
        return None
    return wg_m, wg_n, wn


def smem_bytes(cfg: PipeConfig, row_bytes: int, stages: int | None = None) -> int:
    stages = STAGES if stages is None else stages
    return max(stages * (cfg.BM + cfg.BN) * row_bytes, 4 * cfg.BM * (cfg.BN + 8), 4 * cfg.BN * (cfg.BM + 4))


def emit_wgmma_body(gb: GpuBuilder, cfg: PipeConfig, M: int, N: int, K: int, A, B, epi, split: int, nz: int, kind: str, m_fastest: bool, epi_run, row_bytes: int, smem_limit: int, stages: int | None = None, inflight: int | None = None) -> bool:
    """The body of mma_pipe's kernel (same grid, threads and arguments) on wgmma; False, with nothing
    emitted, where the operands or tile do not suit it (then mma_pipe.emit_pipelined_mma_body serves)."""
    stages = STAGES if stages is None else stages
    inflight = INFLIGHT if inflight is None else inflight
    p = plan(cfg)
    geo = geometry(kind, row_bytes)
    T = cfg.threads
    if kind not in KINDS or p is None or row_bytes not in LAYOUT or stages - 1 - inflight < 1 or smem_bytes(cfg, row_bytes, stages) > smem_limit:
        return False
    ta = _Tile(A, cfg.BM, M, True, kind, T, M, K, geo, swizzle=True)
    tb = _Tile(B, cfg.BN, N, False, kind, T, N, K, geo, swizzle=True)
    if not (ta.swizzle and tb.swizzle and ta.vec == geo.vec and tb.vec == geo.vec):
        return False
    wg_m, wg_n, WN = p
    b = gb.b
    BM, BN, BK, RB = cfg.BM, cfg.BN, geo.BK, row_bytes
    KS = 32 // geo.eb  # k per wgmma (32 bytes of k)
    S, L = stages, stages - 1 - inflight
    elem = {"f16": F16, "bf16": I16, "tf32": I32}[kind]
    tid = gb.tid()
    lane = b.and_(tid, c32(31))
    g, t = b.lshr(lane, c32(2)), b.and_(lane, c32(3))
    w = b.and_(b.lshr(tid, c32(5)), c32(3))  # warp in its warpgroup
    wg = b.lshr(tid, c32(7))
    wgm, wgn = (b.udiv(wg, c32(wg_n)), b.urem(wg, c32(wg_n))) if wg_n > 1 else (wg, c32(0))
    m0, n0, z, s, k_lo, k_hi = block_tile(gb, BM, BN, BK, K, split, A, B)
    smem = gb.shared(I8, smem_bytes(cfg, RB, S), "wgmma", align=1024)
    hs = b.bitcast(smem, elem.as_pointer(smem.type.addrspace))
    a_bytes, stage_bytes = BM * RB, (BM + BN) * RB
    layout = LAYOUT[RB]
    # descriptor bits past the start address: LBO 16 bytes (unused by K-major swizzled tiles), SBO one 8-row group
    desc_hi = ir.Constant(I64, (1 << 16) | ((8 * RB >> 4) << 32) | (layout << 62))
    smem_base = gb.smem_offset(hs)

    def issue_stage(stage, k0):
        base = b.mul(stage, c32(stage_bytes // geo.eb))
        regs = issue(gb, ta, m0, k0, k_hi, hs, base, kind) + issue(gb, tb, n0, k0, k_hi, hs, b.add(base, c32(a_bytes // geo.eb)), kind)
        assert not regs  # every piece is a cp.async (checked above)
        gb.cp_async_commit()

    def desc(addr):
        return b.or_(b.zext(b.and_(b.lshr(addr, c32(4)), c32(0x3FFF)), I64), desc_hi)

    for st in range(L):
        issue_stage(c32(st), b.add(k_lo, c32(st * BK)))
    loop = open_k_loop(gb, k_lo, k_hi, WN // 2)
    k0 = loop.k0
    kt = b.sdiv(b.sub(k0, k_lo), c32(BK))
    cur = b.urem(kt, c32(S))
    gb.cp_async_wait(L - 1)
    gb.fence_proxy_async()
    gb.barrier()
    issue_stage(b.urem(b.add(kt, c32(L)), c32(S)), b.add(k0, c32(L * BK)))
    a_addr = b.add(b.add(smem_base, b.mul(cur, c32(stage_bytes))), b.mul(wgm, c32(64 * RB)))
    b_addr = b.add(b.add(smem_base, b.add(b.mul(cur, c32(stage_bytes)), c32(a_bytes))), b.mul(wgn, c32(WN * RB)))
    acc = list(loop.accs)
    gb.wgmma_fence()
    for ks in range(BK // KS):
        acc = gb.wgmma(kind, WN, desc(b.add(a_addr, c32(32 * ks))), desc(b.add(b_addr, c32(32 * ks))), acc)
    gb.wgmma_commit()
    if inflight == 0:
        acc = gb.wgmma_wait(0, acc)
    else:
        gb.wgmma_wait(inflight, [])
    close_k_loop(gb, loop, b.add(k0, c32(BK)), acc)
    accs = gb.wgmma_wait(0, loop.accs)
    gb.cp_async_wait(0)
    gb.barrier()
    cells = []
    for j in range(WN // 8):
        for h in range(2):
            row = b.add(b.mul(wgm, c32(64)), b.add(b.shl(w, c32(4)), b.add(c32(8 * h), g)))
            col = b.add(b.mul(wgn, c32(WN)), b.add(c32(8 * j), b.shl(t, c32(1))))
            cells.append((accs[4 * j + 2 * h], accs[4 * j + 2 * h + 1], row, col))
    emit_epilogue(gb, cfg, M, N, m0, n0, z, s, cells, smem, epi, m_fastest, epi_run)
    return True


__all__ = ["KINDS", "emit_wgmma_body", "plan", "smem_bytes"]
