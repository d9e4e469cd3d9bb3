"""GEMM-shaped kernels on the GPU: matmul, gemm and convolution (implicit GEMM), fused epilogues.

    C[z][m, n] = Σ_k A(z, m, k) · B(z, k, n),   f32 accumulation

Three kernels compute it: tensor cores (mma_pipe.py's mma.sync pipeline, or
wgmma.py's on sm_90a) for f16 / bf16 operands and, with `--tf32`, f32 ones;
else simt.py's tiled FMA kernel. `emit_gemm` picks one and launches it.
`Operand`s say where A(m, k) and B(k, n) are: a strided view of a tensor
(matmul, gemm, transposes folded in) or the im2col of a convolution's input
computed on the fly (implicit GEMM: no im2col buffer). z is the batch (or
conv group) index, from blockIdx.z.

When the tiles alone leave most multiprocessors idle (batch-1 layers with
few outputs and a long K), K is split across blocks (split-K): each writes
its partial tile to scratch and a second kernel adds the partials and runs
the epilogue.

The epilogue (`epi(gb, z, m, n, acc)`) is the fused chain after the GEMM
(bias, batch norm, residual add, activation, GELU, ...) evaluated by
`ew.eval_ops` at that output's coordinates, then stored.

Convolutions build their operands in conv.py.
"""

from __future__ import annotations

import numpy as np

from dsc.backends.cuda.ew import Coords, channels_last_strides, group_leaves, contiguous_strides, eval_ops, is_ew, load_elem, load_run, store_elem, store_run
from dsc.backends.cuda.gpubuilder import GpuBuilder, c32, cf
from dsc.backends.cuda.mma import choose_mma_tiling, mma_kind, worth_mma
from dsc.backends.cuda.mma import row_bytes as mma_row_bytes, stage_depth
from dsc.backends.cuda.mma_pipe import PIPE_CONFIGS, emit_pipelined_mma_body
from dsc.backends.cuda.simt import CONFIGS, choose_tiling, emit_gemm_body
from dsc.backends.cuda.wgmma import emit_wgmma_body
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of


# ------------------------------------------------------------ operands


class Operand:
    """Where element (i, j) of a GEMM operand is: A(m, k) or B(k, n). `contig`: 0 or 1, the index contiguous in memory."""

    ptr = None
    dtype = np.dtype(np.float32)
    contig = 1

    def setup(self, gb: GpuBuilder, z) -> None:
        pass

    def addr(self, gb: GpuBuilder, i, j):
        """(element offset, extra validity predicate or None)."""
        raise NotImplementedError

    def stage_addr(self, gb: GpuBuilder, k0, kk, n):
        """addr(k0 + kk, n) of a B operand, for a k-stage starting at k0 (a multiple of the stage depth)."""
        return self.addr(gb, gb.b.add(k0, kk), n)

    def vectors_ok(self, vec: int, extent: int) -> bool:
        """Whether runs of `vec` elements along the contiguous index, starting at multiples of vec, are
        contiguous and vec-aligned in memory (buffers themselves are 64-byte aligned), no validity
        predicate applying; `extent`: the contiguous index's size."""
        return False


class StridedOperand(Operand):
    """A 2-D view (strides si, sj) of a tensor, with batch offsets over the batch dims of z."""

    def __init__(self, ptr, dtype, si: int, sj: int, batch_shape=(), batch_strides=()):
        self.ptr, self.dtype, self.si, self.sj = ptr, np.dtype(dtype), si, sj
        self.batch_shape, self.batch_strides = tuple(batch_shape), tuple(batch_strides)
        self.contig = 1 if sj == 1 or (si != 1 and sj <= si) else 0
        self.zoff = None

    def setup(self, gb, z):
        if self.batch_shape and any(self.batch_strides):
            self.zoff = Coords.from_flat(gb, self.batch_shape, z).offset(self.batch_strides)
        else:
            self.zoff = None

    def addr(self, gb, i, j):
        b = gb.b
        off = b.add(_mul(b, i, self.si), _mul(b, j, self.sj))
        if self.zoff is not None:
            off = b.add(off, self.zoff)
        return off, None

    def vectors_ok(self, vec, extent):
        other = self.si if self.contig == 1 else self.sj
        return (self.sj if self.contig == 1 else self.si) == 1 and other % vec == 0 and extent % vec == 0 and all(s % vec == 0 for s in self.batch_strides)


