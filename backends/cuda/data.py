"""One-thread-per-output kernels: elementwise chains, pooling and data movement.

Every kernel here walks its output with a grid-stride loop (any grid size is
correct; the grid is sized to fill the GPU) and computes, from the output
element's coordinates, where its inputs are:

* elementwise chains (with broadcasting, scalar constants as literals);
* max/avg pooling (the window's taps unrolled, padding never counts for max,
  count_include_pad for avg), N-d; 2-d pools between channels-last tensors
  (codegen.channels_last_values: ResNet's stem -> max pool -> layer 1) take
  16 bytes of channels per thread (`pool_channels_last`);
* transpose, slice, pad (constant, edge, reflect; negative pads crop),
  gather (negative indices count from the end), concat (one copy kernel per
  input), reshape (a copy when the value must move), and plain copies.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from dsc.backends.cuda.ew import F16, Coords, Leaf, contiguous_strides, eval_ops, is_ew, is_float, load_elem, load_run, reg_type, store_elem, store_run
from dsc.backends.cuda.gpubuilder import F32, I32, GpuBuilder, c32, cf
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of

THREADS = 256


def grid_for(total: int, per_thread: int = 1) -> tuple[int, int, int]:
    return (max(1, min(-(-total // (THREADS * per_thread)), 65535)), 1, 1)


def _shape(v):
    return tuple(sig_of(v.type).shape)


# ------------------------------------------------------------ elementwise


def match_elementwise(grp) -> bool:
    if not grp.ops or not all(is_ew(op) for op in grp.ops):
        return False
    shapes = {_shape(v) for v in grp.outputs}
    if len(shapes) != 1:
        return False
    out = next(iter(shapes))
    for op in grp.ops:
        for v in op.operands:
            s = _shape(v)
            if isinstance(op, g.BatchNormOp) and v is not op.input:
                continue
            try:
                if tuple(np.broadcast_shapes(s, out)) != out:
                    return False
            except ValueError:
                return False
    return True


def emit_elementwise(ctx, grp) -> None:
    out = _shape(next(iter(grp.outputs)))
    total = int(np.prod(out, dtype=np.int64))
    if total == 0:
        return

    def body(gb: GpuBuilder, ptrs):
        leaves = {v: Leaf(ptrs[grp.index[v]], _shape(v), sig_of(v.type).dtype) for v in grp.leaves}
        with gb.grid_stride(total) as e:
            coords = Coords.from_flat(gb, out, e)
            env = eval_ops(gb, grp.ops, {}, leaves, coords, grp.consts)
            for v, ref in grp.outputs.items():
                store_elem(gb, env[v], ptrs[grp.index[v]], e, ref.dtype)

    ctx.launch("ew", ctx.refs, grid_for(total, 4), THREADS, body, "elementwise")


# ------------------------------------------------------------ pooling


def _single(grp, cls) -> bool:
    return len(grp.ops) == 1 and isinstance(grp.ops[0], cls) and all(v in grp.leaves for v in grp.ops[0].operands)


def match_pool(grp) -> bool:
    return _single(grp, g.MaxPoolOp | g.AvgPoolOp) and len(_shape(grp.ops[0].input)) >= 3


def pool_channels_last(grp) -> int:
    """Channels per thread (16 bytes of them) when this pool can read and write channels-last: a 2-d
    float pool whose channels are a multiple of that; else 0."""
    if not match_pool(grp):
        return 0
    op = grp.ops[0]
    xs = sig_of(op.input.type)
    run = 16 // np.dtype(xs.dtype).itemsize
    if len(xs.shape) != 4 or not is_float(xs.dtype) or xs.dtype != sig_of(op.result.type).dtype or xs.shape[1] % run:
        return 0
    return run


def emit_pool(ctx, grp) -> None:
    op = grp.ops[0]
    if grp.layout.get(op.input) == "nhwc":
        assert grp.layout.get(op.result) == "nhwc" and pool_channels_last(grp), "a channels-last pool input with an NCHW output"
        _emit_pool_nhwc(ctx, grp)
        return
    a = op.py_attrs()
    xs = sig_of(op.input.type)
    out = _shape(op.result)
    nd = len(out) - 2
    kern, strides, pads, dil = list(a["kernel_shape"]), list(a["strides"]), list(a["pads"]), list(a["dilations"])
    is_max = isinstance(op, g.MaxPoolOp)
    include_pad = bool(a.get("count_include_pad", 0)) if not is_max else False
    total = int(np.prod(out, dtype=np.int64))
    spatial = xs.shape[2:]
    plane = int(np.prod(spatial, dtype=np.int64))
    sp = contiguous_strides(spatial)
    fl = is_float(xs.dtype)
    if total == 0:
        return

    def body(gb: GpuBuilder, ptrs):
        b = gb.b
        X = ptrs[grp.index[op.input]]
        Y = ptrs[grp.index[op.result]]
        with gb.grid_stride(total) as e:
            co = Coords.from_flat(gb, out, e)
            nc = b.udiv(e, c32(int(np.prod(out[2:], dtype=np.int64))))
            base = b.mul(nc, c32(plane))
            oc = [co.coord(2 + d) for d in range(nd)]
            if is_max:
                low = float("-inf") if fl else int(np.iinfo(xs.dtype).min)
                acc = cf(low) if fl else ir.Constant(reg_type(xs.dtype), low)
            else:
                acc, cnt = cf(0.0), cf(0.0)
            for tap in np.ndindex(*kern):
                valid, inpad, off = None, None, base
                for d in range(nd):
                    pos = b.add(b.mul(oc[d], c32(strides[d])), c32(tap[d] * dil[d] - pads[d]))
                    ok = b.icmp_unsigned("<", pos, c32(spatial[d]))
                    valid = ok if valid is None else b.and_(valid, ok)
                    if include_pad:
                        ip = b.icmp_unsigned("<", b.add(pos, c32(pads[d])), c32(spatial[d] + pads[d] + pads[nd + d]))
                        inpad = ip if inpad is None else b.and_(inpad, ip)
                    off = b.add(off, b.mul(pos, c32(sp[d])))
                v = load_elem(gb, X, b.select(valid, off, c32(0)), xs.dtype)
                if is_max:
                    if fl:
                        acc = b.select(b.and_(valid, b.fcmp_unordered(">", v, acc)), v, acc)
                    else:
                        acc = b.select(b.and_(valid, b.icmp_signed(">", v, acc)), v, acc)
                else:
                    acc = b.fadd(acc, b.select(valid, v, cf(0.0)))
                    cnt = b.fadd(cnt, b.select(inpad if include_pad else valid, cf(1.0), cf(0.0)))
            if not is_max:
                acc = b.fdiv(acc, gb.fmax(cnt, cf(1.0)))
            store_elem(gb, acc, Y, e, sig_of(op.result.type).dtype)

    ctx.launch("pool", ctx.refs, grid_for(total), THREADS, body, op.name.replace("graph.", ""))


def _emit_pool_nhwc(ctx, grp) -> None:
    """[batch][y][x][channel] in and out: a thread per output position and run of channels (16 bytes),
    each tap one vector load."""
    op = grp.ops[0]
    a = op.py_attrs()
    xs = sig_of(op.input.type)
    Bn, C, H, W = xs.shape
    OH, OW = _shape(op.result)[2:]
    run = pool_channels_last(grp)
    runs = C // run
    is_max = isinstance(op, g.MaxPoolOp)
    include_pad = bool(a.get("count_include_pad", 0)) and not is_max
    kern, st, pads, dil = list(a["kernel_shape"]), list(a["strides"]), list(a["pads"]), list(a["dilations"])
    total = Bn * OH * OW * runs

    def body(gb: GpuBuilder, ptrs):
        b = gb.b
        X, Y = ptrs[grp.index[op.input]], ptrs[grp.index[op.result]]
        with gb.grid_stride(total) as e:
            cr, p = b.urem(e, c32(runs)), b.udiv(e, c32(runs))
            ox, q = b.urem(p, c32(OW)), b.udiv(p, c32(OW))
            oy, bi = b.urem(q, c32(OH)), b.udiv(q, c32(OH))
            acc = [cf(float("-inf") if is_max else 0.0)] * run
            cnt = cf(0.0)
            for ty, tx in np.ndindex(*kern):
                iy = b.add(b.mul(oy, c32(st[0])), c32(ty * dil[0] - pads[0]))
                ix = b.add(b.mul(ox, c32(st[1])), c32(tx * dil[1] - pads[1]))
                valid = b.and_(b.icmp_unsigned("<", iy, c32(H)), b.icmp_unsigned("<", ix, c32(W)))
                off = b.add(b.mul(b.add(b.mul(b.add(b.mul(bi, c32(H)), iy), c32(W)), ix), c32(C)), b.mul(cr, c32(run)))
                vals = load_run(gb, X, b.select(valid, off, c32(0)), xs.dtype, run)
                if is_max:  # NaN propagates, as the NCHW kernel
                    acc = [b.select(b.and_(valid, b.fcmp_unordered(">", v, m)), v, m) for v, m in zip(vals, acc)]
                else:
                    acc = [b.fadd(m, b.select(valid, v, cf(0.0))) for v, m in zip(vals, acc)]
                    inpad = valid
                    if include_pad:
                        inpad = b.and_(b.icmp_unsigned("<", b.add(iy, c32(pads[0])), c32(H + pads[0] + pads[2])), b.icmp_unsigned("<", b.add(ix, c32(pads[1])), c32(W + pads[1] + pads[3])))
                    cnt = b.fadd(cnt, b.select(inpad, cf(1.0), cf(0.0)))
            if not is_max:
                acc = [b.fdiv(m, gb.fmax(cnt, cf(1.0))) for m in acc]
            store_run(gb, acc, Y, b.mul(e, c32(run)), xs.dtype)

    ctx.launch("pool", ctx.refs, grid_for(total), THREADS, body, op.name.replace("graph.", "") + " (channels-last)")


# ------------------------------------------------------------ data movement


def match_data(grp) -> bool:
    return _single(grp, g.TransposeOp | g.SliceOp | g.PadOp | g.GatherOp | g.ConcatOp | g.ReshapeOp)


def emit_data(ctx, grp) -> None:
    op = grp.ops[0]
    if isinstance(op, g.ConcatOp):
        _emit_concat(ctx, grp, op)
        return
    out = _shape(op.results[0])
    total = int(np.prod(out, dtype=np.int64))
    if total == 0:
        return
    xs = sig_of(op.operands[0].type)
    ins = contiguous_strides(xs.shape)
    a = op.py_attrs()

    def body(gb: GpuBuilder, ptrs):
        b = gb.b
        X = ptrs[grp.index[op.operands[0]]]
        Y = ptrs[grp.index[op.results[0]]]
        odt = sig_of(op.results[0].type).dtype
        with gb.grid_stride(total) as e:
            co = Coords.from_flat(gb, out, e)
            if isinstance(op, g.ReshapeOp):
                v = load_elem(gb, X, e, xs.dtype)
            elif isinstance(op, g.TransposeOp):
                perm = a["perm"]
                v = load_elem(gb, X, co.offset([ins[p] for p in perm]), xs.dtype)
            elif isinstance(op, g.SliceOp):
                starts, steps = a["starts"], a["steps"]
                base = sum(int(s) * st for s, st in zip(starts, ins))
                off = co.offset([int(s) * st for s, st in zip(steps, ins)])
                v = load_elem(gb, X, b.add(off, c32(base)) if base else off, xs.dtype)
            elif isinstance(op, g.PadOp):
                v = _pad_value(gb, op, a, co, X, xs, ins)
            else:  # gather
                v = _gather_value(gb, op, a, co, ptrs, grp, xs, ins)
            store_elem(gb, v, Y, e, odt)

    ctx.launch(op.name.replace("graph.", ""), ctx.refs, grid_for(total), THREADS, body, op.name.replace("graph.", ""))


def _pad_value(gb, op, a, co, X, xs, ins):
    b = gb.b
    r = len(xs.shape)
    pads = list(a["pads"])
    mode = a["mode"]
    valid, off = None, c32(0)
    for d in range(r):
        bgn, end = pads[d], pads[r + d]
        cb, ce = max(-bgn, 0), max(-end, 0)
        wb = max(bgn, 0)
        n2 = xs.shape[d] - cb - ce
        t = b.sub(co.coord(d), c32(wb)) if wb else co.coord(d)
        if mode == "constant":
            ok = b.icmp_unsigned("<", t, c32(n2))
            valid = ok if valid is None else b.and_(valid, ok)
        elif mode == "edge":
            t = b.select(b.icmp_signed("<", t, c32(0)), c32(0), t)
            t = b.select(b.icmp_signed(">", t, c32(n2 - 1)), c32(n2 - 1), t)
        else:  # reflect, periodic with period 2 (n2 - 1)
            p = n2 - 1
            if p <= 0:
                t = c32(0)
            else:
                m = b.srem(t, c32(2 * p))
                m = b.select(b.icmp_signed("<", m, c32(0)), b.add(m, c32(2 * p)), m)
                t = b.select(b.icmp_signed("<=", m, c32(p)), m, b.sub(c32(2 * p), m))
        src = b.add(t, c32(cb)) if cb else t
        off = b.add(off, b.mul(src, c32(ins[d])))
    if valid is None:
        return load_elem(gb, X, off, xs.dtype)
    v = load_elem(gb, X, b.select(valid, off, c32(0)), xs.dtype)
    fill = float(a["value"])
    c = ir.Constant(v.type, fill if isinstance(v.type, ir.FloatType | ir.DoubleType | ir.HalfType) else (int(fill) if v.type.width > 1 else int(bool(fill))))
    return b.select(valid, v, c)


def _gather_value(gb, op, a, co, ptrs, grp, xs, ins):
    b = gb.b
    axis = int(a["axis"]) % len(xs.shape)
    isg = sig_of(op.indices.type)
    ni = len(isg.shape)
    ist = contiguous_strides(isg.shape)
    ioff = c32(0)
    for q in range(ni):
        if isg.shape[q] > 1:
            ioff = b.add(ioff, b.mul(co.coord(axis + q), c32(ist[q])))
    idx = load_elem(gb, ptrs[grp.index[op.indices]], ioff, isg.dtype)
    idx = b.trunc(idx, I32) if idx.type.width > 32 else (b.sext(idx, I32) if idx.type.width < 32 else idx)
    dim = xs.shape[axis]
    idx = b.select(b.icmp_signed("<", idx, c32(0)), b.add(idx, c32(dim)), idx)
    off = b.mul(idx, c32(ins[axis]))
    for d in range(axis):
        if xs.shape[d] > 1:
            off = b.add(off, b.mul(co.coord(d), c32(ins[d])))
    for d in range(axis + 1, len(xs.shape)):
        if xs.shape[d] > 1:
            off = b.add(off, b.mul(co.coord(d + ni - 1), c32(ins[d])))
    return load_elem(gb, ptrs[grp.index[op.input]], off, xs.dtype)


def _emit_concat(ctx, grp, op) -> None:
    axis = int(op.py_attrs()["axis"]) % len(_shape(op.result))
    out = _shape(op.result)
    ost = contiguous_strides(out)
    odt = sig_of(op.result.type).dtype
    at = 0
    for n, v in enumerate(op.inputs):
        s = _shape(v)
        total = int(np.prod(s, dtype=np.int64))
        base = at * ost[axis]
        at += s[axis]
        if total == 0:
            continue

        def body(gb, ptrs, v=v, s=s, total=total, base=base):
            b = gb.b
            X = ptrs[grp.index[v]]
            Y = ptrs[grp.index[op.result]]
            with gb.grid_stride(total) as e:
                co = Coords.from_flat(gb, s, e)
                off = co.offset(ost)
                x = load_elem(gb, X, e, sig_of(v.type).dtype)
                store_elem(gb, x, Y, b.add(off, c32(base)) if base else off, odt)

        ctx.launch(f"concat{n}", ctx.refs, grid_for(total), THREADS, body, "concat")


def emit_copy(ctx, src_ref, dst_ref, label: str) -> None:
    """dst = src (same element count; dtypes may differ only by name)."""
    total = int(np.prod(dst_ref.shape, dtype=np.int64))
    if total == 0:
        return
    refs = [src_ref, dst_ref]

    def body(gb, ptrs):
        with gb.grid_stride(total) as e:
            x = load_elem(gb, ptrs[0], e, src_ref.dtype)
            store_elem(gb, x, ptrs[1], e, dst_ref.dtype)

    ctx.launch("copy", refs, grid_for(total), THREADS, body, label)


__all__ = ["match_elementwise", "emit_elementwise", "match_pool", "emit_pool", "match_data", "emit_data", "emit_copy", "F16", "F32"]
