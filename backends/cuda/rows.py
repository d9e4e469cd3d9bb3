"""Row programs on the GPU: softmax, layer norm, reductions and global pooling, with their neighbours.

A kernel whose ops are reductions over one set of axes of one shape S (a
softmax, a layer norm, reduce_*, a global pool, or several of them, e.g. a
LayerNorm written out as reduce_mean/sub/pow/reduce_mean/add/sqrt/div) and
elementwise ops around them runs one thread block per row: a row is the
R-th slice of S along the reduced axes (D elements).

Every value is either *full* (one element per position of S) or a *row
scalar* (one per row: a reduction's result, and what is computed from such
results alone). Full values are recipes evaluated where they are needed;
a reduction is a pass over the row (each thread its elements, then a
warp-shuffle and shared-memory reduction that gives every thread the total).
A softmax is two passes (max, then the sum of exponentials), a layer norm
two (mean, then variance about the mean). A last pass writes the kernel's
full outputs; thread 0 writes the row-scalar ones.

When a thread holds few elements of its row (D <= 8 × threads), its
elements are unrolled and every value it computes stays in registers from
pass to pass (inputs are read from memory once); otherwise each pass loops
over the row and recomputes its inputs.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from dsc.backends.cuda.ew import Coords, const_value, eval_ops, group_leaves, is_ew, is_float, load_elem, store_elem
from dsc.backends.cuda.gpubuilder import F32, GpuBuilder, _pow2_ceil, c32, cf
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of

REDUCTIONS = (g.SoftmaxOp, g.LogSoftmaxOp, g.LayerNormOp, g.ReduceOp, g.GlobalAvgPoolOp, g.GlobalMaxPoolOp)
UNROLL = 8


def reduction_domain(op) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape reduced, axes reduced) of a reduction op."""
    x = sig_of(op.operands[0].type).shape
    rank = len(x)
    a = op.py_attrs()
    if isinstance(op, g.SoftmaxOp | g.LogSoftmaxOp):
        ax = int(a["axis"]) % rank if rank else 0
        return tuple(x), (ax,)
    if isinstance(op, g.LayerNormOp):
        ax = int(a["axis"]) % rank if rank else 0
        return tuple(x), tuple(range(ax, rank))
    if isinstance(op, g.GlobalAvgPoolOp | g.GlobalMaxPoolOp):
        return tuple(x), tuple(range(2, rank))
    axes = tuple(a["axes"]) if len(a["axes"]) else tuple(range(rank))
    return tuple(x), tuple(sorted(int(v) % rank for v in axes))


def match_rows(grp) -> bool:
    reds = [op for op in grp.ops if isinstance(op, REDUCTIONS)]
    if not reds:
        return False
    doms = {reduction_domain(op) for op in reds}
    if len(doms) != 1:
        return False
    S, axes = next(iter(doms))
    if any(not is_float(sig_of(op.operands[0].type).dtype) for op in reds):
        return False
    try:
        kinds = classify(grp, S, axes)
    except _NoMatch:
        return False
    for v in grp.outputs:
        s = sig_of(v.type).shape
        if kinds[v] == "full" and tuple(s) != S:
            return False
        if kinds[v] == "row" and int(np.prod(s, dtype=np.int64)) != int(np.prod([S[d] for d in range(len(S)) if d not in axes], dtype=np.int64)):
            return False
    return all(isinstance(op, REDUCTIONS) or is_ew(op) for op in grp.ops)


class _NoMatch(Exception):
    pass


