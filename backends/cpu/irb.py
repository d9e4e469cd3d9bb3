"""A small IR-building kit over llvmlite.ir for dsc's CPU emitters.

`KernelBuilder` wraps an `ir.IRBuilder` with what every emitter needs:
counted loops (`with kb.loop(lo, hi) as i:`), typed pointer arithmetic with
`getelementptr` (never ptrtoint: LLVM must see addresses to vectorize),
unaligned vector loads and stores (explicit align 4: numpy buffers are not
64-byte aligned), splats, FMA and min/max intrinsics, and the thread split of
an iteration space (`kb.thread_range(n)`).

Why llvmlite.ir directly rather than xDSL's llvm dialect: the emitters build
hundreds of thousands of instructions for a ResNet-50, and going through xDSL
ops (and its missing arith/vector→llvm conversions) costs seconds per model
and hides the vector types, alignment and GEP forms that decide performance.
The kernel dialect above stays in xDSL; this is the last step below it.
"""

from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

F32 = ir.FloatType()
F16 = ir.HalfType()
F64 = ir.DoubleType()
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VOID = ir.VoidType()
F32P = F32.as_pointer()
I8P = I8.as_pointer()


def vec(n: int, elem=F32) -> ir.VectorType:
    return ir.VectorType(elem, n)


def const_i64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


def const_f32(v: float) -> ir.Constant:
    return ir.Constant(F32, float(v))


