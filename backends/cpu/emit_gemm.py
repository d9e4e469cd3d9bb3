"""GEMM / batched matmul for the CPU backend (graph.gemm, graph.matmul, and fused matmul kernels).

Rows = M (A is the activation, read through any strides, so trans_a and
transposed operands cost nothing, see matmul_plan.py); columns = N, run by
the register-blocked micro-kernel (microkernel.py). A constant B (weights)
is repacked at compile time into panels [N/W][K][W] (zero padded at the N
tail, trans_b and operand transposes applied by NumPy); a B read along
unit-stride columns (activations, e.g. attention probs @ V) is loaded
directly; any other B (e.g. Q @ K^T with K^T a strided view) is packed per
thread into a stack buffer [K][V*W] with gathers, once per column block.
After the k loop the fused epilogue (epilogue.py) runs on the accumulators.

Threads split the tiles (batch x column blocks x row blocks, rows fastest so
one thread reuses a column block of B from its cache) with
`KernelBuilder.thread_range`. The last row tile is shifted up to end at M (a
few rows computed twice) and a last column block with as many vectors takes
its lane mask at run time, so most kernels hold one copy of the micro-kernel.
On x86 the step runs with denormals flushed to zero (`FlushDenormals`): one
denormal operand makes an FMA ~100x slower. Everything is emitted LLVM IR;
no BLAS.
"""

from __future__ import annotations

import numpy as np
from dsc.backends.cpu.codegen import fused_emitter, op_emitter
from dsc.backends.cpu.epilogue import F32_DT, Epilogue, Layout, epilogue_arg_shapes, kernel_sources, split_kernel
from dsc.backends.cpu.irb import F32, I32, KernelBuilder, const_i64, vec
from dsc.backends.cpu.matmul_plan import MatmulPlan, batch_strides, contig_strides, mat_operand, plan_matmul
from dsc.backends.cpu.microkernel import F32_ONLY_HINT, choose_tile, microkernel
from dsc.backends.cpu.vector_ir import (
    FlushDenormals,
    add,
    branch_variants,
    const_mask,
    content_hash,
    entry_alloca,
    gather_v,
    gep,
    iota,
    lanes_of,
    load_v,
    mul,
    store_v,
    zero_vec,
)
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of
from dsc.runtime.errors import DscError
from llvmlite import ir


PACK_BYTES = 192 * 1024  # per-thread stack budget for a packed B block


def emit_matmul(kb: KernelBuilder, plan: MatmulPlan, in_ptrs, epi: Epilogue, tid, nthreads, ctx, b_single_use: bool = True) -> None:
    with FlushDenormals(kb, ctx):
        _emit_matmul(kb, plan, in_ptrs, epi, tid, nthreads, ctx, b_single_use)


