"""CPU backend: data movement (emit_data), reductions and normalizations
(emit_reduce) and pooling (emit_pool), each op compiled natively on its own
and compared with the reference evaluator (`check_native`, two threads unless
a test says otherwise).

Shapes are chosen to exercise vector tails (odd extents around multiples of
16), the transpose tiles and their partial edges, negative slice steps and
gather indices, reflect pads wider than the axis, ceil_mode and padded pool
borders, and integer/bool tensors where the op allows them.
"""

import os
import sys
import types

import numpy as np
import pytest
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import tensor_type
from dsc.frontends.onnx import import_onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

sys.path.insert(0, os.path.dirname(__file__))
import cpu_utils
from cpu_utils import check_native

RNG = np.random.default_rng(0)
F32 = np.float32


def build(shapes, body, dtypes=None):
    """@main(args of `shapes`) returning body(args, add); add(op) appends op and returns its result."""
    dtypes = dtypes or [F32] * len(shapes)
    blk = Block(arg_types=[tensor_type(s, d) for s, d in zip(shapes, dtypes)])

    def add(op):
        blk.add_op(op)
        return op.results[0]

    outs = body(list(blk.args), add)
    outs = outs if isinstance(outs, list) else [outs]
    blk.add_op(func.ReturnOp(*outs))
    f = func.FuncOp("main", ([a.type for a in blk.args], [o.type for o in outs]), Region(blk))
    m = ModuleOp([f])
    m.verify()
    return m


def unary(shape, make, dtype=F32):
    return build([shape], lambda a, add: add(make(a[0])), [dtype])


def cst(arr, key):
    return g.ConstantOp.from_array(np.asarray(arr), key)


def rnd(shape, dtype=F32):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return RNG.integers(0, 2, shape).astype(bool)
    if dtype.kind == "u":
        return RNG.integers(0, 250, shape).astype(dtype)
    return RNG.integers(-1000, 1000, shape).astype(dtype)


EXACT = {"rtol": 0, "atol": 0}

# ------------------------------------------------------------ transpose


@pytest.mark.parametrize(
    "shape,perm,dtype",
    [
        ((3, 37), (1, 0), F32),
        ((33, 40), (1, 0), F32),  # 8x8 tiles with partial edges both ways
        ((2, 3, 4, 50), (0, 2, 1, 3), F32),  # contiguous inner rows
        ((2, 5, 48, 33), (0, 3, 1, 2), F32),  # NCHW-like -> tiles + tails
        ((1, 20, 9, 9), (0, 2, 3, 1), F32),  # NCHW -> NHWC
        ((1, 9, 9, 20), (0, 3, 1, 2), F32),  # NHWC -> NCHW
        ((5, 17, 3), (2, 1, 0), F32),
        ((2, 3, 4, 50), (3, 1, 0, 2), np.int64),
        ((3, 17, 16), (0, 2, 1), np.int64),
        ((5, 70), (1, 0), np.bool_),
        ((2, 40, 3, 35), (3, 1, 0, 2), np.int8),
        ((4, 6, 130), (1, 0, 2), np.int32),
        ((7,), (0,), F32),
    ],
)
def test_transpose(shape, perm, dtype):
    check_native(unary(shape, lambda x: g.TransposeOp.make([x], perm=perm), dtype), [rnd(shape, dtype)], **EXACT)


# ---------------------------------------------------------------- slice


@pytest.mark.parametrize(
    "shape,starts,ends,steps,dtype",
    [
        ((10, 40), (1, 3), (9, 39), (2, 1), F32),
        ((10, 40), (9, 39), (-1, -1), (-1, -1), F32),  # full reversal: vector loads + lane reversal
        ((7, 100), (6, 99), (0, 2), (-3, -1), np.int64),
        ((3, 5, 70), (0, 1, 69), (3, 4, -1), (1, 2, -2), np.int8),
        ((4, 33), (0, 0), (4, 33), (1, 3), F32),
        ((4, 33), (2, 5), (2, 30), (1, 1), F32),  # empty result
        ((6, 50), (1, 2), (5, 50), (1, 1), np.bool_),
        ((2, 3, 17), (1, 0, 16), (2, 3, -1), (1, 1, -1), np.int32),
    ],
)
def test_slice(shape, starts, ends, steps, dtype):
    m = unary(shape, lambda x: g.SliceOp.make([x], starts=starts, ends=ends, steps=steps), dtype)
    check_native(m, [rnd(shape, dtype)], **EXACT)


