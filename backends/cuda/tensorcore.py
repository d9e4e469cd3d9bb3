"""GpuBuilder's tensor-core and asynchronous-copy operations (a mixin), for both machines (gpubuilder.py):
`mma.sync` fragments and `ldmatrix` (mma_pipe.py), Hopper's `wgmma` with its fences (wgmma.py),
`cp.async`. In "nvptx" mode inline PTX; in "emu" mode their semantics on dsc's GPU emulator: an MMA
through the warp's exchange area, a wgmma computed by each thread from shared memory through the
descriptors, a cp.async as a plain copy.
"""

from __future__ import annotations

from llvmlite import ir

from dsc.backends.cpu.irb import F32, I32, I64, VOID

CTX_XCHG = 15  # emu: ctx slot of the exchange area's address (see gpubuilder's CTX_* slots)


def c32(v: int) -> ir.Constant:
    return ir.Constant(I32, int(v))


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


class TensorCoreOps:
    """Mixed into GpuBuilder: uses its `b`, `mode`, `module`, `fn`, `ctx`, `tid()`, `fma()`, `loop32()`,
    `smem_offset()`, `_warp_barrier()` and `_sreg_cache`."""

    # ------------------------------------------------------------ tensor cores
    def mma(self, kind: str, a: list, b: list, c: list) -> list:
        """One warp-wide tensor-core MMA, D = A·B + C, f32 accumulators; every lane of the warp must call.

        kind "f16" / "bf16": m16n8k16 with f16 / bf16 inputs; "tf32": m16n8k8 with tf32 inputs.
        Operands are 32-bit registers (`a`: 4, `b`: 2, each a pair of halves
        for f16, one tf32 for tf32) in PTX's fragment layout, which in words
        of k is the same for both kinds (g = lane / 4, t = lane % 4):
        a = [A(g, t), A(g+8, t), A(g, t+4), A(g+8, t+4)], b = [B(t, g), B(t+4, g)],
        c and the result = [C(g, 2t), C(g, 2t+1), C(g+8, 2t), C(g+8, 2t+1)].
        """
        if self.mode == "nvptx":
            shape, ab = {"f16": ("m16n8k16", "f16.f16"), "bf16": ("m16n8k16", "bf16.bf16"), "tf32": ("m16n8k8", "tf32.tf32")}[kind]
            asm = f"mma.sync.aligned.{shape}.row.col.f32.{ab}.f32 {{$0,$1,$2,$3}}, {{$4,$5,$6,$7}}, {{$8,$9}}, {{$10,$11,$12,$13}};"
            ret = ir.LiteralStructType([F32] * 4)
            fty = ir.FunctionType(ret, [I32] * 6 + [F32] * 4)
            r = self.b.call(ir.InlineAsm(fty, asm, "=f,=f,=f,=f,r,r,r,r,r,r,0,1,2,3"), list(a) + list(b) + list(c))
            return [self.b.extract_value(r, i) for i in range(4)]
        return self._mma_emulated(kind, a, b, c)

    def _mma_emulated(self, kind, a, b, c):
        """The MMA through this warp's exchange area: each lane publishes its fragments, then computes its four outputs."""
        bld = self.b
        # the emulator's exchange area has XCHG_WORDS words per thread: word s of thread i at s*threads + i
        xchg = bld.inttoptr(bld.load(bld.gep(self.ctx, [c64(CTX_XCHG)], inbounds=True)), I32.as_pointer())
        t = self.tid()
        lane = bld.and_(t, c32(31))
        base = bld.sub(t, lane)

        def slot(s, ln):
            return bld.gep(xchg, [bld.add(c32((1 + s) * self.threads), bld.add(base, ln))], inbounds=True)

        for s, v in enumerate(list(a) + list(b)):
            bld.store(v, slot(s, lane))
        self._warp_barrier()
        g = bld.lshr(lane, c32(2))
        tq = bld.and_(lane, c32(3))

        def words(x):
            """The k-values of one 32-bit word as f32: two halves (f16) or one tf32."""
            if kind == "tf32":  # the tensor cores read a tf32 as an f32's top 19 bits (raw f32 bits: truncated)
                return [bld.bitcast(bld.and_(x, c32(-0x2000)), F32)]
            if kind == "bf16":  # a bfloat16 is the high half of an f32
                return [bld.bitcast(bld.shl(x, c32(16)), F32), bld.bitcast(bld.and_(x, c32(-0x10000)), F32)]
            lo = bld.bitcast(bld.trunc(x, ir.IntType(16)), ir.HalfType())
            hi = bld.bitcast(bld.trunc(bld.lshr(x, c32(16)), ir.IntType(16)), ir.HalfType())
            return [bld.fpext(lo, F32), bld.fpext(hi, F32)]

        out = []
        for q in range(4):
            row_hi = q >= 2  # rows g+8
            col = bld.add(bld.shl(tq, c32(1)), c32(q & 1))
            acc = c[q]
            for w in range(8):
                a_lane = bld.add(bld.shl(g, c32(2)), c32(w % 4))
                b_lane = bld.add(bld.shl(col, c32(2)), c32(w % 4))
                av = bld.load(slot(int(row_hi) + 2 * (w >= 4), a_lane))
                bv = bld.load(slot(4 + (w >= 4), b_lane))
                for x, y in zip(words(av), words(bv)):
                    acc = self.fma(x, y, acc)
            out.append(acc)
        self._warp_barrier()
        return out

    # ------------------------------------------------------------ Hopper warpgroup MMA (sm_90a)
    def _asm(self, text: str):
        self.b.call(ir.InlineAsm(ir.FunctionType(VOID, []), text, "~{memory}", side_effect=True), [])

    def wgmma_fence(self):
        """Before a warpgroup's first wgmma of a batch (its accumulators were last written by other instructions)."""
        if self.mode == "nvptx":
            self._asm("wgmma.fence.sync.aligned;")

    def wgmma_commit(self):
        if self.mode == "nvptx":
            self._asm("wgmma.commit_group.sync.aligned;")

    def wgmma_wait(self, pending: int, accs: list) -> list:
        """Wait until at most `pending` committed wgmma batches of this warpgroup are in flight; returns `accs`
        redefined after the wait (so that nothing reads an accumulator still being written)."""
        if self.mode != "nvptx":
            return list(accs)
        self._asm(f"wgmma.wait_group.sync.aligned {int(pending)};")
        pin = ir.InlineAsm(ir.FunctionType(F32, [F32]), "", "=f,0", side_effect=True)
        return [self.b.call(pin, [v]) for v in accs]

    def fence_proxy_async(self):
        """Make this thread's shared-memory writes (stores, cp.async) visible to the tensor cores' async proxy."""
        if self.mode == "nvptx":
            self._asm("fence.proxy.async.shared::cta;")

    def wgmma(self, kind: str, n: int, desc_a, desc_b, acc: list) -> list:
        """One warpgroup-wide MMA from shared memory, D(64 x n) += A(64 x k) · B(k x n); the 128 threads of
        the warpgroup must call. kind "f16" / "bf16": k = 16; "tf32": k = 8 (raw f32 bits, truncated).

        `desc_a` / `desc_b` (i64): shared-memory matrix descriptors of K-major swizzled tiles (wgmma.py).
        `acc`: n / 2 f32 per thread; thread 32w + 4g + t holds, for j < n / 8, rows 16w + g (+8) and
        columns 8j + 2t (+1): acc[4j .. 4j+3] = D(16w+g, 8j+2t), D(16w+g, 8j+2t+1), D(16w+g+8, 8j+2t),
        D(16w+g+8, 8j+2t+1), as four m16n8 fragments of mma.sync stacked. Asynchronous on the GPU:
        read the results after `wgmma_commit` and `wgmma_wait`."""
        nacc = n // 2
        ks = 8 if kind == "tf32" else 16
        if self.mode == "nvptx":
            regs = ",".join(f"${i}" for i in range(nacc))
            tail = ", 1, 1" if kind == "tf32" else ", 1, 1, 0, 0"  # scale a, b; K-major a, b
            asm = (f"{{\n.reg .pred p;\nsetp.ne.b32 p, ${nacc + 2}, 0;\n"
                   f"wgmma.mma_async.sync.aligned.m64n{n}k{ks}.f32.{kind}.{kind} {{{regs}}}, ${nacc}, ${nacc + 1}, p{tail};\n}}")
            cons = ",".join(["=f"] * nacc + ["l", "l", "r"] + [str(i) for i in range(nacc)]) + ",~{memory}"
            fty = ir.FunctionType(ir.LiteralStructType([F32] * nacc), [I64, I64, I32] + [F32] * nacc)
            r = self.b.call(ir.InlineAsm(fty, asm, cons, side_effect=True), [desc_a, desc_b, c32(1)] + list(acc))
            return [self.b.extract_value(r, i) for i in range(nacc)]
        return self._wgmma_emulated(kind, n, ks, desc_a, desc_b, acc)

    def _wgmma_emulated(self, kind, n, ks, desc_a, desc_b, acc):
        """Each thread computes its own accumulators from shared memory, decoding the descriptors as the
        hardware does: element (row r, byte kb) of a K-major tile swizzled over W-byte rows (W = 128, 64, 32
        for layout 1, 2, 3) is at a = start + (r / 8) * SBO + (r % 8) * W + kb, XOR-ed in bits 4.. by bits 7..
        of a (a ^ ((a >> 3) & (W - 16)))."""
        b = self.b
        eb = 4 if kind == "tf32" else 2
        cur = b.block
        b.position_at_start(self.fn.entry_basic_block)
        arr = b.alloca(F32, size=c32(len(acc)), name="wgacc")
        b.position_at_end(cur)
        for i, v in enumerate(acc):
            b.store(v, b.gep(arr, [c32(i)], inbounds=True))
        base = self._sreg_cache["shared"]

        def fields(desc):
            start = b.trunc(b.shl(b.and_(desc, c64(0x3FFF)), c64(4)), I32)
            sbo = b.trunc(b.shl(b.and_(b.lshr(desc, c64(32)), c64(0x3FFF)), c64(4)), I32)
            width = b.lshr(c32(256), b.trunc(b.lshr(desc, c64(62)), I32))
            return start, sbo, width

        def elem(f, r, k):
            start, sbo, width = f
            a = b.add(b.add(start, b.mul(b.lshr(r, c32(3)), sbo)), b.add(b.mul(b.and_(r, c32(7)), width), c32(k * eb)))
            a = b.xor(a, b.and_(b.lshr(a, c32(3)), b.sub(width, c32(16))))
            p = b.gep(base, [b.zext(a, I64)], inbounds=True)
            if kind == "f16":
                return b.fpext(b.load(b.bitcast(p, ir.HalfType().as_pointer())), F32)
            x = b.load(b.bitcast(p, ir.IntType(16 if kind == "bf16" else 32).as_pointer()))
            if kind == "bf16":
                return b.bitcast(b.shl(b.zext(x, I32), c32(16)), F32)
            return b.bitcast(b.and_(x, c32(-0x2000)), F32)  # tf32: the top 19 bits

        fa, fb = fields(desc_a), fields(desc_b)
        lane = b.and_(self.tid(), c32(31))
        w = b.and_(b.lshr(self.tid(), c32(5)), c32(3))
        g, t = b.lshr(lane, c32(2)), b.and_(lane, c32(3))
        with self.loop32(0, n // 8, 1, "wgj") as j:
            for q in range(4):
                row = b.add(b.add(b.shl(w, c32(4)), g), c32(8 * (q >> 1)))
                col = b.add(b.add(b.shl(j, c32(3)), b.shl(t, c32(1))), c32(q & 1))
                slot = b.gep(arr, [b.add(b.shl(j, c32(2)), c32(q))], inbounds=True)
                s = b.load(slot)
                for k in range(ks):
                    s = self.fma(elem(fa, row, k), elem(fb, col, k), s)
                b.store(s, slot)
        return [b.load(b.gep(arr, [c32(i)], inbounds=True)) for i in range(len(acc))]

    def to_tf32(self, x):
        """An f32 rounded to tf32 (10-bit mantissa, to nearest, ties away), as its i32 bits."""
        if self.mode == "nvptx":
            return self.b.call(ir.InlineAsm(ir.FunctionType(I32, [F32]), "cvt.rna.tf32.f32 $0, $1;", "=r,f"), [x])
        bits = self.b.bitcast(x, I32)
        return self.b.and_(self.b.add(bits, c32(0x1000)), c32(-0x2000))

    def cp_async(self, dst, src, ok, nbytes: int = 16):
        """Copy 16 (or 8, 4) bytes global -> shared without passing through registers (sm_80 `cp.async`); zeros where not `ok`.

        `dst`: a shared pointer, `src`: a global pointer, both aligned to nbytes.
        The copy completes at `cp_async_wait` (then a barrier makes it visible to the block)."""
        b = self.b
        if self.mode == "nvptx":
            size = b.select(ok, c32(nbytes), c32(0))
            cache = "cg" if nbytes == 16 else "ca"  # .cg (L2 only) takes 16-byte copies only
            asm = ir.InlineAsm(ir.FunctionType(VOID, [I32, src.type, I32]), f"cp.async.{cache}.shared.global [$0], [$1], {nbytes}, $2;", "r,l,r,~{memory}", side_effect=True)
            b.call(asm, [self.smem_offset(dst), src, size])
            return
        vt = ir.VectorType(I32, nbytes // 4)
        v = b.load(b.bitcast(src, vt.as_pointer()), align=nbytes)
        b.store(b.select(ok, v, ir.Constant(vt, None)), b.bitcast(dst, vt.as_pointer()), align=nbytes)

    def cp_async_commit(self):
        if self.mode == "nvptx":
            self.b.call(ir.InlineAsm(ir.FunctionType(VOID, []), "cp.async.commit_group;", "~{memory}", side_effect=True), [])

    def cp_async_wait(self, pending: int):
        """Wait until at most `pending` committed groups of this thread's copies are in flight."""
        if self.mode == "nvptx":
            self.b.call(ir.InlineAsm(ir.FunctionType(VOID, []), f"cp.async.wait_group {int(pending)};", "~{memory}", side_effect=True), [])

    def ldmatrix_x4(self, row_ptr, trans: bool = False) -> list:
        """Four 8x8 matrices of 16-bit elements from shared memory (`ldmatrix.x4`); every lane of the warp must call.

        Lane 8j+r gives the address of row r of matrix j (16 contiguous bytes,
        16-byte aligned). Register j of lane l (g = l/4, t = l%4) gets elements
        (g, 2t) and (g, 2t+1) of matrix j, or with `trans` (2t, g) and (2t+1, g),
        the low half first."""
        b = self.b
        if self.mode == "nvptx":
            asm = f"ldmatrix.sync.aligned.m8n8.x4{'.trans' if trans else ''}.shared.b16 {{$0,$1,$2,$3}}, [$4];"
            ret = ir.LiteralStructType([I32] * 4)
            r = b.call(ir.InlineAsm(ir.FunctionType(ret, [I32]), asm, "=r,=r,=r,=r,r,~{memory}", side_effect=True), [self.smem_offset(row_ptr)])
            return [b.extract_value(r, i) for i in range(4)]
        # emulated: each lane publishes its row address, then gathers its elements from the other lanes' rows
        xchg = b.inttoptr(b.load(b.gep(self.ctx, [c64(CTX_XCHG)], inbounds=True)), I32.as_pointer())
        t = self.tid()
        lane = b.and_(t, c32(31))
        wbase = b.sub(t, lane)
        b.store(self.smem_offset(row_ptr), b.gep(xchg, [t], inbounds=True))
        self._warp_barrier()
        base = self._sreg_cache["shared"]
        g, tq = b.lshr(lane, c32(2)), b.and_(lane, c32(3))
        I16 = ir.IntType(16)

        def elem(row_lane, byte):
            off = b.load(b.gep(xchg, [b.add(wbase, row_lane)], inbounds=True))
            p = b.gep(base, [b.zext(b.add(off, byte), I64)], inbounds=True)
            return b.zext(b.load(b.bitcast(p, I16.as_pointer())), I32)

        out = []
        for j in range(4):
            if trans:  # (2t, g) and (2t+1, g): rows 2t, 2t+1, column g
                lo = elem(b.add(c32(8 * j), b.shl(tq, c32(1))), b.shl(g, c32(1)))
                hi = elem(b.add(c32(8 * j + 1), b.shl(tq, c32(1))), b.shl(g, c32(1)))
            else:  # row g, columns 2t and 2t+1
                lo = elem(b.add(c32(8 * j), g), b.shl(tq, c32(2)))
                hi = elem(b.add(c32(8 * j), g), b.add(b.shl(tq, c32(2)), c32(2)))
            out.append(b.or_(lo, b.shl(hi, c32(16))))
        self._warp_barrier()
        return out
