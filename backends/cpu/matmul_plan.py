"""Matmul planning for the CPU backend: graph.gemm / graph.matmul as a batched (M, N, K) problem.

An operand is a strided view of a kernel input (`MatOperand`: through at most
one transpose, gemm's trans_a/trans_b applied as stride swaps, 1-D operands
promoted), so transposes cost nothing at run time; `plan_matmul` derives the
batch dims, M, N, K and the output's (batch, row, column) roles for the
epilogue's Layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of


@dataclass
class MatOperand:
    """A matrix operand of a (batched) matmul read through strides: (*batch, rows, cols) of the operand."""

    index: int  # kernel/op input position
    shape: tuple  # the operand as the matmul sees it (after transposes, 1-D promoted)
    strides: tuple  # element strides into the input buffer, per dim of `shape`
    const: np.ndarray | None  # the operand's values as the matmul sees them (constants only)


def contig_strides(shape) -> tuple:
    st, acc = [], 1
    for n in reversed(shape):
        st.append(acc)
        acc *= n
    return tuple(reversed(st))


def mat_operand(v, block_index: dict, consts: list, transposes: dict) -> MatOperand | None:
    """The operand `v` as a strided view of a kernel input (through at most one transpose)."""
    perm = None
    if v in transposes:
        t = transposes[v]
        perm = tuple(t.py_attrs()["perm"])
        v = t.input
    if v not in block_index:
        return None
    i = block_index[v]
    shape = sig_of(v.type).shape
    st = contig_strides(shape)
    c = consts[i] if i < len(consts) else None
    if perm is not None:
        shape = tuple(shape[p] for p in perm)
        st = tuple(st[p] for p in perm)
        c = None if c is None else np.transpose(c, perm)
    return MatOperand(i, tuple(shape), tuple(st), c)


@dataclass
class MatmulPlan:
    bshape: tuple  # output batch dims
    M: int
    N: int
    K: int
    a: MatOperand  # as (*bA, M, K)
    b: MatOperand  # as (*bB, K, N)
    out_shape: tuple
    roles: str
    alpha: float = 1.0
    beta: float = 1.0
    c_value: object = None  # gemm's C (SSA value)


def plan_matmul(op, a: MatOperand, b: MatOperand) -> MatmulPlan | None:
    out = sig_of(op.result.type).shape
    if isinstance(op, g.GemmOp):
        at = op.py_attrs()
        if at["trans_a"]:
            a = MatOperand(a.index, a.shape[::-1], a.strides[::-1], None if a.const is None else a.const.T)
        if at["trans_b"]:
            b = MatOperand(b.index, b.shape[::-1], b.strides[::-1], None if b.const is None else b.const.T)
        M, K = a.shape
        N = b.shape[1]
        c = op.c if op.c is not None else None
        return MatmulPlan((), M, N, K, a, b, tuple(out), "rc", at["alpha"], at["beta"], c)
    if len(a.shape) == 1:
        a = MatOperand(a.index, (1,) + a.shape, (0,) + a.strides, None if a.const is None else a.const[None, :])
    if len(b.shape) == 1:
        b = MatOperand(b.index, b.shape + (1,), b.strides + (0,), None if b.const is None else b.const[:, None])
    M, K = a.shape[-2:]
    N = b.shape[-1]
    bshape = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    roles = "b" * len(bshape) + ("r" if len(sig_of(op.lhs.type).shape) > 1 else "") + ("c" if len(sig_of(op.rhs.type).shape) > 1 else "")
    if len(roles) != len(out):
        return None
    return MatmulPlan(bshape, M, N, K, a, b, tuple(out), roles)


def batch_strides(op_shape: tuple, op_strides: tuple, bshape: tuple) -> list[int]:
    """Strides of an operand's batch dims over the output batch dims (0 where broadcast)."""
    nb = len(op_shape) - 2
    out = []
    for d in range(len(bshape)):
        j = d - (len(bshape) - nb)
        out.append(0 if j < 0 or op_shape[j] == 1 else op_strides[j])
    return out


__all__ = ["MatOperand", "MatmulPlan", "batch_strides", "contig_strides", "mat_operand", "plan_matmul"]
