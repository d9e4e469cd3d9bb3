"""Semantics of the graph-opt passes: canonicalize, fold-constants, cse, dce,
fold-batchnorm and lower-precision.

Every pass must leave the reference evaluator's results unchanged: each
test imports a model (the small zoo variants, or a small onnx.helper model),
evaluates it, applies the pass, verifies the IR, evaluates again and
compares at rtol 1e-4 / atol 1e-4 (the exact passes are in fact
bit-identical; fold-batchnorm rounds the folded weights once, ~1e-6).
lower-precision is compared with its own, stated tolerance (see
`test_lower_precision_zoo`). The structural claims of each pass (no
batch_norm left, reshape chains gone, duplicates merged) are asserted on
the same models.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from dsc.dialects import graph as g
from dsc.dialects.asm import make_context, parse_module, print_module
from dsc.dialects.tensor_types import Blob, DenseBlobAttr, sig_of
from dsc.frontends.onnx import import_onnx
from dsc.passes.canonicalize import CanonicalizePass
from dsc.passes.cse import CsePass
from dsc.passes.dce import DcePass
from dsc.passes.fold_batchnorm import FoldBatchNormPass
from dsc.passes.fold_constants import FoldConstantsPass
from dsc.passes.lower_precision import LowerPrecisionPass
from dsc.reference import run_module
from dsc.reference.evaluator import main_func
from dsc.runtime.errors import DscError
from dsc.tools import zoo
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

RTOL = ATOL = 1e-4
ZOO = ["resnet18", "mobilenetv2", "efficientnet_b0", "bert_base", "mlp"]
CNNS = ["resnet18", "mobilenetv2", "efficientnet_b0"]
GRAPH_OPT = [CanonicalizePass(), FoldConstantsPass(), FoldBatchNormPass(), CsePass(), DcePass()]


def apply(module, *passes):
    for p in passes:
        p.apply(make_context(), module)
        module.verify()
    return module


def counts(module) -> Counter:
    return Counter(op.name for op in module.walk())


def assert_same(got, want, rtol=RTOL, atol=ATOL):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def zoo_case(name):
    model = zoo.build(name, small=True)
    feeds = zoo.example_inputs(model)
    module = import_onnx(model)
    return module, feeds, run_module(module, feeds)


def onnx_model(nodes, inputs, outputs, initializers=()):
    graph = oh.make_graph(nodes, "test", inputs, outputs, list(initializers))
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def vi(name, shape, dtype=TensorProto.FLOAT):
    return oh.make_tensor_value_info(name, dtype, shape)


# ------------------------------------------------------------ every pass, every zoo model


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("pass_", GRAPH_OPT, ids=lambda p: p.name)
def test_pass_keeps_zoo_results(name, pass_):
    module, feeds, want = zoo_case(name)
    apply(module, pass_)
    assert_same(run_module(module, feeds), want)


@pytest.mark.parametrize("name", ZOO)
def test_graph_opt_pipeline_keeps_results_and_is_idempotent(name):
    module, feeds, want = zoo_case(name)
    apply(module, *GRAPH_OPT)
    assert_same(run_module(module, feeds), want)
    once = print_module(module, elide_larger_than=0)
    apply(module, *GRAPH_OPT)
    assert print_module(module, elide_larger_than=0) == once


# ------------------------------------------------------------ fold-batchnorm


@pytest.mark.parametrize("name", CNNS)
def test_fold_batchnorm_leaves_no_batch_norm(name):
    module, feeds, want = zoo_case(name)
    before = counts(module)
    assert before["graph.batch_norm"] > 0
    apply(module, FoldBatchNormPass())
    after = counts(module)
    assert after["graph.batch_norm"] == 0
    # every batch norm of these CNNs follows a single-use conv, so all fold into it
    assert after["graph.conv"] == before["graph.conv"]
    assert after["graph.mul"] == before["graph.mul"] and after["graph.add"] == before["graph.add"]
    assert_same(run_module(module, feeds), want)


def _bn_model(producer: str, rng):
    """x -> Conv|Gemm|Relu -> BatchNormalization, with random constant parameters."""
    c = 4
    params = [
        nh.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "scale"),
        nh.from_array(rng.standard_normal(c).astype(np.float32), "bias"),
        nh.from_array(rng.standard_normal(c).astype(np.float32), "mean"),
        nh.from_array(rng.uniform(0.1, 2, c).astype(np.float32), "var"),
    ]
    bn = oh.make_node("BatchNormalization", ["p", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-3)
    if producer == "conv":
        w = nh.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w")
        b = nh.from_array(rng.standard_normal(c).astype(np.float32), "b")
        node = oh.make_node("Conv", ["x", "w", "b"], ["p"], pads=[1, 1, 1, 1])
        return onnx_model([node, bn], [vi("x", [2, 3, 5, 5])], [vi("y", [2, c, 5, 5])], [w, b, *params])
    if producer in ("gemm", "gemm_t"):
        trans = producer == "gemm_t"
        b = nh.from_array(rng.standard_normal((c, 6) if trans else (6, c)).astype(np.float32), "B")
        cc = nh.from_array(rng.standard_normal((1, c)).astype(np.float32), "C")
        node = oh.make_node("Gemm", ["x", "B", "C"], ["p"], alpha=0.5, beta=2.0, transB=int(trans))
        return onnx_model([node, bn], [vi("x", [3, 6])], [vi("y", [3, c])], [b, cc, *params])
    node = oh.make_node("Relu", ["x"], ["p"])
    return onnx_model([node, bn], [vi("x", [2, c, 3])], [vi("y", [2, c, 3])], params)


@pytest.mark.parametrize("producer", ["conv", "gemm", "gemm_t", "relu"])
def test_fold_batchnorm_patterns(producer):
    model = _bn_model(producer, np.random.default_rng(1))
    module = import_onnx(model)
    feeds = zoo.example_inputs(model)
    want = run_module(module, feeds)
    apply(module, FoldBatchNormPass())
    c = counts(module)
    assert c["graph.batch_norm"] == 0
    if producer == "relu":  # no producer to fold into: x * s + t
        assert c["graph.mul"] == 1 and c["graph.add"] == 1
    else:
        assert c["graph.mul"] == 0 and c["graph.add"] == 0
    assert_same(run_module(module, feeds), want)


# ------------------------------------------------------------ canonicalize


def test_canonicalize_removes_reshape_and_transpose_chains():
    shape = nh.from_array(np.array([2, 12], dtype=np.int64), "shape")
    axes = nh.from_array(np.array([0], dtype=np.int64), "axes")
    nodes = [
        oh.make_node("Flatten", ["x"], ["f"], axis=2),  # 6x4
        oh.make_node("Reshape", ["f", "shape"], ["r"]),  # 2x12
        oh.make_node("Unsqueeze", ["r", "axes"], ["u"]),  # 1x2x12
        oh.make_node("Transpose", ["u"], ["t1"], perm=[2, 0, 1]),
        oh.make_node("Transpose", ["t1"], ["t2"], perm=[1, 2, 0]),  # the inverse: identity
        oh.make_node("Relu", ["t2"], ["y"]),
    ]
    model = onnx_model(nodes, [vi("x", [2, 3, 4])], [vi("y", [1, 2, 12])], [shape, axes])
    module = import_onnx(model)
    feeds = zoo.example_inputs(model)
    want = run_module(module, feeds)
    assert counts(module)["graph.reshape"] == 3 and counts(module)["graph.transpose"] == 2
    apply(module, CanonicalizePass())
    c = counts(module)
    assert c["graph.reshape"] == 1 and c["graph.transpose"] == 0
    assert_same(run_module(module, feeds), want)


def test_canonicalize_bert_has_no_reshape_of_reshape():
    module, feeds, want = zoo_case("bert_base")
    assert any(isinstance(op, g.ReshapeOp) and isinstance(op.input.owner, g.ReshapeOp) for op in module.walk())
    apply(module, CanonicalizePass())
    assert not any(isinstance(op, g.ReshapeOp) and isinstance(op.input.owner, g.ReshapeOp) for op in module.walk())
    assert_same(run_module(module, feeds), want)


# ------------------------------------------------------------ cse


def test_cse_merges_duplicate_ops_and_equal_constants():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    inits = [nh.from_array(w, "w1"), nh.from_array(w.copy(), "w2"), nh.from_array(w + 1, "w3")]
    nodes = [
        oh.make_node("Relu", ["x"], ["a"]),
        oh.make_node("Relu", ["x"], ["b"]),
        oh.make_node("MatMul", ["a", "w1"], ["m1"]),
        oh.make_node("MatMul", ["b", "w2"], ["m2"]),  # same data as w1 under another name
        oh.make_node("MatMul", ["a", "w3"], ["m3"]),  # other data: must stay apart
        oh.make_node("Add", ["m1", "m2"], ["s"]),
        oh.make_node("Add", ["s", "m3"], ["y"]),
    ]
    model = onnx_model(nodes, [vi("x", [3, 4])], [vi("y", [3, 4])], inits)
    module = import_onnx(model)
    feeds = zoo.example_inputs(model)
    want = run_module(module, feeds)
    apply(module, CsePass())
    c = counts(module)
    assert c["graph.relu"] == 1 and c["graph.matmul"] == 2 and c["graph.constant"] == 2
    assert_same(run_module(module, feeds), want)


def test_cse_never_merges_constants_with_different_data_under_one_key():
    module = parse_module(
        """builtin.module {
  func.func @main(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
    %a = graph.constant dense<[1.0, 2.0]> : tensor<2xf32>
    %b = graph.constant dense<[3.0, 4.0]> : tensor<2xf32>
    %0 = graph.add %x, %a : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %1 = graph.add %x, %b : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    func.return %0, %1 : tensor<2xf32>, tensor<2xf32>
  }
}"""
    )
    consts = [op for op in module.walk() if isinstance(op, g.ConstantOp)]
    # a module stitched from two sources: one key, two different arrays
    for op in consts:
        op.properties["value"] = DenseBlobAttr(Blob("w", op.blob.array))
    x = np.array([10.0, 20.0], dtype=np.float32)
    apply(module, CsePass())
    assert counts(module)["graph.constant"] == 2 and counts(module)["graph.add"] == 2
    keys = {op.blob.key for op in module.walk() if isinstance(op, g.ConstantOp)}
    assert len(keys) == 2
    assert_same(run_module(module, [x]), [x + np.float32([1, 2]), x + np.float32([3, 4])])


@pytest.mark.parametrize("name", ["bert_base", "resnet18"])
def test_cse_leaves_no_equal_constants(name):
    module, feeds, want = zoo_case(name)
    apply(module, CsePass())
    data = [(op.blob.array.dtype.str, op.blob.array.shape, op.blob.array.tobytes()) for op in module.walk() if isinstance(op, g.ConstantOp)]
    assert len(data) == len(set(data))
    assert_same(run_module(module, feeds), want)


# ------------------------------------------------------------ fold-constants and dce


FOLDABLE = """builtin.module {
  func.func @main(%x: tensor<4x2xf32>) -> (tensor<4x3xf32>, tensor<2xi64>) {
    %w = graph.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]> : tensor<3x2xf32>
    %t = graph.transpose %w {perm = array<i64: 1, 0>} : (tensor<3x2xf32>) -> tensor<2x3xf32>
    %s = graph.constant dense<[2.0, 0.5, 1.0]> : tensor<3xf32>
    %ws = graph.mul %t, %s : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %y = graph.matmul %x, %ws : (tensor<4x2xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
    %shape = graph.constant dense<[2, 3, 4]> : tensor<3xi64>
    %n = graph.slice %shape {starts = array<i64: 0>, ends = array<i64: 1>, steps = array<i64: 1>} : (tensor<3xi64>) -> tensor<1xi64>
    %k = graph.slice %shape {starts = array<i64: 1>, ends = array<i64: 3>, steps = array<i64: 1>} : (tensor<3xi64>) -> tensor<2xi64>
    %p = graph.reduce_prod %k {axes = array<i64: 0>, keepdims = 1 : i64} : (tensor<2xi64>) -> tensor<1xi64>
    %r = graph.concat %n, %p {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64>
    func.return %y, %r : tensor<4x3xf32>, tensor<2xi64>
  }
}"""


def test_fold_constants_folds_weight_transforms_and_shape_arithmetic():
    module = parse_module(FOLDABLE)
    x = np.random.default_rng(3).standard_normal((4, 2)).astype(np.float32)
    want = run_module(module, [x])
    apply(module, FoldConstantsPass())
    assert set(counts(module)) == {"builtin.module", "func.func", "graph.constant", "graph.matmul", "func.return"}
    assert counts(module)["graph.constant"] == 2
    got = run_module(module, [x])
    assert_same(got, want)
    assert got[1].tolist() == [2, 12]


def test_fold_constants_respects_max_elements():
    module = parse_module(FOLDABLE)
    apply(module, FoldConstantsPass(max_elements=2))
    c = counts(module)
    assert c["graph.transpose"] == 1 and c["graph.mul"] == 1  # 6-element results stay
    assert c["graph.concat"] == 0  # the 2-element shape still folds


@pytest.mark.parametrize("name", ZOO)
def test_fold_constants_leaves_no_constant_only_op(name):
    module, feeds, want = zoo_case(name)
    apply(module, FoldConstantsPass())
    for op in module.walk():
        if isinstance(op, g.GraphOp) and op.operands:
            assert not all(isinstance(v.owner, g.ConstantOp) for v in op.operands), op.name
    assert_same(run_module(module, feeds), want)


@pytest.mark.parametrize("name", ZOO)
def test_dce_leaves_only_used_ops(name):
    module, feeds, want = zoo_case(name)
    apply(module, DcePass())
    for op in module.walk():
        if isinstance(op, g.GraphOp | g.ConstantOp):
            assert all(r.first_use is not None for r in op.results), op.name
    assert_same(run_module(module, feeds), want)


# ------------------------------------------------------------ lower-precision

# float16 keeps 11 significant bits (unit roundoff 2**-11 = 4.9e-4). Each
# float16 op rounds its result once (convolutions and matmuls accumulate in
# float32 in the reference kernels), and through the ~20 layers of the small
# zoo models these errors grow to about 1e-3 of the output's magnitude (the
# measured worst case is 1.5e-3, on MobileNetV2). rtol 1e-2 and an atol of
# 1e-2 times the output's largest magnitude leave a ~6x margin while still
# catching a wrong cast or a float16 overflow (errors of order 1 or inf/NaN).
FP16_RTOL = 1e-2
FP16_ATOL = 1e-2


@pytest.mark.parametrize("level", ["O1", "O2"])
@pytest.mark.parametrize("name", ZOO)
def test_lower_precision_zoo(name, level):
    module, feeds, want = zoo_case(name)
    apply(module, *GRAPH_OPT)
    signature = main_func(module).function_type
    apply(module, LowerPrecisionPass(precision="fp16", level=level))
    assert main_func(module).function_type == signature  # graph inputs and outputs keep their dtypes
    got = run_module(module, feeds)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=FP16_RTOL, atol=FP16_ATOL * max(1.0, float(np.max(np.abs(b)))))
    half = np.dtype(np.float16)
    for op in module.walk():
        if isinstance(op, g.ConvOp | g.MatMulOp | g.GemmOp):
            assert sig_of(op.result.type).dtype == half, op.name
        if isinstance(op, g.SoftmaxOp | g.LayerNormOp | g.ReduceOp):
            assert sig_of(op.result.type).dtype == np.float32, op.name
        if level == "O1" and isinstance(op, g.AddOp | g.MulOp | g.SigmoidOp) and sig_of(op.result.type).dtype == half:
            # autocast: an unlisted op runs in float16 only when its inputs already are (no cast into it)
            assert not any(isinstance(v.owner, g.CastOp) for v in op.operands), op.name
        if isinstance(op, g.CastOp):  # no cast of a cast that canonicalization could cancel
            inner = op.input.owner
            assert not (isinstance(inner, g.CastOp) and sig_of(inner.input.type).dtype == half), "uncancelled cast pair"


def test_lower_precision_o1_keeps_residual_blocks_in_float16():
    """O1 follows autocast: the residual add and relu between float16 convolutions stay float16 (no casts around them)."""
    module, _, _ = zoo_case("resnet18")
    apply(module, *GRAPH_OPT, LowerPrecisionPass(level="O1"))
    half = np.dtype(np.float16)
    adds = [op for op in module.walk() if isinstance(op, g.AddOp)]
    assert adds and all(sig_of(op.result.type).dtype == half for op in adds)
    assert counts(module)["graph.cast"] <= 2  # the graph input in, the output back


def test_lower_precision_casts_once_per_boundary():
    # O1 on ResNet: one cast into float16 per conv input, one back per float32 consumer group
    module, _, _ = zoo_case("resnet18")
    apply(module, *GRAPH_OPT, LowerPrecisionPass(level="O1"))
    casts = [(op.input, op.result.type) for op in module.walk() if isinstance(op, g.CastOp)]
    assert len(casts) == len(set(casts)), "a value was cast twice to the same type"
    c = counts(module)
    assert c["graph.cast"] <= 2 * c["graph.conv"] + 2


def test_lower_precision_bad_options_raise():
    # precision=bf16 is supported: see tests/test_bf16.py
    module, _, _ = zoo_case("mlp")
    with pytest.raises(DscError, match="unknown level"):
        apply(module, LowerPrecisionPass(level="O3"))
    with pytest.raises(DscError, match="unknown precision"):
        apply(module, LowerPrecisionPass(precision="int8"))


def test_lower_precision_saturates_masks():
    """An attention mask's -3.4e38 must not become -inf in float16 (0 * -inf = NaN)."""
    module, feeds, _ = zoo_case("bert_base")
    apply(module, *GRAPH_OPT, LowerPrecisionPass(level="O2"))
    for op in module.walk():
        if isinstance(op, g.ConstantOp) and op.blob.array is not None and op.blob.array.dtype == np.float16:
            assert np.all(np.isfinite(op.blob.array))
    feeds = dict(feeds)
    feeds["attention_mask"] = np.zeros_like(feeds["attention_mask"])  # everything masked
    assert np.all(np.isfinite(run_module(module, feeds)[0]))
