"""Fusion passes: numerics unchanged, expected kernels formed, explanations complete.

Each model (small zoo variants and small onnx.helper graphs, one per
pattern) is imported, evaluated with the reference evaluator, run through the
fusion passes in pipeline order (optionally after graph-opt), evaluated
again and compared at rtol 1e-4 / atol 1e-4. Structure is checked on the
fused IR: kernel patterns and sources, `is_fused`, and that
`explain_fusion` has a row for every ONNX node.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.asm import parse_module, print_module
from dsc.frontends.onnx import import_onnx
from dsc.passes.base import is_fused, top_ops
from dsc.passes.fusion_utils import (
    explain_fusion,
    format_explanation,
    is_convex,
    node_names,
    outline,
)
from dsc.passes.registry import pass_class
from dsc.pipeline import parse_passes, pipeline_for, run_pipeline
from dsc.reference import run_module
from dsc.runtime.errors import DscError
from dsc.targets import get_target
from dsc.tools import zoo
from onnx import TensorProto, helper, numpy_helper

RTOL = ATOL = 1e-4
ZOO = ["resnet18", "mobilenetv2", "efficientnet_b0", "bert_base", "mlp"]
STAGES = pipeline_for(get_target("reference"))
FUSION = ",".join(spec for phase, spec in STAGES if phase == "fusion")
GRAPH_OPT_AND_FUSION = ",".join(spec for phase, spec in STAGES if phase in ("graph-opt", "fusion"))
FUSION_PASSES = ["fuse-conv-bn-relu", "fuse-matmul-epilogue", "fuse-reductions", "fuse-elementwise", "outline-kernels"]

# ------------------------------------------------------------ helpers


def ir_nodes(module) -> set[str]:
    return {n for op in module.walk() for n in node_names(op)}


def compile_and_compare(model: onnx.ModelProto, spec: str = FUSION, feeds=None):
    """Import, evaluate, run `spec`, evaluate again; returns the fused module.

    Also checks that the passes lost no node name (the importer folds some
    ONNX nodes, e.g. shape arithmetic, so the IR's names are the reference).
    """
    module = import_onnx(model)
    feeds = feeds if feeds is not None else zoo.example_inputs(model)
    want = run_module(module, feeds)
    before = ir_nodes(module)
    run_pipeline(module, parse_passes(spec))
    if spec == FUSION:
        assert ir_nodes(module) == before
        assert {r["node"] for r in explain_fusion(module)} == before
    got = run_module(module, feeds)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    return module


def kernels(module) -> list[k.FusedOp]:
    return [op for op in top_ops(module) if isinstance(op, k.FusedOp)]


def body_ops(kern: k.FusedOp) -> list[str]:
    return [op.name for op in kern.body.block.ops if not isinstance(op, k.YieldOp)]


def kernel_of(module, node: str) -> k.FusedOp:
    found = [kr for kr in kernels(module) if node in kr.source_names]
    assert len(found) == 1, f"{node} is in {len(found)} kernels"
    return found[0]


def onnx_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node]


def make_model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def node(op, ins, outs, name, **attrs):
    return helper.make_node(op, ins, outs, name=name, **attrs)


def rand(*shape, seed=0, scale=0.5):
    return np.random.default_rng(seed + len(shape)).normal(0, scale, shape).astype(np.float32)


# ------------------------------------------------------------ zoo models


@pytest.mark.parametrize("name", ZOO)
def test_zoo_fusion_preserves_results(name):
    model = zoo.build(name, small=True)
    module = compile_and_compare(model)
    assert is_fused(module)
    rows = explain_fusion(module)
    assert all(r["reason"] and r["detail"] for r in rows)
    assert all(r["kernel"] for r in rows if r["status"] in ("fused", "alone"))


@pytest.mark.parametrize("name", ZOO)
def test_zoo_graph_opt_then_fusion(name):
    model = zoo.build(name, small=True)
    module = compile_and_compare(model, GRAPH_OPT_AND_FUSION)
    assert is_fused(module)
    rows = explain_fusion(module, onnx_nodes(model))
    names = [r["node"] for r in rows]
    assert len(names) == len(set(names)) and set(names) >= set(onnx_nodes(model))
    assert all(r["status"] == "removed" for r in rows if r["node"] not in ir_nodes(module))


def test_resnet18_structure():
    model = zoo.build("resnet18", small=True)
    module = compile_and_compare(model, GRAPH_OPT_AND_FUSION)
    assert is_fused(module)
    ks = kernels(module)
    for kr in ks:
        ops = body_ops(kr)
        assert ops not in (["graph.batch_norm"], ["graph.relu"]), f"standalone {ops} kernel {kr.sym_name.data}"
        if "graph.relu" in ops:
            assert "graph.conv" in ops and kr.pattern.data in ("conv_bn_relu", "conv_add_relu"), kr.sym_name.data
    assert not any(isinstance(op, g.BatchNormOp | g.ReluOp) for op in top_ops(module))
    # 20 convs (17 with relu, 8 with the residual add), the pool, the head gemm.
    assert sum(kr.pattern.data.startswith("conv") for kr in ks) == 20
    assert sum(kr.pattern.data == "conv_add_relu" for kr in ks) == 8
    rows = explain_fusion(module)
    assert {r["node"] for r in rows} >= set(onnx_nodes(model)), "explain_fusion lost an ONNX node"
    relus = [r for r in rows if r["op"] == "graph.relu"]
    assert relus and all(r["status"] == "fused" and "conv" in r["pattern"] for r in relus)
    pool = next(r for r in rows if r["node"].endswith("MaxPool"))
    assert pool["status"] == "alone" and pool["reason"] == "multiple-uses"
    assert next(r for r in rows if r["node"] == "/Flatten")["reason"] == "view"


def test_bert_structure():
    model = zoo.build("bert_base", small=True)
    module = compile_and_compare(model)
    pats = [kr.pattern.data for kr in kernels(module)]
    assert pats.count("matmul_epilogue") == 16  # every MatMul, with its bias and the GELU
    assert pats.count("reduction") == 7  # 5 layer norms + 2 softmaxes
    gelu = kernel_of(module, "/encoder/layer.0/intermediate/dense/MatMul")
    assert body_ops(gelu) == ["graph.matmul", "graph.add", "graph.div", "graph.erf", "graph.add", "graph.mul", "graph.mul"]
    scores = kernel_of(module, "/encoder/layer.0/attention/self/MatMul")
    assert body_ops(scores) == ["graph.transpose", "graph.transpose", "graph.matmul"]
    softmax = kernel_of(module, "/encoder/layer.0/attention/self/Softmax")
    assert body_ops(softmax) == ["graph.div", "graph.add", "graph.softmax"]


# ------------------------------------------------------------ one pattern each


def test_conv_bn_relu_patterns():
    c = 4
    inits = [("w", rand(c, c, 3, 3)), ("s", 1 + rand(c, scale=0.1)), ("b", rand(c)), ("m", rand(c)), ("v", 1 + np.abs(rand(c))),
             ("cs", 1 + rand(c, 1, 1, scale=0.1)), ("cb", rand(c, 1, 1))]
    conv = {"pads": [1, 1, 1, 1]}
    nodes = [
        node("Conv", ["x", "w"], ["c1"], "/c1/Conv", **conv),
        node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["b1"], "/bn1/BN"),
        node("Relu", ["b1"], ["r1"], "/r1/Relu"),
        node("Conv", ["r1", "w"], ["c2"], "/c2/Conv", **conv),
        node("Mul", ["c2", "cs"], ["m2"], "/bn2/Mul"),
        node("Add", ["m2", "cb"], ["a2"], "/bn2/Add"),
        node("Add", ["x", "a2"], ["res"], "/res/Add"),
        node("Clip", ["res"], ["r2"], "/r2/Clip", min=0.0, max=6.0),
        node("Conv", ["r2", "w"], ["c3"], "/c3/Conv", **conv),
        node("Sigmoid", ["c3"], ["s3"], "/silu/Sigmoid"),
        node("Mul", ["c3", "s3"], ["y3"], "/silu/Mul"),
        node("Conv", ["y3", "w"], ["c4"], "/c4/Conv", **conv),
        node("LeakyRelu", ["c4"], ["y4"], "/y4/LeakyRelu", alpha=0.1),
        node("Sigmoid", ["c4"], ["z4"], "/z4/Sigmoid"),
    ]
    model = make_model(nodes, [("x", [1, c, 6, 6])], ["y4", "z4"], inits)
    module = compile_and_compare(model, FUSION, {"x": rand(1, c, 6, 6)})
    assert kernel_of(module, "/c1/Conv").source_names == ["/c1/Conv", "/bn1/BN", "/r1/Relu"]
    k2 = kernel_of(module, "/c2/Conv")
    assert k2.pattern.data == "conv_add_relu" and k2.source_names == ["/c2/Conv", "/bn2/Mul", "/bn2/Add", "/res/Add", "/r2/Clip"]
    assert kernel_of(module, "/c3/Conv").source_names == ["/c3/Conv", "/silu/Sigmoid", "/silu/Mul"]
    k4 = kernel_of(module, "/c4/Conv")
    assert k4.pattern.data == "conv" and k4.source_names == ["/c4/Conv"]
    assert kernel_of(module, "/y4/LeakyRelu").pattern.data == "single"
    rows = {r["node"]: r for r in explain_fusion(module)}
    assert rows["/y4/LeakyRelu"]["reason"] == "multiple-uses"
    assert rows["/c4/Conv"]["reason"] == "multiple-uses"


def test_matmul_epilogue_patterns():
    inits = [("w", rand(16, 16)), ("b", rand(16)), ("sq2", [1.4142135]), ("one", [1.0]), ("half", [0.5])]
    nodes = [
        node("Transpose", ["xt"], ["x"], "/t/Transpose", perm=[1, 0]),
        node("MatMul", ["x", "w"], ["mm"], "/mm/MatMul"),
        node("Add", ["b", "mm"], ["h"], "/mm/Add"),
        node("Div", ["h", "sq2"], ["d"], "/gelu/Div"),
        node("Erf", ["d"], ["e"], "/gelu/Erf"),
        node("Add", ["e", "one"], ["a"], "/gelu/Add"),
        node("Mul", ["h", "a"], ["p"], "/gelu/Mul"),
        node("Mul", ["p", "half"], ["y"], "/gelu/Mul_1"),
        node("Gemm", ["y", "w", "b"], ["g"], "/fc/Gemm", transB=1),
        node("Tanh", ["g"], ["out"], "/fc/Tanh"),
    ]
    model = make_model(nodes, [("xt", [16, 8])], ["out"], inits)
    module = compile_and_compare(model, FUSION, {"xt": rand(16, 8)})
    k0 = kernel_of(module, "/mm/MatMul")
    assert k0.pattern.data == "matmul_epilogue"
    assert k0.source_names == ["/t/Transpose", "/mm/MatMul", "/mm/Add", "/gelu/Div", "/gelu/Erf", "/gelu/Add", "/gelu/Mul", "/gelu/Mul_1"]
    assert kernel_of(module, "/fc/Gemm").source_names == ["/fc/Gemm", "/fc/Tanh"]
    assert len(kernels(module)) == 2


def test_reduction_patterns():
    d = 8
    inits = [("two", [2.0]), ("eps", [1e-5]), ("gamma", 1 + rand(d, scale=0.1)), ("beta", rand(d)), ("scale", [2.8284271])]
    nodes = [
        node("Add", ["x", "r"], ["s"], "/res/Add"),
        node("ReduceMean", ["s"], ["mu"], "/ln/ReduceMean", axes=[-1]),
        node("Sub", ["s", "mu"], ["dv"], "/ln/Sub"),
        node("Pow", ["dv", "two"], ["sq"], "/ln/Pow"),
        node("ReduceMean", ["sq"], ["var"], "/ln/ReduceMean_1", axes=[-1]),
        node("Add", ["var", "eps"], ["ve"], "/ln/Add"),
        node("Sqrt", ["ve"], ["sd"], "/ln/Sqrt"),
        node("Div", ["dv", "sd"], ["n"], "/ln/Div"),
        node("Mul", ["n", "gamma"], ["ng"], "/ln/Mul"),
        node("Add", ["ng", "beta"], ["ln"], "/ln/Add_1"),
        node("Div", ["ln", "scale"], ["z"], "/attn/Div"),
        node("Softmax", ["z"], ["sm"], "/attn/Softmax", axis=-1),
        node("Exp", ["sm"], ["ex"], "/sum/Exp"),
        node("ReduceSum", ["ex", "axes"], ["rs"], "/sum/ReduceSum", keepdims=1),
        node("Neg", ["rs"], ["out"], "/sum/Neg"),
    ]
    # ln and sm are graph outputs too: their consumers become producers of the next reduction.
    model = make_model(nodes, [("x", [2, 4, d]), ("r", [2, 4, d])], ["out", "ln", "sm"], inits)
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "axes"))
    module = compile_and_compare(model, FUSION, {"x": rand(2, 4, d), "r": rand(2, 4, d, seed=1)})
    ln = kernel_of(module, "/ln/ReduceMean")
    assert ln.pattern.data == "reduction"
    assert ln.source_names == [n.name for n in nodes[:10]]
    assert kernel_of(module, "/attn/Softmax").source_names == ["/attn/Div", "/attn/Softmax"]
    assert kernel_of(module, "/sum/ReduceSum").source_names == ["/sum/Exp", "/sum/ReduceSum", "/sum/Neg"]
    assert len(kernels(module)) == 3


def test_elementwise_and_outline():
    nodes = [
        node("Cast", ["m"], ["mf"], "/Cast", to=TensorProto.FLOAT),
        node("Sub", ["one", "mf"], ["inv"], "/Sub"),
        node("Mul", ["inv", "big"], ["bias"], "/Mul"),
        node("Add", ["x", "bias"], ["xa"], "/Add"),
        node("Sigmoid", ["xa"], ["sg"], "/Sigmoid"),
        node("Mul", ["xa", "sg"], ["silu"], "/SiluMul"),
        node("MaxPool", ["silu"], ["p"], "/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        node("Relu", ["p"], ["pr"], "/PoolRelu"),
        node("Flatten", ["pr"], ["f"], "/Flatten"),
        node("Abs", ["f"], ["fa"], "/Abs"),
        node("Exp", ["bias"], ["eb"], "/ExpBias"),
    ]
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]), helper.make_tensor_value_info("m", TensorProto.INT64, [1, 1, 1, 4])],
        [helper.make_tensor_value_info("fa", TensorProto.FLOAT, None), helper.make_tensor_value_info("eb", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1.0], np.float32), "one"), numpy_helper.from_array(np.array([-10.0], np.float32), "big")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": rand(1, 2, 4, 4), "m": np.array([[[[1, 1, 0, 1]]]], np.int64)}
    module = compile_and_compare(model, FUSION, feeds)
    assert is_fused(module)
    assert kernel_of(module, "/Cast").source_names == ["/Cast", "/Sub", "/Mul"]
    assert kernel_of(module, "/Sigmoid").source_names == ["/Add", "/Sigmoid", "/SiluMul"]
    assert kernel_of(module, "/MaxPool").pattern.data == "single"
    rows = {r["node"]: r for r in explain_fusion(module)}
    assert rows["/Mul"]["status"] == "fused"
    assert rows["/MaxPool"]["reason"] == "not-elementwise"
    assert rows["/PoolRelu"]["reason"] in ("not-elementwise", "view")
    assert rows["/Flatten"]["reason"] == "view" and rows["/Flatten"]["status"] == "outside"
    assert rows["/ExpBias"]["reason"] == "multiple-uses"
    table = format_explanation(list(rows.values()))
    assert all(n in table for n in rows) and "kernels" in table.splitlines()[-1]


def test_shape_mismatch_reason():
    nodes = [node("Neg", ["v"], ["nv"], "/small/Neg"), node("Add", ["x", "nv"], ["y"], "/big/Add"), node("Relu", ["y"], ["out"], "/big/Relu")]
    model = make_model(nodes, [("x", [2, 8]), ("v", [8])], ["out"])
    module = compile_and_compare(model, FUSION, {"x": rand(2, 8), "v": rand(8)})
    rows = {r["node"]: r for r in explain_fusion(module)}
    assert rows["/small/Neg"]["reason"] == "shape-mismatch"
    assert kernel_of(module, "/big/Add").source_names == ["/big/Add", "/big/Relu"]


def test_standalone_batch_norm_is_elementwise():
    c = 3
    inits = [("s", 1 + rand(c, scale=0.1)), ("b", rand(c)), ("m", rand(c)), ("v", 1 + np.abs(rand(c)))]
    nodes = [
        node("MaxPool", ["x"], ["p"], "/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        node("BatchNormalization", ["p", "s", "b", "m", "v"], ["bn"], "/bn/BN"),
        node("Relu", ["bn"], ["out"], "/bn/Relu"),
    ]
    model = make_model(nodes, [("x", [1, c, 4, 4])], ["out"], inits)
    module = compile_and_compare(model, FUSION, {"x": rand(1, c, 4, 4)})
    assert kernel_of(module, "/bn/BN").source_names == ["/bn/BN", "/bn/Relu"]
    assert kernel_of(module, "/bn/BN").pattern.data == "elementwise"


def test_outline_kernels_moves_graph_if_whole():
    with open(__file__.replace("test_passes_fusion.py", "lit/outline_kernels.mlir")) as f:
        text = f.read()
    rng = np.random.default_rng(0)
    for flag in (True, False):
        module = parse_module(text)
        feeds = [rng.normal(size=(1, 4, 8, 8)).astype(np.float32), rng.normal(size=(10, 64)).astype(np.float32), np.array([flag])]
        want = run_module(module, feeds)
        run_pipeline(module, parse_passes("outline-kernels"))
        assert is_fused(module)
        for a, b in zip(run_module(module, feeds), want):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert [kr.sym_name.data for kr in kernels(module)] == ["k0_single", "k1_single", "k2_elementwise", "k3_single", "k4_single"]


# ------------------------------------------------------------ mechanics


def test_passes_registered_with_device_option():
    for name in FUSION_PASSES:
        assert pass_class(name).name == name
    model = zoo.build("mlp", small=True)
    module = compile_and_compare(model, 'fuse-matmul-epilogue{device="cuda:0"},outline-kernels')
    assert {kr.device.data for kr in kernels(module)} == {"cuda:0"}


def test_fusion_is_idempotent_and_round_trips():
    model = zoo.build("resnet18", small=True)
    module = compile_and_compare(model)
    text = print_module(module)
    run_pipeline(module, parse_passes(FUSION))
    assert print_module(module) == text
    parsed = parse_module(text)
    feeds = zoo.example_inputs(model)
    for a, b in zip(run_module(parsed, feeds), run_module(module, feeds)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert explain_fusion(parsed) == explain_fusion(module)


def test_outline_refuses_a_non_convex_group():
    model = make_model([node("Relu", ["x"], ["a"], "/a"), node("Neg", ["a"], ["b"], "/b"), node("Add", ["a", "b"], ["c"], "/c")], [("x", [4])], ["c"])
    module = import_onnx(model)
    a, b, c = [op for op in top_ops(module) if isinstance(op, g.GraphOp)]
    assert not is_convex([a, c]) and is_convex([a, b, c])
    with pytest.raises(DscError, match="not convex"):
        outline([a, c], "elementwise")
    kern = outline([a, b, c], "elementwise")
    assert kern.sym_name.data == "k0_elementwise" and kern.source_names == ["/a", "/b", "/c"]
    np.testing.assert_allclose(run_module(module, {"x": np.array([-1, 0, 1, 2], np.float32)})[0], [0, 0, 0, 0])