def classify(grp, S, axes) -> dict:
    """'full' or 'row' for every value the group reads or computes."""
    kinds = {}
    rank = len(S)

    def leaf_kind(v):
        s = sig_of(v.type).shape
        if len(s) > rank:
            raise _NoMatch
        pad = (1,) * (rank - len(s)) + tuple(s)
        if any(p not in (1, S[d]) for d, p in enumerate(pad)):
            raise _NoMatch
        return "full" if any(pad[d] > 1 for d in axes) else "row"

    def kind(v):
        if v in kinds:
            return kinds[v]
        if v in grp.consts and grp.consts[v].size == 1:
            return "row"
        if v in grp.leaves:
            kinds[v] = leaf_kind(v)
            return kinds[v]
        raise _NoMatch

    for op in grp.ops:
        if isinstance(op, g.SoftmaxOp | g.LogSoftmaxOp | g.LayerNormOp):
            kind(op.operands[0])
            for v in op.operands[1:]:
                if kind(v) == "full" and sig_of(v.type).shape != tuple(S[axes[0]:]) and len(sig_of(v.type).shape) > len(S) - axes[0]:
                    raise _NoMatch
            kinds[op.results[0]] = "full"
        elif isinstance(op, g.ReduceOp | g.GlobalAvgPoolOp | g.GlobalMaxPoolOp):
            kind(op.operands[0])
            kinds[op.results[0]] = "row"
        elif isinstance(op, g.BatchNormOp):
            raise _NoMatch
        else:
            ks = [kind(v) for v in op.operands]
            for r in op.results:
                s = sig_of(r.type).shape
                if len(s) > rank:
                    raise _NoMatch
                kinds[r] = "full" if "full" in ks else "row"
                if kinds[r] == "full" and tuple(np.broadcast_shapes(s, S)) != tuple(S):
                    raise _NoMatch
    return kinds


def _block_threads(D: int) -> int:
    return int(min(256, max(32, _pow2_ceil(D))))


POOL_UNROLL = 64  # positions a channels-last global pool walks unrolled (ResNet's and MobileNet's 7x7 maps)


