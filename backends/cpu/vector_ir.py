"""Vector IR helpers shared by the CPU kernel emitters (GEMM, conv, Winograd, channel-lanes conv).

Index arithmetic that folds Python ints (`add`, `mul`, `gep`), masked and
gathered/scattered vector memory access (`load_v`, `store_v`, `gather_v`,
`scatter_v`: llvm.masked.* intrinsics, so tails need no scalar loops),
per-thread stack buffers in the entry block (`entry_alloca`), a loop that
carries values in registers (`carried_loop`: the micro-kernel's
accumulators), code variants selected at run time (`branch_variants`), and
denormals flushed while a step runs (`FlushDenormals`).
"""

from __future__ import annotations

import hashlib

import numpy as np
from dsc.backends.cpu.irb import I1, I32, I64, KernelBuilder, const_i64, vec
from llvmlite import ir


def lanes_of(ctx) -> int:
    """f32 lanes per vector for this target (16 with AVX-512, 8 with AVX2, 4 with SSE/NEON)."""
    return max(4, int(ctx.target.vector_width))


def c64(v) -> ir.Value:
    return const_i64(v) if isinstance(v, int) else v


def add(kb: KernelBuilder, a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(b, int) and b == 0:
        return a
    if isinstance(a, int) and a == 0:
        return b
    return kb.b.add(c64(a), c64(b))


def mul(kb: KernelBuilder, a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if isinstance(b, int):
        if b == 0:
            return 0
        if b == 1:
            return a
    if isinstance(a, int):
        if a == 0:
            return 0
        if a == 1:
            return b
    return kb.b.mul(c64(a), c64(b))


def gep(kb: KernelBuilder, ptr, idx, inbounds: bool = True):
    """ptr + idx elements. inbounds=False where the address may lie outside the buffer (masked lanes)."""
    if isinstance(idx, int) and idx == 0:
        return ptr
    return kb.b.gep(ptr, [c64(idx)], inbounds=inbounds)


def entry_alloca(kb: KernelBuilder, elem, count: int, align: int = 64, name: str = "buf"):
    """A stack buffer allocated in the function's entry block (one per thread: every thread runs the step)."""
    fn = kb.b.function
    entry = fn.entry_basic_block
    eb = ir.IRBuilder(entry)
    eb.position_at_start(entry)
    p = eb.alloca(ir.ArrayType(elem, count), name=name)
    p.align = align
    q = eb.bitcast(p, elem.as_pointer())
    if kb.b.block is entry:  # the emitter's builder inserts after what we put in front of it
        kb.b._anchor += 2
    return q


def _declare(kb: KernelBuilder, name: str, ret, args):
    m = kb.module
    return m.globals.get(name) or ir.Function(m, ir.FunctionType(ret, args), name)


def mask_type(w: int):
    return vec(w, I1)


def const_mask(w: int, n: int):
    """Lanes [0, n) on."""
    return ir.Constant(mask_type(w), [1 if i < n else 0 for i in range(w)])


def zero_vec(w: int):
    return ir.Constant(vec(w), [0.0] * w)


def load_v(kb: KernelBuilder, ptr, idx, w: int, mask=None, inbounds: bool = True):
    """W floats from ptr[idx]; with a mask, off lanes read as 0 and are not accessed."""
    if mask is None:
        return kb.load_vec(ptr, idx, w) if inbounds else kb.b.load(kb.b.bitcast(gep(kb, ptr, idx, False), vec(w).as_pointer()), align=4)
    vt = vec(w)
    fn = _declare(kb, f"llvm.masked.load.v{w}f32.p0", vt, [vt.as_pointer(), I32, mask_type(w), vt])
    p = kb.b.bitcast(gep(kb, ptr, idx, inbounds), vt.as_pointer())
    return kb.b.call(fn, [p, ir.Constant(I32, 4), mask, zero_vec(w)])


def prefetch(kb: KernelBuilder, ptr, idx) -> None:
    """Prefetch the cache line of ptr[idx] into L1 (a hint: never faults)."""
    p = kb.b.bitcast(gep(kb, ptr, idx, False), ir.IntType(8).as_pointer())
    fn = _declare(kb, "llvm.prefetch.p0", ir.VoidType(), [p.type, I32, I32, I32])
    kb.b.call(fn, [p, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])


def store_v(kb: KernelBuilder, value, ptr, idx, mask=None):
    w = value.type.count
    if mask is None:
        kb.store_vec(value, ptr, idx)
        return
    vt = vec(w)
    fn = _declare(kb, f"llvm.masked.store.v{w}f32.p0", ir.VoidType(), [vt, vt.as_pointer(), I32, mask_type(w)])
    kb.b.call(fn, [value, kb.b.bitcast(gep(kb, ptr, idx), vt.as_pointer()), ir.Constant(I32, 4), mask])


def _vector_gep(kb: KernelBuilder, ptr, idx_vec):
    """A vector of pointers &ptr[idx_vec[l]] (llvmlite's builder has no vector GEP)."""
    instr = ir.instructions.GEPInstr(kb.b.block, ptr, [idx_vec], False, "", source_etype=ptr.type.pointee)
    instr.type = vec(idx_vec.type.count, ptr.type)
    kb.b._insert(instr)
    return instr


def gather_v(kb: KernelBuilder, ptr, idx_vec, mask):
    """ptr[idx_vec[l]] for the lanes of `mask` (i32 indices), 0 elsewhere."""
    w = idx_vec.type.count
    ptrs = _vector_gep(kb, ptr, idx_vec)
    vt = vec(w)
    fn = _declare(kb, f"llvm.masked.gather.v{w}f32.v{w}p0", vt, [ptrs.type, I32, mask_type(w), vt])
    return kb.b.call(fn, [ptrs, ir.Constant(I32, 4), mask, zero_vec(w)])


def scatter_v(kb: KernelBuilder, value, ptr, idx_vec, mask=None) -> None:
    """ptr[idx_vec[l]] = value[l] for the lanes of `mask` (i32 indices; all lanes without one)."""
    w = idx_vec.type.count
    ptrs = _vector_gep(kb, ptr, idx_vec)
    vt = vec(w)
    fn = _declare(kb, f"llvm.masked.scatter.v{w}f32.v{w}p0", ir.VoidType(), [vt, ptrs.type, I32, mask_type(w)])
    kb.b.call(fn, [value, ptrs, ir.Constant(I32, 4), mask if mask is not None else const_mask(w, w)])


def iota(w: int, scale: int = 1, elem=I32):
    return ir.Constant(vec(w, elem), [i * scale for i in range(w)])


def splat_i32(kb: KernelBuilder, v, w: int):
    """An i32 splat of an i64 value or int."""
    if isinstance(v, int):
        return ir.Constant(vec(w, I32), [v] * w)
    return kb.splat(kb.b.trunc(v, I32), w)


def over_k_blocks(kb: KernelBuilder, nkb: int, cb: int, cg: int, kblock) -> None:
    """kblock(c0, channels, first, last) for each block of `cb` of the `cg` input channels of a convolution
    (one call with constants when nkb == 1)."""
    b = kb.b
    if nkb == 1:
        kblock(0, cg, True, True)
        return
    with kb.loop(0, nkb, 1, "kblk") as kbi:
        c0 = b.mul(kbi, const_i64(cb))
        kblock(c0, kb.smin(const_i64(cb), b.sub(const_i64(cg), c0)), b.icmp_unsigned("==", kbi, const_i64(0)), b.icmp_unsigned("==", kbi, const_i64(nkb - 1)))


def carried_loop(kb: KernelBuilder, lo, hi, init: list, body, step: int = 1, name: str = "k") -> list:
    """for (i = lo; i < hi; i += step) vals = body(i, vals); returns the values after the loop."""
    b = kb.b
    fn = b.function
    pre = b.block
    head = fn.append_basic_block(f"{name}.head")
    blk = fn.append_basic_block(f"{name}.body")
    done = fn.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(c64(lo), pre)
    phis = []
    for v in init:
        p = b.phi(v.type)
        p.add_incoming(v, pre)
        phis.append(p)
    b.cbranch(b.icmp_signed("<", i, c64(hi)), blk, done)
    b.position_at_end(blk)
    new = body(i, list(phis))
    latch = b.block
    i.add_incoming(b.add(i, const_i64(step), flags=["nsw"]), latch)
    for p, v in zip(phis, new):
        p.add_incoming(v, latch)
    b.branch(head)
    b.position_at_end(done)
    return phis


class FlushDenormals:
    """x86: treat denormal inputs and results as zero (MXCSR DAZ | FTZ) while the step runs.

    One denormal operand costs an FMA a microcode assist (~100 cycles): softmax
    probabilities that underflow, fed to probs @ V, ran 60x slower. The caller's
    MXCSR is restored at the end of the step. Other architectures: no-op (AArch64
    handles denormals at full speed).
    """

    def __init__(self, kb: KernelBuilder, ctx):
        self.kb = kb
        self.on = ctx.target.arch in ("x86_64", "i686", "i386")

    def _call(self, name, p):
        i8p = ir.IntType(8).as_pointer()
        fn = _declare(self.kb, name, ir.VoidType(), [i8p])
        self.kb.b.call(fn, [self.kb.b.bitcast(p, i8p)])

    def __enter__(self):
        if self.on:
            b = self.kb.b
            self.saved = entry_alloca(self.kb, I32, 1, align=4, name="mxcsr")
            self._call("llvm.x86.sse.stmxcsr", self.saved)
            new = entry_alloca(self.kb, I32, 1, align=4, name="mxcsr.ftz")
            b.store(b.or_(b.load(self.saved), ir.Constant(I32, 0x8040)), new)
            self._call("llvm.x86.sse.ldmxcsr", new)
        return self

    def __exit__(self, *exc):
        if self.on and exc[0] is None:
            self._call("llvm.x86.sse.ldmxcsr", self.saved)
        return False


def branch_variants(kb: KernelBuilder, cases: list) -> None:
    """cases: [(cond or None, emit_fn)], tried in order; the last one is the default (cond None)."""
    b = kb.b
    if len(cases) == 1:
        cases[0][1]()
        return
    cond, fn = cases[0]
    with b.if_else(cond) as (then, otherwise):
        with then:
            fn()
        with otherwise:
            branch_variants(kb, cases[1:])


def content_hash(*parts) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else str(p).encode())
    return h.hexdigest()


__all__ = [
    "over_k_blocks",
    "FlushDenormals",
    "add",
    "branch_variants",
    "c64",
    "carried_loop",
    "const_mask",
    "content_hash",
    "entry_alloca",
    "gather_v",
    "gep",
    "iota",
    "lanes_of",
    "load_v",
    "mask_type",
    "mul",
    "prefetch",
    "scatter_v",
    "splat_i32",
    "store_v",
    "zero_vec",
]