# --------------------------------------------------------------- concat


@pytest.mark.parametrize(
    "shapes,axis,dtype",
    [
        ([(2, 3, 5), (2, 4, 5), (2, 1, 5)], 1, F32),
        ([(3, 17), (3, 40)], 1, np.int64),
        ([(3, 17), (5, 17)], 0, F32),
        ([(1, 64, 9, 9), (1, 32, 9, 9)], 1, F32),
        ([(4, 1), (4, 2), (4, 1)], 1, np.bool_),
        ([(2, 0, 3), (2, 5, 3)], 1, F32),  # an empty operand
        ([(1, 5000), (1, 3000)], 1, F32),  # few long rows: split along the row
    ],
)
def test_concat(shapes, axis, dtype):
    m = build(shapes, lambda a, add: add(g.ConcatOp.make(a, axis=axis)), [dtype] * len(shapes))
    check_native(m, [rnd(s, dtype) for s in shapes], **EXACT)


# --------------------------------------------------------------- gather


@pytest.mark.parametrize(
    "xshape,ishape,axis,idtype,dtype",
    [
        ((10, 33), (4,), 0, np.int64, F32),
        ((10, 33), (2, 3), 1, np.int32, F32),
        ((3, 10, 20), (5,), 1, np.int64, F32),
        ((50,), (7,), 0, np.int64, F32),
        ((6, 7), (), 1, np.int64, F32),  # scalar index drops the axis
        ((100, 19), (3, 4), 0, np.int64, np.int64),
        ((5, 8, 3), (9,), 2, np.int32, np.int64),
        ((4, 70), (2,), 0, np.int64, np.bool_),
    ],
)
def test_gather(xshape, ishape, axis, idtype, dtype):
    n = xshape[axis]
    idx = RNG.integers(-n, n, ishape).astype(idtype)  # negative indices count from the end
    m = build([xshape, ishape], lambda a, add: add(g.GatherOp.make(a, axis=axis)), [dtype, idtype])
    check_native(m, [rnd(xshape, dtype), idx], **EXACT)


def test_gather_constant_indices():
    idx = np.array([[0, -1], [3, -4]], np.int64)
    m = build([(5, 21)], lambda a, add: add(g.GatherOp.make([a[0], add(cst(idx, "idx"))], axis=0)))
    check_native(m, [rnd((5, 21))], **EXACT)


# ------------------------------------------------------------------ pad


@pytest.mark.parametrize(
    "shape,pads,mode,dtype",
    [
        ((3, 20), (1, 2, 3, 4), "constant", F32),
        ((3, 20), (1, 2, 3, 4), "reflect", F32),
        ((3, 20), (2, 3, 1, 17), "edge", F32),
        ((2, 3, 30), (0, -1, 2, 1, 2, -3), "reflect", F32),  # negative pads crop first
        ((2, 3, 30), (0, -1, 2, 1, 2, -3), "constant", F32),
        ((2, 3, 30), (1, 1, -2, 0, 1, -5), "edge", F32),
        ((4, 5), (5, 7, 6, 9), "reflect", F32),  # wider than the axis: reflected again
        ((1, 3, 10, 10), (0, 0, 3, 3, 0, 0, 3, 3), "reflect", F32),
        ((2, 40), (1, 0, 0, 3), "constant", np.int64),
        ((2, 40), (0, 2, 1, 0), "edge", np.int64),
        ((3, 33), (0, 1, 0, 2), "constant", np.bool_),
        ((5, 6), (-1, -2, -1, -1), "constant", F32),  # a pure crop
    ],
)
def test_pad(shape, pads, mode, dtype):
    m = unary(shape, lambda x: g.PadOp.make([x], pads=pads, mode=mode, value=2.0), dtype)
    check_native(m, [rnd(shape, dtype)], **EXACT)


