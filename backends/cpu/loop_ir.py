"""Loop nests, vector runs and compute types shared by the CPU data-movement, reduction and pooling
emitters (emit_data.py, emit_reduce.py, emit_pool.py), and by the elementwise emitter's type handling.

`par_nest` walks a destination in row-major order, merging leading dimensions until there are enough
units to split across threads; `vloop` runs a body over vector-width chunks with a masked tail;
`fold_range` folds a contiguous run; the compute-type helpers widen float16 to float32 on load and
narrow it back on store.
"""

from __future__ import annotations

import math

from llvmlite import ir

from dsc.backends.cpu.irb import F16, F32, F64, I32, KernelBuilder, const_i64, vec

VBYTES = 64  # bytes per vector access (one AVX-512 register; two or four on narrower targets)


def elem_bytes(t) -> int:
    if isinstance(t, ir.IntType):
        return max(t.width // 8, 1)
    return {F16: 2, F32: 4, F64: 8}[t]


def copy_lanes(t) -> int:
    """Lanes of a 64-byte vector of element type t."""
    return max(1, VBYTES // elem_bytes(t))


def prod(xs) -> int:
    return int(math.prod(xs))


def row_strides(shape) -> list[int]:
    st, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        st[d] = acc
        acc *= shape[d]
    return st


def as_i64(v):
    return const_i64(v) if isinstance(v, int) else v


def add_off(kb: KernelBuilder, base, idx, stride: int):
    """base + idx * stride, folding zeros and ones."""
    if stride == 0:
        return base
    t = idx if stride == 1 else kb.b.mul(as_i64(idx), const_i64(stride))
    if isinstance(base, int) and base == 0:
        return as_i64(t)
    return kb.b.add(as_i64(base), as_i64(t))


def alloca(kb: KernelBuilder, ty):
    """A stack slot in the entry block (SROA turns it into registers)."""
    b = kb.b
    with b.goto_block(b.function.entry_basic_block):
        return b.alloca(ty)


def splat_const(t, value, n: int):
    c = ir.Constant(t, value)
    return ir.Constant(vec(n, t), [value] * n) if n > 1 else c


def unflatten(kb: KernelBuilder, r, dims: list[int]) -> list:
    """Row-major digits of flat index r (i64) over dims."""
    b = kb.b
    digits = [None] * len(dims)
    for d in range(len(dims) - 1, -1, -1):
        if d == 0:
            digits[d] = r
        else:
            digits[d] = b.urem(r, const_i64(dims[d])) if dims[d] != 1 else const_i64(0)
            r = b.udiv(r, const_i64(dims[d])) if dims[d] != 1 else r
    return digits


def par_nest(kb: KernelBuilder, dims: list[int], strides: list[list[int]], bases: list, tid, nthreads, body, min_split: int = 64) -> None:
    """Walk the index space `dims` (row-major), this thread's share of it.

    strides[k][d] is operand k's element stride along dim d; body(digits,
    offs) runs at every point with offs[k] = bases[k] + sum(digit_d *
    strides[k][d]). The leading dims are merged until there are `min_split`
    units to split across threads; the rest are nested loops.
    """
    m, units = 0, 1
    while m < len(dims) and units < min_split:
        units *= dims[m]
        m += 1
    if units == 0 or any(d == 0 for d in dims):
        return
    lo, hi = kb.thread_range(units, tid, nthreads)

    def rec(d, digits, offs):
        if d == len(dims):
            body(digits, offs)
            return
        with kb.loop(0, dims[d], 1, f"n{d}") as i:
            rec(d + 1, digits + [i], [add_off(kb, o, i, s[d]) for o, s in zip(offs, strides)])

    with kb.loop(lo, hi, 1, "par") as r:
        digits = unflatten(kb, r, dims[:m])
        offs = list(bases)
        for d in range(m):
            offs = [add_off(kb, o, digits[d], s[d]) for o, s in zip(offs, strides)]
        rec(m, digits, [as_i64(o) for o in offs])


def vloop(kb: KernelBuilder, lo, hi, w: int, body, name: str = "v") -> None:
    """for i in [lo, hi): body(i, w) in steps of w while a full vector fits, then body(i, 1)."""
    b = kb.b
    if isinstance(lo, int) and isinstance(hi, int):
        if hi <= lo:
            return
        vend = lo + (hi - lo) // w * w if w > 1 else lo
        if vend > lo:
            with kb.loop(lo, vend, w, name) as i:
                body(i, w)
        if hi > vend:
            if hi - vend == 1:
                body(const_i64(vend), 1)
            else:
                with kb.loop(vend, hi, 1, name + "t") as i:
                    body(i, 1)
        return
    lo, hi = as_i64(lo), as_i64(hi)
    if w > 1:
        vend = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), const_i64(w)), const_i64(w)))
        with kb.loop(lo, vend, w, name) as i:
            body(i, w)
        lo = vend
    with kb.loop(lo, hi, 1, name + "t") as i:
        body(i, 1)