class KernelBuilder:
    def __init__(self, builder: ir.IRBuilder, module: ir.Module):
        self.b = builder
        self.module = module

    # ------------------------------------------------------------ control flow
    @contextmanager
    def loop(self, lo, hi, step: int = 1, name: str = "i"):
        """for (i = lo; i < hi; i += step) — yields i (i64). lo/hi: int or i64 value."""
        b = self.b
        lo = const_i64(lo) if isinstance(lo, int) else lo
        hi = const_i64(hi) if isinstance(hi, int) else hi
        fn = b.function
        pre = b.block
        head = fn.append_basic_block(f"{name}.head")
        body = fn.append_basic_block(f"{name}.body")
        done = fn.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=name)
        i.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", i, hi), body, done)
        b.position_at_end(body)
        yield i
        nxt = b.add(i, const_i64(step), name=f"{name}.next", flags=["nsw"])
        i.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(done)

    @contextmanager
    def if_then(self, cond):
        with self.b.if_then(cond):
            yield

    def thread_range(self, n: int, tid, nthreads, grain: int = 1):
        """This thread's [lo, hi) share of range(n), split in chunks of `grain`."""
        b = self.b
        chunks = (n + grain - 1) // grain
        per = b.sdiv(b.add(const_i64(chunks), b.sub(nthreads, const_i64(1))), nthreads)
        lo = b.mul(b.mul(tid, per), const_i64(grain))
        hi = b.mul(b.mul(b.add(tid, const_i64(1)), per), const_i64(grain))
        lo = self.smin(lo, const_i64(n))
        hi = self.smin(hi, const_i64(n))
        return lo, hi

    def weighted_thread_range(self, n: int, period: int, tail: int, cost: int, tail_cost: int, tid, nthreads):
        """This thread's [lo, hi) share of range(n) by cost: n is whole periods of `period` items,
        each period's last `tail` items cost `tail_cost`, the others `cost` (integers). An item
        belongs to the thread whose share of the total cost holds the item's start.
        With tail_cost == cost it is thread_range's split but for its rounding."""
        if tail_cost == cost or tail == 0:
            return self.thread_range(n, tid, nthreads)
        b = self.b
        full = (period - tail) * cost
        per_cost = full + tail * tail_cost
        total = const_i64(n // period * per_cost)

        def items_before(t):  # items whose start lies before thread t's first cost unit
            pos = b.sdiv(b.mul(total, t), nthreads)
            q = b.sdiv(pos, const_i64(per_cost))
            r = b.sub(pos, b.mul(q, const_i64(per_cost)))
            head = b.sdiv(b.add(r, const_i64(cost - 1)), const_i64(cost))
            in_tail = b.sdiv(b.add(b.sub(r, const_i64(full)), const_i64(tail_cost - 1)), const_i64(tail_cost))
            j = b.select(b.icmp_signed("<=", r, const_i64(full)), head, b.add(const_i64(period - tail), in_tail))
            return self.smin(b.add(b.mul(q, const_i64(period)), j), const_i64(n))

        return items_before(tid), items_before(b.add(tid, const_i64(1)))

    def smin(self, a, c):
        return self.b.select(self.b.icmp_signed("<", a, c), a, c)

    def smax(self, a, c):
        return self.b.select(self.b.icmp_signed(">", a, c), a, c)

    # ---------------------------------------------------------------- memory
    def gep(self, ptr, idx):
        idx = const_i64(idx) if isinstance(idx, int) else idx
        return self.b.gep(ptr, [idx], inbounds=True)

    def load(self, ptr, idx):
        return self.b.load(self.gep(ptr, idx))

    def store(self, value, ptr, idx):
        self.b.store(value, self.gep(ptr, idx))

    def load_vec(self, ptr, idx, n: int):
        p = self.b.bitcast(self.gep(ptr, idx), vec(n, ptr.type.pointee).as_pointer())
        return self.b.load(p, align=_elem_bytes(ptr.type.pointee))

    def store_vec(self, value, ptr, idx):
        n = value.type.count
        p = self.b.bitcast(self.gep(ptr, idx), vec(n, ptr.type.pointee).as_pointer())
        self.b.store(value, p, align=_elem_bytes(ptr.type.pointee))

    def splat(self, scalar, n: int):
        if isinstance(scalar, float | int):
            return ir.Constant(vec(n), [float(scalar)] * n)
        t = vec(n, scalar.type)
        v = self.b.insert_element(ir.Constant(t, ir.Undefined), scalar, ir.Constant(I32, 0))
        return self.b.shuffle_vector(v, ir.Constant(t, ir.Undefined), ir.Constant(vec(n, I32), [0] * n))

    # ------------------------------------------------------------ intrinsics
    def intrinsic(self, name: str, ret, args):
        """Call an LLVM intrinsic overloaded on its first argument's type (llvm.fma.v16f32, ...)."""
        types = [a.type for a in args]
        full = f"{name}.{mangle(types[0])}"
        fn = self.module.globals.get(full) or ir.Function(self.module, ir.FunctionType(ret, types), full)
        return self.b.call(fn, args)

    def fma(self, a, b, c):
        return self.intrinsic("llvm.fma", a.type, [a, b, c])

    def fmax(self, a, b):
        return self.intrinsic("llvm.maxnum", a.type, [a, b])

    def fmin(self, a, b):
        return self.intrinsic("llvm.minnum", a.type, [a, b])

    def sqrt(self, a):
        return self.intrinsic("llvm.sqrt", a.type, [a])

    def fabs(self, a):
        return self.intrinsic("llvm.fabs", a.type, [a])

    def floor(self, a):
        return self.intrinsic("llvm.floor", a.type, [a])

    def ceil(self, a):
        return self.intrinsic("llvm.ceil", a.type, [a])

    def reduce_fadd(self, v):
        """Horizontal sum of a float vector (reassociation allowed)."""
        b = self.b
        n = v.type.count
        while n > 1:
            h = n // 2
            lo = b.shuffle_vector(v, v, ir.Constant(vec(h, I32), list(range(h))))
            hi = b.shuffle_vector(v, v, ir.Constant(vec(h, I32), list(range(h, n))))
            v = b.fadd(lo, hi)
            n = h
        return b.extract_element(v, ir.Constant(I32, 0))

    def reduce_fmax(self, v):
        b = self.b
        n = v.type.count
        while n > 1:
            h = n // 2
            lo = b.shuffle_vector(v, v, ir.Constant(vec(h, I32), list(range(h))))
            hi = b.shuffle_vector(v, v, ir.Constant(vec(h, I32), list(range(h, n))))
            v = self.fmax(lo, hi)
            n = h
        return b.extract_element(v, ir.Constant(I32, 0))


def mangle(t) -> str:
    """LLVM's overload suffix of a type: f32, v16f32, i64, v8i1."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{mangle(t.element)}"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    return {ir.FloatType: "f32", ir.HalfType: "f16", ir.DoubleType: "f64"}[type(t)]


def _elem_bytes(t) -> int:
    """Alignment to promise for a vector access: the element's size (numpy guarantees no more)."""
    return {F32: 4, F16: 2, F64: 8, I64: 8, I32: 4, ir.IntType(16): 2, I8: 1, I1: 1}.get(t, 4)


def declare_function(module: ir.Module, name: str, ret, args) -> ir.Function:
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(ret, args), name)


def emit_barrier(module: ir.Module, arch: str) -> ir.Function:
    """The step barrier; it lives in workers.py with the other threading code."""
    from dsc.backends.cpu.workers import emit_barrier as emit

    return emit(module, arch)
