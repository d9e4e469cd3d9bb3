"""The graph dialect: shape inference, verifiers, and print → parse round trips per op family."""

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

from dsc import IRError
from dsc.dialects import graph as g
from dsc.dialects.asm import parse_module, print_module
from dsc.dialects.tensor_types import name_loc, sig_of, tensor_type
from dsc.reference import run_module

F32 = np.float32


def build(arg_shapes, body, dtypes=None):
    """A module @main(args) whose ops `body(block_args, add)` creates; returns (module, results)."""
    dtypes = dtypes or [F32] * len(arg_shapes)
    blk = Block(arg_types=[tensor_type(s, d) for s, d in zip(arg_shapes, dtypes)])

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


def cst(arr, key):
    return g.ConstantOp.from_array(np.asarray(arr), key)


def roundtrip(m):
    text = print_module(m)
    m2 = parse_module(text)
    assert print_module(m2) == text
    return m2, text


FAMILIES = {
    "elementwise": (
        [(2, 3), (3,)],
        lambda a, add: add(g.ClipOp.make([add(g.GeluOp.make([add(g.AddOp.make([add(g.ReluOp.make([a[0]])), a[1]]))], approximate="none"))], min=-1.0, max=6.0)),
    ),
    "compare_where": (
        [(2, 3), (2, 3)],
        lambda a, add: add(g.WhereOp.make([add(g.LessOp.make([a[0], a[1]])), a[0], a[1]])),
    ),
    "conv": (
        [(1, 4, 8, 8)],
        lambda a, add: add(
            g.ConvOp.make([a[0], add(cst(np.ones((8, 2, 3, 3), F32), "w")), add(cst(np.zeros(8, F32), "b"))], strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), group=2)
        ),
    ),
    "pool": (
        [(1, 2, 7, 7)],
        lambda a, add: add(g.AvgPoolOp.make([add(g.MaxPoolOp.make([a[0]], kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), ceil_mode=1))], kernel_shape=(2, 2), strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), ceil_mode=0, count_include_pad=0)),
    ),
    "matmul_gemm": (
        [(2, 4), (4, 5)],
        lambda a, add: add(g.GemmOp.make([add(g.MatMulOp.make([a[0], a[1]])), add(cst(np.ones((3, 5), F32), "b2"))], alpha=1.0, beta=1.0, trans_a=0, trans_b=1)),
    ),
    "normalization": (
        [(1, 4, 6)],
        lambda a, add: add(g.SoftmaxOp.make([add(g.LayerNormOp.make([a[0], add(cst(np.ones(6, F32), "s"))], axis=2, epsilon=1e-5))], axis=1)),
    ),
    "reduce": (
        [(2, 3, 4)],
        lambda a, add: add(g.ReduceMeanOp.make([add(g.ReduceSumOp.make([a[0]], axes=(1,), keepdims=1))], axes=(), keepdims=0)),
    ),
    "data_movement": (
        [(2, 3, 4)],
        lambda a, add: add(
            g.ReshapeOp.make(
                [add(g.ConcatOp.make([add(g.TransposeOp.make([a[0]], perm=(0, 2, 1))), add(g.SliceOp.make([add(g.TransposeOp.make([a[0]], perm=(0, 2, 1)))], starts=(0, 3, 2), ends=(2, -1, 3), steps=(1, -1, 1)))], axis=2))],
                result_types=[tensor_type((2, 16), F32)],
            )
        ),
    ),
    "gather_pad": (
        [(5, 3)],
        lambda a, add: add(g.PadOp.make([add(g.GatherOp.make([a[0], add(cst(np.array([[0, -1], [2, 4]]), "idx"))], axis=0))], pads=(0, 1, 0, 0, 0, 2), mode="constant", value=0.0)),
    ),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_roundtrip_per_family(family):
    shapes, body = FAMILIES[family]
    m = build(shapes, body)
    m2, text = roundtrip(m)
    assert "graph." in text
    # the parsed module computes what the built one does (where kernels exist)
    xs = [np.random.default_rng(0).standard_normal(s).astype(F32) for s in shapes]
    a = run_module(m, xs)
    b = run_module(m2, xs)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_if_roundtrip():
    blk = Block(arg_types=[tensor_type((2,), F32), tensor_type((), np.bool_)])
    x, c = blk.args
    then_b, else_b = Block(), Block()
    r1 = g.ReluOp.make([x])
    then_b.add_ops([r1, g.YieldOp(r1)])
    r2 = g.LeakyReluOp.make([x], alpha=0.1)
    else_b.add_ops([r2, g.YieldOp(r2)])
    iff = g.IfOp(c, [x.type], Region(then_b), Region(else_b))
    blk.add_ops([iff, func.ReturnOp(iff.results[0])])
    m = ModuleOp([func.FuncOp("main", ([x.type, c.type], [x.type]), Region(blk))])
    m.verify()
    m2, text = roundtrip(m)
    assert "graph.if" in text and "graph.yield" in text
    v = np.array([-1.0, 2.0], F32)
    np.testing.assert_allclose(run_module(m2, [v, np.array(True)])[0], [0, 2])
    np.testing.assert_allclose(run_module(m2, [v, np.array(False)])[0], [-0.1, 2])


