"""Converters of ATen ops onto dsc's traced tensor API (and so onto the graph dialect).

One small function per op family, registered with `@aten("name", ...)` under
the op's schema name (`aten::conv2d` -> "conv2d"; every overload of a name
shares the converter). A converter receives the call's arguments bound to
the op's schema by name, with defaults filled in (`a["self"]`, `a["dim"]`),
node arguments already replaced by traced Tensors, and returns a Tensor (or a
tuple for multi-result ops; unused results are None). Both the export IR
(conv2d, batch_norm, linear, layer_norm, softmax) and its core-ATen
decomposition (convolution, _native_batch_norm_legit_no_training, addmm,
native_layer_norm, _softmax) are covered.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from dsc.dialects import graph as g
from dsc.frontends.trace import functional as F
from dsc.frontends.trace.tensor import Tensor, _probe, as_tensor, tracer_of
from dsc.runtime.errors import UnsupportedOpError

Converter = Callable[[dict], object]
CONVERTERS: dict[str, Converter] = {}


def aten(*names: str):
    def register(fn: Converter) -> Converter:
        for n in names:
            CONVERTERS[n] = fn
        return fn

    return register


def np_dtype(dtype) -> np.dtype | None:
    """torch.dtype -> NumPy dtype (None stays None)."""
    if dtype is None:
        return None
    import torch

    return torch.empty(0, dtype=dtype).numpy().dtype


def _dims(dim, ndim: int) -> tuple[int, ...] | None:
    if dim is None or (isinstance(dim, list | tuple) and len(dim) == 0):
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % ndim for d in dims)


# ------------------------------------------------------------ conv, norms, linear


@aten("conv2d", "conv1d")
def conv(a):
    x, w = a["input"], a["weight"]
    if x.ndim == 3:  # conv1d as a conv2d of height 1
        st, pd, dl = (v[0] if isinstance(v, list | tuple) else v for v in (a["stride"], a["padding"], a["dilation"]))
        y = F.conv2d(x.expand_dims(2), w.expand_dims(2), a["bias"], (1, st), (0, pd) if not isinstance(pd, str) else pd, (1, dl), a["groups"])
        return y.squeeze(2)
    return F.conv2d(x, w, a["bias"], a["stride"], a["padding"], a["dilation"], a["groups"])


@aten("convolution", "_convolution")
def convolution(a):
    if a["transposed"]:
        raise UnsupportedOpError("transposed convolution (ConvTranspose2d) is not supported by dsc yet")
    return conv({"input": a["input"], "weight": a["weight"], "bias": a["bias"], "stride": a["stride"], "padding": a["padding"], "dilation": a["dilation"], "groups": a["groups"]})


@aten("batch_norm")
def batch_norm(a):
    return F.batch_norm(a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"], bool(a["training"]), eps=a["eps"])


@aten("_native_batch_norm_legit_no_training")
def native_batch_norm_eval(a):
    return F.batch_norm(a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"], False, eps=a["eps"]), None, None


@aten("native_batch_norm", "_native_batch_norm_legit")
def native_batch_norm(a):
    return F.batch_norm(a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"], bool(a["training"]), eps=a["eps"]), None, None


@aten("layer_norm")
def layer_norm(a):
    return F.layer_norm(a["input"], a["normalized_shape"], a["weight"], a["bias"], a["eps"])


@aten("native_layer_norm")
def native_layer_norm(a):
    return F.layer_norm(a["input"], a["normalized_shape"], a["weight"], a["bias"], a["eps"]), None, None


@aten("linear")
def linear(a):
    return F.linear(a["input"], a["weight"], a["bias"])


@aten("addmm")
def addmm(a):
    m1, m2 = a["mat1"], as_tensor(a["mat2"])
    c = as_tensor(a["self"], m1.dtype, m1._tr)
    return m1._tr.emit(g.GemmOp, [m1, m2.astype(m1.dtype), c], alpha=float(a["alpha"]), beta=float(a["beta"]), trans_a=0, trans_b=0)


@aten("mm", "matmul", "bmm")
def matmul(a):
    return a["self"] @ a["mat2" if "mat2" in a else "other"]


@aten("t", "numpy_T")
def t(a):
    return a["self"].T


@aten("embedding")
def embedding(a):
    return F.embedding(a["indices"], a["weight"])


@aten("scaled_dot_product_attention")
def sdpa(a):
    return F.scaled_dot_product_attention(a["query"], a["key"], a["value"], a["attn_mask"], a["dropout_p"], a["is_causal"], a["scale"])


# ------------------------------------------------------------ activations and elementwise


_UNARY = {
    "relu": F.relu, "relu6": F.relu6, "silu": F.silu, "sigmoid": F.sigmoid, "tanh": F.tanh, "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid, "exp": F.exp, "log": F.log, "sqrt": F.sqrt, "erf": F.erf,
    "neg": lambda x: -x, "abs": abs, "reciprocal": lambda x: 1 / x, "rsqrt": lambda x: 1 / F.sqrt(x),
    "floor": lambda x: x.floor(), "ceil": lambda x: x.ceil(), "logical_not": lambda x: ~x.astype(np.bool_),
    "square": lambda x: x * x,
}
for _name, _fn in _UNARY.items():
    aten(_name)(lambda a, _fn=_fn: _fn(a["self"]))


@aten("gelu")
def gelu(a):
    return F.gelu(a["self"], a["approximate"])


@aten("hardtanh")
def hardtanh(a):
    return F.hardtanh(a["self"], a["min_val"], a["max_val"])


@aten("leaky_relu")
def leaky_relu(a):
    return F.leaky_relu(a["self"], a["negative_slope"])


@aten("softplus")
def softplus(a):
    if a["beta"] != 1:
        raise UnsupportedOpError("softplus with beta != 1 is not supported")
    return F.softplus(a["self"])


@aten("clamp", "clip", "clamp_min", "clamp_max")
def clamp(a):
    return a["self"].clip(a.get("min"), a.get("max"))


@aten("add", "sub", "rsub")
def add_sub(a):
    x, y, alpha = a["self"], a["other"], a.get("alpha", 1)
    if alpha != 1:
        y = y * alpha
    return _BIN[a["__name__"]](x, y)


_BIN = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "rsub": lambda x, y: y - x}


@aten("mul")
def mul(a):
    return a["self"] * a["other"]


@aten("div")
def div(a):
    x, y, mode = a["self"], a["other"], a.get("rounding_mode")
    if mode is None:
        return x / y
    if mode == "floor":
        return x // y
    q = x / y  # true division (float), then toward zero
    return F.where(q < 0, q.ceil(), q.floor()).astype(np.result_type(_probe(x), _probe(y)))


@aten("pow")
def pow_(a):
    base = a.get("self")
    return base ** a["exponent"]


@aten("maximum", "minimum")
def max_min(a):
    return (F.maximum if a["__name__"] == "maximum" else F.minimum)(a["self"], a["other"])


_CMP = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__", "gt": "__gt__", "ge": "__ge__"}
for _name, _m in _CMP.items():
    aten(_name)(lambda a, _m=_m: getattr(as_tensor(a["self"]), _m)(a["other"]))


@aten("where")
def where(a):
    return F.where(a["condition"], a["self"], a["other"])


@aten("masked_fill")
def masked_fill(a):
    x = a["self"]
    return F.where(a["mask"], as_tensor(a["value"], x.dtype, x._tr), x)


@aten("logical_and", "logical_or", "logical_xor")
def logical(a):
    x = as_tensor(a["self"]).astype(np.bool_)
    y = as_tensor(a["other"], tr=x._tr).astype(np.bool_)
    name = a["__name__"]
    return (x & y) if name == "logical_and" else (x | y) if name == "logical_or" else (x ^ y)


@aten("softmax", "_softmax")
def softmax(a):
    return F.softmax(a["self"], a["dim"])


@aten("log_softmax", "_log_softmax")
def log_softmax(a):
    return F.log_softmax(a["self"], a["dim"])


@aten("dropout", "feature_dropout", "alpha_dropout")
def dropout(a):
    return F.dropout(a["input"], a["p"], bool(a["train"]))


@aten("native_dropout")
def native_dropout(a):
    return F.dropout(a["input"], a["p"], bool(a["train"])), None


# ------------------------------------------------------------ pooling and reductions


@aten("max_pool2d")
def max_pool2d(a):
    return F.max_pool2d(a["self"], a["kernel_size"], a["stride"] or None, a["padding"], a["dilation"], a["ceil_mode"])


@aten("max_pool2d_with_indices")
def max_pool2d_with_indices(a):
    return max_pool2d(a), None


@aten("avg_pool2d")
def avg_pool2d(a):
    return F.avg_pool2d(a["self"], a["kernel_size"], a["stride"] or None, a["padding"], a["ceil_mode"], a["count_include_pad"], a["divisor_override"])


@aten("adaptive_avg_pool2d", "_adaptive_avg_pool2d")
def adaptive_avg_pool2d(a):
    return F.adaptive_avg_pool2d(a["self"], a["output_size"])


def _reduce(method: str):
    def convert(a):
        x = a["self"]
        dt = np_dtype(a.get("dtype"))
        if dt is not None:
            x = x.astype(dt)
        return getattr(x, method)(_dims(a.get("dim"), x.ndim), keepdims=bool(a.get("keepdim", False)))

    return convert


aten("mean")(_reduce("mean"))
aten("sum")(_reduce("sum"))
aten("amax")(_reduce("max"))
aten("amin")(_reduce("min"))
aten("prod")(_reduce("prod"))


@aten("max", "min")
def max_min_reduce(a):
    if "other" in a:
        return max_min({"__name__": "maximum" if a["__name__"] == "max" else "minimum", "self": a["self"], "other": a["other"]})
    x = a["self"]
    if "dim" not in a:
        return getattr(x, a["__name__"])()
    return getattr(x, a["__name__"])(a["dim"], keepdims=bool(a["keepdim"])), None


@aten("var", "std")
def var_std(a):
    x = a["self"]
    dims = _dims(a.get("dim"), x.ndim)
    corr = a.get("correction")
    corr = (1 if a.get("unbiased", True) else 0) if corr is None else corr
    n = math.prod(x.shape[d] for d in (dims if dims is not None else range(x.ndim)))
    v = x.var(dims, keepdims=bool(a.get("keepdim", False))) * (n / max(n - corr, 1))
    return v.sqrt() if a["__name__"] == "std" else v


# ------------------------------------------------------------ shapes and data movement


@aten("view", "_unsafe_view", "reshape")
def reshape(a):
    return a["self"].reshape(tuple(a["size"] if "size" in a else a["shape"]))


@aten("flatten")
def flatten(a):
    return a["self"].flatten(a["start_dim"], a["end_dim"])


@aten("permute")
def permute(a):
    return a["self"].permute(*a["dims"])


@aten("transpose", "swapaxes")
def transpose(a):
    return a["self"].swapaxes(a["dim0"] if "dim0" in a else a["axis0"], a["dim1"] if "dim1" in a else a["axis1"])


@aten("expand")
def expand(a):
    x = a["self"]
    size = list(a["size"])
    lead = len(size) - x.ndim
    return x.broadcast_to(tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(size)))


@aten("expand_as")
def expand_as(a):
    return a["self"].broadcast_to(a["other"].shape)


@aten("unsqueeze")
def unsqueeze(a):
    return a["self"].expand_dims(a["dim"])


@aten("squeeze")
def squeeze(a):
    x = a["self"]
    dims = a.get("dim")
    if dims is None:
        return x.squeeze()
    dims = [d % max(x.ndim, 1) for d in ((dims,) if isinstance(dims, int) else dims)]
    return x.squeeze(tuple(d for d in dims if x.shape[d] == 1))  # torch ignores non-1 dims


@aten("contiguous", "clone", "alias", "detach", "lift_fresh_copy", "lift_fresh", "view_as", "_to_copy", "to", "type_as")
def identity_or_cast(a):
    x = a["self"]
    if a["__name__"] == "view_as":
        return x.reshape(a["other"].shape)
    if a["__name__"] == "type_as":
        return x.astype(a["other"].dtype)
    dt = np_dtype(a.get("dtype"))
    return x.astype(dt) if dt is not None else x


@aten("cat", "concat", "concatenate")
def cat(a):
    return F.concat([t for t in a["tensors"] if not (isinstance(t, Tensor) and t.size == 0 and t.ndim == 1)], a["dim"])


@aten("stack")
def stack(a):
    return F.stack(a["tensors"], a["dim"])


@aten("slice")
def slice_(a):
    x = a["self"]
    dim = a["dim"] % x.ndim
    key = [slice(None)] * x.ndim
    key[dim] = slice(a["start"], a["end"], a["step"])
    return x[tuple(key)]


@aten("select")
def select(a):
    x = a["self"]
    key = [slice(None)] * x.ndim
    key[a["dim"] % x.ndim] = a["index"]
    return x[tuple(key)]


@aten("index")
def index(a):
    idx = list(a["indices"])
    return a["self"][tuple(slice(None) if i is None else i for i in idx)]


@aten("split", "split_with_sizes")
def split(a):
    x = a["self"]
    dim = a["dim"] % x.ndim
    n = x.shape[dim]
    sizes = a["split_sizes"] if "split_sizes" in a else a["split_size"]
    if isinstance(sizes, int):
        sizes = [min(sizes, n - s) for s in range(0, n, sizes)]
    out, start = [], 0
    for s in sizes:
        key = [slice(None)] * x.ndim
        key[dim] = slice(start, start + s)
        out.append(x[tuple(key)])
        start += s
    return out


@aten("chunk")
def chunk(a):
    x = a["self"]
    n = x.shape[a["dim"] % x.ndim]
    return split({"self": x, "dim": a["dim"], "split_size": -(-n // a["chunks"])})


@aten("unbind")
def unbind(a):
    x = a["self"]
    return [select({"self": x, "dim": a["dim"], "index": i}) for i in range(x.shape[a["dim"] % x.ndim])]


@aten("constant_pad_nd", "pad")
def pad(a):
    return F.pad(a["self"], a["pad"], a.get("mode", "constant"), a.get("value") or 0.0)


# ------------------------------------------------------------ constants


def _const(array):
    return tracer_of().constant(np.asarray(array))


@aten("full", "zeros", "ones", "scalar_tensor", "new_zeros", "new_ones", "new_full")
def full(a):
    name = a["__name__"]
    dt = np_dtype(a.get("dtype"))
    if name == "scalar_tensor":
        return _const(np.asarray(a["s"], dt or np.float32))
    fill = {"zeros": 0, "ones": 1, "new_zeros": 0, "new_ones": 1}.get(name, a.get("fill_value"))
    if dt is None:
        dt = a["self"].dtype if "self" in a else np.result_type(np.float32 if isinstance(fill, float) else np.int64)
    return _const(np.full(tuple(a["size"]), fill, dt))


@aten("zeros_like", "ones_like", "full_like")
def full_like(a):
    x = a["self"]
    fill = {"zeros_like": 0, "ones_like": 1}.get(a["__name__"], a.get("fill_value"))
    return _const(np.full(x.shape, fill, np_dtype(a.get("dtype")) or x.dtype))


@aten("arange")
def arange(a):
    start, end = (a["start"], a["end"]) if "start" in a else (0, a["end"])
    dt = np_dtype(a.get("dtype"))
    arr = np.arange(start, end, a.get("step", 1))
    return _const(arr.astype(dt) if dt is not None else arr)


@aten("_assert_tensor_metadata", "_assert_async", "sym_constrain_range_for_size", "_assert_scalar")
def no_op(a):
    return None
