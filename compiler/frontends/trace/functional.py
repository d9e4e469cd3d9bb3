"""Functional tensor ops for traced code: `dsc.nn.functional` (activations, conv, pooling, norms, ...).

Signatures follow torch.nn.functional where one exists (weights in torch's
layouts: Linear [out, in], Conv2d [out, in/groups, kh, kw]), so the torch
frontend maps aten ops onto these functions one to one. Arguments may be
traced Tensors, NumPy arrays (constants) or Python numbers. Only inference
semantics exist: dropout is the identity, batch norm uses running statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dsc.dialects import graph as g
from dsc.frontends.trace.tensor import Tensor, as_tensor, concat, maximum, minimum, stack, tracer_of, where
from dsc.frontends.trace.tracer import trace_error

__all__ = [
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "cat", "clip", "concat", "constant", "conv2d", "dropout",
    "embedding", "erf", "exp", "flatten", "gelu", "hardsigmoid", "hardswish", "hardtanh", "layer_norm",
    "leaky_relu", "linear", "log", "log_softmax", "matmul", "max_pool2d", "maximum", "minimum", "pad",
    "relu", "relu6", "scaled_dot_product_attention", "sigmoid", "silu", "softmax", "softplus", "sqrt",
    "stack", "tanh", "where",
]

cat = concat


def constant(array, name: str | None = None) -> Tensor:
    """A constant tensor in the trace (weights: give a name, it labels the resource in dumps)."""
    return tracer_of().constant(np.asarray(array), name)


def _t(x) -> Tensor:
    return as_tensor(x)


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    v = tuple(int(a) for a in v)
    if len(v) == 1:
        return v[0], v[0]
    if len(v) != 2:
        raise trace_error(f"{what} needs one or two values, got {list(v)}")
    return v


def _float(x: Tensor) -> Tensor:
    return x if x.dtype.kind == "f" else x.astype(np.float32)


# ------------------------------------------------------------ activations


def relu(x) -> Tensor:
    x = _t(x)
    return x._tr.emit(g.ReluOp, [x])


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    x = _float(_t(x))
    return x._tr.emit(g.LeakyReluOp, [x], alpha=float(negative_slope))


def gelu(x, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise trace_error(f"gelu approximate={approximate!r}: use 'none' (erf) or 'tanh'")
    x = _float(_t(x))
    return x._tr.emit(g.GeluOp, [x], approximate=approximate)


def sigmoid(x) -> Tensor:
    return _t(x).sigmoid()


def tanh(x) -> Tensor:
    return _t(x).tanh()


def silu(x) -> Tensor:
    x = _float(_t(x))
    return x * x.sigmoid()


def hardtanh(x, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    return _t(x).clip(min_val, max_val)


def relu6(x) -> Tensor:
    return hardtanh(x, 0.0, 6.0)


def hardswish(x) -> Tensor:
    x = _float(_t(x))
    return x._tr.emit(g.HardSwishOp, [x])


def hardsigmoid(x) -> Tensor:
    x = _float(_t(x))
    return x._tr.emit(g.HardSigmoidOp, [x], alpha=1 / 6, beta=0.5)


def softplus(x) -> Tensor:
    x = _float(_t(x))
    return x._tr.emit(g.SoftplusOp, [x])


def exp(x) -> Tensor:
    return _t(x).exp()


def log(x) -> Tensor:
    return _t(x).log()


def sqrt(x) -> Tensor:
    return _t(x).sqrt()


def erf(x) -> Tensor:
    x = _float(_t(x))
    return x._tr.emit(g.ErfOp, [x])


def clip(x, min=None, max=None) -> Tensor:  # noqa: A002 (NumPy's names)
    return _t(x).clip(min, max)


def softmax(x, axis: int = -1, *, dim: int | None = None) -> Tensor:
    x = _float(_t(x))
    axis = dim if dim is not None else axis
    return x._tr.emit(g.SoftmaxOp, [x], axis=int(axis) % x.ndim)


def log_softmax(x, axis: int = -1, *, dim: int | None = None) -> Tensor:
    x = _float(_t(x))
    axis = dim if dim is not None else axis
    return x._tr.emit(g.LogSoftmaxOp, [x], axis=int(axis) % x.ndim)


def dropout(x, p: float = 0.5, training: bool = False) -> Tensor:
    if training:
        raise trace_error("dropout in training mode is random; dsc compiles inference", hint="pass training=False (or call module.eval())")
    return _t(x)


# ------------------------------------------------------------ linear algebra


def matmul(a, b) -> Tensor:
    return _t(a) @ b


def linear(x, weight, bias=None) -> Tensor:
    """x @ weight.T + bias, weight [out, in] (torch's layout); a gemm on the flattened batch."""
    x = _t(x)
    w = as_tensor(weight, x.dtype, x._tr)
    out_f, in_f = w.shape
    if x.shape[-1] != in_f:
        raise trace_error(f"linear: input has {x.shape[-1]} features, the weight {list(w.shape)} takes {in_f}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_f) if x.ndim != 2 else x
    operands = [x2, w] + ([as_tensor(bias, x.dtype, x._tr)] if bias is not None else [])
    y = x._tr.emit(g.GemmOp, operands, alpha=1.0, beta=1.0, trans_a=0, trans_b=1)
    return y.reshape(lead + (out_f,)) if x.ndim != 2 else y


# ------------------------------------------------------------ convolution and pooling


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """2-D convolution, NCHW, weight [out, in/groups, kh, kw]; padding an int, a pair, 'valid' or 'same'."""
    x = _t(x)
    w = as_tensor(weight, x.dtype, x._tr)
    if x.ndim != 4:
        raise trace_error(f"conv2d needs an NCHW input, got shape {list(x.shape)}")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    kh, kw = w.shape[2:]
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    else:
        ph, pw = _pair(padding, "padding")
        pads = (ph, pw, ph, pw)
    operands = [x, w] + ([as_tensor(bias, x.dtype, x._tr)] if bias is not None else [])
    return x._tr.emit(g.ConvOp, operands, strides=(sh, sw), pads=pads, dilations=(dh, dw), group=int(groups))


def _pool_attrs(x: Tensor, kernel_size, stride, padding, dilation, ceil_mode) -> dict:
    if x.ndim != 4:
        raise trace_error(f"2-D pooling needs an NCHW input, got shape {list(x.shape)}")
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride if stride not in (None, (), []) else k, "stride")
    ph, pw = _pair(padding, "padding")
    return {"kernel_shape": k, "strides": s, "pads": (ph, pw, ph, pw), "dilations": _pair(dilation, "dilation"), "ceil_mode": int(bool(ceil_mode))}


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> Tensor:
    x = _t(x)
    return x._tr.emit(g.MaxPoolOp, [x], **_pool_attrs(x, kernel_size, stride, padding, dilation, ceil_mode))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True, divisor_override=None) -> Tensor:
    if divisor_override is not None:
        raise trace_error("avg_pool2d divisor_override is not supported")
    x = _float(_t(x))
    return x._tr.emit(g.AvgPoolOp, [x], count_include_pad=int(bool(count_include_pad)), **_pool_attrs(x, kernel_size, stride, padding, 1, ceil_mode))


