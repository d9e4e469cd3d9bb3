"""GEMM / batched matmul for the CPU backend, and the register-blocked micro-kernel conv shares.

The micro-kernel keeps an R x V block of C in vector registers: R rows, V
vectors of W lanes (W = the target's f32 vector width: 16 with AVX-512) along
the columns, and for every k does

    acc[r][v] = fma(splat(A[r, k]), B[k, v*W : v*W + W], acc[r][v])

so each k costs R broadcasts + V vector loads for R*V FMAs. How A and B are
addressed is the caller's business (closures), which is what lets one
micro-kernel serve

* gemm/matmul: rows = M (A is the activation, read through any strides, so
  trans_a and transposed operands cost nothing); columns = N. A constant B
  (weights) is repacked at compile time into panels [N/W][K][W] (zero padded
  at the N tail, trans_b and operand transposes applied by NumPy); a B read
  along unit-stride columns (activations, e.g. attention probs @ V) is loaded
  directly; any other B (e.g. Q @ K^T with K^T a strided view) is packed per
  thread into a stack buffer [K][V*W] with gathers, once per column block.
* convolution (emit_conv.py): rows = output channels (weights repacked to
  [M/R][K][R]), columns = output pixels.

After the k loop the tile's elementwise epilogue (bias, alpha/beta*C,
per-channel scale/shift, residual adds, activations: `Epilogue`) runs on the
accumulators and each yielded value is stored once: fused kernels never
write their intermediates.

Threads split the tiles (batch x column blocks x row blocks, rows fastest so
one thread reuses a column block of B from its cache) with
`KernelBuilder.thread_range`. The tile shape comes from a small cycle model
(`choose_tile`: FMA and load ports, FMA latency, B's L2 bandwidth); the last
row tile is shifted up to end at M (a few rows computed twice) and a last
column block with as many vectors takes its lane mask at run time, so most
kernels hold one copy of the micro-kernel. On x86 the step runs with
denormals flushed to zero (`FlushDenormals`): one denormal operand makes an
FMA ~100x slower. Everything is emitted LLVM IR; no BLAS.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from dsc.backends.cpu.codegen import fused_emitter, op_emitter
from dsc.backends.cpu.emit_elementwise import ELEMENTWISE, broadcast_strides, compute
from dsc.backends.cpu.irb import F32, I1, I32, I64, KernelBuilder, const_i64, vec
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of
from dsc.runtime.errors import DscError
from llvmlite import ir

F32_DT = np.dtype(np.float32)
# the micro-kernels are float32: other dtypes (float16 included) are refused with this hint
F32_ONLY_HINT = "compute it in float32: Cast its inputs to float32 (and the result back), or compile with --precision fp32 for CPU targets"

# ===================================================================== IR helpers


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


def gather_v(kb: KernelBuilder, ptr, idx_vec, mask):
    """ptr[idx_vec[l]] for the lanes of `mask` (i32 indices), 0 elsewhere."""
    w = idx_vec.type.count
    pv = vec(w, ptr.type)
    instr = ir.instructions.GEPInstr(kb.b.block, ptr, [idx_vec], False, "", source_etype=ptr.type.pointee)
    instr.type = pv
    kb.b._insert(instr)
    vt = vec(w)
    fn = _declare(kb, f"llvm.masked.gather.v{w}f32.v{w}p0", vt, [pv, I32, mask_type(w), vt])
    return kb.b.call(fn, [instr, ir.Constant(I32, 4), mask, zero_vec(w)])


def scatter_v(kb: KernelBuilder, value, ptr, idx_vec, mask=None) -> None:
    """ptr[idx_vec[l]] = value[l] for the lanes of `mask` (i32 indices; all lanes without one)."""
    w = idx_vec.type.count
    pv = vec(w, ptr.type)
    instr = ir.instructions.GEPInstr(kb.b.block, ptr, [idx_vec], False, "", source_etype=ptr.type.pointee)
    instr.type = pv
    kb.b._insert(instr)
    vt = vec(w)
    fn = _declare(kb, f"llvm.masked.scatter.v{w}f32.v{w}p0", ir.VoidType(), [vt, pv, I32, mask_type(w)])
    kb.b.call(fn, [value, instr, ir.Constant(I32, 4), mask if mask is not None else const_mask(w, w)])


def iota(w: int, scale: int = 1, elem=I32):
    return ir.Constant(vec(w, elem), [i * scale for i in range(w)])


def splat_i32(kb: KernelBuilder, v, w: int):
    """An i32 splat of an i64 value or int."""
    if isinstance(v, int):
        return ir.Constant(vec(w, I32), [v] * w)
    return kb.splat(kb.b.trunc(v, I32), w)


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


# ===================================================================== micro-kernel


def microkernel(kb: KernelBuilder, R: int, V: int, klo, khi, a_val, b_vec, accs: list[list], inner: int = 1) -> list[list]:
    """Run the register block over k in [klo, khi): accs[r][v] += A(k, s, r) * B(k, s, v)
    for the `inner` sub-steps s of each k (conv taps; 1 for a plain GEMM).

    a_val(k, s, r) -> f32 scalar; b_vec(k, s, v) -> <W x float>.
    """
    w = accs[0][0].type.count

    def body(kk, flat):
        flat = list(flat)
        for s in range(inner):
            bs = [b_vec(kk, s, v) for v in range(V)]
            for r in range(R):
                a = kb.splat(a_val(kk, s, r), w)
                for v in range(V):
                    flat[r * V + v] = kb.fma(a, bs[v], flat[r * V + v])
        return flat

    flat = carried_loop(kb, klo, khi, [a for row in accs for a in row], body)
    return [flat[r * V : (r + 1) * V] for r in range(R)]


def choose_tile(M: int, ncols: int, K: int, w: int, regs: int, max_rows: int = 16, pad_rows: bool = False) -> tuple[int, int]:
    """(R rows, V vectors) minimizing a cycle model: per k, R*V FMAs and R+V loads at 2/cycle,
    at least 4 cycles (FMA latency over the accumulators), the B vectors at L2 bandwidth,
    plus a per-tile overhead.
    pad_rows: the last row block is computed at full height (padded or shifted)."""
    nv = -(-ncols // w)
    best = None
    for R in range(1, min(M, max_rows) + 1):
        for V in range(1, min(nv, 8) + 1):
            if R * V + V + 2 > regs:
                continue
            mt, rt = divmod(M, R)
            if pad_rows and rt:
                mt, rt = mt + 1, 0
            nt, vt = divmod(nv, V)

            def cost(r, v):
                # B streams from L2 (~24 bytes/cycle): wide tiles starve; A broadcasts hit L1
                return K * (max(r * v / 2, (r + v) / 2, 4, v * w * 4 / 24) + 0.6) + 3 * r * v + 40

            c = mt * nt * cost(R, V)
            if rt:
                c += nt * cost(rt, V)
            if vt:
                c += mt * cost(R, vt)
            if rt and vt:
                c += cost(rt, vt)
            key = (c, -R * V)
            if best is None or key < best[0]:
                best = (key, (R, V))
    return best[1]


# ===================================================================== epilogue


class Layout:
    """How a tile addresses a tensor of the kernel's output shape.

    Output dims are batch ('b'), row ('r', at most one) or column ('c', the
    trailing dims, flattened: the vector runs along them). An operand that
    broadcasts to the output is read through (batch strides, row stride,
    column stride), column stride 0 (splat of a per-row scalar) or 1 (vector).
    """

    def __init__(self, shape: tuple[int, ...], roles: str):
        assert len(shape) == len(roles)
        self.shape = tuple(shape)
        self.bdims = [d for d, r in enumerate(roles) if r == "b"]
        self.rdims = [d for d, r in enumerate(roles) if r == "r"]
        self.cdims = [d for d, r in enumerate(roles) if r == "c"]
        assert len(self.rdims) <= 1
        self.bshape = [shape[d] for d in self.bdims]
        self.rows = shape[self.rdims[0]] if self.rdims else 1
        self.cols = int(np.prod([shape[d] for d in self.cdims])) if self.cdims else 1

    def view(self, strides: list[int]):
        """(batch strides, row stride, col stride) of an operand with these strides over the output dims, or None."""
        bs = [strides[d] for d in self.bdims]
        rs = strides[self.rdims[0]] if self.rdims else 0
        cs = None
        inner = 1
        for d in reversed(self.cdims):
            n = self.shape[d]
            if n == 1:
                continue
            if cs is None:
                cs = strides[d]
            if strides[d] != cs * inner:
                return None
            inner *= n
        cs = cs or 0
        if cs not in (0, 1):
            return None
        return bs, rs, cs

    def view_of_shape(self, shape: tuple[int, ...]):
        if len(shape) > len(self.shape):
            return None
        try:
            np.broadcast_shapes(tuple(shape), self.shape)
        except ValueError:
            return None
        if np.broadcast_shapes(tuple(shape), self.shape) != self.shape:
            return None
        return self.view(broadcast_strides(tuple(shape), self.shape))

    def batch_offset(self, kb: KernelBuilder, bt, bstrides: list[int]):
        """Element offset of flattened batch index bt for these batch strides."""
        if not any(bstrides) or not self.bdims:
            return 0
        off, rem = 0, bt
        for d in range(len(self.bdims) - 1, -1, -1):
            n = self.bshape[d]
            if d > 0:
                idx = kb.b.urem(c64(rem), const_i64(n)) if not isinstance(rem, int) else rem % n
                rem = kb.b.udiv(c64(rem), const_i64(n)) if not isinstance(rem, int) else rem // n
            else:
                idx = rem
            if bstrides[d]:
                off = add(kb, off, mul(kb, idx, bstrides[d]))
        return off


def _bn_shape(arg_shape, out_rank: int):
    """A batch_norm parameter [C] seen as a tensor broadcasting along axis 1 of the output."""
    c = int(np.prod(arg_shape))
    return (1, c) + (1,) * (out_rank - 2)


@dataclass
class Source:
    ptr: object
    view: tuple  # (bstrides, rstride, cstride)
    boff: object = 0


@dataclass
class Epilogue:
    """The elementwise ops after the main op, evaluated per accumulator vector.

    `main` is the main op's result; `ops` the ops after it (elementwise,
    batch_norm, scalar constants); `sources` the kernel inputs they read
    (value -> (ptr, shape)); `yields` (value, out ptr) pairs.
    `pre(kb, acc, load)` turns an accumulator into the main op's value (gemm's
    alpha and beta*C).
    """

    layout: Layout
    main: object
    ops: list
    sources: dict
    yields: list
    w: int
    pre: object = None
    _src: dict = field(default_factory=dict)
    _outs: list = field(default_factory=list)

    @staticmethod
    def supported(layout: Layout, main, ops, arg_shapes: dict, yields) -> bool:
        """Whether every op, operand and yield fits the fused store (f32, output shape, simple strides)."""
        known = {main}
        rank = len(layout.shape)
        for op in ops:
            if isinstance(op, g.ConstantOp):
                if op.array.size != 1 or op.array.dtype != F32_DT:
                    return False
                known.add(op.result)
                continue
            if not isinstance(op, (*ELEMENTWISE, g.BatchNormOp)) or len(op.results) != 1:
                return False
            if isinstance(op, g.CastOp | g.BroadcastToOp):
                return False
            r = sig_of(op.results[0].type)
            if r.dtype != F32_DT or tuple(r.shape) != layout.shape:
                return False
            for n, v in enumerate(op.operands):
                if sig_of(v.type).dtype != F32_DT:
                    return False
                if v in known:
                    continue
                if v not in arg_shapes:
                    return False
                shp = arg_shapes[v]
                if isinstance(op, g.BatchNormOp):
                    if n == 0 or rank < 2 or int(np.prod(shp)) != layout.shape[1]:
                        return False
                    shp = _bn_shape(shp, rank)
                if layout.view_of_shape(shp) is None:
                    return False
            if isinstance(op, g.BatchNormOp) and (op.input not in known or any(x in known for x in op.operands[1:])):
                return False
            known.add(op.results[0])
        for v in yields:
            if v not in known or sig_of(v.type).dtype != F32_DT or tuple(sig_of(v.type).shape) != layout.shape:
                return False
        return True

    def out_view(self):
        return self.layout.view(broadcast_strides(self.layout.shape, self.layout.shape))

    def begin_tile(self, kb: KernelBuilder, bt) -> None:
        """Per-tile batch offsets of the operands and outputs."""
        rank = len(self.layout.shape)
        self._src = {}
        for v, (ptr, shape, bn) in self.sources.items():
            vw = self.layout.view_of_shape(_bn_shape(shape, rank) if bn else shape)
            self._src[v] = Source(ptr, vw, self.layout.batch_offset(kb, bt, vw[0]))
        ov = self.out_view()
        boff = self.layout.batch_offset(kb, bt, ov[0])
        self._outs = [(v, Source(p, ov, boff)) for v, p in self.yields]

    def _load(self, kb, src: Source, row, col, mask, cache, key):
        _, rs, cs = src.view
        base = add(kb, src.boff, mul(kb, row, rs))
        if cs == 0:
            if key not in cache:
                cache[key] = kb.splat(kb.load(src.ptr, c64(base)), self.w)
            return cache[key]
        return load_v(kb, src.ptr, add(kb, base, col), self.w, mask)

    def apply(self, kb: KernelBuilder, accs: list[list], row0, col0, mask_last=None, col_step=None) -> None:
        """Epilogue and stores of a tile: accs[r][v] is output (row0 + r, col0 + v*col_step)."""
        col_step = col_step or self.w
        row_cache: dict = {}
        for r, row_accs in enumerate(accs):
            row = add(kb, row0, r)
            for v, acc in enumerate(row_accs):
                col = add(kb, col0, v * col_step)
                mask = mask_last if v == len(row_accs) - 1 else None
                self.apply_one(kb, acc, row, col, mask, row_cache, r)

    def _load_lanes_on_rows(self, kb, src: Source, row, col, mask, cache, key):
        """Element (row + lane, col) per lane: a vector load when rows are adjacent, a gather otherwise."""
        _, rs, cs = src.view
        if rs == 0:  # one value per column (e.g. a [1, 1, H, W] operand)
            return kb.splat(kb.load(src.ptr, c64(add(kb, src.boff, mul(kb, col, cs)))), self.w)
        if cs == 0 and key in cache:
            return cache[key]
        off = add(kb, add(kb, src.boff, mul(kb, row, rs)), mul(kb, col, cs))
        if rs == 1:
            v = load_v(kb, src.ptr, c64(off), self.w, mask)
        else:
            v = gather_v(kb, gep(kb, src.ptr, off), iota(self.w, rs), mask if mask is not None else const_mask(self.w, self.w))
        if cs == 0:
            cache[key] = v
        return v

    def apply_one(self, kb: KernelBuilder, acc, row, col, mask, row_cache: dict, rkey, lanes_on_rows: bool = False) -> None:
        """Epilogue and store of one accumulator vector: outputs (row, col + lane), or with
        lanes_on_rows (row + lane, col) (a conv with output channels as lanes: per-channel
        operands are vector loads, residuals gathers, the store a scatter).
        row_cache holds values that depend on rows only, keyed by (value, rkey)."""
        b = kb.b

        def load(v):
            if lanes_on_rows:
                return self._load_lanes_on_rows(kb, self._src[v], row, col, mask, row_cache, (v, rkey))
            return self._load(kb, self._src[v], row, col, mask, row_cache, (v, rkey))

        env = {self.main: self.pre(kb, acc, load) if self.pre else acc}
        for op in self.ops:
            if isinstance(op, g.ConstantOp):
                env[op.result] = kb.splat(ir.Constant(F32, float(op.array.reshape(-1)[0])), self.w)
                continue
            if isinstance(op, g.BatchNormOp):
                key = (op, rkey)
                if key not in row_cache or self._src[op.scale].view[2] != 0:
                    sc, bi, mu, var = (load(x) for x in (op.scale, op.bias, op.mean, op.var))
                    eps = ir.Constant(vec(self.w), [float(op.epsilon.value.data)] * self.w)
                    a = b.fdiv(sc, kb.sqrt(b.fadd(var, eps)))
                    row_cache[key] = (a, b.fsub(bi, b.fmul(mu, a)))
                a, s = row_cache[key]
                env[op.result] = kb.fma(env[op.input], a, s)
                continue
            args = [env[x] if x in env else load(x) for x in op.operands]
            env[op.results[0]] = compute(kb, op, args)
        for v, src in self._outs:
            _, rs, _ = src.view
            off = add(kb, add(kb, src.boff, mul(kb, row, rs)), col)
            if lanes_on_rows:
                scatter_v(kb, env[v], gep(kb, src.ptr, off), iota(self.w, rs), mask)
            else:
                store_v(kb, env[v], src.ptr, off, mask)

    # partial sums (k-blocked tiles) live in the first output
    def load_partial(self, kb, row, col, mask):
        _, src = self._outs[0]
        return load_v(kb, src.ptr, add(kb, add(kb, src.boff, mul(kb, row, src.view[1])), col), self.w, mask)

    def store_partial(self, kb, value, row, col, mask):
        _, src = self._outs[0]
        store_v(kb, value, src.ptr, add(kb, add(kb, src.boff, mul(kb, row, src.view[1])), col), mask)


def split_kernel(kop: k.FusedOp, main_types) -> tuple | None:
    """A fused kernel as (prologue transposes, main op, epilogue ops), or None when it is not that shape."""
    ops = [op for op in kop.body.block.ops if not isinstance(op, k.YieldOp)]
    pro = []
    i = 0
    while i < len(ops) and isinstance(ops[i], g.TransposeOp):
        pro.append(ops[i])
        i += 1
    if i >= len(ops) or not isinstance(ops[i], main_types):
        return None
    main = ops[i]
    epi = ops[i + 1 :]
    if any(isinstance(op, main_types + (g.TransposeOp,)) for op in epi):
        return None
    return pro, main, epi


def kernel_sources(kop: k.FusedOp, in_ptrs, epi_ops, known) -> dict:
    """Block args the epilogue reads -> (ptr, shape, is_bn_param)."""
    block = kop.body.block
    idx = {a: i for i, a in enumerate(block.args)}
    out = {}
    for op in epi_ops:
        if isinstance(op, g.ConstantOp):
            continue
        for n, v in enumerate(op.operands):
            if v in idx and v not in known:
                bn = isinstance(op, g.BatchNormOp) and n > 0
                out[v] = (in_ptrs[idx[v]], sig_of(v.type).shape, bn)
    return out


def epilogue_arg_shapes(kop: k.FusedOp) -> dict:
    return {a: sig_of(a.type).shape for a in kop.body.block.args}


# ===================================================================== matmul


@dataclass
class MatOperand:
    """A matrix operand of a (batched) matmul read through strides: (*batch, rows, cols) of the operand."""

    index: int  # kernel/op input position
    shape: tuple  # the operand as the matmul sees it (after transposes, 1-D promoted)
    strides: tuple  # element strides into the input buffer, per dim of `shape`
    const: np.ndarray | None  # the operand's values as the matmul sees them (constants only)


def _contig_strides(shape) -> tuple:
    st, acc = [], 1
    for n in reversed(shape):
        st.append(acc)
        acc *= n
    return tuple(reversed(st))


def mat_operand(v, block_index: dict, consts: list, transposes: dict) -> MatOperand | None:
    """The operand `v` as a strided view of a kernel input (through at most one transpose)."""
    perm = None
    if v in transposes:
        t = transposes[v]
        perm = tuple(t.py_attrs()["perm"])
        v = t.input
    if v not in block_index:
        return None
    i = block_index[v]
    shape = sig_of(v.type).shape
    st = _contig_strides(shape)
    c = consts[i] if i < len(consts) else None
    if perm is not None:
        shape = tuple(shape[p] for p in perm)
        st = tuple(st[p] for p in perm)
        c = None if c is None else np.transpose(c, perm)
    return MatOperand(i, tuple(shape), tuple(st), c)


@dataclass
class MatmulPlan:
    bshape: tuple  # output batch dims
    M: int
    N: int
    K: int
    a: MatOperand  # as (*bA, M, K)
    b: MatOperand  # as (*bB, K, N)
    out_shape: tuple
    roles: str
    alpha: float = 1.0
    beta: float = 1.0
    c_value: object = None  # gemm's C (SSA value)


def plan_matmul(op, a: MatOperand, b: MatOperand) -> MatmulPlan | None:
    out = sig_of(op.result.type).shape
    if isinstance(op, g.GemmOp):
        at = op.py_attrs()
        if at["trans_a"]:
            a = MatOperand(a.index, a.shape[::-1], a.strides[::-1], None if a.const is None else a.const.T)
        if at["trans_b"]:
            b = MatOperand(b.index, b.shape[::-1], b.strides[::-1], None if b.const is None else b.const.T)
        M, K = a.shape
        N = b.shape[1]
        c = op.c if op.c is not None else None
        return MatmulPlan((), M, N, K, a, b, tuple(out), "rc", at["alpha"], at["beta"], c)
    if len(a.shape) == 1:
        a = MatOperand(a.index, (1,) + a.shape, (0,) + a.strides, None if a.const is None else a.const[None, :])
    if len(b.shape) == 1:
        b = MatOperand(b.index, b.shape + (1,), b.strides + (0,), None if b.const is None else b.const[:, None])
    M, K = a.shape[-2:]
    N = b.shape[-1]
    bshape = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    roles = "b" * len(bshape) + ("r" if len(sig_of(op.lhs.type).shape) > 1 else "") + ("c" if len(sig_of(op.rhs.type).shape) > 1 else "")
    if len(roles) != len(out):
        return None
    return MatmulPlan(bshape, M, N, K, a, b, tuple(out), roles)


def _batch_strides(op_shape: tuple, op_strides: tuple, bshape: tuple) -> list[int]:
    """Strides of an operand's batch dims over the output batch dims (0 where broadcast)."""
    nb = len(op_shape) - 2
    out = []
    for d in range(len(bshape)):
        j = d - (len(bshape) - nb)
        out.append(0 if j < 0 or op_shape[j] == 1 else op_strides[j])
    return out


