"""Convolutions on the GPU: implicit GEMM (im2col computed on the fly) with fused epilogues, and depthwise.

A convolution is the GEMM (gemm.py)

    C[group z][co, (batch, output position)] = Σ_(ci, kernel position) W · X

whose B operand is the im2col of the input, never materialised: each load
computes the input coordinate of (k, n) (`Im2colOperand`). With tensor
cores, a 3x3 convolution orders k (kernel position, channel) and reads its
weights repacked OHWI at compile time (`TapMajorIm2colOperand`).

Tensor cores want 16-byte copies of k. A 1x1 stride-1 convolution on a map
whose positions are a multiple of 8 gets them from NCHW (runs of
positions); every other convolution with channels a multiple of 8 reads its
input channels-last (`ChannelsLastIm2colOperand`: runs of channels): either
a copy made by a transpose kernel just before it, or the tensor as its
producer stored it. codegen.channels_last_values picks the tensor-core
convolution outputs whose every reader can read them channels-last
(`reads_channels_last`: convolutions, residual adds of channels-last
convolutions, global pools); the producer's epilogue then writes
[batch][position][channel], 8 channels per thread as vectors, and in ResNet
no copy is left but the stem's. An image stem (3 channels, 7x7) reads a
copy padded to 4 channels (8-byte copies).

Depthwise convolutions (one input channel per group) are not GEMMs: a
direct kernel (depthwise.py) computes each output from its KH×KW window,
with the same fused epilogue.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from dsc.backends.cpu.codegen import BufRef
from dsc.backends.cuda.ew import Coords, contiguous_strides, load_elem
from dsc.backends.cuda.gemm import Operand, StridedOperand, _mul, _unravel, emit_gemm, epilogue_ops, make_epilogue
from dsc.backends.cuda import data, rows
from dsc.backends.cuda.depthwise import emit_depthwise
from dsc.backends.cuda.gpubuilder import c32
from dsc.backends.cuda.mma import mma_kind, row_bytes, stage_depth, worth_mma
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of


def _out_coords(b, n, out_spatial):
    """(image, [coordinate per spatial dim]) of output column n (n = image * positions + position)."""
    opl = int(np.prod(out_spatial, dtype=np.int64))
    bi = b.udiv(n, c32(opl)) if opl > 1 else n
    p = b.urem(n, c32(opl)) if opl > 1 else c32(0)
    return bi, _unravel(b, p, out_spatial)


def _window_offset(b, geom, oc, kc, base):
    """base + the row-major index of the input position under output coordinates oc and kernel position
    kc, and whether that position is inside the image (padding is not). `geom`: an operand with spatial,
    strides, pads, dil."""
    sp = contiguous_strides(geom.spatial)
    off, valid = base, None
    for d in range(len(geom.spatial)):
        pos = b.add(b.sub(_mul(b, oc[d], geom.strides[d]), c32(geom.pads[d])), _mul(b, kc[d], geom.dil[d]))
        ok = b.icmp_unsigned("<", pos, c32(geom.spatial[d]))
        valid = ok if valid is None else b.and_(valid, ok)
        off = b.add(off, _mul(b, pos, sp[d]))
    return off, valid


class Im2colOperand(Operand):
    """B(k, n) of a convolution as a GEMM: k = (ci, kernel position), n = (batch, output position).

    Group z reads input channels [z*Cg, (z+1)*Cg).
    """

    contig = 1

    def __init__(self, ptr, dtype, in_shape, out_spatial, kernel, strides, pads, dilations, cg: int):
        self.ptr, self.dtype = ptr, np.dtype(dtype)
        self.C, self.spatial = in_shape[1], tuple(in_shape[2:])
        self.out_spatial, self.kernel = tuple(out_spatial), tuple(kernel)
        self.strides, self.pads, self.dil = tuple(strides), tuple(pads), tuple(dilations)
        self.cg = cg
        self.pointwise = all(k == 1 for k in self.kernel) and all(p == 0 for p in self.pads[: len(self.kernel)]) and all(p == 0 for p in self.pads[len(self.kernel):])
        self.zbase = None

    def setup(self, gb, z):
        b = gb.b
        plane = int(np.prod(self.spatial, dtype=np.int64))
        self.zbase = _mul(b, z, self.cg * plane)

    def vectors_ok(self, vec, extent):
        # a 1x1 stride-1 convolution reads its input as [k][position]: runs of positions within one image
        opl = int(np.prod(self.out_spatial, dtype=np.int64))
        return self.pointwise and all(s == 1 for s in self.strides) and opl % vec == 0

    def _out_coords(self, gb, n):
        return _out_coords(gb.b, n, self.out_spatial)

    def _window(self, gb, bi, oc, kc):
        """(offset of input channel 0 of this group under output oc, kernel position kc; inside the image?)."""
        b = gb.b
        plane = int(np.prod(self.spatial, dtype=np.int64))
        return _window_offset(b, self, oc, kc, b.add(_mul(b, bi, self.C * plane), self.zbase))

    def addr(self, gb, k, n):
        b = gb.b
        plane = int(np.prod(self.spatial, dtype=np.int64))
        bi, oc = self._out_coords(gb, n)
        if self.pointwise:
            off = b.add(_mul(b, bi, self.C * plane), self.zbase)
            sp = contiguous_strides(self.spatial)
            for d in range(len(self.spatial)):
                off = b.add(off, _mul(b, oc[d], self.strides[d] * sp[d]))
            return b.add(off, _mul(b, k, plane)), None
        ksz = int(np.prod(self.kernel, dtype=np.int64))
        ci = b.udiv(k, c32(ksz)) if ksz > 1 else k
        r = b.urem(k, c32(ksz)) if ksz > 1 else c32(0)
        off, valid = self._window(gb, bi, oc, _unravel(b, r, self.kernel))
        return b.add(off, _mul(b, ci, plane)), valid


class TapMajorIm2colOperand(Im2colOperand):
    """Im2col with k ordered (kernel position, input channel): k = tap * Cg + ci.

    The weights are repacked to match (OIHW -> OHWI, see `prepare_conv`). A
    k-stage of `stage` values (stage divides Cg) then lies within one kernel
    position, so the spatial offset and the padding test depend on the output
    position and the stage only, and each element adds ci * plane.
    """

    def __init__(self, *args, stage: int, **kw):
        super().__init__(*args, **kw)
        self.stage = stage

    def _tap(self, gb, tap, n):
        """(offset of (n, tap) at channel 0, validity) for output position n and kernel position tap."""
        bi, oc = self._out_coords(gb, n)
        return self._window(gb, bi, oc, _unravel(gb.b, tap, self.kernel))

    def addr(self, gb, k, n):
        b = gb.b
        plane = int(np.prod(self.spatial, dtype=np.int64))
        base, valid = self._tap(gb, b.udiv(k, c32(self.cg)), n)
        return b.add(base, _mul(b, b.urem(k, c32(self.cg)), plane)), valid

    def stage_addr(self, gb, k0, kk, n):
        b = gb.b
        plane = int(np.prod(self.spatial, dtype=np.int64))
        base, valid = self._tap(gb, b.udiv(k0, c32(self.cg)), n)
        ci = b.add(b.urem(k0, c32(self.cg)), kk)
        return b.add(base, _mul(b, ci, plane)), valid




class ChannelsLastIm2colOperand(Operand):
    """B(k, n) of a convolution whose input was copied channels-last ([batch][position][channel]).

    k = (kernel position, channel), with the weights repacked to match (OHWI)
    for kernels of more than one position. B is contiguous along k, so runs
    of 8 channels are single 16-byte copies (channels a multiple of 8); a
    k-stage lies within one kernel position (channels a multiple of the stage
    depth), so the window offset and padding test depend on the stage and the
    output position only.
    """

    contig = 0  # k

    def __init__(self, ptr, dtype, channels: int, in_shape, out_spatial, kernel, strides, pads, dilations, stage: int, k_real: int):
        """`channels`: channels per position in the copy (the input's, or a few more, zero: see `_stem_channels`);
        `stage`: the k-stage depth when a stage lies within one kernel position, else 0;
        `k_real`: k at and past which B is zero (the GEMM's K may be rounded up)."""
        self.ptr, self.dtype = ptr, np.dtype(dtype)
        self.C, self.spatial = channels, tuple(in_shape[2:])
        self.out_spatial, self.kernel = tuple(out_spatial), tuple(kernel)
        self.strides, self.pads, self.dil = tuple(strides), tuple(pads), tuple(dilations)
        self.stage, self.k_real = stage, k_real

    def vectors_ok(self, vec, extent):
        return self.C % vec == 0

    def _pixel(self, gb, tap, n):
        """(input pixel index of output n under kernel position tap, inside the image?)."""
        b = gb.b
        bi, oc = _out_coords(b, n, self.out_spatial)
        base = _mul(b, bi, int(np.prod(self.spatial, dtype=np.int64)))
        return _window_offset(b, self, oc, _unravel(b, tap, self.kernel), base)

    def addr(self, gb, k, n):
        b = gb.b
        pix, valid = self._pixel(gb, b.udiv(k, c32(self.C)), n)
        ksz = int(np.prod(self.kernel, dtype=np.int64))
        if self.k_real < ksz * self.C:
            valid = b.and_(valid, b.icmp_unsigned("<", k, c32(self.k_real)))
        return b.add(_mul(b, pix, self.C), b.urem(k, c32(self.C))), valid

    def stage_addr(self, gb, k0, kk, n):
        b = gb.b
        if not self.stage:
            return self.addr(gb, b.add(k0, kk), n)
        pix, valid = self._pixel(gb, b.udiv(k0, c32(self.C)), n)
        return b.add(_mul(b, pix, self.C), b.add(b.urem(k0, c32(self.C)), kk)), valid


def emit_to_channels_last(ctx, src_index: int, shape, dtype, channels: int) -> int:
    """Launch a copy of ctx.refs[src_index] ([batch][C][positions]) into scratch as [batch][positions][channels]
    (channels >= C, the extra ones zero); its ref index.

    32x32 tiles through shared memory, so both the reads (along positions)
    and the writes (along channels) are coalesced."""
    from dsc.backends.cuda.ew import mem_type

    batch, C = shape[0], shape[1]
    CP = channels
    P = int(np.prod(shape[2:], dtype=np.int64))
    dt = np.dtype(dtype)
    ref = ctx.scratch(batch * CP * P * dt.itemsize, dt)
    refs = list(ctx.refs) + [ref]
    ti = len(refs) - 1

    def narrow(gb, ptrs):
        # a few channels (a stem's image): one thread per position, reads coalesced along positions
        b = gb.b
        X, Y = ptrs[src_index], ptrs[ti]
        elem = mem_type(dt)
        zero = ir.Constant(elem, 0.0 if isinstance(elem, ir.HalfType) else 0)
        with gb.grid_stride(batch * P) as e:
            bi, p = b.udiv(e, c32(P)), b.urem(e, c32(P))
            src = b.add(b.mul(bi, c32(C * P)), p)
            vals = [b.load(b.gep(X, [b.add(src, c32(c * P))], inbounds=True)) if c < C else zero for c in range(CP)]
            vt = ir.VectorType(elem, CP)
            v = ir.Constant(vt, None)
            for c, x in enumerate(vals):
                v = b.insert_element(v, x, c32(c))
            dst = b.gep(Y, [b.mul(e, c32(CP))], inbounds=True)
            b.store(v, b.bitcast(dst, vt.as_pointer(dst.type.addrspace)), align=CP * dt.itemsize)

    if CP <= 8:
        total = batch * P
        ctx.launch("to_nhwc", refs, (min(-(-total // 256), 65535), 1, 1), 256, narrow, "conv input to channels-last", extra_writes={ti})
        ctx.refs = refs
        return ti

    def body(gb, ptrs):
        b = gb.b
        X, Y = ptrs[src_index], ptrs[ti]
        elem = mem_type(dt)
        tile = gb.shared(elem, 32 * 33, "tile")
        tid = gb.tid()
        tx, ty = b.and_(tid, c32(31)), b.lshr(tid, c32(5))
        p0, c0, bi = b.mul(gb.ctaid("x"), c32(32)), b.mul(gb.ctaid("y"), c32(32)), gb.ctaid("z")
        for j in range(4):
            c, p = b.add(c0, b.add(ty, c32(8 * j))), b.add(p0, tx)
            with b.if_then(b.and_(b.icmp_unsigned("<", c, c32(C)), b.icmp_unsigned("<", p, c32(P)))):
                v = b.load(b.gep(X, [b.add(b.mul(b.add(b.mul(bi, c32(C)), c), c32(P)), p)], inbounds=True))
                b.store(v, b.gep(tile, [b.add(b.mul(b.add(ty, c32(8 * j)), c32(33)), tx)], inbounds=True))
        gb.barrier()
        for j in range(4):
            p, c = b.add(p0, b.add(ty, c32(8 * j))), b.add(c0, tx)
            with b.if_then(b.and_(b.icmp_unsigned("<", c, c32(CP)), b.icmp_unsigned("<", p, c32(P)))):
                v = b.load(b.gep(tile, [b.add(b.mul(tx, c32(33)), b.add(ty, c32(8 * j)))], inbounds=True))
                if CP > C:
                    v = b.select(b.icmp_unsigned("<", c, c32(C)), v, ir.Constant(elem, 0.0 if isinstance(elem, ir.HalfType) else 0))
                b.store(v, b.gep(Y, [b.add(b.mul(b.add(b.mul(bi, c32(P)), p), c32(CP)), c)], inbounds=True))

    ctx.launch("to_nhwc", refs, (-(-P // 32), -(-CP // 32), batch), 256, body, "conv input to channels-last", extra_writes={ti})
    ctx.refs = refs
    return ti


def match_conv(grp) -> bool:
    if not grp.ops or not isinstance(grp.ops[0], g.ConvOp):
        return False
    conv = grp.ops[0]
    if conv.input not in grp.leaves or conv.weight not in grp.leaves or (conv.bias is not None and conv.bias not in grp.leaves):
        return False
    if len(sig_of(conv.input.type).shape) < 3:
        return False
    return epilogue_ops(grp, conv) is not None


def _tap_major_stage(ctx, grp) -> int:
    """The tensor-core stage depth when this convolution gets its k ordered (kernel position, channel), else 0.

    Pays when a stage of k stays within one kernel position (the channels per
    group are a multiple of the stage) and there is more than one position;
    needs constant weights (repacked at compile time).
    """
    conv = grp.ops[0]
    xs, ws = sig_of(conv.input.type), sig_of(conv.weight.type)
    groups = int(conv.py_attrs()["group"])
    cout, cg = ws.shape[0], ws.shape[1]
    ksz = int(np.prod(ws.shape[2:], dtype=np.int64))
    kind = mma_kind(ws.dtype, xs.dtype, ctx.tf32)
    if kind is None or ksz == 1 or conv.weight not in grp.consts or (cg == 1 and groups > 1):
        return 0
    out = sig_of(conv.result.type).shape
    N = out[0] * int(np.prod(out[2:], dtype=np.int64))
    stage = stage_depth(kind, row_bytes(kind, cg * ksz, ctx.smem_limit, channels=cg))
    return stage if cg % stage == 0 and worth_mma(cout // groups, N, cg * ksz) else 0


def _channels_last(ctx, grp) -> bool:
    """Whether this convolution reads a channels-last copy of its input (tensor cores only).

    Pays when the NCHW im2col cannot be copied in 16-byte runs (kernels of
    more than one position, strided or padded 1x1s, maps whose positions are
    not a multiple of 8) and the channels can (a multiple of 8; of the stage
    depth for a tap-major kernel, whose weights are then repacked OHWI)."""
    conv = grp.ops[0]
    xs, ws = sig_of(conv.input.type), sig_of(conv.weight.type)
    a = conv.py_attrs()
    kind = mma_kind(ws.dtype, xs.dtype, ctx.tf32)
    if kind is None or np.dtype(xs.dtype) != np.dtype(ws.dtype) or int(a["group"]) != 1:
        return False
    cout, cin = ws.shape[0], ws.shape[1]
    ksz = int(np.prod(ws.shape[2:], dtype=np.int64))
    out = sig_of(conv.result.type).shape
    opl = int(np.prod(out[2:], dtype=np.int64))
    if cin % 8 or not worth_mma(cout, out[0] * opl, cin * ksz):
        return False
    if ksz > 1:
        return bool(_tap_major_stage(ctx, grp))
    nchw_vectors = all(s == 1 for s in a["strides"]) and not any(a["pads"]) and opl % 8 == 0
    return not nchw_vectors


def writes_channels_last(ctx, grp) -> bool:
    """Whether this group is a tensor-core GEMM convolution, whose outputs its epilogue can store channels-last
    (walking m, coalesced along channels)."""
    if not match_conv(grp):
        return False
    conv = grp.ops[0]
    ws, xs = sig_of(conv.weight.type), sig_of(conv.input.type)
    if len(sig_of(conv.result.type).shape) < 3 or (ws.shape[1] == 1 and int(conv.py_attrs()["group"]) > 1):
        return False
    return mma_kind(ws.dtype, xs.dtype, ctx.tf32) is not None


def can_read_channels_last(ctx, grp) -> bool:
    """Whether this convolution can read its input stored channels-last: a tensor-core GEMM whose
    channels-last im2col serves it (`_channels_last`, or channels a multiple of 8 and either one kernel
    position or k ordered (position, channel)); not a stem, which pads its own copy."""
    if _channels_last(ctx, grp):
        return not _stem_channels(ctx, grp)
    conv = grp.ops[0]
    xs, ws = sig_of(conv.input.type), sig_of(conv.weight.type)
    kind = mma_kind(ws.dtype, xs.dtype, ctx.tf32)
    if kind is None or np.dtype(xs.dtype) != np.dtype(ws.dtype) or int(conv.py_attrs()["group"]) != 1 or ws.shape[1] % 8:
        return False
    out = sig_of(conv.result.type).shape
    if not worth_mma(ws.shape[0], out[0] * int(np.prod(out[2:], dtype=np.int64)), ws.shape[1] * int(np.prod(ws.shape[2:], dtype=np.int64))):
        return False
    return int(np.prod(ws.shape[2:], dtype=np.int64)) == 1 or bool(_tap_major_stage(ctx, grp))


def reads_channels_last(ctx, grp, arg, out_nhwc: bool) -> bool:
    """Whether this group can read `arg` (a leaf) stored channels-last, each of its uses:

    * the input of a convolution that `can_read_channels_last`;
    * an operand of a tensor-core convolution's epilogue (a residual) of the output's shape, when the
      group's outputs are channels-last too (`out_nhwc`: the epilogue walks m, so the reads coalesce);
    * an input of a row program (a global pool) of the rows' shape (its loads follow the layout);
    * the input of a 2-d pool whose output is channels-last too (data.pool_channels_last).
    """
    shape = tuple(sig_of(arg.type).shape)
    if match_conv(grp):
        conv = grp.ops[0]
        out = tuple(sig_of(conv.result.type).shape)
        rest = epilogue_ops(grp, conv) or []
        for u in arg.uses:
            if u.operation is conv:
                if u.index != 0 or not can_read_channels_last(ctx, grp):
                    return False
            elif not (u.operation in rest and shape == out and out_nhwc and writes_channels_last(ctx, grp)):
                return False
        return True
    if data.match_pool(grp):
        return out_nhwc and bool(data.pool_channels_last(grp))
    if rows.match_rows(grp):
        S, _ = rows.reduction_domain(next(op for op in grp.ops if isinstance(op, rows.REDUCTIONS)))
        return len(shape) >= 3 and shape == tuple(S) and all(isinstance(u.operation, g.GlobalAvgPoolOp | g.GlobalMaxPoolOp) for u in arg.uses)
    return False


def _stem_channels(ctx, grp) -> int:
    """For a convolution with few input channels and a big kernel (ResNet's 7x7 stem: 3 channels, K = 147),
    the channels its channels-last copy gets (4 or 8, the extra ones zero) so that a kernel position's
    channels are one 8- or 16-byte copy; else 0. (A 3x3 stem's K = 27 is one k-stage either way.)
    H200, ResNet-50 fp16 batch 32: 8 channels (16-byte copies, wgmma, K = 392) took 0.161 ms against 4
    channels' 0.093 (mma.sync, K = 200): the stem's gathers, not its MMAs, set its time."""
    conv = grp.ops[0]
    xs, ws = sig_of(conv.input.type), sig_of(conv.weight.type)
    kind = mma_kind(ws.dtype, xs.dtype, ctx.tf32)
    if kind is None or np.dtype(xs.dtype) != np.dtype(ws.dtype) or int(conv.py_attrs()["group"]) != 1:
        return 0
    cin = ws.shape[1]
    ksz = int(np.prod(ws.shape[2:], dtype=np.int64))
    out = sig_of(conv.result.type).shape
    if cin >= 8 or cin * ksz < 64 or conv.weight not in grp.consts or not worth_mma(ws.shape[0], out[0] * int(np.prod(out[2:], dtype=np.int64)), cin * ksz):
        return 0
    return 4 if cin <= 4 else 8


def _stem_k(ksz: int, cp: int) -> int:
    """The GEMM's K for a stem: kernel positions x padded channels, rounded up to 8 (16-byte weight rows)."""
    return -(-ksz * cp // 8) * 8


def prepare_conv(ctx, grp) -> None:
    """Repack the weights: OIHW -> OHWI for a tap-major convolution (see TapMajorIm2colOperand), or for a
    stem [O][H*W*channels padded] (see `_stem_channels`)."""
    conv = grp.ops[0]
    cp = _stem_channels(ctx, grp)
    if cp:
        w = grp.consts[conv.weight]
        ksz = int(np.prod(w.shape[2:], dtype=np.int64))
        ohwi = np.zeros((w.shape[0], ksz, cp), w.dtype)
        ohwi[:, :, : w.shape[1]] = np.moveaxis(w.reshape(w.shape[0], w.shape[1], ksz), 1, -1)
        packed = np.zeros((w.shape[0], _stem_k(ksz, cp)), w.dtype)
        packed[:, : ksz * cp] = ohwi.reshape(w.shape[0], -1)
        _repacked(ctx, grp, packed, f"ohwi{cp}")
    elif _tap_major_stage(ctx, grp):
        w = grp.consts[conv.weight]
        _repacked(ctx, grp, np.ascontiguousarray(np.moveaxis(w, 1, -1)), "ohwi")


def _repacked(ctx, grp, packed, layout: str) -> None:
    conv = grp.ops[0]
    src = grp.leaves[conv.weight]
    key = getattr(src, "key", None) or f"weight@{src.index}"  # LazyWeight, or already in the blob
    ref = ctx.weight(packed, f"{key}.{layout}")
    s = sig_of(conv.weight.type)
    grp.leaves[conv.weight] = BufRef(ref.kind, ref.index, s.dtype, tuple(s.shape))  # the logical type, repacked data
    grp.layout[conv.weight] = layout


def emit_conv(ctx, grp) -> None:
    conv = grp.ops[0]
    rest = epilogue_ops(grp, conv)
    a = conv.py_attrs()
    xs = sig_of(conv.input.type)
    ws = sig_of(conv.weight.type)
    out = sig_of(conv.result.type).shape
    groups = int(a["group"])
    nd = len(xs.shape) - 2
    cout, cg = ws.shape[0], ws.shape[1]
    mg = cout // groups
    ksz = int(np.prod(ws.shape[2:], dtype=np.int64))
    K = cg * ksz
    batch = xs.shape[0]
    opl = int(np.prod(out[2:], dtype=np.int64))
    N = batch * opl
    strides = list(a["strides"])
    pads = list(a["pads"])
    dil = list(a["dilations"])
    has_bias = conv.bias is not None

    def coords_of(gb, z, m, n):
        b = gb.b
        co = b.add(b.mul(z, c32(mg)), m) if groups > 1 else m
        bi = b.udiv(n, c32(opl)) if opl > 1 else n
        p = b.urem(n, c32(opl)) if opl > 1 else c32(0)
        return Coords(gb, out, [((0,), bi), ((1,), co), (tuple(range(2, 2 + nd)), p)])

    def add_bias(gb, ptrs, coords, acc):
        if not has_bias:
            return acc
        bias = load_elem(gb, ptrs[grp.index[conv.bias]], coords.coord(1), sig_of(conv.bias.type).dtype)
        return gb.b.fadd(acc, bias)

    epi = make_epilogue(grp, conv, rest, out, coords_of)

    def epi_store(gb, ptrs, z, m, n, acc):
        epi(gb, ptrs, z, m, n, acc, add_bias)

    def epi_run(gb, ptrs, z, m, n, accs):
        epi.run(gb, ptrs, z, m, n, accs, add_bias)

    if cg == 1 and mg >= 1 and groups > 1:
        emit_depthwise(ctx, grp, conv, epi_store, a)
        return

    layout = grp.layout.get(conv.weight)
    tap_major = layout == "ohwi"
    stage = _tap_major_stage(ctx, grp) if tap_major else 0
    assert not tap_major or stage, "weights repacked for a tap-major convolution that no longer qualifies"
    stem = _stem_channels(ctx, grp) if layout and layout.startswith("ohwi") and layout != "ohwi" else 0
    assert stem == (int(layout[4:]) if stem else 0), "weights repacked for a stem that no longer qualifies"
    stored_nhwc = grp.layout.get(conv.input) == "nhwc"  # the producer wrote it channels-last
    assert not stored_nhwc or (can_read_channels_last(ctx, grp) and not stem), "a channels-last input for a convolution that reads NCHW"
    nhwc = bool(stem) or _channels_last(ctx, grp) or stored_nhwc
    channels = stem or cg
    if stem:
        K = _stem_k(ksz, stem)
    copy = nhwc and not stored_nhwc
    xi = emit_to_channels_last(ctx, grp.index[conv.input], xs.shape, xs.dtype, channels) if copy else grp.index[conv.input]

    def operands(gb, ptrs):
        wv = conv.weight
        A = StridedOperand(ptrs[grp.index[wv]], ws.dtype, K, 1, (groups,), (mg * K,))
        if nhwc:
            return A, ChannelsLastIm2colOperand(ptrs[xi], xs.dtype, channels, xs.shape, out[2:], ws.shape[2:], strides, pads, dil, stage, ksz * channels)
        args = (ptrs[xi], xs.dtype, xs.shape, out[2:], ws.shape[2:], strides, pads, dil, cg)
        B = TapMajorIm2colOperand(*args, stage=stage) if tap_major else Im2colOperand(*args)
        return A, B

    label = "conv (channels-last input)" if nhwc else "conv"
    m_fastest = any(grp.layout.get(v) == "nhwc" for v in grp.outputs)
    if m_fastest:
        label += " (channels-last output)"
    # a tap-major operand's stage is the kernel's k-stage: both from the same row bytes
    kind = mma_kind(ws.dtype, xs.dtype, ctx.tf32)
    rb = row_bytes(kind, K, ctx.smem_limit, channels=cg if stage else None) if kind else None
    assert not stage or stage == stage_depth(kind, rb), (stage, rb)
    emit_gemm(ctx, "conv", mg, N, K, groups, operands, epi_store, label, (ws.dtype, xs.dtype), extra_reads={xi} if copy else (), m_fastest=m_fastest, epi_run=epi_run if m_fastest else None, row_bytes=rb)



__all__ = ["ChannelsLastIm2colOperand", "Im2colOperand", "TapMajorIm2colOperand", "emit_conv", "emit_to_channels_last", "match_conv", "can_read_channels_last", "prepare_conv", "reads_channels_last", "writes_channels_last"]
