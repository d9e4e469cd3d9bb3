"""float16 <-> float32/float64 conversion routines, defined in LLVM IR inside each object.

CPU emitters keep float16 tensors as `half` in memory and compute in float32:
they `fpext` on load and `fptrunc` on store (loop_ir.load_c/store_c, the
elementwise loop driver). Where the target has no conversion instruction
(x86-64 without F16C; double -> half on every x86 level) LLVM lowers those to
compiler-rt calls: `__extendhfsf2` (half -> float), `__truncsfhf2` (float ->
half) and `__truncdfhf2` (double -> half), as read off the undefined symbols
of a test object (LLVM 22; AArch64 converts in hardware and calls none).
MCJIT cannot resolve compiler-rt symbols (the process aborts), and an
embedding C program need not link compiler-rt either, so `compile_llvm_ir`
links the definitions below into every module that mentions `half`.

They use integer operations only (a float operation on half would call them
again), round to nearest even, keep Inf and NaN (NaNs come out quiet, payload
kept where it fits) and handle denormals exactly whatever the MXCSR
flush-to-zero mode. Linkage is external with hidden visibility: the
optimizer may neither drop them (nothing calls them before instruction
selection) nor change their calling convention, and a shared library built
from the object does not export them.
"""

from __future__ import annotations

import re
from functools import cache

from llvmlite import ir

F16_SYMBOLS = ("__extendhfsf2", "__truncsfhf2", "__truncdfhf2")

_I16 = ir.IntType(16)


def uses_half(llvm_ir: str) -> bool:
    """Whether a module's IR text has `half` values (so it may call the routines)."""
    return re.search(r"\bhalf\b", llvm_ir) is not None


@cache
def float16_support_ir() -> str:
    """IR text of a module defining the conversion routines in F16_SYMBOLS."""
    m = ir.Module(name="dsc_float16")
    _extend(m, "__extendhfsf2", ir.FloatType(), 32, 8, 23)
    _truncate(m, "__truncsfhf2", ir.FloatType(), 32, 8, 23)
    _truncate(m, "__truncdfhf2", ir.DoubleType(), 64, 11, 52)
    # hidden visibility (llvmlite.ir cannot say it)
    return str(m).replace("define ", "define hidden ")


def _define(m: ir.Module, name: str, ret, arg) -> tuple[ir.IRBuilder, ir.Argument]:
    fn = ir.Function(m, ir.FunctionType(ret, [arg]), name)
    fn.attributes.add("nounwind")
    return ir.IRBuilder(fn.append_basic_block("entry")), fn.args[0]


def _extend(m: ir.Module, name: str, to, bits: int, exp_bits: int, mant_bits: int) -> None:
    """half -> a wider IEEE binary type (exact)."""
    b, x = _define(m, name, to, ir.HalfType())
    t = ir.IntType(bits)

    def c(v):
        return ir.Constant(t, v)

    h = b.zext(b.bitcast(x, _I16), t)
    sign = b.shl(b.and_(h, c(0x8000)), c(bits - 16))
    e = b.and_(b.lshr(h, c(10)), c(0x1F))
    mant = b.and_(h, c(0x3FF))
    shift = mant_bits - 10
    bias = (1 << (exp_bits - 1)) - 1
    # normal: rebias the exponent, widen the mantissa
    normal = b.or_(b.shl(b.add(e, c(bias - 15)), c(mant_bits)), b.shl(mant, c(shift)))
    # Inf/NaN: all-ones exponent; a NaN gets the quiet bit
    quiet = b.select(b.icmp_unsigned("!=", mant, c(0)), c(1 << (mant_bits - 1)), c(0))
    special = b.or_(b.or_(c(((1 << exp_bits) - 1) << mant_bits), b.shl(mant, c(shift))), quiet)
    # denormal mant * 2^-24 (zero when mant == 0): normalize by the leading bit's position p
    ctlz = m.declare_intrinsic("llvm.ctlz", [t], ir.FunctionType(t, [t, ir.IntType(1)]))
    lz = b.call(ctlz, [mant, ir.Constant(ir.IntType(1), 0)])
    p = b.sub(c(bits - 1), lz)
    den_mant = b.and_(b.shl(mant, b.sub(c(mant_bits), p)), c((1 << mant_bits) - 1))
    den = b.or_(b.shl(b.add(p, c(bias - 24)), c(mant_bits)), den_mant)
    den = b.select(b.icmp_unsigned("==", mant, c(0)), c(0), den)
    bits_ = b.select(b.icmp_unsigned("==", e, c(0x1F)), special, b.select(b.icmp_unsigned("==", e, c(0)), den, normal))
    b.ret(b.bitcast(b.or_(sign, bits_), to))