def _emit_global_pool_nhwc(ctx, grp) -> bool:
    """A lone global pool of a channels-last input: one thread per (batch, channel) sums (or maxes) its
    positions, consecutive threads consecutive channels, so every load is coalesced (a block per row would
    read it with a stride of C). Maps of at most POOL_UNROLL positions; False if this does not apply."""
    if len(grp.ops) != 1 or not isinstance(grp.ops[0], g.GlobalAvgPoolOp | g.GlobalMaxPoolOp):
        return False
    op = grp.ops[0]
    x, y = op.operands[0], op.results[0]
    if x not in grp.leaves or grp.layout.get(x) != "nhwc" or y not in grp.outputs:
        return False
    shape = sig_of(x.type).shape
    B, C = int(shape[0]), int(shape[1])
    P = int(np.prod(shape[2:], dtype=np.int64))
    if P > POOL_UNROLL or B * C == 0:
        return False
    xd, yd = sig_of(x.type).dtype, grp.outputs[y].dtype
    is_max = isinstance(op, g.GlobalMaxPoolOp)

    def body(gb: GpuBuilder, ptrs):
        b = gb.b
        with gb.grid_stride(B * C) as e:
            base = b.add(b.mul(b.udiv(e, c32(C)), c32(P * C)), b.urem(e, c32(C)))
            vals = [load_elem(gb, ptrs[grp.index[x]], b.add(base, c32(p * C)), xd) for p in range(P)]  # f32 registers
            acc = vals[0]
            for v in vals[1:]:
                acc = gb.fmax(acc, v) if is_max else b.fadd(acc, v)
            if not is_max:
                acc = b.fmul(acc, cf(1.0 / P))
            store_elem(gb, acc, ptrs[grp.index[y]], e, yd)

    name = "global_max_pool" if is_max else "global_avg_pool"
    ctx.launch("pool", ctx.refs, (min(-(-B * C // 256), 65535), 1, 1), 256, body, f"{name} (channels-last input)")
    return True


def emit_rows(ctx, grp) -> None:
    if _emit_global_pool_nhwc(ctx, grp):
        return
    S, axes = reduction_domain(next(op for op in grp.ops if isinstance(op, REDUCTIONS)))
    kinds = classify(grp, S, axes)
    rank = len(S)
    kept = [d for d in range(rank) if d not in axes]
    R = int(np.prod([S[d] for d in kept], dtype=np.int64))
    D = int(np.prod([S[d] for d in axes], dtype=np.int64))
    if R == 0:
        return
    T = _block_threads(D)
    E = -(-D // T)
    unrolled = E <= UNROLL
    trailing = tuple(axes) == tuple(range(rank - len(axes), rank))
    S_strides = [int(np.prod(S[d + 1 :], dtype=np.int64)) for d in range(rank)]

    def body(gb: GpuBuilder, ptrs):
        b = gb.b
        r = gb.ctaid("x")
        tid = gb.tid()
        leaves = group_leaves(grp, ptrs)
        scalars: dict = {}  # row-scalar values (uniform in the block)
        scratch = gb.shared(F32, 32, "red")

        def coords_at(j):
            if trailing:
                kd = tuple(range(rank - len(axes)))
                rd = tuple(range(rank - len(axes), rank))
                return Coords(gb, S, ([(kd, r)] if kd else []) + [(rd, j)])
            # general axes: the flat index of (row r, element j), then its coordinates
            rc = Coords.from_flat(gb, [S[d] for d in kept], r)
            jc = Coords.from_flat(gb, [S[d] for d in axes], j)
            flat = c32(0)
            for i, d in enumerate(kept):
                if S[d] > 1:
                    flat = b.add(flat, b.mul(rc.coord(i), c32(S_strides[d])))
            for i, d in enumerate(axes):
                if S[d] > 1:
                    flat = b.add(flat, b.mul(jc.coord(i), c32(S_strides[d])))
            return Coords.from_flat(gb, S, flat)

        # recipes of full values produced by softmax / layer norm: value -> fn(env, coords) -> reg
        recipes = {}

        def value(v, env, coords):
            if v in env:
                return env[v]
            if v in scalars:
                env[v] = scalars[v]
                return env[v]
            if v in grp.consts and grp.consts[v].size == 1:
                env[v] = const_value(grp.consts[v])
                return env[v]
            if v in recipes:
                env[v] = recipes[v](env, coords)
                return env[v]
            if v in leaves:
                env[v] = leaves[v].load(gb, coords)
                return env[v]
            op = v.owner
            for o in op.operands:
                value(o, env, coords)
            eval_ops(gb, [op], env, leaves, coords, grp.consts)
            return env[v]

        # ---- per-thread element slots (unrolled) or a loop (general)
        slots = []
        if unrolled:
            for e in range(E):
                j = b.add(tid, c32(e * T))
                if D % T:
                    ok = b.icmp_signed("<", j, c32(D))
                    j = b.select(ok, j, c32(0))
                else:
                    ok = None
                slots.append((j, ok, {}, None))

        def each_element(fn):
            """fn(env, coords, valid) for every element of this thread; env persists per slot when unrolled."""
            if unrolled:
                for idx, (j, ok, env, co) in enumerate(slots):
                    if co is None:
                        co = coords_at(j)
                        slots[idx] = (j, ok, env, co)
                    fn(env, co, ok)
            else:
                with gb.loop32(tid, D, T, "j") as j:
                    fn({}, coords_at(j), None)

        def reduce_pass(get, combine, identity):
            """combine() of get(env, coords) over the row -> uniform f32."""
            if unrolled:
                acc = cf(identity)

                def step(env, co, ok):
                    nonlocal acc
                    v = get(env, co)
                    if ok is not None:
                        v = b.select(ok, v, cf(identity))
                    acc = combine(acc, v)

                each_element(step)
                part = acc
            else:
                fnc = b.function
                pre = b.block
                head = fnc.append_basic_block("r.head")
                bodyb = fnc.append_basic_block("r.body")
                done = fnc.append_basic_block("r.done")
                b.branch(head)
                b.position_at_end(head)
                j = b.phi(ir.IntType(32), "rj")
                acc = b.phi(F32, "racc")
                j.add_incoming(tid, pre)
                acc.add_incoming(cf(identity), pre)
                b.cbranch(b.icmp_signed("<", j, c32(D)), bodyb, done)
                b.position_at_end(bodyb)
                v = get({}, coords_at(j))
                nacc = combine(acc, v)
                nj = b.add(j, c32(T))
                j.add_incoming(nj, b.block)
                acc.add_incoming(nacc, b.block)
                b.branch(head)
                b.position_at_end(done)
                part = acc
            return gb.block_reduce(part, combine, T, scratch)

        fadd = b.fadd

        def fmax(x, y):
            return gb.fmax(x, y)

        def fmin(x, y):
            return gb.fmin(x, y)

        def as_f32(x):
            return x if x.type == F32 else b.fpext(x, F32) if isinstance(x.type, ir.HalfType | ir.DoubleType) else b.sitofp(x, F32)

        for op in grp.ops:
            if isinstance(op, g.SoftmaxOp | g.LogSoftmaxOp):
                x = op.operands[0]
                mx = reduce_pass(lambda env, co, x=x: as_f32(value(x, env, co)), fmax, float("-inf"))
                sm = reduce_pass(lambda env, co, x=x, mx=mx: _exp(gb, b.fsub(as_f32(value(x, env, co)), mx)), fadd, 0.0)
                if isinstance(op, g.SoftmaxOp):
                    inv = b.fdiv(cf(1.0), sm)
                    recipes[op.result] = lambda env, co, x=x, mx=mx, inv=inv: b.fmul(_exp(gb, b.fsub(as_f32(value(x, env, co)), mx)), inv)
                else:
                    lse = b.fadd(mx, gb.intrinsic("llvm.log", F32, [sm]))
                    recipes[op.result] = lambda env, co, x=x, lse=lse: b.fsub(as_f32(value(x, env, co)), lse)
            elif isinstance(op, g.LayerNormOp):
                x = op.input
                eps = float(op.py_attrs()["epsilon"])
                s = reduce_pass(lambda env, co, x=x: as_f32(value(x, env, co)), fadd, 0.0)
                mean = b.fmul(s, cf(1.0 / D))
                var = reduce_pass(lambda env, co, x=x, mean=mean: _sq(b, b.fsub(as_f32(value(x, env, co)), mean)), fadd, 0.0)
                rstd = b.fdiv(cf(1.0), gb.sqrt(b.fadd(b.fmul(var, cf(1.0 / D)), cf(eps))))

                def ln(env, co, x=x, mean=mean, rstd=rstd, op=op):
                    y = b.fmul(b.fmul(b.fsub(as_f32(value(x, env, co)), mean), rstd), as_f32(value(op.scale, env, co)))
                    if op.bias is not None:
                        y = b.fadd(y, as_f32(value(op.bias, env, co)))
                    return y

                recipes[op.result] = ln
            elif isinstance(op, g.ReduceOp | g.GlobalAvgPoolOp | g.GlobalMaxPoolOp):
                x = op.operands[0]
                get = lambda env, co, x=x: as_f32(value(x, env, co))  # noqa: E731
                if isinstance(op, g.ReduceSumOp | g.ReduceMeanOp | g.GlobalAvgPoolOp):
                    t = reduce_pass(get, fadd, 0.0)
                    if isinstance(op, g.ReduceMeanOp | g.GlobalAvgPoolOp):
                        t = b.fmul(t, cf(1.0 / D)) if D else cf(float("nan"))
                elif isinstance(op, g.ReduceMaxOp | g.GlobalMaxPoolOp):
                    t = reduce_pass(get, fmax, float("-inf"))
                elif isinstance(op, g.ReduceMinOp):
                    t = reduce_pass(get, fmin, float("inf"))
                else:
                    t = reduce_pass(get, b.fmul, 1.0)
                scalars[op.results[0]] = t
            else:
                if all(kinds.get(v) == "row" for v in op.results) and all(v in scalars or (v in grp.consts and grp.consts[v].size == 1) for v in op.operands):
                    env = {}
                    for v in op.operands:
                        env[v] = scalars[v] if v in scalars else const_value(grp.consts[v])
                    # coordinates are never read: every operand is in env
                    eval_ops(gb, [op], env, {}, None, grp.consts)
                    scalars.update((rv, env[rv]) for rv in op.results)
                # other elementwise ops are evaluated lazily, where they are needed

        full_out = [v for v in grp.outputs if kinds[v] == "full"]
        row_out = [v for v in grp.outputs if kinds[v] == "row"]
        if full_out:

            def write(env, co, ok):
                off = co.flat()
                vals = [value(v, env, co) for v in full_out]
                if ok is None:
                    for v, x in zip(full_out, vals):
                        store_elem(gb, x, ptrs[grp.index[v]], off, grp.outputs[v].dtype)
                else:
                    with b.if_then(ok):
                        for v, x in zip(full_out, vals):
                            store_elem(gb, x, ptrs[grp.index[v]], off, grp.outputs[v].dtype)

            each_element(write)
        if row_out:
            with b.if_then(b.icmp_unsigned("==", tid, c32(0))):
                co = coords_at(c32(0))
                for v in row_out:
                    x = value(v, {}, co)
                    store_elem(gb, x, ptrs[grp.index[v]], r, grp.outputs[v].dtype)

    ctx.launch("rows", ctx.refs, (R, 1, 1), T, body, "+".join(op.name.replace("graph.", "") for op in grp.ops if isinstance(op, REDUCTIONS)))


def _exp(gb, x):
    from dsc.backends.cpu import vmath

    return vmath.exp(gb, x)


def _sq(b, x):
    return b.fmul(x, x)


__all__ = ["match_rows", "emit_rows", "REDUCTIONS"]
