"""Vector math for the CPU emitters: exp, log, tanh, erf, sigmoid on scalars or vectors.

Each function builds LLVM IR that works unchanged on `float` and
`<N x float>`: no libm calls in the hot loops (libm's expf does not vectorize).
exp uses a range reduction to [-ln2/2, ln2/2] and a degree-6 polynomial
(relative error < 2e-7 over the finite range); erf is Abramowitz & Stegun
7.1.26 (absolute error < 1.5e-7); tanh and sigmoid are built on exp.
"""

from __future__ import annotations

from llvmlite import ir

from dsc.backends.cpu.irb import F32, I32, KernelBuilder, vec


def _c(x, v: float):
    t = x.type
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [float(v)] * t.count)
    return ir.Constant(t, float(v))


def _ci(x, v: int):
    t = x.type
    if isinstance(t, ir.VectorType):
        return ir.Constant(vec(t.count, I32), [int(v)] * t.count)
    return ir.Constant(I32, int(v))


def _int_type(x):
    t = x.type
    return vec(t.count, I32) if isinstance(t, ir.VectorType) else I32


def exp(kb: KernelBuilder, x):
    b = kb.b
    # below the range the result is 0, not the clamp's 1e-38: a denormal would make every
    # later FMA on it take a microcode assist (masked softmax rows in BERT)
    under = b.fcmp_ordered("<", x, _c(x, -87.3))
    x = kb.fmin(kb.fmax(x, _c(x, -87.3)), _c(x, 88.7))
    n = kb.floor(b.fadd(b.fmul(x, _c(x, 1.4426950408889634)), _c(x, 0.5)))
    r = b.fsub(x, b.fmul(n, _c(x, 0.693359375)))
    r = b.fsub(r, b.fmul(n, _c(x, -2.12194440e-4)))
    p = _c(x, 1.9875691500e-4)
    for coef in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = kb.fma(p, r, _c(x, coef))
    p = kb.fma(p, b.fmul(r, r), r)
    p = b.fadd(p, _c(x, 1.0))
    ni = b.fptosi(n, _int_type(x))
    scale = b.bitcast(b.shl(b.add(ni, _ci(x, 127)), _ci(x, 23)), x.type)
    return b.select(under, _c(x, 0.0), b.fmul(p, scale))


def sigmoid(kb: KernelBuilder, x):
    b = kb.b
    return b.fdiv(_c(x, 1.0), b.fadd(_c(x, 1.0), exp(kb, b.fneg(x))))


def tanh(kb: KernelBuilder, x):
    # tanh(x) = sign(x) * (1 - 2 / (exp(2|x|) + 1)); accurate to ~1e-7 absolute
    b = kb.b
    a = kb.fabs(x)
    e = exp(kb, b.fmul(a, _c(x, 2.0)))
    t = b.fsub(_c(x, 1.0), b.fdiv(_c(x, 2.0), b.fadd(e, _c(x, 1.0))))
    return kb.intrinsic("llvm.copysign", x.type, [t, x])


def erf(kb: KernelBuilder, x):
    b = kb.b
    a = kb.fabs(x)
    t = b.fdiv(_c(x, 1.0), kb.fma(a, _c(x, 0.3275911), _c(x, 1.0)))
    p = _c(x, 1.061405429)
    for coef in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        p = kb.fma(p, t, _c(x, coef))
    p = b.fmul(p, t)
    y = b.fsub(_c(x, 1.0), b.fmul(p, exp(kb, b.fneg(b.fmul(a, a)))))
    return kb.intrinsic("llvm.copysign", x.type, [y, x])


def log(kb: KernelBuilder, x):
    return kb.intrinsic("llvm.log", x.type, [x])


def pow_(kb: KernelBuilder, x, y):
    return kb.intrinsic("llvm.pow", x.type, [x, y])


__all__ = ["exp", "sigmoid", "tanh", "erf", "log", "pow_", "F32"]