def adaptive_avg_pool2d(x, output_size) -> Tensor:
    """Global average pooling for output size 1; a plain average pool when the sizes divide."""
    x = _float(_t(x))
    oh, ow = _pair(output_size, "output_size")
    h, w = x.shape[2:]
    if (oh, ow) == (1, 1):
        return x._tr.emit(g.GlobalAvgPoolOp, [x])
    if h % oh or w % ow:
        raise trace_error(f"adaptive_avg_pool2d from {h}x{w} to {oh}x{ow}: only output sizes that divide the input are supported")
    return avg_pool2d(x, (h // oh, w // ow))


# ------------------------------------------------------------ normalization


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Inference batch norm over axis 1 with running statistics (torch's argument order)."""
    if training:
        raise trace_error("batch_norm in training mode uses batch statistics; dsc compiles inference", hint="call module.eval() first")
    x = _float(_t(x))
    c = x.shape[1]
    tr = x._tr
    weight = np.ones(c, x.dtype) if weight is None else weight
    bias = np.zeros(c, x.dtype) if bias is None else bias
    ops = [as_tensor(v, x.dtype, tr) for v in (weight, bias, running_mean, running_var)]
    return tr.emit(g.BatchNormOp, [x, *ops], epsilon=float(eps))


def layer_norm(x, normalized_shape=None, weight=None, bias=None, eps: float = 1e-5, *, axis: int | None = None) -> Tensor:
    """Normalize over the trailing `normalized_shape` axes (or from `axis` on), then scale and shift."""
    x = _float(_t(x))
    if axis is None:
        n = 1 if normalized_shape is None else (1 if isinstance(normalized_shape, int) else len(tuple(normalized_shape)))
        axis = x.ndim - n
    axis %= x.ndim
    tail = x.shape[axis:]
    tr = x._tr
    scale = as_tensor(np.ones(tail, x.dtype) if weight is None else weight, x.dtype, tr)
    operands = [x, scale] + ([as_tensor(bias, x.dtype, tr)] if bias is not None else [])
    return tr.emit(g.LayerNormOp, operands, axis=axis, epsilon=float(eps))


# ------------------------------------------------------------ data movement


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return _t(x).flatten(start_dim, end_dim)


def embedding(ids, weight) -> Tensor:
    """Rows of `weight` [num, dim] picked by integer `ids` (torch.nn.functional.embedding)."""
    tr = tracer_of(ids, weight)
    ids = as_tensor(ids, tr=tr)
    if ids.dtype.kind not in "iu":
        raise trace_error(f"embedding ids must be integers, got {ids.dtype}")
    w = as_tensor(weight, tr=tr)
    return tr.emit(g.GatherOp, [w, ids], axis=0)


def pad(x, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """torch.nn.functional.pad: `pad` lists (begin, end) pairs from the last axis backwards."""
    x = _t(x)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise trace_error(f"pad {list(pad)} needs (begin, end) pairs for at most {x.ndim} axes")
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "edge": "edge"}
    if mode not in modes:
        raise trace_error(f"pad mode {mode!r} is not supported", hint=f"use one of {', '.join(modes)}")
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i in range(len(pad) // 2):
        begin[x.ndim - 1 - i], end[x.ndim - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    if not any(begin) and not any(end):
        return x
    return x._tr.emit(g.PadOp, [x], pads=tuple(begin + end), mode=modes[mode], value=float(value or 0.0))


# ------------------------------------------------------------ attention


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(q @ k^T * scale + mask) @ v over the last two axes."""
    q, k, v = _t(q), _t(k), _t(v)
    if dropout_p:
        raise trace_error("attention dropout is random; dsc compiles inference (dropout_p=0)")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = (q @ k.mT) * scale
    lq, lk = q.shape[-2], k.shape[-2]
    if is_causal:
        s = where(np.tril(np.ones((lq, lk), bool)), s, -np.inf)
    if attn_mask is not None:
        m = as_tensor(attn_mask, tr=s._tr)
        s = where(m, s, -np.inf) if m.dtype == np.bool_ else s + m
    return softmax(s, -1) @ v

