"""Converters of ONNX nn ops: convolution, pooling, normalization, Gemm/MatMul, softmax.

Every attribute reaches the graph dialect normalized: `auto_pad` becomes
explicit pads ([begin..., end...]), strides and dilations are always spelled
out, axes are non-negative, and flags are 0/1 ints. Older opsets are mapped
onto the same ops (Softmax before opset 13 flattens to 2-D around `axis`).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of, tensor_type
from dsc.frontends.onnx.importer import NodeBuilder, converter
from dsc.runtime.errors import UnsupportedOpError

# ------------------------------------------------------------ helpers


def _axis(b: NodeBuilder, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise b.error(f"axis {axis} is out of range for an input of rank {rank}")
    return axis % rank


def _window_attrs(b: NodeBuilder, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> dict:
    """strides, dilations and explicit pads of a Conv/Pool node (auto_pad resolved)."""
    nsp = len(spatial)
    strides = tuple(int(s) for s in b.attr("strides", [1] * nsp))
    dilations = tuple(int(d) for d in b.attr("dilations", [1] * nsp))
    if len(strides) != nsp or len(dilations) != nsp:
        raise b.error(f"strides {list(strides)} / dilations {list(dilations)} need {nsp} values, one per spatial axis")
    auto = b.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = tuple(int(p) for p in b.attr("pads", [0] * 2 * nsp))
        if len(pads) != 2 * nsp:
            raise b.error(f"pads {list(pads)} need {2 * nsp} values ([begin..., end...])")
    elif auto == "VALID":
        pads = (0,) * 2 * nsp
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        # The output keeps ceil(size / stride); SAME_UPPER puts the odd pad at the end.
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        pads = tuple(begin + end)
    else:
        raise b.error(f"unknown auto_pad '{auto}'", hint="use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    return {"strides": strides, "pads": pads, "dilations": dilations}


def _require_single_output(b: NodeBuilder, what: str) -> None:
    extra = [o for o in b.node.output[1:] if o]
    if extra:
        raise b.error(f"{what} (outputs {', '.join(extra)}) is not supported; dsc computes only output 0", cls=UnsupportedOpError)


def _as_dtype(b: NodeBuilder, v, dtype):
    """Cast v to dtype (opset 15 BatchNormalization lets parameters differ from X)."""
    if sig_of(v.type).dtype == np.dtype(dtype):
        return v
    return b.emit(g.CastOp, [v], result_types=[tensor_type(v.type.get_shape(), dtype)])


# --------------------------------------------------------------- conv


@converter("Conv")
def conv(b: NodeBuilder):
    x, w = b.sig(0), b.sig(1)
    if len(x.shape) < 3:
        raise b.error(f"Conv needs an input of rank >= 3 (N, C, spatial...), got shape {list(x.shape)}")
    kernel = w.shape[2:]  # the weight is the authority; kernel_shape is optional and redundant
    if b.has_attr("kernel_shape") and tuple(b.attr("kernel_shape")) != kernel:
        raise b.error(f"kernel_shape {b.attr('kernel_shape')} does not match the weight's spatial shape {list(kernel)}")
    attrs = _window_attrs(b, x.shape[2:], kernel)
    operands = [b.input(0), b.input(1)] + ([b.input(2)] if b.has_input(2) else [])
    return b.emit(g.ConvOp, operands, group=int(b.attr("group", 1)), **attrs)


# ------------------------------------------------------------ pooling


def _pool_attrs(b: NodeBuilder) -> dict:
    x = b.sig(0)
    if len(x.shape) < 3:
        raise b.error(f"{b.op_type} needs an input of rank >= 3 (N, C, spatial...), got shape {list(x.shape)}")
    if not b.has_attr("kernel_shape"):
        raise b.error("kernel_shape is required")
    kernel = tuple(int(k) for k in b.attr("kernel_shape"))
    if len(kernel) != len(x.shape) - 2:
        raise b.error(f"kernel_shape {list(kernel)} does not fit an input of rank {len(x.shape)}")
    attrs = _window_attrs(b, x.shape[2:], kernel)
    return {"kernel_shape": kernel, "ceil_mode": int(b.attr("ceil_mode", 0)), **attrs}


@converter("MaxPool")
def max_pool(b: NodeBuilder):
    if len(b.node.output) > 1 and b.node.output[1]:
        raise b.error(
            f"the Indices output ('{b.node.output[1]}') of MaxPool is not supported",
            hint="export the model without return_indices, or use the Indices only in training graphs",
            cls=UnsupportedOpError,
        )
    return b.emit(g.MaxPoolOp, [b.input(0)], **_pool_attrs(b))


@converter("AveragePool")
def avg_pool(b: NodeBuilder):
    return b.emit(g.AvgPoolOp, [b.input(0)], count_include_pad=int(b.attr("count_include_pad", 0)), **_pool_attrs(b))


@converter("GlobalAveragePool")
def global_avg_pool(b: NodeBuilder):
    return b.emit(g.GlobalAvgPoolOp, [b.input(0)])


@converter("GlobalMaxPool")
def global_max_pool(b: NodeBuilder):
    return b.emit(g.GlobalMaxPoolOp, [b.input(0)])


# ------------------------------------------------------ normalization


@converter("BatchNormalization")
def batch_norm(b: NodeBuilder):
    if b.attr("training_mode", 0):
        raise b.error("training_mode=1 is not supported; dsc compiles inference graphs", hint="export the model in eval mode", cls=UnsupportedOpError)
    _require_single_output(b, "the training-mode statistics output")
    x = b.input(0)
    dtype = b.sig(0).dtype
    scale, bias, mean, var = (_as_dtype(b, b.input(i), dtype) for i in range(1, 5))
    eps = float(b.attr("epsilon", 1e-5))
    if len(sig_of(mean.type).shape) == 1:
        return b.emit(g.BatchNormOp, [x, scale, bias, mean, var], epsilon=eps)
    # Opset < 9 with spatial=0: per-activation statistics [C, D1, ...]; they
    # broadcast against [N, C, D1, ...] as they are, so spell out the formula.
    std = b.emit(g.SqrtOp, [b.emit(g.AddOp, [var, b.constant(np.asarray(eps, dtype))])])
    y = b.emit(g.DivOp, [b.emit(g.SubOp, [x, mean]), std])
    return b.emit(g.AddOp, [b.emit(g.MulOp, [y, scale]), bias])


@converter("LRN")
def lrn(b: NodeBuilder):
    if not b.has_attr("size"):
        raise b.error("size is required")
    return b.emit(
        g.LrnOp,
        [b.input(0)],
        size=int(b.attr("size")),
        alpha=float(b.attr("alpha", 1e-4)),
        beta=float(b.attr("beta", 0.75)),
        bias=float(b.attr("bias", 1.0)),
    )


@converter("LayerNormalization")
def layer_norm(b: NodeBuilder):
    x = b.sig(0)
    axis = _axis(b, int(b.attr("axis", -1)), len(x.shape))
    eps = float(b.attr("epsilon", 1e-5))
    operands = [b.input(0), b.input(1)] + ([b.input(2)] if b.has_input(2) else [])
    y = b.emit(g.LayerNormOp, operands, axis=axis, epsilon=eps)
    outs = list(b.node.output)
    if not any(outs[1:]):
        return [y]
    return [y, *_layer_norm_stats(b, axis, eps)][: len(outs)]


def _layer_norm_stats(b: NodeBuilder, axis: int, eps: float):
    """Mean and InvStdDev outputs, spelled with reductions (in the stash type)."""
    stash = onnx.helper.tensor_dtype_to_np_dtype(int(b.attr("stash_type", onnx.TensorProto.FLOAT)))
    x = b.input(0)
    shape = b.sig(0).shape
    if b.sig(0).dtype != np.dtype(stash):
        x = b.emit(g.CastOp, [x], result_types=[tensor_type(shape, stash)])
    axes = tuple(range(axis, len(shape)))
    mean = b.emit(g.ReduceMeanOp, [x], axes=axes, keepdims=1)
    d = b.emit(g.SubOp, [x, mean])
    var = b.emit(g.ReduceMeanOp, [b.emit(g.MulOp, [d, d])], axes=axes, keepdims=1)
    std = b.emit(g.SqrtOp, [b.emit(g.AddOp, [var, b.constant(np.asarray(eps, stash))])])
    return mean, b.emit(g.ReciprocalOp, [std])


# ------------------------------------------------------ gemm / matmul


@converter("Gemm")
def gemm(b: NodeBuilder):
    # Before opset 7 a C of another shape needed broadcast=1; graph.gemm broadcasts C
    # unidirectionally (the opset >= 7 rule), which covers both.
    operands = [b.input(0), b.input(1)] + ([b.input(2)] if b.has_input(2) else [])
    return b.emit(
        g.GemmOp,
        operands,
        alpha=float(b.attr("alpha", 1.0)),
        beta=float(b.attr("beta", 1.0)),
        trans_a=int(b.attr("transA", 0)),
        trans_b=int(b.attr("transB", 0)),
    )


@converter("MatMul")
def matmul(b: NodeBuilder):
    return b.emit(g.MatMulOp, [b.input(0), b.input(1)])


# ------------------------------------------------------------ softmax

_SOFTMAX = {"Softmax": g.SoftmaxOp, "LogSoftmax": g.LogSoftmaxOp}


@converter(*_SOFTMAX)
def softmax(b: NodeBuilder):
    op = _SOFTMAX[b.op_type]
    x = b.sig(0)
    rank = len(x.shape)
    if rank == 0:
        raise b.error(f"{b.op_type} needs an input of rank >= 1")
    if b.opset >= 13:
        return b.emit(op, [b.input(0)], axis=_axis(b, int(b.attr("axis", -1)), rank))
    # Before opset 13 the input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])]
    # and normalized along its second axis. For axis = rank - 1 that is the last axis as is.
    axis = _axis(b, int(b.attr("axis", 1)), rank)
    if axis == rank - 1:
        return b.emit(op, [b.input(0)], axis=axis)
    flat = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
    v = b.emit(g.ReshapeOp, [b.input(0)], result_types=[tensor_type(flat, x.dtype)])
    v = b.emit(op, [v], axis=1)
    return b.emit(g.ReshapeOp, [v], result_types=[tensor_type(x.shape, x.dtype)])