def test_inference():
    x = tensor_type((1, 3, 224, 224), F32)
    blk = Block(arg_types=[x])
    w = cst(np.zeros((64, 3, 7, 7), F32), "w")
    c = g.ConvOp.make([blk.args[0], w], strides=(2, 2), pads=(3, 3, 3, 3), dilations=(1, 1), group=1)
    assert sig_of(c.result.type).shape == (1, 64, 112, 112)
    p = g.MaxPoolOp.make([c], kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), ceil_mode=0)
    assert sig_of(p.result.type).shape == (1, 64, 56, 56)
    m = g.MatMulOp.make([cst(np.zeros((8, 1, 4, 5), F32), "a"), cst(np.zeros((3, 5, 6), F32), "b")])
    assert sig_of(m.result.type).shape == (8, 3, 4, 6)
    e = g.EqualOp.make([cst(np.zeros(3, F32), "e1"), cst(np.zeros((2, 1), F32), "e2")])
    assert sig_of(e.result.type) == ((2, 3), np.dtype(bool))


def test_verifier_rejects_wrong_result_type():
    text = """builtin.module {
  func.func @main(%x: tensor<2x3xf32>) -> tensor<3x3xf32> {
    %0 = graph.relu %x : (tensor<2x3xf32>) -> tensor<3x3xf32>
    func.return %0 : tensor<3x3xf32>
  }
}"""
    with pytest.raises(IRError, match=r"graph.relu.*tensor<3x3xf32>.*inferred tensor<2x3xf32>"):
        parse_module(text)


def test_verifier_rejects_bad_broadcast():
    text = """builtin.module {
  func.func @main(%x: tensor<2x3xf32>, %y: tensor<4xf32>) -> tensor<2x3xf32> {
    %0 = graph.add %x, %y : (tensor<2x3xf32>, tensor<4xf32>) -> tensor<2x3xf32>
    func.return %0 : tensor<2x3xf32>
  }
}"""
    with pytest.raises(IRError, match="do not broadcast"):
        parse_module(text)


def test_parse_error_is_dsc_error():
    with pytest.raises(IRError, match="does not parse"):
        parse_module("builtin.module { %0 = graph.nonexistent }")


def test_elided_constants_print_readably_and_refuse_to_run():
    m = build([(1, 4)], lambda a, add: add(g.AddOp.make([a[0], add(cst(np.arange(4, dtype=F32) + 1, "big")) ])))
    big = build([(64,)], lambda a, add: add(g.AddOp.make([a[0], add(cst(np.arange(64, dtype=F32), "w64"))])))
    text = print_module(big, elide_larger_than=16)
    assert "dense_resource<__elided__>" in text and "dialect_resources" not in text
    with pytest.raises(Exception, match="elided"):
        run_module(parse_module(text), [np.zeros(64, F32)])
    # small constants stay inline and exact
    assert "dense<[1.000000e+00" in print_module(m)


def test_locations_round_trip():
    def body(a, add):
        op = g.ReluOp.make([a[0]])
        op.location = name_loc("/layer1/Relu")
        return add(op)

    m = build([(2,)], body)
    _, text = roundtrip(m)
    assert 'loc("/layer1/Relu")' in text