def _truncate(m: ir.Module, name: str, src, bits: int, exp_bits: int, mant_bits: int) -> None:
    """A wider IEEE binary type -> half, rounding to nearest even."""
    b, x = _define(m, name, ir.HalfType(), src)
    t = ir.IntType(bits)

    def c(v):
        return ir.Constant(t, v)

    def h16(v):
        return ir.Constant(_I16, v)

    xi = b.bitcast(x, t)
    sign = b.trunc(b.lshr(xi, c(bits - 16)), _I16)
    sign = b.and_(sign, h16(0x8000))
    a = b.and_(xi, c((1 << (bits - 1)) - 1))  # |x| as bits
    bias = (1 << (exp_bits - 1)) - 1
    inf = ((1 << exp_bits) - 1) << mant_bits
    sh = mant_bits - 10  # mantissa bits dropped for a normal half
    # NaN: quiet, top payload bits kept; Inf and everything >= 65520 (rounds past 65504): Inf
    nan = b.or_(h16(0x7E00), b.trunc(b.and_(b.lshr(a, c(sh)), c(0x3FF)), _I16))
    overflow = ((bias + 15) << mant_bits) | (0x7FF << (sh - 1))
    # normal half (|x| >= 2^-14): rebias, then round on the dropped bits (a carry into the
    # exponent is the correct next binade)
    r = b.sub(a, c((bias - 15) << mant_bits))
    r = b.add(b.add(r, c((1 << (sh - 1)) - 1)), b.and_(b.lshr(r, c(sh)), c(1)))
    normal = b.trunc(b.lshr(r, c(sh)), _I16)
    # denormal half or zero: q = full mantissa >> s, s = shift to units of 2^-24 (capped where
    # q and its rounding are 0 anyway), rounded to nearest even; q may carry to 0x400 (2^-14)
    e = b.lshr(a, c(mant_bits))
    full = b.or_(b.and_(a, c((1 << mant_bits) - 1)), b.select(b.icmp_unsigned("!=", e, c(0)), c(1 << mant_bits), c(0)))
    s = b.sub(c(bias + mant_bits - 24), e)
    s = b.select(b.icmp_unsigned(">", s, c(mant_bits + 2)), c(mant_bits + 2), s)
    q = b.lshr(full, s)
    rem = b.and_(full, b.sub(b.shl(c(1), s), c(1)))
    halfway = b.shl(c(1), b.sub(s, c(1)))
    up = b.or_(b.icmp_unsigned(">", rem, halfway), b.and_(b.icmp_unsigned("==", rem, halfway), b.icmp_unsigned("!=", b.and_(q, c(1)), c(0))))
    den = b.trunc(b.add(q, b.zext(up, t)), _I16)
    out = b.select(b.icmp_unsigned(">=", a, c((bias - 14) << mant_bits)), normal, den)
    out = b.select(b.icmp_unsigned(">=", a, c(overflow)), h16(0x7C00), out)
    out = b.select(b.icmp_unsigned(">", a, c(inf)), nan, out)
    b.ret(b.bitcast(b.or_(sign, out), ir.HalfType()))


__all__ = ["F16_SYMBOLS", "float16_support_ir", "uses_half"]