# -------------------------------------------------------- reshape (copy)


class _NoReshape:
    """Stands in for g.ReshapeOp in cpu_utils so that reshapes get outlined into kernels."""


@pytest.mark.parametrize("dtype", [F32, np.int64])
def test_reshape_inside_kernel(monkeypatch, dtype):
    shim = types.SimpleNamespace(ConstantOp=g.ConstantOp, ReshapeOp=_NoReshape)
    monkeypatch.setattr(cpu_utils, "g", shim)

    def body(a, add):
        r = add(g.ReshapeOp.make([a[0]], [tensor_type((6, 35), dtype)]))
        return add(g.TransposeOp.make([r], perm=(1, 0)))

    check_native(build([(3, 70)], body, [dtype]), [rnd((3, 70), dtype)], **EXACT)


# ------------------------------------------------------------ reductions

REDUCE_CASES = [
    ((3, 37), (1,), 1, F32),
    ((3, 37), (0,), 0, F32),
    ((4, 5, 70), (0, 2), 1, F32),
    ((2, 3, 4, 5), (), 0, F32),  # every axis
    ((5, 1, 50), (1,), 0, F32),  # a size-1 axis
    ((2, 130, 3), (1,), 1, F32),  # column reduction, narrow columns
    ((3, 70, 50), (1,), 0, F32),  # column chunks 48 + scalar tail 2
    ((2, 300, 2, 70), (1, 3), 0, F32),
    ((6, 100), (0,), 1, np.int64),
    ((2, 3, 50), (0, 1), 0, np.int32),
]


@pytest.mark.parametrize("kind", ["sum", "mean", "max", "min", "prod"])
@pytest.mark.parametrize("shape,axes,keepdims,dtype", REDUCE_CASES)
def test_reduce(kind, shape, axes, keepdims, dtype):
    cls = {"sum": g.ReduceSumOp, "mean": g.ReduceMeanOp, "max": g.ReduceMaxOp, "min": g.ReduceMinOp, "prod": g.ReduceProdOp}[kind]
    if kind == "prod":
        x = (1 + 0.01 * rnd(shape)).astype(dtype) if dtype == F32 else RNG.integers(-2, 3, shape).astype(dtype)
    else:
        x = rnd(shape, dtype)
    m = unary(shape, lambda v: cls.make([v], axes=axes, keepdims=keepdims), dtype)
    check_native(m, [x], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [g.ReduceSumOp, g.ReduceMaxOp, g.ReduceMinOp, g.ReduceProdOp])
def test_reduce_empty_axis(cls):
    # folding an empty axis gives the identity (0, -inf, +inf, 1)
    check_native(unary((3, 0), lambda v: cls.make([v], axes=(1,), keepdims=0)), [np.zeros((3, 0), F32)])


def test_reduce_large_row_threads():
    # one output per thread split unevenly across three threads
    x = rnd((5, 4099))
    check_native(unary(x.shape, lambda v: g.ReduceSumOp.make([v], axes=(1,), keepdims=1)), [x], rtol=1e-4, atol=1e-4, threads=3)


@pytest.mark.parametrize("cls", [g.GlobalAvgPoolOp, g.GlobalMaxPoolOp])
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 5, 40), (1, 2, 3, 4, 5), (1, 17, 1, 1)])
def test_global_pool(cls, shape):
    check_native(unary(shape, lambda v: cls.make([v])), [rnd(shape)])


# --------------------------------------------------------------- softmax


