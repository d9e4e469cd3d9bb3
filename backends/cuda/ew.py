"""Elementwise code for the GPU: coordinates, typed loads/stores, and the epilogue evaluator.

`Coords` gives the coordinates of one element of a tensor, computed lazily
from flat indices of groups of consecutive dimensions (a GEMM epilogue knows
the batch, the channel and the spatial position separately; an elementwise
kernel knows one flat index), and the element offset of that position in
any operand that broadcasts to the tensor.

`eval_ops` evaluates a chain of elementwise graph ops (and batch_norm) at one
position: operands come from registers (`env`), from memory (`Leaf`, read at
the broadcast offset), or are scalar constants (literals). The scalar IR of
each op is the CPU backend's `compute()`: the same code on both back ends.
Values are f32 in registers for f16/f32 tensors (f16 is widened on load and
narrowed on store), so every op computes in f32; bfloat16 likewise (i16 in
memory: the high half of an f32, rounded to nearest even on store).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from dsc.backends.cpu.emit_elementwise import ELEMENTWISE, broadcast_strides, compute
from dsc.backends.cuda.gpubuilder import F32, I1, I8, I32, GpuBuilder, c32
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import BFLOAT16, sig_of
from dsc.runtime.errors import DscError

F16 = ir.HalfType()
F64 = ir.DoubleType()

_MEM_TYPES = {
    np.dtype(np.float32): F32,
    np.dtype(np.float16): F16,
    np.dtype(np.float64): F64,
    np.dtype(np.int64): ir.IntType(64),
    np.dtype(np.int32): I32,
    np.dtype(np.int16): ir.IntType(16),
    np.dtype(np.int8): I8,
    np.dtype(np.uint64): ir.IntType(64),
    np.dtype(np.uint32): I32,
    np.dtype(np.uint16): ir.IntType(16),
    np.dtype(np.uint8): I8,
    np.dtype(np.bool_): I8,
    BFLOAT16: ir.IntType(16),
}
I16 = ir.IntType(16)


def is_float(dtype) -> bool:
    """float16/32/64 and bfloat16 (whose NumPy kind is 'V')."""
    dt = np.dtype(dtype)
    return dt.kind == "f" or dt == BFLOAT16


def bf16_to_f32(gb: GpuBuilder, bits):
    """bfloat16 bits (i16) -> f32: the high half of an f32."""
    b = gb.b
    return b.bitcast(b.shl(b.zext(bits, I32), ir.Constant(I32, 16)), F32)


def f32_to_bf16(gb: GpuBuilder, v):
    """f32 -> bfloat16 bits (i16), rounded to nearest even; NaN stays a (quiet) NaN."""
    b = gb.b
    x = b.bitcast(v, I32)
    lsb = b.and_(b.lshr(x, ir.Constant(I32, 16)), ir.Constant(I32, 1))
    r = b.lshr(b.add(x, b.add(ir.Constant(I32, 0x7FFF), lsb)), ir.Constant(I32, 16))
    nan = b.fcmp_unordered("uno", v, v)
    q = b.or_(b.lshr(x, ir.Constant(I32, 16)), ir.Constant(I32, 0x40))
    return b.trunc(b.select(nan, q, r), I16)

# Ops the evaluator handles: the CPU's elementwise set plus batch_norm.
EW_OPS = ELEMENTWISE + (g.BatchNormOp,)


def mem_type(dtype) -> ir.Type:
    dt = np.dtype(dtype)
    if dt not in _MEM_TYPES:
        raise DscError(f"the CUDA backend has no code for {dt} tensors")
    return _MEM_TYPES[dt]


def reg_type(dtype) -> ir.Type:
    """The register type of an element: f32 for f16/f32, i1 for bool, else the memory type."""
    dt = np.dtype(dtype)
    if dt == np.float16 or dt == BFLOAT16:
        return F32
    if dt == np.bool_:
        return I1
    return mem_type(dt)


def load_elem(gb: GpuBuilder, ptr, off, dtype):
    b = gb.b
    return _elem_reg(gb, b.load(b.gep(ptr, [off], inbounds=True)), np.dtype(dtype))


def _mem_value(gb: GpuBuilder, v, dt):
    """A register as the element stored in memory (store_elem's conversions)."""
    b = gb.b
    if dt == np.float16:
        return b.fptrunc(v, F16) if v.type != F16 else v
    if dt == BFLOAT16:
        return f32_to_bf16(gb, v)
    if dt == np.bool_:
        return b.zext(v, I8) if v.type == I1 else v
    return v


def store_elem(gb: GpuBuilder, v, ptr, off, dtype):
    gb.b.store(_mem_value(gb, v, np.dtype(dtype)), gb.b.gep(ptr, [off], inbounds=True))


def _elem_reg(gb: GpuBuilder, v, dt):
    """A loaded element as a register (load_elem's conversions)."""
    b = gb.b
    if dt == np.float16:
        return b.fpext(v, F32)
    if dt == BFLOAT16:
        return bf16_to_f32(gb, v)
    if dt == np.bool_:
        return b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
    return v


def _run_ptr(gb: GpuBuilder, ptr, off, dtype, n: int):
    """(pointer to <n x elem> at ptr[off], alignment): off a multiple of n, the buffer 16-byte aligned."""
    b = gb.b
    t = mem_type(dtype)
    vt = ir.VectorType(t, n)
    p = b.gep(ptr, [off], inbounds=True)
    return b.bitcast(p, vt.as_pointer(p.type.addrspace)), min(16, n * np.dtype(dtype).itemsize)


def load_run(gb: GpuBuilder, ptr, off, dtype, n: int) -> list:
    """n consecutive elements from ptr[off] (off a multiple of n) as one vector load, as registers."""
    b = gb.b
    vp, align = _run_ptr(gb, ptr, off, dtype, n)
    vec = b.load(vp, align=align)
    dt = np.dtype(dtype)
    return [_elem_reg(gb, b.extract_element(vec, c32(j)), dt) for j in range(n)]


def store_run(gb: GpuBuilder, vals: list, ptr, off, dtype):
    """Registers vals to ptr[off ...] (off a multiple of len(vals)) as one vector store."""
    b = gb.b
    dt = np.dtype(dtype)
    t = mem_type(dt)
    vp, align = _run_ptr(gb, ptr, off, dt, len(vals))
    vec = ir.Constant(vp.type.pointee, None)
    for j, v in enumerate(vals):
        v = _mem_value(gb, v, dt)
        assert v.type == t, (v.type, t)
        vec = b.insert_element(vec, v, c32(j))
    b.store(vec, vp, align=align)


def const_value(arr: np.ndarray):
    """A scalar constant as a register literal."""
    x = arr.reshape(-1)[0]
    t = reg_type(arr.dtype)
    if arr.dtype == np.bool_:
        return ir.Constant(I1, int(bool(x)))
    if is_float(arr.dtype):
        return ir.Constant(t, float(x))
    return ir.Constant(t, int(x))


def contiguous_strides(shape) -> list[int]:
    st, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        st[d] = acc
        acc *= shape[d]
    return st


class Coords:
    """Coordinates of one element of `shape`, from flat indices of groups of consecutive dims."""

    def __init__(self, gb: GpuBuilder, shape, groups):
        self.gb = gb
        self.shape = tuple(int(s) for s in shape)
        self.groups = [(tuple(dims), v) for dims, v in groups]  # partition of range(rank), in order
        assert [d for dims, _ in self.groups for d in dims] == list(range(len(self.shape))), (self.groups, self.shape)
        self._coord: dict[int, ir.Value] = {}
        self._flat = None

    @classmethod
    def from_flat(cls, gb: GpuBuilder, shape, flat) -> Coords:
        rank = len(shape)
        return cls(gb, shape, [(tuple(range(rank)), flat)] if rank else [])

    def _group(self, d: int):
        for dims, v in self.groups:
            if d in dims:
                return dims, v
        raise KeyError(d)

    def coord(self, d: int):
        if d in self._coord:
            return self._coord[d]
        b = self.gb.b
        if self.shape[d] == 1:
            x = c32(0)
        else:
            dims, v = self._group(d)
            inner = int(np.prod(self.shape[d + 1 : dims[-1] + 1], dtype=np.int64))
            x = b.udiv(v, c32(inner)) if inner > 1 else v
            if d != dims[0] and any(self.shape[e] > 1 for e in dims if e < d):
                x = b.urem(x, c32(self.shape[d]))
        self._coord[d] = x
        return x

    def flat(self):
        if self._flat is None:
            self._flat = self.offset(contiguous_strides(self.shape))
        return self._flat

    def offset(self, strides):
        """Σ coord(d) * strides[d], using each group's flat index where the strides allow."""
        b = self.gb.b
        total = None
        for dims, v in self.groups:
            live = [d for d in dims if self.shape[d] > 1]
            if not any(strides[d] for d in live):
                continue
            last = dims[-1]
            units = set()
            for d in live:
                inner = int(np.prod(self.shape[d + 1 : last + 1], dtype=np.int64))
                units.add(strides[d] // inner if strides[d] % inner == 0 else None)
            if len(units) == 1 and None not in units:
                u = units.pop()
                term = v if u == 1 else b.mul(v, c32(u))
            else:
                term = None
                for d in live:
                    if strides[d] == 0:
                        continue
                    t = self.coord(d)
                    t = t if strides[d] == 1 else b.mul(t, c32(strides[d]))
                    term = t if term is None else b.add(term, t)
            total = term if total is None else b.add(total, term)
        return c32(0) if total is None else total


@dataclass
class Leaf:
    """A tensor in memory, read at the broadcast position of each element of the output."""

    ptr: ir.Value
    shape: tuple[int, ...]
    dtype: np.dtype
    channel_only: bool = False  # a [C] parameter read at coordinate 1 (batch_norm)
    nhwc: bool = False  # stored [batch][positions][channel] (codegen.channels_last_values); read at the output's shape

    def load(self, gb: GpuBuilder, coords: Coords):
        if self.channel_only:
            return load_elem(gb, self.ptr, coords.coord(1), self.dtype)
        if self.nhwc:
            assert tuple(self.shape) == coords.shape, ("a channels-last leaf is read at its own shape", self.shape, coords.shape)
            return load_elem(gb, self.ptr, coords.offset(channels_last_strides(self.shape)), self.dtype)
        st = broadcast_strides(self.shape, coords.shape)
        return load_elem(gb, self.ptr, coords.offset(st), self.dtype)


def group_leaves(grp, ptrs) -> dict:
    """Every leaf of a fused group as a Leaf at its kernel argument (channels-last where grp.layout says)."""
    return {v: Leaf(ptrs[grp.index[v]], sig_of(v.type).shape, sig_of(v.type).dtype, nhwc=grp.layout.get(v) == "nhwc") for v in grp.leaves}


def channels_last_strides(shape) -> list:
    """Strides of a [batch][channel][positions...] tensor stored [batch][positions...][channel]."""
    c = shape[1]
    sp = [s * c for s in contiguous_strides(shape[2:])]
    return [c * int(np.prod(shape[2:], dtype=np.int64)), 1, *sp]


def gpu_cast(gb: GpuBuilder, x, src: np.dtype, dst: np.dtype):
    """ONNX Cast on registers (f16 lives in f32 registers: rounded through half)."""
    b = gb.b
    src, dst = np.dtype(src), np.dtype(dst)
    rt = reg_type(dst)
    if dst == np.bool_:
        if x.type == I1:
            return x
        return b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0)) if is_float(src) else b.icmp_signed("!=", x, ir.Constant(x.type, 0))
    if is_float(dst):
        if is_float(src):
            y = x
            if x.type != rt:
                y = b.fpext(x, rt) if _fbits(rt) > _fbits(x.type) else b.fptrunc(x, rt)
        elif src == np.bool_ or src.kind == "u":
            y = b.uitofp(x, rt)
        else:
            y = b.sitofp(x, rt)
        if dst == np.float16:
            y = b.fpext(b.fptrunc(y, F16), F32)
        elif dst == BFLOAT16:
            y = bf16_to_f32(gb, f32_to_bf16(gb, y))
        return y
    # to an integer
    if is_float(src):
        return b.fptoui(x, rt) if dst.kind == "u" else b.fptosi(x, rt)
    if x.type.width == rt.width:
        return x
    if x.type == I1 or src.kind == "u":
        return b.zext(x, rt) if rt.width > x.type.width else b.trunc(x, rt)
    return b.sext(x, rt) if rt.width > x.type.width else b.trunc(x, rt)


