"""What the tensor-core GEMM (mma_pipe.py) and the SIMT GEMM (gemm.py) share: the choice of kernel and
tiles, the block's place in the grid (split-K), the k loop's skeleton.

Tensor cores serve float16 and bfloat16 operands (m16n8k16) and, with TF32
allowed (`--tf32`), float32 (m16n8k8, inputs rounded to tf32), f32
accumulation, for every GEMM-shaped op (matmul, gemm, convolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from dsc.dialects.tensor_types import BFLOAT16
from dsc.backends.cuda.gpubuilder import F32, I32, GpuBuilder, c32, cf

I16 = ir.IntType(16)
F16 = ir.HalfType()
ROW_BYTES = 64  # bytes of k per shared-memory row and stage of the tensor-core kernel: 32 16-bit values or 16 tf32
DEEP_ROW_BYTES = 128  # twice that, where K and the target's shared memory allow (see row_bytes)
DEEP_SMEM = 200 * 1024  # targets that keep two deep big-tile blocks (3 x 36 KiB) per multiprocessor: sm_90 (measured there)


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


def stage_depth(kind: str, row_bytes: int = ROW_BYTES) -> int:
    """k values per shared-memory stage of the tensor-core kernel that serves `kind` (mma_pipe's Geometry.BK)."""
    return row_bytes // (4 if kind == "tf32" else 2)


def row_bytes(kind: str, K: int, smem_limit: int, channels: int | None = None) -> int:
    """Bytes of k per shared-memory row and stage for a tensor-core GEMM of depth K: 128 when K is a
    multiple of that stage (at least two of them) and the target grants the shared memory, else 64.
    `channels`: a convolution whose stages must each lie within one kernel position (tap-major k).

    H200, ResNet-50 fp16 batch 32: 128-byte rows make every K >= 128 layer 3-14% faster (half the
    barriers per MMA), 1.93 -> 1.79 ms in all; K = 64 is even, the stem (K = 200) 10% slower."""
    deep = stage_depth(kind, DEEP_ROW_BYTES)
    if smem_limit < DEEP_SMEM or K < 2 * deep or K % deep or (channels is not None and channels % deep):
        return ROW_BYTES
    return DEEP_ROW_BYTES


def worth_mma(M: int, N: int, K: int) -> bool:
    """Tensor cores pay once a GEMM fills at least a 16×16 tile and a few k-steps (not for GEMV-like shapes)."""
    return M >= 16 and N >= 16 and K >= 16


def choose_mma_tiling(M: int, N: int, K: int, Z: int, sms: int, configs):
    """(config, split-K factor): the biggest tile that keeps every multiprocessor busy, wasting little on edges.

    `configs`: big, wide, mid, small (mma_pipe.PIPE_CONFIGS)."""
    big, wide, mid, small = configs

    def blocks(c):
        return Z * -(-M // c.BM) * -(-N // c.BN)

    def waste(c):
        return (Z * -(-M // c.BM) * c.BM * -(-N // c.BN) * c.BN) / (Z * M * N)

    # one block per multiprocessor is enough for the big tiles (H200, ResNet-50 fp16 batch 32: 2.44 -> 2.33 ms
    # against two); splitting K for long-K layers on few blocks was measured slower there (2.38 vs 2.44 without)
    for c in (big, wide, mid):
        if blocks(c) >= sms and waste(c) < 1.34:  # 96 rows in 128 (MobileNet's expansions) still take a big tile
            return c, 1
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


__all__ = ["KLoop", "block_tile", "choose_mma_tiling", "close_k_loop", "mma_kind", "open_k_loop", "row_bytes", "stage_depth", "worth_mma"]
