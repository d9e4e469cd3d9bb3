"""Tensor-core GEMM: the tiled GEMM of gemm.py with warp-wide `mma.sync` instead of per-thread FMAs.

    C[z][m, n] = Σ_k A(z, m, k) · B(z, k, n),   f32 accumulators

Used when both operands are float16 or bfloat16 (m16n8k16) or, with TF32
allowed (`--tf32`), float32 (m16n8k8, inputs rounded to tf32). The operands
are the same `Operand`s as the SIMT kernel's (strided views, implicit
im2col), so every GEMM-shaped op (matmul, gemm, convolution) gets it.

Shared memory holds the block's A tile as [BM][k] and its B tile as [BN][k]
(k contiguous, in 32-bit words: two halves or one tf32 per word; rows padded
to BKW + 4 words so the fragment loads of a warp hit 32 different banks).
In words of k, both MMA shapes read their fragments at the same places (see
`GpuBuilder.mma`), so one kernel serves both: each step of 8 words is one
MMA per (16-row, 8-column) tile of the warp.

The block is a grid of warps, each owning a WM×WN tile of C in registers.
K advances BKW words at a time; the next tile's global loads are issued
into registers before the current tile's MMAs (register prefetch), so their
latency hides behind the math, then stored to shared memory between two
barriers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from dsc.backends.cuda.ew import f32_to_bf16, load_elem
from dsc.dialects.tensor_types import BFLOAT16
from dsc.backends.cuda.gpubuilder import F32, I32, GpuBuilder, c32, cf

I16 = ir.IntType(16)
F16 = ir.HalfType()


@dataclass(frozen=True)
class MmaConfig:
    BM: int
    BN: int
    WM: int  # warp tile
    WN: int
    BKW: int = 32  # k words per stage: 64 halves or 32 tf32
    min_blocks: int = 2  # blocks per multiprocessor to leave registers for (latency hiding across blocks)

    @property
    def warps(self) -> int:
        return (self.BM // self.WM) * (self.BN // self.WN)

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def ldw(self) -> int:
        return self.BKW + 4

    @property
    def smem_bytes(self) -> int:
        return 4 * self.ldw * (self.BM + self.BN)


MMA_BIG = MmaConfig(128, 128, 64, 32)  # 8 warps, 64 accumulators each
MMA_WIDE = MmaConfig(64, 128, 32, 64)  # 4 warps: small M (64-channel layers), wide N
MMA_MID = MmaConfig(64, 64, 32, 32, min_blocks=4)  # 4 warps, 32 accumulators each
MMA_SMALL = MmaConfig(32, 32, 16, 16, min_blocks=4)  # 4 warps, 8 accumulators each
MMA_CONFIGS = [MMA_BIG, MMA_WIDE, MMA_MID, MMA_SMALL]


def mma_kind(a_dtype, b_dtype, tf32: bool) -> str | None:
    """The tensor-core input type for these operand dtypes, or None (SIMT)."""
    a, b = np.dtype(a_dtype), np.dtype(b_dtype)
    if a == np.float16 and b == np.float16:
        return "f16"
    if a == BFLOAT16 and b == BFLOAT16:
        return "bf16"
    if tf32 and {a, b} <= {np.dtype(np.float32), np.dtype(np.float16)}:
        return "tf32"
    return None


def stage_depth(kind: str) -> int:
    """k values per shared-memory stage of the kernel that serves `kind` (tf32 here: BKW words; 16-bit: mma_pipe's BK)."""
    return MMA_BIG.BKW if kind == "tf32" else 32


def worth_mma(M: int, N: int, K: int) -> bool:
    """Tensor cores pay once a GEMM fills at least a 16×16 tile and a few k-steps (not for GEMV-like shapes)."""
    return M >= 16 and N >= 16 and K >= 16


def choose_mma_tiling(M: int, N: int, K: int, Z: int, sms: int, configs=None):
    """(config, split-K factor): the biggest tile that keeps every multiprocessor busy, wasting little on edges.

    `configs`: big, wide, mid, small (default MMA_CONFIGS; mma_pipe's for 16-bit kinds)."""
    big, wide, mid, small = configs or MMA_CONFIGS

    def blocks(c):
        return Z * -(-M // c.BM) * -(-N // c.BN)

    def waste(c):
        return (Z * -(-M // c.BM) * c.BM * -(-N // c.BN) * c.BN) / (Z * M * N)

    for c, need in ((big, 2 * sms), (wide, 2 * sms), (mid, sms)):
        if blocks(c) >= need and waste(c) < 1.34:  # 96 rows in 128 (MobileNet's expansions) still take a big tile
            # a long K on too few blocks to fill every multiprocessor's slots (ResNet's last 3x3
            # convolutions at batch 32: 200 blocks for 528 slots): split K, each split at least 512 deep
            split = 1
            while blocks(c) * split * 2 <= sms * c.min_blocks and K >= split * 2 * 512:
                split *= 2
            return c, split
    split = 1
    while blocks(small) * split < sms and K >= split * 2 * 64 and split < 16:
        split *= 2
    return small, split


def block_tile(gb: GpuBuilder, BM: int, BN: int, BK: int, K: int, split: int, A, B):
    """Where this block works: (m0, n0, z, split index or None, k_lo, k_hi); sets the operands up for batch z.

    Grid (ceil(N/BN), ceil(M/BM), Z*split); with split-K, split s covers a
    whole number of BK-deep stages of K."""
    b = gb.b
    n0 = b.mul(gb.ctaid("x"), c32(BN))
    m0 = b.mul(gb.ctaid("y"), c32(BM))
    zz = gb.ctaid("z")
    if split > 1:
        z, s = b.udiv(zz, c32(split)), b.urem(zz, c32(split))
        kc = -(-K // split)
        kc = -(-kc // BK) * BK
        k_lo = b.mul(s, c32(kc))
        k_hi_raw = b.add(k_lo, c32(kc))
        k_hi = b.select(b.icmp_unsigned("<", k_hi_raw, c32(K)), k_hi_raw, c32(K))
    else:
        z, s, k_lo, k_hi = zz, None, c32(0), c32(K)
    A.setup(gb, z)
    B.setup(gb, z)
    return m0, n0, z, s, k_lo, k_hi


@dataclass
class KLoop:
    """The k loop of a tiled GEMM kernel: `k0` (the stage's first k) and the accumulators are phis."""

    k0: object
    accs: list
    head: object
    done: object


def open_k_loop(gb: GpuBuilder, k_lo, k_hi, n_acc: int) -> KLoop:
    """for (k0 = k_lo; k0 < k_hi; ...) with n_acc f32 accumulators starting at 0; the builder is left in the body."""
    b = gb.b
    fn, pre = b.function, b.block
    head, body, done = (fn.append_basic_block(f"k.{n}") for n in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    k0 = b.phi(I32, "k0")
    k0.add_incoming(k_lo, pre)
    accs = [b.phi(F32, f"acc{i}") for i in range(n_acc)]
    for a in accs:
        a.add_incoming(cf(0.0), pre)
    b.cbranch(b.icmp_signed("<", k0, k_hi), body, done)
    b.position_at_end(body)
    return KLoop(k0, accs, head, done)


def close_k_loop(gb: GpuBuilder, loop: KLoop, k_next, accs: list) -> None:
    """End of the body: next k0 and accumulators; the builder is left after the loop."""
    b = gb.b
    end = b.block
    loop.k0.add_incoming(k_next, end)
    for phi, v in zip(loop.accs, accs):
        phi.add_incoming(v, end)
    b.branch(loop.head)
    b.position_at_end(loop.done)


def emit_mma_body(gb: GpuBuilder, cfg: MmaConfig, M: int, N: int, K: int, A, B, epi, split: int, nz: int, kind: str):
    """The body of a tensor-core GEMM kernel; grid = (ceil(N/BN), ceil(M/BM), nz*split), cfg.threads threads."""
    b = gb.b
    T = cfg.threads
    BM, BN, WM, WN, BKW, LDW = cfg.BM, cfg.BN, cfg.WM, cfg.WN, cfg.BKW, cfg.ldw
    kpw = 1 if kind == "tf32" else 2  # k elements per 32-bit word
    half = {"f16": F16, "bf16": I16}.get(kind)  # the shared-memory element of a 16-bit kind
    BK = BKW * kpw
    MT, NT = WM // 16, WN // 8  # MMA tiles per warp
    tid = gb.tid()
    lane = b.and_(tid, c32(31))
    warp = b.lshr(tid, c32(5))
    wcols = BN // WN
    wm = b.udiv(warp, c32(wcols))
    wn = b.urem(warp, c32(wcols))
    g = b.lshr(lane, c32(2))
    t = b.and_(lane, c32(3))
    m0, n0, z, s, k_lo, k_hi = block_tile(gb, BM, BN, BK, K, split, A, B)
    As = gb.shared(I32, BM * LDW, "As")
    Bs = gb.shared(I32, BN * LDW, "Bs")

    def element(v):
        """A loaded element (f32 register) in its shared-memory form: half, bfloat16 bits or tf32 bits."""
        if kind == "f16":
            return b.fptrunc(v, F16) if v.type != F16 else v
        if kind == "bf16":
            return f32_to_bf16(gb, v)
        return gb.to_tf32(v)

    def load_tile(op, rows: int, rows_limit, r0, k0, k_major_rows: bool):
        """This thread's pieces of a rows×BK tile of `op` at (r0, k0): [(row, k, value, along_k)].

        `k_major_rows`: the operand is indexed (row, k) (A) rather than (k, row) (B).
        Consecutive threads walk the operand's contiguous index, for coalescing;
        where the operand allows it (`vectors_ok`), each piece is a 16-byte
        vector of consecutive elements along that index, else one element.
        """
        k_contig = (op.contig == 1) == k_major_rows
        extent = K if k_contig else (M if k_major_rows else N)
        mem = np.dtype(op.dtype)
        vec = 16 // mem.itemsize
        same = mem == {"f16": np.dtype(np.float16), "bf16": BFLOAT16, "tf32": np.dtype(np.float32)}[kind]
        if not (same and (BK if k_contig else rows) % vec == 0 and (rows * BK) % (vec * T) == 0 and op.vectors_ok(vec, extent)):
            vec = 1
        out = []
        per = rows * BK // (T * vec)
        runs = (BK if k_contig else rows) // vec  # pieces along the contiguous index
        pairs = vec > 1 and not k_contig and runs % 2 == 0
        for e in range(per):
            idx = b.add(tid, c32(e * T))
            if pairs:
                # vectors along rows (B along n): lane bit 0 picks one of two neighbouring vectors (one
                # 32-byte sector of global memory), the next lane bits walk k. Each vector is stored
                # as a column of the [row][k] tile; rows 8 apart fall in the same bank, so lanes walking
                # rows would collide 16 ways, lanes walking k only 2 ways.
                lo, rest = b.and_(idx, c32(1)), b.lshr(idx, c32(1))
                kk = b.urem(rest, c32(BK))
                rr = b.mul(b.add(b.shl(b.udiv(rest, c32(BK)), c32(1)), lo), c32(vec))
            else:
                q, p = b.urem(idx, c32(runs)), b.udiv(idx, c32(runs))
                q = b.mul(q, c32(vec)) if vec > 1 else q
                kk, rr = (q, p) if k_contig else (p, q)
            r = b.add(r0, rr)
            k = b.add(k0, kk)
            ok = b.and_(b.icmp_signed("<", r, rows_limit), b.icmp_signed("<", k, k_hi))
            off, valid = op.addr(gb, r, k) if k_major_rows else op.stage_addr(gb, k0, kk, r)
            if valid is not None:
                ok = b.and_(ok, valid)
            safe = b.select(ok, off, c32(0))
            if vec > 1:
                vt = ir.VectorType(half or F32, vec)
                p_ = b.gep(op.ptr, [safe], inbounds=True)
                v = b.load(b.bitcast(p_, vt.as_pointer(p_.type.addrspace)), align=16)
                v = b.select(ok, v, ir.Constant(vt, None))
                if kind == "tf32":
                    words = ir.Constant(ir.VectorType(I32, vec), None)
                    for i in range(vec):
                        words = b.insert_element(words, gb.to_tf32(b.extract_element(v, c32(i))), c32(i))
                    v = words
                out.append((rr, kk, v, k_contig))
                continue
            v = load_elem(gb, op.ptr, safe, op.dtype)
            if v.type != F32 and v.type != F16:
                v = b.sitofp(v, F32) if isinstance(v.type, ir.IntType) else b.fptrunc(v, F32)
            v = b.select(ok, v, cf(0.0) if v.type == F32 else ir.Constant(F16, 0.0))
            out.append((rr, kk, element(v), True))
        return out

    def store_tile(smem, pieces):
        base = b.bitcast(smem, half.as_pointer(smem.type.addrspace)) if half else smem
        for rr, kk, v, along_k in pieces:
            idx = b.add(b.mul(rr, c32(LDW * kpw)), kk)
            if not isinstance(v.type, ir.VectorType):
                b.store(v, b.gep(base, [idx], inbounds=True))
            elif along_k:  # consecutive k of one row: one 16-byte store
                p_ = b.gep(base, [idx], inbounds=True)
                b.store(v, b.bitcast(p_, v.type.as_pointer(p_.type.addrspace)), align=16)
            else:  # consecutive rows at one k: one element per row
                for i in range(v.type.count):
                    b.store(b.extract_element(v, c32(i)), b.gep(base, [b.add(idx, c32(i * LDW * kpw))], inbounds=True))

    def load_both(k0):
        return load_tile(A, BM, c32(M), m0, k0, True), load_tile(B, BN, c32(N), n0, k0, False)

    a_regs, b_regs = load_both(k_lo)
    store_tile(As, a_regs)
    store_tile(Bs, b_regs)
    gb.barrier()
    loop = open_k_loop(gb, k_lo, k_hi, MT * NT * 4)
    k0 = loop.k0
    accs = [[loop.accs[(i * NT + j) * 4 : (i * NT + j) * 4 + 4] for j in range(NT)] for i in range(MT)]
    nxt = b.add(k0, c32(BK))
    a_next, b_next = load_both(nxt)  # masked past k_hi: zeros, never stored past the end of use
    acc = [[list(accs[i][j]) for j in range(NT)] for i in range(MT)]
    arow = [b.mul(b.add(b.mul(wm, c32(WM)), b.add(c32(16 * i), g)), c32(LDW)) for i in range(MT)]
    bcol = [b.mul(b.add(b.mul(wn, c32(WN)), b.add(c32(8 * j), g)), c32(LDW)) for j in range(NT)]

    def word(smem, base, off):
        return b.load(b.gep(smem, [b.add(base, b.add(t, c32(off)))], inbounds=True))

    for ks in range(BKW // 8):
        w0 = 8 * ks
        afr = [[word(As, arow[i], w0), word(As, arow[i], 8 * LDW + w0), word(As, arow[i], w0 + 4), word(As, arow[i], 8 * LDW + w0 + 4)] for i in range(MT)]
        bfr = [[word(Bs, bcol[j], w0), word(Bs, bcol[j], w0 + 4)] for j in range(NT)]
        for i in range(MT):
            for j in range(NT):
                acc[i][j] = gb.mma(kind, afr[i], bfr[j], acc[i][j])
    gb.barrier()
    store_tile(As, a_next)
    store_tile(Bs, b_next)
    gb.barrier()
    close_k_loop(gb, loop, nxt, [v for i in range(MT) for j in range(NT) for v in acc[i][j]])

    def epilogue(checked: bool):
        # rows and columns once (unchecked, the whole epilogue is one block, so the
        # epilogue's per-row and per-column values — bias, coordinates — are computed once)
        ms = [[b.add(m0, b.add(b.mul(wm, c32(WM)), b.add(c32(16 * i + 8 * h), g))) for h in range(2)] for i in range(MT)]
        ns = [[b.add(n0, b.add(b.mul(wn, c32(WN)), b.add(c32(8 * j + e), b.shl(t, c32(1))))) for e in range(2)] for j in range(NT)]
        for i in range(MT):
            for j in range(NT):
                for q in range(4):
                    m, n = ms[i][q >> 1], ns[j][q & 1]
                    if not checked:
                        epi(gb, z, m, n, accs[i][j][q], s)
                        continue
                    with b.if_then(b.and_(b.icmp_signed("<", m, c32(M)), b.icmp_signed("<", n, c32(N)))):
                        epi(gb, z, m, n, accs[i][j][q], s)

    if M % BM == 0 and N % BN == 0:
        epilogue(False)
    else:
        full = b.and_(b.icmp_signed("<=", b.add(m0, c32(BM)), c32(M)), b.icmp_signed("<=", b.add(n0, c32(BN)), c32(N)))
        with b.if_else(full) as (whole, edge):
            with whole:
                epilogue(False)
            with edge:
                epilogue(True)


__all__ = ["MmaConfig", "MMA_CONFIGS", "mma_kind", "worth_mma", "choose_mma_tiling", "emit_mma_body"]
