"""The IR-building kit of the CUDA emitters, for two machines: NVPTX and the CPU emulator.

`GpuBuilder` extends the CPU backend's `KernelBuilder` (so the CPU's
`compute()` builds the scalar code of every elementwise op unchanged) with
what a kernel needs on a GPU: thread and block indices, shared memory,
`__syncthreads`, warp shuffles and reductions, i32 loops.

Each kernel is built twice from the same emitter code:

* mode "nvptx": special registers and `llvm.nvvm.*` intrinsics; shared
  memory is an `addrspace(3)` global; kernels use the `ptx_kernel` calling
  convention. This is the code the artifact ships as PTX.
* mode "emu": the same kernel as a host function with one more argument,
  `i64* ctx` (thread and block indices, barriers, this block's shared
  memory), that dsc's GPU emulator (dsc/runtime/gpu_emulator.py) runs with
  one OS thread per GPU thread. Barriers are pthread barriers and a warp
  shuffle goes through memory. It is slow, and it lets the tests check every
  kernel's numbers on a machine without a GPU.

Math that NVPTX cannot lower to a library call (log, pow) is built here from
`lg2.approx`/`ex2.approx` (nvptx) or libm (emu).
"""

from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from dsc.backends.cpu.irb import F32, I1, I8, I32, I64, VOID, KernelBuilder
from dsc.backends.cuda.tensorcore import CTX_XCHG, TensorCoreOps, c32, c64

# ctx slots of an emulated thread (i64 each)
CTX_TID, CTX_NTID, CTX_CTAID, CTX_NCTAID = 0, 3, 6, 9
CTX_BARRIER, CTX_WARP_BARRIERS, CTX_SHARED = 12, 13, 14  # CTX_XCHG = 15: tensorcore.py
CTX_SLOTS = 16
XCHG_WORDS = 7  # emu: words of exchange area per thread (a shuffle uses 1, an MMA 6 more)
DYNAMIC_SMEM = "dsc_smem"
SMEM_ALIGN = 1024  # the extern shared array every kernel carves its shared memory from
PTHREAD_BARRIER_BYTES = 32  # sizeof(pthread_barrier_t) on x86-64 and aarch64 glibc (aarch64: 32 as well)


def cf(v: float) -> ir.Constant:
    return ir.Constant(F32, float(v))


