"""Focused tests of the ONNX nn and reduce converters (nn.py, reduce.py) and
their reference kernels (kernels_nn.py, kernels_reduce.py).

Each model is built with onnx.helper, imported into dsc, evaluated with the
reference evaluator and compared with onnxruntime at rtol 1e-4 / atol 1e-5.
"""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import dsc
from dsc.dialects.asm import print_module
from dsc.frontends.onnx import import_onnx
from dsc.reference import run_module

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    """A model from (name, shape) float inputs, output names and numpy initializers."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # an IR version every onnxruntime in range reads
    return model


def _compare(model, feeds):
    """Import and evaluate with dsc, run with onnxruntime, assert close results."""
    module = import_onnx(model)
    got = run_module(module, feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert len(got) == len(want)
    for gv, wv in zip(got, want):
        assert gv.shape == wv.shape and gv.dtype == wv.dtype, (gv.shape, wv.shape, gv.dtype, wv.dtype)
        np.testing.assert_allclose(gv, wv, rtol=1e-4, atol=1e-5)
    return module


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------ conv


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad_groups_bias(auto_pad):
    # Height 6, stride 2, kernel 3: an odd total padding, which tells UPPER from LOWER.
    # (onnxruntime refuses dilations with SAME_*, so only VALID dilates here.)
    dilations = [2, 2] if auto_pad == "VALID" else [1, 1]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad=auto_pad, strides=[2, 1], dilations=dilations, group=2)
    model = _model([node], [("x", [2, 4, 6, 7])], ["y"], {"w": _x(6, 2, 3, 3), "b": _x(6)})
    module = _compare(model, {"x": _x(2, 4, 6, 7)})
    assert "pads = array<i64:" in print_module(module)  # auto_pad became explicit pads


@pytest.mark.parametrize("shape, kernel", [([1, 3, 11], [3]), ([1, 2, 5, 6, 7], [2, 3, 2])])
def test_conv_1d_3d_without_kernel_shape(shape, kernel):
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * (2 * len(kernel)), strides=[2] * len(kernel))
    model = _model([node], [("x", shape)], ["y"], {"w": _x(4, shape[1], *kernel)})
    _compare(model, {"x": _x(*shape)})


def test_depthwise_conv():
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=6, pads=[1, 1, 1, 1])
    model = _model([node], [("x", [1, 6, 9, 9])], ["y"], {"w": _x(12, 1, 3, 3)})
    _compare(model, {"x": _x(1, 6, 9, 9)})


# --------------------------------------------------------------- pooling


def test_pooling_ceil_mode_and_count_include_pad():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
        helper.make_node("AveragePool", ["x"], ["e"], kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
        helper.make_node("GlobalMaxPool", ["x"], ["gm"]),
        helper.make_node("GlobalAveragePool", ["x"], ["ga"]),
    ]
    model = _model(nodes, [("x", [2, 3, 8, 7])], ["m", "a", "e", "gm", "ga"], opset=19)
    _compare(model, {"x": _x(2, 3, 8, 7)})


def test_maxpool_indices_output_is_a_clear_error():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="pool_with_argmax")
    model = _model([node], [("x", [1, 1, 4, 4])], ["y"])
    with pytest.raises(dsc.DscError, match=r"node 'pool_with_argmax' \(MaxPool\).*Indices"):
        import_onnx(model)


# ---------------------------------------------------------- normalization


def test_cnn_head_batchnorm_lrn_gemm_softmax():
    c = 4
    stats = {"s": _x(c), "b": _x(c), "m": _x(c), "v": np.abs(_x(c)) + 0.5}
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("LRN", ["bn"], ["lrn"], size=3, alpha=1e-2, beta=0.75, bias=2.0),
        helper.make_node("Flatten", ["lrn"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "c"], ["fc"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Softmax", ["fc"], ["y"]),
    ]
    model = _model(nodes, [("x", [2, c, 3, 3])], ["y"], stats | {"w": _x(5, c * 9), "c": _x(5)}, opset=9)
    _compare(model, {"x": _x(2, c, 3, 3)})


def test_layer_norm_with_mean_and_inv_std_outputs():
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y", "mean", "inv_std"], axis=-2, epsilon=1e-3)
    model = _model([node], [("x", [2, 3, 4])], ["y", "mean", "inv_std"], {"s": _x(3, 4), "b": _x(3, 4)})
    _compare(model, {"x": _x(2, 3, 4)})


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_opset11_coerces_to_2d(op):
    # Before opset 13, axis=1 on [2, 3, 4] normalizes over 12 elements, not over 3.
    model = _model([helper.make_node(op, ["x"], ["y"], axis=1)], [("x", [2, 3, 4])], ["y"], opset=11)
    module = _compare(model, {"x": _x(2, 3, 4) * 3})
    ir = print_module(module)
    assert ir.count("graph.reshape") == 2 and "tensor<2x12xf32>" in ir


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_opset13_negative_axis(op):
    model = _model([helper.make_node(op, ["x"], ["y"], axis=-2)], [("x", [2, 3, 4])], ["y"], opset=13)
    module = _compare(model, {"x": _x(2, 3, 4) * 3})
    assert "graph.reshape" not in print_module(module)


# -------------------------------------------------------------- reductions


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_sum_axes_input(keepdims):
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=keepdims)
    model = _model([node], [("x", [2, 3, 4])], ["y"], {"axes": np.array([-1, 0], np.int64)}, opset=13)
    _compare(model, {"x": _x(2, 3, 4)})


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare"])
def test_reduce_axes_attribute_and_input(op):
    old = _model([helper.make_node(op, ["x"], ["y"], axes=[1], keepdims=0)], [("x", [2, 3, 4])], ["y"], opset=13)
    _compare(old, {"x": _x(2, 3, 4)})
    new = _model([helper.make_node(op, ["x", "axes"], ["y"])], [("x", [2, 3, 4])], ["y"], {"axes": np.array([-2], np.int64)}, opset=18)
    _compare(new, {"x": _x(2, 3, 4)})


def test_reduce_empty_axes_all_or_noop():
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["all"], keepdims=0),
        helper.make_node("ReduceMax", ["x"], ["same"], noop_with_empty_axes=1),
    ]
    model = _model(nodes, [("x", [2, 3])], ["all", "same"], opset=18)
    module = _compare(model, {"x": _x(2, 3)})
    assert "graph.reduce_max" not in print_module(module)