def _fbits(t) -> int:
    return {ir.HalfType: 16, ir.FloatType: 32, ir.DoubleType: 64}[type(t)]


def eval_ops(gb: GpuBuilder, ops, env: dict, leaves: dict, coords: Coords, consts: dict) -> dict:
    """Evaluate elementwise `ops` at `coords`; results go into (and operands come from) `env`."""
    b = gb.b

    def operand(v):
        if v in env:
            return env[v]
        if v in consts and consts[v].size == 1:
            env[v] = const_value(consts[v])
        elif v in leaves:
            env[v] = leaves[v].load(gb, coords)
        else:
            raise DscError(f"GPU elementwise code: operand {v} has no value")
        return env[v]

    for op in ops:
        if isinstance(op, g.BatchNormOp):
            x = operand(op.input)
            eps = op.py_attrs()["epsilon"]
            p = [_channel(gb, v, env, leaves, coords, consts) for v in (op.scale, op.bias, op.mean, op.var)]
            sc, bi, mu, var = p
            inv = b.fdiv(ir.Constant(F32, 1.0), gb.sqrt(b.fadd(var, ir.Constant(F32, eps))))
            env[op.result] = b.fadd(b.fmul(b.fmul(b.fsub(x, mu), inv), sc), bi)
            continue
        args = [operand(v) for v in op.operands]
        if isinstance(op, g.CastOp):
            env[op.result] = gpu_cast(gb, args[0], sig_of(op.input.type).dtype, sig_of(op.result.type).dtype)
            continue
        env[op.results[0]] = compute(gb, op, args)
    return env


def _channel(gb, v, env, leaves, coords, consts):
    if v in env:
        return env[v]
    if v in consts and consts[v].size == 1:
        return const_value(consts[v])
    leaf = leaves[v]
    if len(leaf.shape) == 1:
        return load_elem(gb, leaf.ptr, coords.coord(1), leaf.dtype)
    return leaf.load(gb, coords)


def is_ew(op) -> bool:
    return isinstance(op, EW_OPS)


__all__ = ["Coords", "Leaf", "group_leaves", "eval_ops", "load_elem", "load_run", "store_elem", "store_run", "mem_type", "reg_type", "contiguous_strides", "EW_OPS", "gpu_cast", "const_value", "F16"]