def _unravel(b, idx, dims) -> list:
    """Row-major coordinates of flat index idx (i32) in `dims`."""
    out = []
    for d in range(len(dims)):
        inner = int(np.prod(dims[d + 1 :], dtype=np.int64))
        x = b.udiv(idx, c32(inner)) if inner > 1 else idx
        if d > 0:
            x = b.urem(x, c32(dims[d]))
        out.append(x)
    return out


def _mul(b, v, c: int):
    if c == 0:
        return c32(0)
    if c == 1:
        return v
    return b.mul(v, c32(c))


# ------------------------------------------------------------ emitting a GEMM with an epilogue


def emit_gemm(ctx, name: str, M: int, N: int, K: int, Z: int, make_operands, epi_store, label: str, dtypes=(np.float32, np.float32), extra_reads=(), m_fastest: bool = False, epi_run=None, row_bytes: int | None = None):
    """Launch(es) of a GEMM: `make_operands(ptrs) -> (A, B)`, `epi_store(gb, ptrs, z, m, n, acc)`.

    `m_fastest`: the output is contiguous along m (a channels-last convolution output): the
    tensor-core epilogue and the split-K sum walk m fastest. `epi_run(gb, ptrs, z, m, n, accs)`, if
    given, stores a run of consecutive m at once (make_epilogue's `run`): the tensor-core epilogue
    then moves 8 channels per thread as vectors. `row_bytes`: the tensor-core kernel's bytes of k per
    shared-memory stage row (mma.row_bytes of K unless given: a tap-major convolution fixes it).

    `ctx.refs` (in order) are the kernel's buffers; ptrs maps each ref index to its pointer.
    `dtypes`: the element types of A and B, which pick tensor cores (mma.py) or
    the SIMT kernel.
    """
    if M == 0 or N == 0 or Z == 0:
        return
    kind = mma_kind(*dtypes, ctx.tf32) if worth_mma(M, N, K) else None
    if kind is not None:
        cfg, split = choose_mma_tiling(M, N, K, Z, ctx.sms, PIPE_CONFIGS)
        rb = row_bytes or mma_row_bytes(kind, K, ctx.smem_limit)

        def core(gb, cfg, M, N, K, A, B, epi, split, nz, run=None):
            args = (gb, cfg, M, N, K, A, B, epi, split, nz, kind)
            mf, er = m_fastest and split == 1, run if split == 1 else None
            if ctx.wgmma and emit_wgmma_body(*args, mf, er, rb, ctx.smem_limit):
                used.add("wgmma")
                return
            emit_pipelined_mma_body(*args, m_fastest=mf, epi_run=er, row_bytes=rb)

        fallback = PIPE_CONFIGS[0]
    else:
        cfg, split = choose_tiling(M, N, K, Z, ctx.sms)
        fallback = CONFIGS[0]

        def core(gb, cfg, M, N, K, A, B, epi, split, nz, run=None):
            emit_gemm_body(gb, cfg, M, N, K, A, B, epi, split, nz)
    grid = (-(-N // cfg.BN), -(-M // cfg.BM), Z * split)
    if grid[1] > 65535 or grid[2] > 65535:
        cfg, split = fallback, 1
        grid = (-(-N // cfg.BN), -(-M // cfg.BM), Z)
    # the shape and tiles, for profiles and `dsc explain`
    tile = f"{cfg.BM}x{cfg.BN}" + (f"x{stage_depth(kind, rb)}" if kind is not None else "")
    shape = f" [{Z}x{M}x{N}x{K}, tile {tile}" + (f", split-K {split}]" if split > 1 else "]")
    used: set = set()  # "wgmma" once the kernel is built on it
    base = label

    def label():  # read after the build (ctx.launch), which knows whether wgmma took it
        return base + (f" ({kind} tensor cores{', wgmma' if used else ''})" if kind is not None else "") + shape
    if split == 1:
        def body(gb, ptrs):
            A, B = make_operands(gb, ptrs)
            run = None if epi_run is None else (lambda gb_, z, m, n, accs: epi_run(gb_, ptrs, z, m, n, accs))
            core(gb, cfg, M, N, K, A, B, lambda gb_, z, m, n, acc, s: epi_store(gb_, ptrs, z, m, n, acc), 1, Z, run)

        ctx.launch(name, ctx.refs, grid, cfg.threads, body, label, extra_reads=extra_reads, min_blocks=getattr(cfg, "min_blocks", 0))
        return
    # split-K: partials [Z][split][M][N] in scratch, then a reduction kernel with the epilogue
    part = ctx.scratch(Z * split * M * N * 4)
    refs = list(ctx.refs) + [part]
    pi = len(refs) - 1

    def body(gb, ptrs):
        A, B = make_operands(gb, ptrs)
        P = ptrs[pi]

        def store_part(gb_, z, m, n, acc, s):
            b = gb_.b
            zs = b.add(b.mul(z, c32(split)), s)
            off = b.add(b.mul(b.add(b.mul(zs, c32(M)), m), c32(N)), n)
            b.store(acc, b.gep(P, [off], inbounds=True))

        core(gb, cfg, M, N, K, A, B, store_part, split, Z)

    ctx.launch(name + "_splitk", refs, grid, cfg.threads, body, lambda: label() + " (split-K)", extra_writes={pi}, extra_reads=extra_reads, min_blocks=getattr(cfg, "min_blocks", 0))

    def reduce_body(gb, ptrs):
        b = gb.b
        P = ptrs[pi]
        with gb.grid_stride(Z * M * N) as e:
            z = b.udiv(e, c32(M * N)) if Z > 1 else c32(0)
            mn = b.urem(e, c32(M * N)) if Z > 1 else e
            if m_fastest:  # consecutive threads write consecutive m
                m, n = b.urem(mn, c32(M)), b.udiv(mn, c32(M))
                mn = b.add(b.mul(m, c32(N)), n)
            else:
                m, n = b.udiv(mn, c32(N)), b.urem(mn, c32(N))
            base = b.add(b.mul(b.mul(z, c32(split)), c32(M * N)), mn)
            acc = b.load(b.gep(P, [base], inbounds=True))
            for s in range(1, split):
                acc = b.fadd(acc, b.load(b.gep(P, [b.add(base, c32(s * M * N))], inbounds=True)))
            epi_store(gb, ptrs, z, m, n, acc)

    total = Z * M * N
    ctx.launch(name + "_epilogue", refs, (min(-(-total // 256), 65535), 1, 1), 256, reduce_body, label() + " (split-K sum)", extra_reads={pi})


# ------------------------------------------------------------ matching fused groups


def epilogue_ops(grp, anchor) -> list | None:
    """The ops after `anchor` when they are all elementwise on the anchor's result shape, else None."""
    ops = grp.ops
    i = ops.index(anchor)
    rest = ops[i + 1 :]
    out_shape = sig_of(anchor.results[0].type).shape
    for op in rest:
        if not is_ew(op):
            return None
        for r in op.results:
            if sig_of(r.type).shape != out_shape:
                return None
    # every group output must be the anchor's result or an epilogue value
    produced = {anchor.results[0]} | {r for op in rest for r in op.results}
    if not all(v in produced for v in grp.outputs):
        return None
    return rest


def make_epilogue(grp, anchor, rest, out_shape, coords_of):
    """epi_store(gb, ptrs, z, m, n, acc): the anchor's value acc at (z, m, n) through `rest`, stored
    (outputs marked "nhwc" in grp.layout channels-last)."""
    outs = list(grp.outputs)

    def epi_store(gb, ptrs, z, m, n, acc, extra=None):
        coords = coords_of(gb, z, m, n)
        env = {anchor.results[0]: acc if extra is None else extra(gb, ptrs, coords, acc)}
        leaves = group_leaves(grp, ptrs)
        eval_ops(gb, rest, env, leaves, coords, grp.consts)
        for v in outs:
            ref = grp.outputs[v]
            off = coords.offset(channels_last_strides(coords.shape)) if grp.layout.get(v) == "nhwc" else coords.flat()
            store_elem(gb, env[v], ptrs[grp.index[v]], off, ref.dtype)

    # leaves the epilogue reads at the output's position, stored channels-last: a run of m is one vector
    run_leaves = [v for v in grp.leaves if grp.layout.get(v) == "nhwc" and any(u.operation in rest for u in v.uses)]

    def epi_store_run(gb, ptrs, z, m, n, accs, extra=None):
        """len(accs) consecutive m from m (a multiple of len(accs); the channels too) at (z, n): channels-last
        leaves and outputs move as one vector load / store each, the rest element by element."""
        V = len(accs)
        first = coords_of(gb, z, m, n)
        cl_off = first.offset(channels_last_strides(first.shape))
        runs = {v: load_run(gb, ptrs[grp.index[v]], cl_off, sig_of(v.type).dtype, V) for v in run_leaves}
        leaves = group_leaves(grp, ptrs)
        envs = []
        for j in range(V):
            coords = first if j == 0 else coords_of(gb, z, gb.b.add(m, c32(j)), n)
            env = {anchor.results[0]: accs[j] if extra is None else extra(gb, ptrs, coords, accs[j])}
            env.update({v: vals[j] for v, vals in runs.items()})
            eval_ops(gb, rest, env, leaves, coords, grp.consts)
            envs.append((coords, env))
        for v in outs:
            ref = grp.outputs[v]
            if grp.layout.get(v) == "nhwc":
                store_run(gb, [env[v] for _, env in envs], ptrs[grp.index[v]], cl_off, ref.dtype)
            else:
                for coords, env in envs:
                    store_elem(gb, env[v], ptrs[grp.index[v]], coords.flat(), ref.dtype)

    epi_store.run = epi_store_run
    return epi_store


# --- matmul / gemm


def operand_view(v, grp):
    """(leaf value, shape, strides) of a value that is a leaf seen through transposes/reshapes, or None."""
    if v in grp.leaves:
        s = sig_of(v.type).shape
        return v, tuple(s), contiguous_strides(s)
    op = v.owner
    if isinstance(op, g.TransposeOp) and op in grp.ops:
        base = operand_view(op.input, grp)
        if base is None:
            return None
        leaf, shape, strides = base
        perm = op.py_attrs()["perm"]
        return leaf, tuple(shape[p] for p in perm), [strides[p] for p in perm]
    if isinstance(op, g.ReshapeOp) and op in grp.ops:
        base = operand_view(op.input, grp)
        if base is None:
            return None
        leaf, shape, strides = base
        if list(strides) != contiguous_strides(shape):
            return None
        s = sig_of(v.type).shape
        return leaf, tuple(s), contiguous_strides(s)
    return None


def match_matmul(grp) -> bool:
    anchors = [op for op in grp.ops if isinstance(op, g.MatMulOp | g.GemmOp)]
    if len(anchors) != 1:
        return False
    mm = anchors[0]
    pro = grp.ops[: grp.ops.index(mm)]
    if not all(isinstance(op, g.TransposeOp | g.ReshapeOp) for op in pro):
        return False
    ins = [mm.operands[0], mm.operands[1]]
    if any(operand_view(v, grp) is None for v in ins):
        return False
    # prologue values may only feed the matmul
    if any(r in grp.outputs for op in pro for r in op.results):
        return False
    if isinstance(mm, g.GemmOp) and mm.c is not None and mm.c not in grp.leaves:
        return False
    if isinstance(mm, g.MatMulOp):
        ls, rs = sig_of(mm.lhs.type).shape, sig_of(mm.rhs.type).shape
        if (len(ls) < 2 or len(rs) < 2) and len(grp.ops) - len(pro) > 1:
            return False
    return epilogue_ops(grp, mm) is not None


def emit_matmul(ctx, grp) -> None:
    mm = next(op for op in grp.ops if isinstance(op, g.MatMulOp | g.GemmOp))
    rest = epilogue_ops(grp, mm)
    out = sig_of(mm.results[0].type).shape
    lv, lshape, lstr = operand_view(mm.operands[0], grp)
    rv, rshape, rstr = operand_view(mm.operands[1], grp)
    alpha, beta, cval = 1.0, 0.0, None
    if isinstance(mm, g.GemmOp):
        a = mm.py_attrs()
        alpha, beta = float(a["alpha"]), float(a["beta"])
        if a["trans_a"]:
            lshape, lstr = lshape[::-1], lstr[::-1]
        if a["trans_b"]:
            rshape, rstr = rshape[::-1], rstr[::-1]
        cval = mm.c if beta != 0.0 else None
    # 1-D operands: a row (lhs) or a column (rhs)
    if len(lshape) == 1:
        lshape, lstr = (1, lshape[0]), [0, lstr[0]]
    if len(rshape) == 1:
        rshape, rstr = (rshape[0], 1), [rstr[0], 0]
    M, K = lshape[-2], lshape[-1]
    N = rshape[-1]
    bshape = tuple(np.broadcast_shapes(tuple(lshape[:-2]), tuple(rshape[:-2]))) if (len(lshape) > 2 or len(rshape) > 2) else ()
    Z = int(np.prod(bshape, dtype=np.int64)) if bshape else 1
    lb = _batch_strides(lshape[:-2], lstr[:-2], bshape)
    rb = _batch_strides(rshape[:-2], rstr[:-2], bshape)
    logical = (*bshape, M, N)
    nb = len(bshape)

    def coords_of(gb, z, m, n):
        if tuple(out) != logical:
            # 1-D matmul: the output drops a unit dim; same elements in the same order
            flat = gb.b.add(gb.b.mul(gb.b.add(gb.b.mul(z, c32(M)), m), c32(N)), n)
            return Coords.from_flat(gb, out, flat)
        groups = ([(tuple(range(nb)), z)] if nb else []) + [((nb,), m), ((nb + 1,), n)]
        return Coords(gb, out, groups)

    def extra(gb, ptrs, coords, acc):
        b = gb.b
        if alpha != 1.0:
            acc = b.fmul(acc, cf(alpha))
        if cval is not None:
            cs = sig_of(cval.type)
            from dsc.backends.cpu.emit_elementwise import broadcast_strides

            cv = load_elem(gb, ptrs[grp.index[cval]], coords.offset(broadcast_strides(cs.shape, coords.shape)), cs.dtype)
            acc = b.fadd(acc, cv if beta == 1.0 else b.fmul(cv, cf(beta)))
        return acc

    epi = make_epilogue(grp, mm, rest, out, coords_of)

    def epi_store(gb, ptrs, z, m, n, acc):
        epi(gb, ptrs, z, m, n, acc, extra)

    def operands(gb, ptrs):
        A = StridedOperand(ptrs[grp.index[lv]], sig_of(lv.type).dtype, lstr[-2], lstr[-1], bshape, lb)
        B = StridedOperand(ptrs[grp.index[rv]], sig_of(rv.type).dtype, rstr[-2], rstr[-1], bshape, rb)
        return A, B

    emit_gemm(ctx, "gemm", M, N, K, Z, operands, epi_store, mm.name.replace("graph.", ""), (sig_of(lv.type).dtype, sig_of(rv.type).dtype))


def _batch_strides(shape, strides, bshape):
    """Strides of an operand's batch dims read at the broadcast batch index (0 where broadcast)."""
    shape, strides = list(shape), list(strides)
    pad = len(bshape) - len(shape)
    out = [0] * pad + [0 if s == 1 else st for s, st in zip(shape, strides)]
    return tuple(out)


__all__ = ["channels_last_strides", "match_matmul", "emit_matmul", "emit_gemm", "epilogue_ops", "make_epilogue", "Operand", "StridedOperand"]