def _emit_matmul(kb: KernelBuilder, plan: MatmulPlan, in_ptrs, epi: Epilogue, tid, nthreads, ctx, b_single_use: bool) -> None:
    w = lanes_of(ctx)
    M, N, K = plan.M, plan.N, plan.K
    lay = epi.layout
    bt_n = int(np.prod(plan.bshape)) if plan.bshape else 1
    R, V = choose_tile(M, N, K, w, ctx.target.registers, pad_rows=True)
    NB = V * w
    MT = -(-M // R)
    NT = -(-N // NB)
    rt = M - (MT - 1) * R  # rows of the last row tile (computed shifted, at full height)
    ncol_last = N - (NT - 1) * NB
    vt = -(-ncol_last // w)
    lane_last = ncol_last - (vt - 1) * w
    tail_mask = None if lane_last == w else const_mask(w, lane_last)
    a, bop = plan.a, plan.b
    a_ptr = in_ptrs[a.index]
    a_bst = batch_strides(a.shape, a.strides, plan.bshape)
    sm, sk_a = a.strides[-2], a.strides[-1]
    b_sk, b_sn = bop.strides[-2], bop.strides[-1]

    # ---- B access mode
    mode = "direct"
    if bop.const is not None and b_single_use:
        mode = "panel"
        cb = np.ascontiguousarray(bop.const, dtype=np.float32)
        bb = cb.shape[:-2]
        nbb = int(np.prod(bb)) if bb else 1
        NP = -(-N // w)
        padded = np.zeros((nbb, K, NP * w), np.float32)
        padded[:, :, :N] = cb.reshape(nbb, K, N)
        packed = np.ascontiguousarray(padded.reshape(nbb, K, NP, w).transpose(0, 2, 1, 3))
        ctx.repack(bop.index, packed, f"gemm_b_panel{w}:{content_hash(cb, cb.shape)}")
        b_ptr = in_ptrs[bop.index]
        mstr = contig_strides(bb) if bb else ()
        b_bst = batch_strides(tuple(bb) + (K, N), tuple(s * NP * K * w for s in mstr) + (0, 0), plan.bshape)
    else:
        b_ptr = in_ptrs[bop.index]
        b_bst = batch_strides(bop.shape, bop.strides, plan.bshape)
        if b_sn != 1 and N > 1:
            mode = "pack" if K * NB * 4 <= PACK_BYTES else "gather"
    pack = entry_alloca(kb, F32, K * NB, name="bpack") if mode == "pack" else None

    total = bt_n * NT * MT
    lo, hi = kb.thread_range(total, tid, nthreads)
    b = kb.b

    def body(t):
        mt = b.urem(t, const_i64(MT))
        rest = b.udiv(t, const_i64(MT))
        nt = b.urem(rest, const_i64(NT))
        bt = b.udiv(rest, const_i64(NT))
        row0 = b.mul(mt, const_i64(R))
        if rt != R:  # the last row tile is shifted up to end at M (rows computed twice, same values)
            row0 = kb.smin(row0, const_i64(M - R))
        col0 = b.mul(nt, const_i64(NB))
        a_off = lay.batch_offset(kb, bt, a_bst) if plan.bshape else 0
        b_off = lay.batch_offset(kb, bt, b_bst) if plan.bshape else 0
        epi.begin_tile(kb, bt)
        a_tile = gep(kb, a_ptr, add(kb, a_off, b.mul(row0, const_i64(sm))) if sm else a_off)
        if mode == "panel":
            b_tile = gep(kb, b_ptr, add(kb, b_off, b.mul(nt, const_i64(V * K * w))))
        elif mode in ("direct",):
            b_tile = gep(kb, b_ptr, add(kb, b_off, b.mul(col0, const_i64(b_sn))))
        else:
            b_tile = gep(kb, b_ptr, b_off)
        if mode == "pack":
            # pack B[:, col0 : col0 + NB] once per column block (each thread: at its first tile, and at mt == 0)
            first = b.or_(b.icmp_unsigned("==", t, lo), b.icmp_unsigned("==", mt, const_i64(0)))
            with b.if_then(first):
                cols = b.add(kb.splat(b.trunc(col0, I32), w), iota(w, 1))
                masks = []
                idxs = []
                for v in range(V):
                    cv = b.add(cols, ir.Constant(vec(w, I32), [v * w] * w))
                    masks.append(b.icmp_signed("<", cv, ir.Constant(vec(w, I32), [N] * w)))
                    idxs.append(b.mul(cv, ir.Constant(vec(w, I32), [b_sn] * w)))
                with kb.loop(0, K, 1, "pk") as kk:
                    rowp = gep(kb, b_tile, b.mul(kk, const_i64(b_sk)))
                    for v in range(V):
                        store_v(kb, gather_v(kb, rowp, idxs[v], masks[v]), pack, b.add(b.mul(kk, const_i64(NB)), const_i64(v * w)))

        def tile(nr, nv, mask):
            def a_val(kk, _s, r):
                return kb.load(a_tile, add(kb, mul(kb, kk, sk_a), r * sm))

            if mode == "panel":
                def b_vec(kk, _s, v):
                    return kb.load_vec(b_tile, b.add(b.mul(kk, const_i64(w)), const_i64(v * K * w)), w)
            elif mode == "pack":
                def b_vec(kk, _s, v):
                    return kb.load_vec(pack, b.add(b.mul(kk, const_i64(NB)), const_i64(v * w)), w)
            elif mode == "direct":
                def b_vec(kk, _s, v):
                    return load_v(kb, b_tile, add(kb, mul(kb, kk, b_sk), v * w), w, mask if v == nv - 1 else None)
            else:
                def b_vec(kk, _s, v):
                    cv = b.add(kb.splat(b.trunc(col0, I32), w), iota(w, 1))
                    cv = b.add(cv, ir.Constant(vec(w, I32), [v * w] * w))
                    m = b.icmp_signed("<", cv, ir.Constant(vec(w, I32), [N] * w))
                    return gather_v(kb, gep(kb, b_tile, mul(kb, kk, b_sk)), b.mul(cv, ir.Constant(vec(w, I32), [b_sn] * w)), m)

            accs = [[zero_vec(w)] * nv for _ in range(nr)]
            accs = microkernel(kb, nr, nv, 0, K, a_val, b_vec, accs)
            epi.apply(kb, accs, row0, col0, mask)

        last_n = b.icmp_unsigned("==", nt, const_i64(NT - 1))
        if vt == V:  # one code path: the last vector's mask is chosen at run time
            tile(R, V, None if tail_mask is None else b.select(last_n, tail_mask, const_mask(w, w)))
        else:
            branch_variants(kb, [(last_n, lambda: tile(R, vt, tail_mask)), (None, lambda: tile(R, V, None))])

    with kb.loop(lo, hi, 1, "tile") as t:
        body(t)


def _f32_only(*vals) -> bool:
    return all(sig_of(v.type).dtype == F32_DT for v in vals)


def _gemm_epilogue(plan: MatmulPlan, lay: Layout, w: int, main, ops, sources, yields) -> Epilogue:
    """The epilogue with gemm's alpha * acc + beta * C in front of the fused ops."""
    c_val = plan.c_value
    alpha, beta = float(plan.alpha), float(plan.beta)

    def pre(kb, acc, load):
        y = acc if alpha == 1.0 else kb.b.fmul(acc, ir.Constant(vec(w), [alpha] * w))
        if c_val is not None and beta != 0.0:
            c = load(c_val)
            y = kb.b.fadd(y, c) if beta == 1.0 else kb.fma(c, ir.Constant(vec(w), [beta] * w), y)
        return y

    return Epilogue(lay, main, ops, sources, yields, w, pre)


@op_emitter(g.GemmOp, g.MatMulOp)
def emit_matmul_op(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx):
    if not _f32_only(*op.operands, op.result):
        bad = next(sig_of(v.type).dtype for v in (*op.operands, op.result) if sig_of(v.type).dtype != F32_DT)
        raise DscError(f"the CPU backend's {op.name} supports float32 only, not {bad}", hint=F32_ONLY_HINT)
    vals = list(op.operands)
    index = {v: i for i, v in enumerate(vals)}
    a = mat_operand(vals[0], index, ctx.consts, {})
    bo = mat_operand(vals[1], index, ctx.consts, {})
    plan = plan_matmul(op, a, bo)
    w = lanes_of(ctx)
    lay = Layout(plan.out_shape, plan.roles)
    sources = {}
    if isinstance(op, g.GemmOp) and op.c is not None:
        cshape = sig_of(op.c.type).shape
        if lay.view_of_shape(cshape) is None:
            raise DscError(f"graph.gemm: C {list(cshape)} does not broadcast to {list(plan.out_shape)}")
        sources[op.c] = (in_ptrs[2], cshape, False)
    epi = _gemm_epilogue(plan, lay, w, op.result, [], sources, [(op.result, out_ptrs[0])])
    emit_matmul(kb, plan, in_ptrs, epi, tid, nthreads, ctx, b_single_use=vals.count(vals[1]) == 1)


# ---------------------------------------------------------------- fused


def _matmul_kernel(kop: k.FusedOp):
    parts = split_kernel(kop, (g.GemmOp, g.MatMulOp))
    if parts is None:
        return None
    pro, main, epi = parts
    block = kop.body.block
    index = {a: i for i, a in enumerate(block.args)}
    transposes = {t.result: t for t in pro}
    for t in pro:
        if t.input not in index or t.result.uses.get_length() != 1 or next(iter(t.result.uses)).operation is not main:
            return None
    operands = [main.operands[0], main.operands[1]]
    for v in operands:
        if v not in index and v not in transposes:
            return None
    if not _f32_only(*main.operands, main.result):
        return None
    if isinstance(main, g.GemmOp) and main.c is not None and main.c not in index:
        return None
    return pro, main, epi, index, transposes


def _matmul_matches(kop: k.FusedOp) -> bool:
    got = _matmul_kernel(kop)
    if got is None:
        return False
    _, main, epi, index, transposes = got
    consts = [None] * len(index)
    a = mat_operand(main.operands[0], index, consts, transposes)
    bo = mat_operand(main.operands[1], index, consts, transposes)
    if a is None or bo is None:
        return False
    plan = plan_matmul(main, a, bo)
    if plan is None:
        return False
    lay = Layout(plan.out_shape, plan.roles)
    if isinstance(main, g.GemmOp) and main.c is not None and lay.view_of_shape(sig_of(main.c.type).shape) is None:
        return False
    yields = list(kop.body.block.last_op.operands)
    return Epilogue.supported(lay, main.result, epi, epilogue_arg_shapes(kop), yields)


@fused_emitter("gemm", _matmul_matches)
def emit_fused_matmul(kb, kop, in_ptrs, out_ptrs, tid, nthreads, ctx):
    _, main, epi_ops, index, transposes = _matmul_kernel(kop)
    a = mat_operand(main.operands[0], index, ctx.consts, transposes)
    bo = mat_operand(main.operands[1], index, ctx.consts, transposes)
    plan = plan_matmul(main, a, bo)
    w = lanes_of(ctx)
    lay = Layout(plan.out_shape, plan.roles)
    known = {main.result} | {op.results[0] for op in epi_ops}
    sources = kernel_sources(kop, in_ptrs, epi_ops, known)
    if isinstance(main, g.GemmOp) and main.c is not None:
        sources[main.c] = (in_ptrs[index[main.c]], sig_of(main.c.type).shape, False)
    yields = list(zip(kop.body.block.last_op.operands, out_ptrs))
    epi = _gemm_epilogue(plan, lay, w, main.result, epi_ops, sources, yields)
    b_arg = kop.body.block.args[bo.index]
    emit_matmul(kb, plan, in_ptrs, epi, tid, nthreads, ctx, b_single_use=b_arg.uses.get_length() == 1)


__all__ = ["PACK_BYTES", "emit_fused_matmul", "emit_matmul", "emit_matmul_op"]
