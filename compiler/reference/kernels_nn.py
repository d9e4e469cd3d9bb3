"""NumPy kernels of the reference evaluator: convolution, pooling, normalization, matmul, softmax.

They run whole networks (ResNet-50 at 224x224, a BERT-base encoder), so they
avoid Python loops over pixels: convolution is im2col over a strided window
view plus one batched matmul over the groups (depthwise: one multiply-add per
kernel tap); pooling folds the same window view tap by tap. float16 is
computed in float32 and float32 stays float32 (no float64 accumulation), so
results track onnxruntime's at float32 tolerances.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dsc.dialects import graph as g
from dsc.reference.evaluator import kernel


def _compute_dtype(x: np.ndarray) -> np.dtype:
    """The dtype to compute in: float16 widens to float32, the rest stay."""
    return np.dtype(np.float32) if x.dtype == np.float16 else x.dtype


def _pad_spatial(x: np.ndarray, begin, end, value) -> np.ndarray:
    if not any(begin) and not any(end):
        return x
    widths = [(0, 0), (0, 0)] + list(zip(begin, end))
    return np.pad(x, widths, constant_values=value)


def _windows(x, out, kernel, strides, dilations) -> np.ndarray:
    """A view [N, C, *out, *kernel] of the (already padded) x: window taps of every output point."""
    nsp = len(kernel)
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    v = sliding_window_view(x, eff, axis=tuple(range(2, 2 + nsp)))
    index = (slice(None), slice(None))
    index += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides))
    index += tuple(slice(None, None, d) for d in dilations)
    return v[index]


def _padded_for_windows(x, out, kernel, strides, dilations, pads, value) -> np.ndarray:
    """x padded by `pads`, plus whatever ceil_mode's last windows reach past the end padding."""
    nsp = len(kernel)
    begin, end = list(pads[:nsp]), list(pads[nsp:])
    for i in range(nsp):
        need = (out[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        end[i] += max(0, need - (x.shape[2 + i] + begin[i] + end[i]))
    return _pad_spatial(x, begin, end, value)


# --------------------------------------------------------------- conv


@kernel(g.ConvOp)
def _conv(op, x, w, bias=None, *, strides, pads, dilations, group):
    dt = _compute_dtype(x)
    x, w = x.astype(dt, copy=False), w.astype(dt, copy=False)
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    out = op.result.type.get_shape()[2:]
    xp = _padded_for_windows(x, out, kernel, strides, dilations, pads, 0)
    win = _windows(xp, out, kernel, strides, dilations)  # [N, C, *out, *k]
    if cg == 1 and group > 1:
        y = _depthwise(win, w.reshape((group, m // group) + tuple(kernel)), dt)
    else:
        y = _im2col_matmul(win, w, group)
    if bias is not None:
        y += bias.astype(dt, copy=False).reshape((m,) + (1,) * len(kernel))
    return y


def _depthwise(win, w, dt):
    """Depthwise conv (one input channel per group): a sum over taps, no im2col.

    Thousands of tiny per-group matmuls would be slower than K vectorized
    multiply-adds over the whole tensor.
    """
    n, group = win.shape[:2]
    mg, kernel = w.shape[1], w.shape[2:]
    out = win.shape[2 : win.ndim - len(kernel)]
    y = np.zeros((n, group, mg) + tuple(out), dt)
    bcast = (1, group, mg) + (1,) * len(out)
    for tap in np.ndindex(*kernel):
        y += win[(Ellipsis,) + tap][:, :, None] * w[(slice(None), slice(None)) + tap].reshape(bcast)
    return y.reshape((n, group * mg) + tuple(out))


def _im2col_matmul(win, w, group):
    """Grouped conv as matmuls: weights [G, M/G, Cg*K] times columns [N, G, Cg*K, P].

    The columns are the window view laid out tap-major, so a 1x1, stride-1 conv
    needs no copy at all, and the product lands directly in [N, M, P] order.
    """
    n = win.shape[0]
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    nsp = len(kernel)
    out = win.shape[2 : 2 + nsp]
    win = win.reshape((n, group, cg) + tuple(out) + tuple(kernel))
    perm = (0, 1, 2) + tuple(range(3 + nsp, 3 + 2 * nsp)) + tuple(range(3, 3 + nsp))
    cols = win.transpose(perm).reshape(n, group, cg * math.prod(kernel), math.prod(out))
    y = np.matmul(w.reshape(group, m // group, -1), cols)  # [N, G, M/G, P]
    return y.reshape((n, m) + tuple(out))


# ------------------------------------------------------------ pooling


def _pool_setup(op, x, kernel_shape, strides, pads, dilations, value):
    out = op.result.type.get_shape()[2:]
    xp = _padded_for_windows(x, out, kernel_shape, strides, dilations, pads, value)
    return out, _windows(xp, out, kernel_shape, strides, dilations)


def _reduce_taps(win: np.ndarray, nsp: int, ufunc) -> np.ndarray:
    """Fold the trailing `nsp` window axes with a binary ufunc, one tap at a time.

    A loop over the few taps of a window, each a whole-tensor operation, is an
    order of magnitude faster than NumPy reducing over the strided tap axes.
    """
    acc = None
    for tap in np.ndindex(*win.shape[win.ndim - nsp :]):
        v = win[(Ellipsis,) + tap]
        acc = v.copy() if acc is None else ufunc(acc, v, out=acc)
    return acc


@kernel(g.MaxPoolOp)
def _max_pool(op, x, *, kernel_shape, strides, pads, dilations, ceil_mode):
    # Padding must never win the max: pad with the dtype's lowest value.
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    out, win = _pool_setup(op, x, kernel_shape, strides, pads, dilations, low)
    return _reduce_taps(win, len(kernel_shape), np.maximum)


@kernel(g.AvgPoolOp)
def _avg_pool(op, x, *, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad):
    dt = _compute_dtype(x)
    nsp = len(kernel_shape)
    out, win = _pool_setup(op, x.astype(dt, copy=False), kernel_shape, strides, pads, dilations, 0)
    total = _reduce_taps(win, nsp, np.add)
    # The divisor counts the taps inside the input (count_include_pad=0) or inside
    # the explicitly padded input (=1); taps that ceil_mode adds past the end padding
    # never count. Pool a mask of ones the same way to get it per output point.
    spatial = x.shape[2:]
    if count_include_pad:
        mask = np.ones([s + pads[i] + pads[nsp + i] for i, s in enumerate(spatial)], dt)
        mask_pads = (0,) * 2 * nsp
    else:
        mask, mask_pads = np.ones(spatial, dt), pads
    mask = mask.reshape((1, 1) + mask.shape)
    mask = _padded_for_windows(mask, out, kernel_shape, strides, dilations, mask_pads, 0)
    count = _reduce_taps(_windows(mask, out, kernel_shape, strides, dilations), nsp, np.add)
    return total / np.maximum(count, 1)


@kernel(g.GlobalAvgPoolOp)
def _global_avg_pool(op, x):
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=_compute_dtype(x))


@kernel(g.GlobalMaxPoolOp)
def _global_max_pool(op, x):
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


# ------------------------------------------------------ normalization


def _per_channel(v: np.ndarray, ndim: int, dt) -> np.ndarray:
    return v.astype(dt, copy=False).reshape((-1,) + (1,) * (ndim - 2))


@kernel(g.BatchNormOp)
def _batch_norm(op, x, scale, bias, mean, var, *, epsilon):
    dt = _compute_dtype(x)
    s = _per_channel(scale, x.ndim, dt) / np.sqrt(_per_channel(var, x.ndim, dt) + dt.type(epsilon))
    return (x.astype(dt, copy=False) - _per_channel(mean, x.ndim, dt)) * s + _per_channel(bias, x.ndim, dt)


@kernel(g.LrnOp)
def _lrn(op, x, *, size, alpha, beta, bias):
    # square_sum[c] sums x^2 over channels [c - floor((size-1)/2), c + ceil((size-1)/2)].
    dt = _compute_dtype(x)
    x = x.astype(dt, copy=False)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.pad(x * x, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    square_sum = sliding_window_view(sq, size, axis=1).sum(axis=-1)
    return x / (dt.type(bias) + dt.type(alpha / size) * square_sum) ** dt.type(beta)


@kernel(g.LayerNormOp)
def _layer_norm(op, x, scale, bias=None, *, axis, epsilon):
    dt = _compute_dtype(x)
    x = x.astype(dt, copy=False)
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    y = d / np.sqrt(var + dt.type(epsilon)) * scale.astype(dt, copy=False)
    return y if bias is None else y + bias.astype(dt, copy=False)


# ------------------------------------------------------ gemm / matmul


@kernel(g.GemmOp)
def _gemm(op, a, b, c=None, *, alpha, beta, trans_a, trans_b):
    dt = _compute_dtype(a)
    a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    y = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
    if alpha != 1.0:
        y = y * dt.type(alpha)
    if c is not None:
        c = c.astype(dt, copy=False)
        y = y + (c if beta == 1.0 else c * dt.type(beta))
    return y


@kernel(g.MatMulOp)
def _matmul(op, a, b):
    dt = _compute_dtype(a)
    return np.matmul(a.astype(dt, copy=False), b.astype(dt, copy=False))


# ------------------------------------------------------------ softmax


@kernel(g.SoftmaxOp)
def _softmax(op, x, *, axis):
    dt = _compute_dtype(x)
    e = np.exp(x.astype(dt, copy=False) - x.max(axis=axis, keepdims=True).astype(dt, copy=False))
    return e / e.sum(axis=axis, keepdims=True)


@kernel(g.LogSoftmaxOp)
def _log_softmax(op, x, *, axis):
    dt = _compute_dtype(x)
    d = x.astype(dt, copy=False) - x.max(axis=axis, keepdims=True).astype(dt, copy=False)
    return d - np.log(np.exp(d).sum(axis=axis, keepdims=True))
