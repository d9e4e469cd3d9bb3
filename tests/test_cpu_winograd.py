"""CPU backend: the Winograd F(4x4, 3x3) fused conv emitter (backends/cpu/emit_winograd.py).

Data is ResNet-like (He-scaled weights, post-ReLU activations, BN-like scale/shift), where
F(4,3) in float32 stays well inside rtol = atol = 1e-4 of the reference. Each case also checks
that the kernel was emitted by the winograd emitter.
"""

import numpy as np
import pytest
from cpu_utils import check_native, outline_each
from dsc.backends.cpu import emit_winograd
from dsc.backends.cpu.codegen import generate
from dsc.backends.cpu.target import host_target
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import tensor_type
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

F32 = np.float32
TOL = {"rtol": 1e-4, "atol": 1e-4}
ALL = lambda ops: [ops]


def build(arg_shapes, body):
    blk = Block(arg_types=[tensor_type(s, F32) for s in arg_shapes])

    def add(op):
        blk.add_op(op)
        return op.results[0]

    outs = body(list(blk.args), add)
    blk.add_op(func.ReturnOp(outs))
    f = func.FuncOp("main", ([a.type for a in blk.args], [outs.type]), Region(blk))
    m = ModuleOp([f])
    m.verify()
    return m


def cst(arr, key):
    return g.ConstantOp.from_array(np.asarray(arr, F32), key)


def wino_module(rng, n, c, m, h, w, epilogue="bias_relu"):
    """conv 3x3 pad 1 (+ bias) and an epilogue: none, bias+relu, or folded BN + residual + relu."""
    wt = (rng.standard_normal((m, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(F32)
    x = np.maximum(rng.standard_normal((n, c, h, w)), 0).astype(F32)
    shapes = [(n, c, h, w)] + ([(n, m, h, w)] if epilogue == "residual" else [])
    res = rng.standard_normal((n, m, h, w)).astype(F32)

    def body(a, add):
        ops = [a[0], add(cst(wt, "w"))]
        if epilogue == "bias_relu":
            ops.append(add(cst(rng.standard_normal(m) * 0.1, "b")))
        y = add(
            g.ConvOp.make(
                ops, strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1
            )
        )
        if epilogue == "bias_relu":
            y = add(g.ReluOp.make([y]))
        elif epilogue == "residual":
            sc = add(cst((rng.random((1, m, 1, 1)) + 0.5), "s"))
            sh = add(cst(rng.standard_normal((1, m, 1, 1)) * 0.1, "t"))
            y = add(g.MulOp.make([y, sc]))
            y = add(g.AddOp.make([y, sh]))
            y = add(g.AddOp.make([y, a[1]]))
            y = add(g.ReluOp.make([y]))
        return y

    inputs = [x] + ([res] if epilogue == "residual" else [])
    return build(shapes, body), inputs


def labels(module):
    prog = generate(outline_each(module.clone(), ALL), host_target())
    return [s.label for s in prog.steps]


@pytest.mark.parametrize(
    "n,c,m,h,w,epi",
    [
        (1, 64, 64, 56, 56, "bias_relu"),
        (1, 32, 48, 13, 11, "bias_relu"),  # odd H/W: partial tiles
        (2, 40, 36, 9, 15, "residual"),  # batch 2, C/M not multiples of 16
        (2, 256, 256, 14, 14, "residual"),  # batch 2: Winograd needs two blocks of tiles
        (2, 33, 35, 7, 7, "none"),
        (1, 48, 32, 30, 30, "residual"),
        (1, 64, 80, 5, 64, "bias_relu"),  # widest row a block holds
        (8, 64, 64, 7, 7, "residual"),  # 7x7: blocks span 4 images of 2x2 tiles
        (5, 32, 48, 9, 9, "none"),  # 3x3 tiles an image: blocks end mid-image, the last one short
        (3, 40, 36, 10, 11, "bias_relu"),  # 3 tile rows of 3 tiles: 5 rows a block, across images
    ],
)
def test_winograd(n, c, m, h, w, epi):
    rng = np.random.default_rng(n * 1000 + c + m + h + w)
    mod, inputs = wino_module(rng, n, c, m, h, w, epi)
    assert any("winograd" in s for s in labels(mod))
    check_native(mod, inputs, group=ALL, **TOL)


def test_winograd_not_taken_for_small_or_strided():
    rng = np.random.default_rng(0)
    mod, _ = wino_module(rng, 1, 16, 16, 8, 8)
    assert not any("winograd" in s for s in labels(mod))


def test_weight_transform():
    rng = np.random.default_rng(1)
    wt = rng.standard_normal((20, 3, 3, 3))
    u = emit_winograd.transform_weights(wt, 16)
    assert u.shape == (2, 36, 3, 16)
    assert np.all(u[1, :, :, 4:] == 0)


def test_resnet18_small_matches_onnxruntime(monkeypatch):
    """The small zoo ResNet-18 compiled by dsc.driver (its 3x3 convs on Winograd: the thresholds are
    lowered so its 16-128 channel layers on 2x2-16x16 images, one block of tiles each, take it) matches onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    import dsc.runtime
    from dsc import driver
    from dsc.tools import zoo

    monkeypatch.setattr(emit_winograd, "MIN_CHANNELS", 16)
    monkeypatch.setattr(emit_winograd, "MIN_LANE_USE", 0.0)
    monkeypatch.setattr(emit_winograd, "MIN_BLOCKS", 1)  # batch 1: one block of tiles per layer
    calls = []
    real = emit_winograd.transform_weights
    monkeypatch.setattr(
        emit_winograd, "transform_weights", lambda *a: calls.append(1) or real(*a)
    )
    model = zoo.build("resnet18", small=True)
    feeds = zoo.example_inputs(model)
    want = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, feeds)
    sess = dsc.runtime.load(driver.compile(model))
    got = sess.run(None, feeds)
    assert len(calls) >= 8  # every 3x3 stride-1 conv of the model
    for g_, w in zip(got, want):
        np.testing.assert_allclose(g_, w, **TOL)