def load_n(kb: KernelBuilder, ptr, idx, w: int):
    return kb.load_vec(ptr, idx, w) if w > 1 else kb.load(ptr, idx)


def store_n(kb: KernelBuilder, v, ptr, idx) -> None:
    if isinstance(v.type, ir.VectorType):
        kb.store_vec(v, ptr, idx)
    else:
        kb.store(v, ptr, idx)


def reverse(kb: KernelBuilder, v):
    n = v.type.count
    return kb.b.shuffle_vector(v, v, ir.Constant(vec(n, I32), list(range(n - 1, -1, -1))))


# ---------------------------------------------------- compute-type helpers (shared)


def compute_type(t):
    """The type arithmetic happens in: float16 widens to float32, the rest stay."""
    return F32 if t == F16 else t


def is_float(t) -> bool:
    t = t.element if isinstance(t, ir.VectorType) else t
    return isinstance(t, ir.FloatType | ir.HalfType | ir.DoubleType)


def widen(kb: KernelBuilder, v):
    """A loaded value (scalar or vector) in its compute type: half becomes float."""
    if (v.type.element if isinstance(v.type, ir.VectorType) else v.type) != F16:
        return v
    return kb.b.fpext(v, vec(v.type.count, F32) if isinstance(v.type, ir.VectorType) else F32)


def narrow(kb: KernelBuilder, v, elem):
    """A computed value in memory type `elem`: float rounds to half (nearest even) for F16."""
    if elem != F16 or (v.type.element if isinstance(v.type, ir.VectorType) else v.type) == F16:
        return v
    return kb.b.fptrunc(v, vec(v.type.count, F16) if isinstance(v.type, ir.VectorType) else F16)


def load_c(kb: KernelBuilder, ptr, idx, w: int):
    """Load w elements (w=1: a scalar) and widen to the compute type."""
    return widen(kb, load_n(kb, ptr, idx, w))


def store_c(kb: KernelBuilder, v, ptr, idx) -> None:
    store_n(kb, narrow(kb, v, ptr.type.pointee), ptr, idx)


def cval(t, value, w: int = 1):
    """A constant of scalar type t (or a w-vector of it)."""
    value = float(value) if is_float(t) else int(value)
    return splat_const(t, value, w)


def hreduce(kb: KernelBuilder, v, comb):
    """Fold the lanes of v with comb (a tree of shuffles)."""
    b = kb.b
    if not isinstance(v.type, ir.VectorType):
        return v
    n = v.type.count
    while n > 1:
        h = n // 2
        lo = b.shuffle_vector(v, v, ir.Constant(vec(h, I32), list(range(h))))
        hi = b.shuffle_vector(v, v, ir.Constant(vec(h, I32), list(range(h, n))))
        v = comb(lo, hi)
        n = h
    return b.extract_element(v, ir.Constant(I32, 0))


def fold_range(kb: KernelBuilder, lo, n: int, w: int, ct, ident, comb, elem, unroll: int = 4):
    """comb-fold elem(i, width) over i in [lo, lo + n) (n a compile-time count) -> scalar.

    elem returns a `width`-vector (or a scalar for width 1) of compute type ct;
    up to `unroll` independent vector accumulators hide the combine latency.
    """
    b = kb.b
    lo = as_i64(lo)
    u = max(1, min(unroll, n // max(w, 1) // 2)) if w > 1 else 1
    s_acc = alloca(kb, ct)
    b.store(cval(ct, ident), s_acc)
    if w > 1 and n >= w:
        accs = [alloca(kb, vec(w, ct)) for _ in range(u)]
        for a in accs:
            b.store(cval(ct, ident, w), a)
        big = n // (u * w) * (u * w)
        if big:
            with kb.loop(0, big, u * w, "fu") as i:
                base = b.add(lo, i)
                for k, a in enumerate(accs):
                    b.store(comb(b.load(a), elem(b.add(base, const_i64(k * w)) if k else base, w)), a)
        nv = (n - big) // w * w
        if nv:
            with kb.loop(big, big + nv, w, "fv") as i:
                b.store(comb(b.load(accs[0]), elem(b.add(lo, i), w)), accs[0])
        done = big + nv
        v = b.load(accs[0])
        for a in accs[1:]:
            v = comb(v, b.load(a))
        b.store(hreduce(kb, v, comb), s_acc)
    else:
        done = 0
    if n > done:
        with kb.loop(done, n, 1, "fs") as i:
            b.store(comb(b.load(s_acc), elem(b.add(lo, i), 1)), s_acc)
    return b.load(s_acc)


__all__ = ["VBYTES", "add_off", "alloca", "as_i64", "compute_type", "copy_lanes", "cval", "elem_bytes", "fold_range", "hreduce", "is_float", "load_c", "load_n", "narrow", "par_nest", "prod", "reverse", "row_strides", "splat_const", "store_c", "store_n", "unflatten", "vloop", "widen"]
