"""The fused epilogue of GEMM-like kernels: elementwise ops applied to accumulators before the one store.

After a tile's k loop, the ops that follow the main op in a fused kernel
(bias, gemm's alpha/beta*C, per-channel scale/shift, unfolded batch norm,
residual adds, activations) run on the accumulator vectors and each yielded
value is stored once: fused kernels never write their intermediates.
`Layout` says how a tile addresses tensors of the output's shape (batch,
row and column dims; vectors run along the columns, or along the rows for
convolutions with channels as lanes); `split_kernel` and `kernel_sources`
take a kernel.fused region apart into (prologue transposes, main op,
epilogue ops) and the kernel inputs the epilogue reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from dsc.backends.cpu.emit_elementwise import ELEMENTWISE, broadcast_strides, compute
from dsc.backends.cpu.irb import F32, KernelBuilder, const_i64, vec
from dsc.backends.cpu.vector_ir import add, c64, const_mask, gather_v, gep, iota, load_v, mul, scatter_v, store_v
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of
from llvmlite import ir

F32_DT = np.dtype(np.float32)


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


__all__ = ["Epilogue", "Layout", "Source", "epilogue_arg_shapes", "kernel_sources", "split_kernel"]