@pytest.mark.parametrize("cls", [g.SoftmaxOp, g.LogSoftmaxOp])
@pytest.mark.parametrize(
    "shape,axis",
    [((3, 37), 1), ((3, 37), 0), ((2, 5, 33), 1), ((2, 5, 3), 1), ((4, 8, 16), 2), ((1, 4, 20, 20), 1), ((7,), 0), ((2, 3, 200), 2)],
)
def test_softmax(cls, shape, axis):
    x = 10 * rnd(shape)  # large logits: the max subtraction matters
    check_native(unary(shape, lambda v: cls.make([v], axis=axis)), [x], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ layer norm


@pytest.mark.parametrize(
    "shape,axis,pshape,bias,const",
    [
        ((4, 37), 1, (37,), True, True),
        ((2, 3, 40), 2, (40,), False, True),
        ((2, 3, 8), 1, (3, 8), True, True),
        ((2, 3, 8), 1, (8,), True, True),  # a broadcast constant scale: repacked to full size
        ((2, 3, 8), 1, (8,), True, False),  # a broadcast runtime scale: indexed per element
        ((3, 50), 1, (50,), True, False),
        ((2, 3, 5, 7), 0, (3, 5, 7), False, True),
    ],
)
def test_layer_norm(shape, axis, pshape, bias, const):
    params = [rnd(pshape) for _ in range(2 if bias else 1)]
    if const:
        def body(a, add):
            ops = [a[0]] + [add(cst(p, f"p{i}")) for i, p in enumerate(params)]
            return add(g.LayerNormOp.make(ops, axis=axis, epsilon=1e-5))

        m, ins = build([shape], body), [rnd(shape) + 3]
    else:
        m = build([shape] + [pshape] * len(params), lambda a, add: add(g.LayerNormOp.make(a, axis=axis, epsilon=1e-5)))
        ins = [rnd(shape) + 3] + params
    check_native(m, ins, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------ batch norm


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (3, 20), (1, 3, 40), (1, 2, 3, 4, 5)])
def test_batch_norm(shape):
    c = shape[1]
    params = [rnd(c), rnd(c), rnd(c), np.abs(rnd(c)) + 0.5]

    def body(a, add):
        return add(g.BatchNormOp.make([a[0]] + [add(cst(p, f"bn{i}")) for i, p in enumerate(params)], epsilon=1e-5))

    check_native(build([shape], body), [rnd(shape)])


# ------------------------------------------------------------------- lrn


@pytest.mark.parametrize("shape,size,beta", [((2, 7, 5, 9), 3, 0.75), ((1, 10, 33), 5, 0.6), ((1, 4, 17), 4, 1.0), ((1, 6, 4, 5), 2, 0.5)])
def test_lrn(shape, size, beta):
    m = unary(shape, lambda v: g.LrnOp.make([v], size=size, alpha=1e-2, beta=beta, bias=1.0))
    check_native(m, [rnd(shape)])


# --------------------------------------------------------------- pooling