class SharedAllocator:
    """Static shared memory of one kernel: named arrays, 16-byte aligned."""

    def __init__(self):
        self.size = 0

    def alloc(self, nbytes: int, align: int = 16) -> int:
        off = -(-self.size // align) * align
        self.size = off + nbytes
        return off


class GpuBuilder(TensorCoreOps, KernelBuilder):
    def __init__(self, builder: ir.IRBuilder, module: ir.Module, mode: str, fn: ir.Function, ctx=None):
        super().__init__(builder, module)
        assert mode in ("nvptx", "emu")
        self.mode = mode
        self.fn = fn
        self.ctx = ctx  # i64* (emu mode)
        self.smem = SharedAllocator()
        self._sreg_cache: dict[str, ir.Value] = {}
        self.threads = 1024  # threads per block (build_kernel sets it)

    # ------------------------------------------------------------ indices
    def _sreg(self, name: str, slot: int):
        if name in self._sreg_cache:
            return self._sreg_cache[name]
        # read special registers in the entry block so every later block can use them
        b = self.b
        if b.block is not self.fn.entry_basic_block:
            raise AssertionError("special registers are read in the entry block (GpuBuilder.prologue)")
        if self.mode == "nvptx":
            f = self.module.globals.get(f"llvm.nvvm.read.ptx.sreg.{name}") or ir.Function(self.module, ir.FunctionType(I32, []), f"llvm.nvvm.read.ptx.sreg.{name}")
            v = b.call(f, [])
        else:
            v = b.trunc(b.load(b.gep(self.ctx, [c64(slot)], inbounds=True)), I32)
        self._sreg_cache[name] = v
        return v

    def tid(self, axis: str = "x"):
        return self._sreg(f"tid.{axis}", CTX_TID + "xyz".index(axis))

    def ntid(self, axis: str = "x"):
        return self._sreg(f"ntid.{axis}", CTX_NTID + "xyz".index(axis))

    def ctaid(self, axis: str = "x"):
        return self._sreg(f"ctaid.{axis}", CTX_CTAID + "xyz".index(axis))

    def nctaid(self, axis: str = "x"):
        return self._sreg(f"nctaid.{axis}", CTX_NCTAID + "xyz".index(axis))

    def prologue(self):
        """Read every special register a kernel may use (called first, in the entry block)."""
        for a in "xyz":
            self.ctaid(a)
            self.nctaid(a)
        self.tid("x")
        self.ntid("x")
        if self.mode == "emu":
            b = self.b
            self._sreg_cache["shared"] = b.inttoptr(b.load(b.gep(self.ctx, [c64(CTX_SHARED)], inbounds=True)), I8.as_pointer())

    # ------------------------------------------------------------ sync
    def barrier(self):
        b = self.b
        if self.mode == "nvptx":
            f = self.module.globals.get("llvm.nvvm.barrier0") or ir.Function(self.module, ir.FunctionType(VOID, []), "llvm.nvvm.barrier0")
            f.attributes.add("convergent")
            b.call(f, [])
        else:
            ptr = b.inttoptr(b.load(b.gep(self.ctx, [c64(CTX_BARRIER)], inbounds=True)), I8.as_pointer())
            b.call(_pthread_barrier_wait(self.module), [ptr])

    def _warp_barrier(self):
        b = self.b
        base = b.load(b.gep(self.ctx, [c64(CTX_WARP_BARRIERS)], inbounds=True))
        w = b.zext(b.lshr(self.tid(), c32(5)), I64)
        ptr = b.inttoptr(b.add(base, b.mul(w, c64(PTHREAD_BARRIER_BYTES))), I8.as_pointer())
        b.call(_pthread_barrier_wait(self.module), [ptr])

    def shfl_bfly(self, v, lanemask: int):
        """Value of the lane (this lane ^ lanemask) of the warp; every lane of the warp must call."""
        b = self.b
        is_f = v.type == F32
        if self.mode == "nvptx":
            name = "llvm.nvvm.shfl.sync.bfly.f32" if is_f else "llvm.nvvm.shfl.sync.bfly.i32"
            t = F32 if is_f else I32
            f = self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(t, [I32, t, I32, I32]), name)
            f.attributes.add("convergent")
            return b.call(f, [c32(-1), v, c32(lanemask), c32(31)])
        x = b.bitcast(v, I32) if is_f else v
        xchg = b.inttoptr(b.load(b.gep(self.ctx, [c64(CTX_XCHG)], inbounds=True)), I32.as_pointer())
        t = self.tid()
        b.store(x, b.gep(xchg, [t], inbounds=True))
        self._warp_barrier()
        y = b.load(b.gep(xchg, [b.xor(t, c32(lanemask))], inbounds=True))
        self._warp_barrier()
        return b.bitcast(y, F32) if is_f else y

    def warp_reduce(self, v, combine, width: int = 32):
        """Butterfly reduction over `width` lanes: every lane gets the total."""
        m = width // 2
        while m >= 1:
            v = combine(v, self.shfl_bfly(v, m))
            m //= 2
        return v

    def block_reduce(self, v, combine, nthreads: int, scratch):
        """Every thread of the block gets combine() over all threads' `v` (f32).

        `scratch`: shared f32[32] (one slot per warp). Ends with a barrier, so
        the scratch can be reused right away.
        """
        b = self.b
        v = self.warp_reduce(v, combine, min(32, _pow2_ceil(nthreads)))
        nwarps = (nthreads + 31) // 32
        if nwarps == 1:
            return v
        t = self.tid()
        lane = b.and_(t, c32(31))
        warp = b.lshr(t, c32(5))
        with self.b.if_then(b.icmp_unsigned("==", lane, c32(0))):
            b.store(v, b.gep(scratch, [warp], inbounds=True))
        self.barrier()
        acc = b.load(b.gep(scratch, [c32(0)], inbounds=True))
        for w in range(1, nwarps):
            acc = combine(acc, b.load(b.gep(scratch, [c32(w)], inbounds=True)))
        self.barrier()
        return acc

    # ------------------------------------------------------------ memory
    def shared(self, elem: ir.Type, count: int, name: str = "smem", align: int = 16):
        """A shared array of `count` elements (pointer to the first), its offset a multiple of `align`.

        Every kernel's shared memory is one dynamic allocation (`extern
        __shared__`), carved at fixed offsets: the launch passes its size, so a
        kernel may use more than the 48 KiB a static array is limited to. The
        allocation is aligned to 1024 bytes (wgmma's swizzled tiles repeat
        every 1024 bytes of address)."""
        nbytes = count * _type_bytes(elem)
        off = self.smem.alloc(nbytes, align)
        b = self.b
        if self.mode == "nvptx":
            gv = self.module.globals.get(DYNAMIC_SMEM)
            if gv is None:
                gv = ir.GlobalVariable(self.module, ir.ArrayType(I8, 0), DYNAMIC_SMEM, addrspace=3)
                gv.linkage = "external"
                gv.align = SMEM_ALIGN
            return gv.gep([c32(0), c32(off)]).bitcast(elem.as_pointer(3))  # constant: valid in every block
        base = self._sreg_cache["shared"]
        return b.bitcast(b.gep(base, [c64(off)], inbounds=True), elem.as_pointer())

    def smem_offset(self, ptr):
        """A shared-memory pointer as the i32 address PTX's shared-space instructions take (emu: bytes from the block's base)."""
        b = self.b
        if self.mode == "nvptx":
            return b.ptrtoint(ptr, I32)
        base = b.ptrtoint(self._sreg_cache["shared"], I64)
        return b.trunc(b.sub(b.ptrtoint(ptr, I64), base), I32)

    # ------------------------------------------------------------ loops (i32)
    @contextmanager
    def loop32(self, lo, hi, step=1, name: str = "i"):
        """for (i = lo; i < hi; i += step), i32; lo/hi/step: int or i32 value."""
        b = self.b
        lo = c32(lo) if isinstance(lo, int) else lo
        hi = c32(hi) if isinstance(hi, int) else hi
        step = c32(step) if isinstance(step, int) else step
        fn = b.function
        pre = b.block
        head = fn.append_basic_block(f"{name}.head")
        body = fn.append_basic_block(f"{name}.body")
        done = fn.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I32, name=name)
        i.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", i, hi), body, done)
        b.position_at_end(body)
        yield i
        nxt = b.add(i, step, name=f"{name}.next", flags=["nsw"])
        i.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(done)

    @contextmanager
    def grid_stride(self, total: int, name: str = "e"):
        """Every index of [0, total) once over the whole grid (1-D grid and blocks)."""
        b = self.b
        start = b.add(b.mul(self.ctaid("x"), self.ntid("x")), self.tid("x"))
        step = b.mul(self.nctaid("x"), self.ntid("x"))
        with self.loop32(start, total, step, name) as i:
            yield i

    # ------------------------------------------------------------ math
    def intrinsic(self, name: str, ret, args):
        """LLVM intrinsics, with the ones NVPTX cannot lower built from others."""
        t = args[0].type
        scalar_f32 = t == F32
        if name == "llvm.log" and scalar_f32:
            return self.b.fmul(self.log2(args[0]), ir.Constant(F32, 0.6931471805599453))
        if name == "llvm.pow" and scalar_f32:
            return self.pow(args[0], args[1])
        if name == "llvm.exp2" and scalar_f32:
            return self.exp2(args[0])
        return super().intrinsic(name, ret, args)

    def log2(self, x):
        if self.mode == "nvptx":
            f = self.module.globals.get("llvm.nvvm.lg2.approx.f") or ir.Function(self.module, ir.FunctionType(F32, [F32]), "llvm.nvvm.lg2.approx.f")
            return self.b.call(f, [x])
        f = self.module.globals.get("log2f") or ir.Function(self.module, ir.FunctionType(F32, [F32]), "log2f")
        return self.b.call(f, [x])

    def exp2(self, x):
        if self.mode == "nvptx":
            f = self.module.globals.get("llvm.nvvm.ex2.approx.f") or ir.Function(self.module, ir.FunctionType(F32, [F32]), "llvm.nvvm.ex2.approx.f")
            return self.b.call(f, [x])
        f = self.module.globals.get("exp2f") or ir.Function(self.module, ir.FunctionType(F32, [F32]), "exp2f")
        return self.b.call(f, [x])

    def pow(self, x, y):
        """x ** y for f32 (ONNX Pow): exact for the common constant exponents, exp2(y log2|x|) otherwise."""
        b = self.b
        if isinstance(y, ir.Constant):
            v = float(y.constant)
            if v == 1.0:
                return x
            if v == 2.0:
                return b.fmul(x, x)
            if v == 3.0:
                return b.fmul(b.fmul(x, x), x)
            if v == 0.5:
                return self.sqrt(x)
            if v == -1.0:
                return b.fdiv(cf(1.0), x)
            if v == 0.0:
                return cf(1.0)
        ax = self.fabs(x)
        r = self.exp2(b.fmul(y, self.log2(ax)))
        # a negative base: defined for integral exponents, negative for odd ones
        yi = self.floor(y)
        integral = b.fcmp_ordered("==", yi, y)
        half = b.fmul(yi, cf(0.5))
        odd = b.fcmp_ordered("!=", self.floor(half), half)
        neg = b.fcmp_ordered("<", x, cf(0.0))
        r = b.select(b.and_(neg, odd), b.fneg(r), r)
        r = b.select(b.and_(neg, b.not_(integral)), cf(float("nan")), r)
        return b.select(b.fcmp_ordered("==", y, cf(0.0)), cf(1.0), r)


def _pow2_ceil(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _type_bytes(t) -> int:
    if isinstance(t, ir.IntType):
        return max(1, t.width // 8)
    return {ir.FloatType: 4, ir.DoubleType: 8, ir.HalfType: 2}[type(t)]


def _pthread_barrier_wait(module: ir.Module) -> ir.Function:
    f = module.globals.get("pthread_barrier_wait")
    if f is None:
        f = ir.Function(module, ir.FunctionType(I32, [I8.as_pointer()]), "pthread_barrier_wait")
    return f


__all__ = ["GpuBuilder", "c32", "c64", "cf", "F32", "I1", "I8", "I32", "I64", "CTX_SLOTS"]