PACK_BYTES = 192 * 1024  # per-thread stack budget for a packed B block


def emit_matmul(kb: KernelBuilder, plan: MatmulPlan, in_ptrs, epi: Epilogue, tid, nthreads, ctx, b_single_use: bool = True) -> None:
    with FlushDenormals(kb, ctx):
        _emit_matmul(kb, plan, in_ptrs, epi, tid, nthreads, ctx, b_single_use)


def _emit_matmul(kb: KernelBuilder, plan: MatmulPlan, in_ptrs, epi: Epilogue, tid, nthreads, ctx, b_single_use: bool) -> None:
    w = lanes_of(ctx)
    M, N, K = plan.M, plan.N, plan.K
    lay = epi.layout
    bt_n = int(np.prod(plan.bshape)) if plan.bshape else 1
    R, V = choose_tile(M, N, K, w, ctx.target.registers, pad_rows=True)
    NB = V * w
    MT = -(-M // R)
    NT = -(-N // NB)
    rt = M - (MT - 1) * R  # rows of the last row tile (computed shifted, at full height)
    ncol_last = N - (NT - 1) * NB
    vt = -(-ncol_last // w)
    lane_last = ncol_last - (vt - 1) * w
    tail_mask = None if lane_last == w else const_mask(w, lane_last)
    a, bop = plan.a, plan.b
    a_ptr = in_ptrs[a.index]
    a_bst = _batch_strides(a.shape, a.strides, plan.bshape)
    sm, sk_a = a.strides[-2], a.strides[-1]
    b_sk, b_sn = bop.strides[-2], bop.strides[-1]

    # ---- B access mode
    mode = "direct"
    if bop.const is not None and b_single_use:
        mode = "panel"
        cb = np.ascontiguousarray(bop.const, dtype=np.float32)
        bb = cb.shape[:-2]
        nbb = int(np.prod(bb)) if bb else 1
        NP = -(-N // w)
        padded = np.zeros((nbb, K, NP * w), np.float32)
        padded[:, :, :N] = cb.reshape(nbb, K, N)
        packed = np.ascontiguousarray(padded.reshape(nbb, K, NP, w).transpose(0, 2, 1, 3))
        ctx.repack(bop.index, packed, f"gemm_b_panel{w}:{content_hash(cb, cb.shape)}")
        b_ptr = in_ptrs[bop.index]
        mstr = _contig_strides(bb) if bb else ()
        b_bst = _batch_strides(tuple(bb) + (K, N), tuple(s * NP * K * w for s in mstr) + (0, 0), plan.bshape)
    else:
        b_ptr = in_ptrs[bop.index]
        b_bst = _batch_strides(bop.shape, bop.strides, plan.bshape)
        if b_sn != 1 and N > 1:
            mode = "pack" if K * NB * 4 <= PACK_BYTES else "gather"
    pack = entry_alloca(kb, F32, K * NB, name="bpack") if mode == "pack" else None

    total = bt_n * NT * MT
    lo, hi = kb.thread_range(total, tid, nthreads)
    b = kb.b

    def body(t):
        mt = b.urem(t, const_i64(MT))
        rest = b.udiv(t, const_i64(MT))
        nt = b.urem(rest, const_i64(NT))
        bt = b.udiv(rest, const_i64(NT))
        row0 = b.mul(mt, const_i64(R))
        if rt != R:  # the last row tile is shifted up to end at M (rows computed twice, same values)
            row0 = kb.smin(row0, const_i64(M - R))
        col0 = b.mul(nt, const_i64(NB))
        a_off = lay.batch_offset(kb, bt, a_bst) if plan.bshape else 0
        b_off = lay.batch_offset(kb, bt, b_bst) if plan.bshape else 0
        epi.begin_tile(kb, bt)
        a_tile = gep(kb, a_ptr, add(kb, a_off, b.mul(row0, const_i64(sm))) if sm else a_off)
        if mode == "panel":
            b_tile = gep(kb, b_ptr, add(kb, b_off, b.mul(nt, const_i64(V * K * w))))
        elif mode in ("direct",):
            b_tile = gep(kb, b_ptr, add(kb, b_off, b.mul(col0, const_i64(b_sn))))
        else:
            b_tile = gep(kb, b_ptr, b_off)
        if mode == "pack":
            # pack B[:, col0 : col0 + NB] once per column block (each thread: at its first tile, and at mt == 0)
            first = b.or_(b.icmp_unsigned("==", t, lo), b.icmp_unsigned("==", mt, const_i64(0)))
            with b.if_then(first):
                cols = b.add(kb.splat(b.trunc(col0, I32), w), iota(w, 1))
                masks = []
                idxs = []
                for v in range(V):
                    cv = b.add(cols, ir.Constant(vec(w, I32), [v * w] * w))
                    masks.append(b.icmp_signed("<", cv, ir.Constant(vec(w, I32), [N] * w)))
                    idxs.append(b.mul(cv, ir.Constant(vec(w, I32), [b_sn] * w)))
                with kb.loop(0, K, 1, "pk") as kk:
                    rowp = gep(kb, b_tile, b.mul(kk, const_i64(b_sk)))
                    for v in range(V):
                        store_v(kb, gather_v(kb, rowp, idxs[v], masks[v]), pack, b.add(b.mul(kk, const_i64(NB)), const_i64(v * w)))

        def tile(nr, nv, mask):
            def a_val(kk, _s, r):
                return kb.load(a_tile, add(kb, mul(kb, kk, sk_a), r * sm))

            if mode == "panel":
                def b_vec(kk, _s, v):
                    return kb.load_vec(b_tile, b.add(b.mul(kk, const_i64(w)), const_i64(v * K * w)), w)
            elif mode == "pack":
                def b_vec(kk, _s, v):
                    return kb.load_vec(pack, b.add(b.mul(kk, const_i64(NB)), const_i64(v * w)), w)
            elif mode == "direct":
                def b_vec(kk, _s, v):
                    return load_v(kb, b_tile, add(kb, mul(kb, kk, b_sk), v * w), w, mask if v == nv - 1 else None)
            else:
                def b_vec(kk, _s, v):
                    cv = b.add(kb.splat(b.trunc(col0, I32), w), iota(w, 1))
                    cv = b.add(cv, ir.Constant(vec(w, I32), [v * w] * w))
                    m = b.icmp_signed("<", cv, ir.Constant(vec(w, I32), [N] * w))
                    return gather_v(kb, gep(kb, b_tile, mul(kb, kk, b_sk)), b.mul(cv, ir.Constant(vec(w, I32), [b_sn] * w)), m)

            accs = [[zero_vec(w)] * nv for _ in range(nr)]
            accs = microkernel(kb, nr, nv, 0, K, a_val, b_vec, accs)
            epi.apply(kb, accs, row0, col0, mask)

        last_n = b.icmp_unsigned("==", nt, const_i64(NT - 1))
        if vt == V:  # one code path: the last vector's mask is chosen at run time
            tile(R, V, None if tail_mask is None else b.select(last_n, tail_mask, const_mask(w, w)))
        else:
            branch_variants(kb, [(last_n, lambda: tile(R, vt, tail_mask)), (None, lambda: tile(R, V, None))])

    with kb.loop(lo, hi, 1, "tile") as t:
        body(t)


def _f32_only(*vals) -> bool:
    return all(sig_of(v.type).dtype == F32_DT for v in vals)


def _gemm_epilogue(plan: MatmulPlan, lay: Layout, w: int, main, ops, sources, yields) -> Epilogue:
    """The epilogue with gemm's alpha * acc + beta * C in front of the fused ops."""
    c_val = plan.c_value
    alpha, beta = float(plan.alpha), float(plan.beta)

    def pre(kb, acc, load):
        y = acc if alpha == 1.0 else kb.b.fmul(acc, ir.Constant(vec(w), [alpha] * w))
        if c_val is not None and beta != 0.0:
            c = load(c_val)
            y = kb.b.fadd(y, c) if beta == 1.0 else kb.fma(c, ir.Constant(vec(w), [beta] * w), y)
        return y

    return Epilogue(lay, main, ops, sources, yields, w, pre)


@op_emitter(g.GemmOp, g.MatMulOp)
def emit_matmul_op(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    if not _f32_only(*op.operands, op.result):
        bad = next(sig_of(v.type).dtype for v in (*op.operands, op.result) if sig_of(v.type).dtype != F32_DT)
        raise DscError(f"the CPU backend's {op.name} supports float32 only, not {bad}", hint=F32_ONLY_HINT)
    vals = list(op.operands)
    index = {v: i for i, v in enumerate(vals)}
    a = mat_operand(vals[0], index, ctx.consts, {})
    bo = mat_operand(vals[1], index, ctx.consts, {})
    plan = plan_matmul(op, a, bo)
    w = lanes_of(ctx)
    lay = Layout(plan.out_shape, plan.roles)
    sources = {}
    if isinstance(op, g.GemmOp) and op.c is not None:
        cshape = sig_of(op.c.type).shape
        if lay.view_of_shape(cshape) is None:
            raise DscError(f"graph.gemm: C {list(cshape)} does not broadcast to {list(plan.out_shape)}")
        sources[op.c] = (in_ptrs[2], cshape, False)
    epi = _gemm_epilogue(plan, lay, w, op.result, [], sources, [(op.result, out_ptrs[0])])
    emit_matmul(kb, plan, in_ptrs, epi, tid, nthreads, ctx, b_single_use=vals.count(vals[1]) == 1)


# ---------------------------------------------------------------- fused


def _matmul_kernel(kop: k.FusedOp):
    parts = split_kernel(kop, (g.GemmOp, g.MatMulOp))
    if parts is None:
        return None
    pro, main, epi = parts
    block = kop.body.block
    index = {a: i for i, a in enumerate(block.args)}
    transposes = {t.result: t for t in pro}
    for t in pro:
        if t.input not in index or t.result.uses.get_length() != 1 or next(iter(t.result.uses)).operation is not main:
            return None
    operands = [main.operands[0], main.operands[1]]
    for v in operands:
        if v not in index and v not in transposes:
            return None
    if not _f32_only(*main.operands, main.result):
        return None
    if isinstance(main, g.GemmOp) and main.c is not None and main.c not in index:
        return None
    return pro, main, epi, index, transposes


def _matmul_matches(kop: k.FusedOp) -> bool:
    got = _matmul_kernel(kop)
    if got is None:
        return False
    _, main, epi, index, transposes = got
    consts = [None] * len(index)
    a = mat_operand(main.operands[0], index, consts, transposes)
    bo = mat_operand(main.operands[1], index, consts, transposes)
    if a is None or bo is None:
        return False
    plan = plan_matmul(main, a, bo)
    if plan is None:
        return False
    lay = Layout(plan.out_shape, plan.roles)
    if isinstance(main, g.GemmOp) and main.c is not None and lay.view_of_shape(sig_of(main.c.type).shape) is None:
        return False
    yields = list(kop.body.block.last_op.operands)
    return Epilogue.supported(lay, main.result, epi, epilogue_arg_shapes(kop), yields)


@fused_emitter("gemm", _matmul_matches)
def emit_fused_matmul(kb, kop, in_ptrs, out_ptrs, tid, nthreads, ctx):
    _, main, epi_ops, index, transposes = _matmul_kernel(kop)
    a = mat_operand(main.operands[0], index, ctx.consts, transposes)
    bo = mat_operand(main.operands[1], index, ctx.consts, transposes)
    plan = plan_matmul(main, a, bo)
    w = lanes_of(ctx)
    lay = Layout(plan.out_shape, plan.roles)
    known = {main.result} | {op.results[0] for op in epi_ops}
    sources = kernel_sources(kop, in_ptrs, epi_ops, known)
    if isinstance(main, g.GemmOp) and main.c is not None:
        sources[main.c] = (in_ptrs[index[main.c]], sig_of(main.c.type).shape, False)
    yields = list(zip(kop.body.block.last_op.operands, out_ptrs))
    epi = _gemm_epilogue(plan, lay, w, main.result, epi_ops, sources, yields)
    b_arg = kop.body.block.args[bo.index]
    emit_matmul(kb, plan, in_ptrs, epi, tid, nthreads, ctx, b_single_use=b_arg.uses.get_length() == 1)


__all__ = [
    "Epilogue",
    "Layout",
    "branch_variants",
    "carried_loop",
    "choose_tile",
    "const_mask",
    "content_hash",
    "emit_matmul",
    "entry_alloca",
    "epilogue_arg_shapes",
    "gather_v",
    "iota",
    "kernel_sources",
    "lanes_of",
    "load_v",
    "microkernel",
    "plan_matmul",
    "prefetch",
    "scatter_v",
    "split_kernel",
    "store_v",
    "zero_vec",
]