POOL_CASES = [
    # shape, kernel, strides, pads, dilations, ceil_mode
    ((1, 3, 40, 40), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),
    ((1, 3, 50, 56), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0),  # the ResNet stem pool, smaller
    ((2, 2, 37, 45), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    ((1, 2, 50, 50), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0),
    ((1, 2, 31, 70), (3, 5), (3, 3), (1, 2, 1, 2), (1, 1), 1),
    ((1, 2, 31, 90), (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 0),  # dilated
    ((1, 2, 19, 200), (2, 3), (1, 5), (0, 1, 1, 0), (1, 1), 1),  # stride beyond the vector path
    ((1, 3, 7, 7), (7, 7), (1, 1), (0, 0, 0, 0), (1, 1), 0),
    ((1, 1, 5, 5), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    ((2, 3, 60), (3,), (2,), (1, 1), (1,), 1),  # 1-D
    ((1, 2, 6, 8, 40), (2, 2, 3), (2, 2, 1), (1, 0, 1, 0, 1, 1), (1, 1, 1), 1),  # 3-D
]


@pytest.mark.parametrize("shape,kernel,strides,pads,dilations,ceil_mode", POOL_CASES)
def test_max_pool(shape, kernel, strides, pads, dilations, ceil_mode):
    m = unary(shape, lambda v: g.MaxPoolOp.make([v], kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations, ceil_mode=ceil_mode))
    check_native(m, [rnd(shape)], **EXACT)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("shape,kernel,strides,pads,dilations,ceil_mode", POOL_CASES)
def test_avg_pool(shape, kernel, strides, pads, dilations, ceil_mode, count_include_pad):
    m = unary(
        shape,
        lambda v: g.AvgPoolOp.make(
            [v], kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations, ceil_mode=ceil_mode, count_include_pad=count_include_pad
        ),
    )
    check_native(m, [rnd(shape)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.int32])
def test_max_pool_integers(dtype):
    shape = (1, 2, 40, 40)
    m = unary(shape, lambda v: g.MaxPoolOp.make([v], kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), ceil_mode=1), dtype)
    check_native(m, [rnd(shape, dtype)], **EXACT)


def test_max_pool_negative_inputs_and_threads():
    # all-negative data: a zero from the padding would win if padding were read
    x = -np.abs(rnd((1, 3, 23, 41))) - 1
    m = unary(x.shape, lambda v: g.MaxPoolOp.make([v], kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), ceil_mode=1))
    check_native(m, [x], threads=3, **EXACT)


# -------------------------------------------------- through the ONNX importer


def _onnx(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, s, t in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return import_onnx(model)


FT = TensorProto.FLOAT


def test_onnx_slice_negative_steps():
    node = helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])
    inits = {"s": np.array([-1, 20], np.int64), "e": np.array([-10**9, 3], np.int64), "a": np.array([2, 1], np.int64), "st": np.array([-2, -3], np.int64)}
    m = _onnx([node], [("x", (2, 24, 37), FT)], ["y"], inits)
    check_native(m, [rnd((2, 24, 37))], **EXACT)


def test_onnx_gather_pad_transpose():
    nodes = [
        helper.make_node("Gather", ["x", "i"], ["g"], axis=1),
        helper.make_node("Pad", ["g", "p"], ["q"], mode="reflect"),
        helper.make_node("Transpose", ["q"], ["y"], perm=[2, 0, 1]),
    ]
    inits = {"i": np.array([3, -1, 0, -5, 2], np.int64), "p": np.array([0, 1, 2, 0, 2, 3], np.int64)}
    m = _onnx(nodes, [("x", (2, 6, 19), FT)], ["y"], inits)
    check_native(m, [rnd((2, 6, 19))], **EXACT)


def test_onnx_reduce_softmax_layernorm():
    nodes = [
        helper.make_node("ReduceMean", ["x", "ax"], ["m"], keepdims=1),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Softmax", ["d"], ["s"], axis=-1),
        helper.make_node("LayerNormalization", ["s", "w", "b"], ["y"], axis=-1, epsilon=1e-5),
    ]
    inits = {"ax": np.array([1], np.int64), "w": rnd((33,)), "b": rnd((33,))}
    m = _onnx(nodes, [("x", (2, 12, 33), FT)], ["y"], inits, opset=18)
    check_native(m, [rnd((2, 12, 33))], rtol=1e-4, atol=1e-4)


def test_onnx_pools_bn_lrn():
    nodes = [
        helper.make_node("BatchNormalization", ["x", "sc", "bi", "mu", "va"], ["bn"], epsilon=1e-3),
        helper.make_node("LRN", ["bn"], ["l"], size=5, alpha=1e-3, beta=0.75, bias=2.0),
        helper.make_node("MaxPool", ["l"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["ap"], ["y"]),
    ]
    c = 6
    inits = {"sc": rnd((c,)), "bi": rnd((c,)), "mu": rnd((c,)), "va": np.abs(rnd((c,))) + 0.5}
    m = _onnx(nodes, [("x", (1, c, 35, 38), FT)], ["y"], inits)
    check_native(m, [rnd((1, c, 35, 38))], rtol=1e-5, atol=1e-5)
