"""Shape and dtype rules of the graph dialect, in NumPy terms.

Each function takes operand signatures (`Sig`: shape tuple, NumPy dtype) and
Python attribute values and returns the result signature, or raises
`ShapeMismatch` with a sentence saying which rule was broken. The ops'
verifiers and builders call these; so does the ONNX importer, indirectly.
"""

from __future__ import annotations

import math

import numpy as np
from dsc.dialects.tensor_types import Sig


class ShapeMismatch(ValueError):
    """An op's operands or attributes break its shape rule."""


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ShapeMismatch(msg)


def broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeMismatch(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast") from None


def same_dtype(ins: list[Sig]) -> np.dtype:
    dts = {s.dtype for s in ins}
    check(len(dts) == 1, f"operand dtypes differ: {', '.join(sorted(map(str, dts)))}")
    return ins[0].dtype


def unary(ins: list[Sig]) -> Sig:
    return ins[0]


def binary(ins: list[Sig]) -> Sig:
    return Sig(broadcast(ins[0].shape, ins[1].shape), same_dtype(ins))


def where(ins: list[Sig]) -> Sig:
    check(ins[0].dtype == np.bool_, "the condition of where must be bool")
    return Sig(broadcast(*(s.shape for s in ins)), same_dtype(ins[1:]))


def _window(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil_mode: bool) -> int:
    eff = (k - 1) * d + 1
    span = size + pb + pe - eff
    check(span >= 0, f"window {k} (dilation {d}) is larger than the padded input {size + pb + pe}")
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= size + pb:  # the last window would start in the end padding
        out -= 1
    return out


def conv(ins: list[Sig], a: dict) -> Sig:
    x, w = ins[0], ins[1]
    nsp = len(x.shape) - 2
    check(nsp >= 1 and len(w.shape) == nsp + 2, f"conv input rank {len(x.shape)} and weight rank {len(w.shape)} disagree")
    g = a["group"]
    check(len(a["strides"]) == nsp and len(a["dilations"]) == nsp and len(a["pads"]) == 2 * nsp, "strides/dilations need one value per spatial axis and pads two")
    check(x.shape[1] == w.shape[1] * g, f"input channels {x.shape[1]} != weight channels {w.shape[1]} x group {g}")
    check(w.shape[0] % g == 0, f"output channels {w.shape[0]} not divisible by group {g}")
    if len(ins) > 2:
        check(ins[2].shape == (w.shape[0],), f"bias must have shape [{w.shape[0]}]")
    same_dtype(ins)
    sp = tuple(
        _window(x.shape[2 + i], w.shape[2 + i], a["strides"][i], a["dilations"][i], a["pads"][i], a["pads"][nsp + i], False)
        for i in range(nsp)
    )
    return Sig((x.shape[0], w.shape[0]) + sp, x.dtype)


def pool(x: Sig, a: dict) -> Sig:
    nsp = len(x.shape) - 2
    k = a["kernel_shape"]
    check(nsp >= 1 and len(k) == nsp, f"kernel_shape {list(k)} does not fit input rank {len(x.shape)}")
    sp = tuple(
        _window(x.shape[2 + i], k[i], a["strides"][i], a["dilations"][i], a["pads"][i], a["pads"][nsp + i], bool(a["ceil_mode"]))
        for i in range(nsp)
    )
    return Sig(x.shape[:2] + sp, x.dtype)


def batch_norm(ins: list[Sig]) -> Sig:
    x = ins[0]
    check(len(x.shape) >= 2, "batch_norm needs a channel axis")
    for s in ins[1:]:
        check(s.shape == (x.shape[1],), f"batch_norm parameters must have shape [{x.shape[1]}], got {list(s.shape)}")
    return Sig(x.shape, same_dtype(ins))


def gemm(ins: list[Sig], a: dict) -> Sig:
    A, B = ins[0], ins[1]
    check(len(A.shape) == 2 and len(B.shape) == 2, "gemm operands must be matrices")
    m, k = A.shape[::-1] if a["trans_a"] else A.shape
    k2, n = B.shape[::-1] if a["trans_b"] else B.shape
    check(k == k2, f"gemm inner dimensions differ: {k} vs {k2}")
    if len(ins) > 2:
        check(broadcast(ins[2].shape, (m, n)) == (m, n), f"gemm C {list(ins[2].shape)} does not broadcast to [{m}, {n}]")
    return Sig((m, n), same_dtype(ins))


def matmul(ins: list[Sig]) -> Sig:
    a, b = ins[0].shape, ins[1].shape
    check(len(a) >= 1 and len(b) >= 1, "matmul operands need rank >= 1")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    check(a2[-1] == b2[-2], f"matmul inner dimensions differ: {a2[-1]} vs {b2[-2]}")
    out = broadcast(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return Sig(out, same_dtype(ins))


def reduce(x: Sig, axes: tuple[int, ...], keepdims: int) -> Sig:
    r = len(x.shape)
    check(all(0 <= a < r for a in axes), f"reduce axes {list(axes)} out of range for rank {r}")
    red = set(axes) if axes else set(range(r))
    shape = tuple(1 if i in red else d for i, d in enumerate(x.shape) if keepdims or i not in red)
    return Sig(shape, x.dtype)


def transpose(x: Sig, perm: tuple[int, ...]) -> Sig:
    check(sorted(perm) == list(range(len(x.shape))), f"perm {list(perm)} is not a permutation of rank {len(x.shape)}")
    return Sig(tuple(x.shape[p] for p in perm), x.dtype)


def concat(ins: list[Sig], axis: int) -> Sig:
    check(len(ins) >= 1, "concat needs operands")
    r = len(ins[0].shape)
    check(0 <= axis < r, f"concat axis {axis} out of range for rank {r}")
    for s in ins:
        check(len(s.shape) == r and all(s.shape[i] == ins[0].shape[i] for i in range(r) if i != axis), f"concat operands {[list(s.shape) for s in ins]} differ off axis {axis}")
    shape = list(ins[0].shape)
    shape[axis] = sum(s.shape[axis] for s in ins)
    return Sig(tuple(shape), same_dtype(ins))


def slice_(x: Sig, a: dict) -> Sig:
    r = len(x.shape)
    check(len(a["starts"]) == r and len(a["ends"]) == r and len(a["steps"]) == r, "slice needs starts, ends and steps for every axis")
    shape = []
    for d, st, en, sp in zip(x.shape, a["starts"], a["ends"], a["steps"]):
        check(sp != 0, "slice step 0")
        n = len(range(st, en, sp))
        # every index the range visits must lie in [0, d)
        check(n == 0 or (0 <= st < d and 0 <= st + (n - 1) * sp < d), f"slice {st}:{en}:{sp} reaches outside an axis of size {d}")
        shape.append(n)
    return Sig(tuple(shape), x.dtype)


def gather(ins: list[Sig], axis: int) -> Sig:
    x, idx = ins
    check(0 <= axis < len(x.shape), f"gather axis {axis} out of range for rank {len(x.shape)}")
    check(idx.dtype.kind in "iu", "gather indices must be integers")
    return Sig(x.shape[:axis] + idx.shape + x.shape[axis + 1 :], x.dtype)


def pad(x: Sig, pads: tuple[int, ...]) -> Sig:
    r = len(x.shape)
    check(len(pads) == 2 * r, f"pad needs {2 * r} pads for rank {r}")
    shape = tuple(d + pads[i] + pads[r + i] for i, d in enumerate(x.shape))
    check(all(d >= 0 for d in shape), "pads crop more than the tensor holds")
    return Sig(shape, x.dtype)


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
