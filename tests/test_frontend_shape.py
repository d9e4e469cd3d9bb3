"""Focused tests of the ONNX shape and tensor converters (shape.py, tensor.py)
and the data-movement reference kernels, each checked against onnxruntime.

Models are built with onnx.helper; every comparison imports the model into
dsc, evaluates it with the reference evaluator and runs it in onnxruntime.
"""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import dsc
from dsc.dialects.asm import print_module
from dsc.frontends.onnx import import_onnx
from dsc.reference import run_module

F, I64 = TensorProto.FLOAT, TensorProto.INT64
INT_MAX, INT_MIN = 2**63 - 1, -(2**63)
RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    """A model from (name, elem_type, shape) inputs/outputs and numpy initializers."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # an IR version every onnxruntime in range reads
    return model


def _compare(model, feeds, **import_kw):
    """Import and evaluate with dsc, run with onnxruntime, assert equal results."""
    module = import_onnx(model, **import_kw)
    got = run_module(module, feeds)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    assert len(got) == len(want)
    for gv, wv in zip(got, want):
        assert gv.shape == wv.shape and gv.dtype == wv.dtype, (gv.shape, wv.shape, gv.dtype, wv.dtype)
        np.testing.assert_allclose(gv, wv, rtol=1e-6, atol=1e-6)
    return module


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _const(name, value):
    """A Constant node, as torch exports scalars and small shape tensors."""
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value)))


# ------------------------------------------------------------ the brief


def test_torch_dynamic_reshape_chain_folds_to_static_reshape():
    # x.view(x.size(0), -1) as torch exports it.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        _const("i0", np.int64(0)),
        helper.make_node("Gather", ["s", "i0"], ["d0"], axis=0),
        _const("ax", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["d0", "ax"], ["d0u"]),
        _const("m1", np.array([-1], np.int64)),
        helper.make_node("Concat", ["d0u", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"], name="view"),
    ]
    model = _model(nodes, [("x", F, [2, 3, 4])], [("y", F, [2, 12])])
    module = _compare(model, {"x": _x(2, 3, 4)})
    ir = print_module(module)
    assert "graph.reshape" in ir
    for folded in ("graph.gather", "graph.concat", "graph.slice"):
        assert folded not in ir, ir
    ops = [op.name for op in module.walk() if op.name.startswith("graph.") and op.name != "graph.constant"]
    assert ops == ["graph.reshape"]


@pytest.mark.parametrize(
    "starts, ends, axes, steps",
    [
        ([-1, 4], [INT_MIN, 0], [0, 1], [-1, -2]),  # reverse axis 0, every other of axis 1 backwards
        ([INT_MAX], [-7], [1], [-3]),  # start clamps to dim - 1, end below -dim clamps to -1
        ([3, -2], [1, INT_MIN], [-2, -1], [-1, -1]),  # negative axes
        ([1], [1], [0], [-1]),  # empty
    ],
)
def test_slice_negative_steps(starts, ends, axes, steps):
    inits = {k: np.array(v, np.int64) for k, v in zip(("starts", "ends", "axes", "steps"), (starts, ends, axes, steps))}
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])
    model = _model([node], [("x", F, [5, 6])], [("y", F, None)], inits)
    _compare(model, {"x": _x(5, 6)})


def test_split_into_three_outputs():
    node = helper.make_node("Split", ["x", "split"], ["a", "b", "c"], axis=1)
    outs = [(n, F, None) for n in "abc"]
    model = _model([node], [("x", F, [2, 6, 3])], outs, {"split": np.array([1, 2, 3], np.int64)}, opset=13)
    module = _compare(model, {"x": _x(2, 6, 3)})
    assert sum(op.name == "graph.slice" for op in module.walk()) == 3


def test_split_num_outputs_uneven_opset18():
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=-1, num_outputs=3)
    model = _model([node], [("x", F, [2, 7])], [(n, F, None) for n in "abc"], opset=18)
    _compare(model, {"x": _x(2, 7)})


def test_reshape_with_runtime_shape_is_a_clear_error():
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="my_reshape")
    model = _model([node], [("x", F, [2, 3]), ("shape", I64, [2])], [("y", F, None)])
    with pytest.raises(dsc.DscError, match=r"node 'my_reshape' \(Reshape\).*shape.*must be constant"):
        import_onnx(model)


def test_symbolic_dim_needs_input_shape():
    node = helper.make_node("Transpose", ["x"], ["y"])
    model = _model([node], [("x", F, ["batch", 3])], [("y", F, [3, "batch"])])
    with pytest.raises(dsc.DscError, match="batch") as info:
        import_onnx(model)
    assert "--input-shape" in (info.value.hint or "")
    _compare(model, {"x": _x(2, 3)}, input_shapes={"x": (2, 3)})


# ------------------------------------------------------- more per op


@pytest.mark.parametrize("spec, allowzero", [([0, -1], 0), ([0, 2, 2], 0), ([-1], 0), ([2, 2, 3, 1], 1)])
def test_reshape_zero_and_minus_one(spec, allowzero):
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=allowzero)
    model = _model([node], [("x", F, [3, 4])], [("y", F, None)], {"shape": np.array(spec, np.int64)}, opset=14)
    _compare(model, {"x": _x(3, 4)})


@pytest.mark.parametrize("axis", [0, 2, -1, -3])
def test_flatten(axis):
    model = _model([helper.make_node("Flatten", ["x"], ["y"], axis=axis)], [("x", F, [2, 3, 4])], [("y", F, None)])
    _compare(model, {"x": _x(2, 3, 4)})


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_axes_attribute_and_input(opset):
    if opset < 13:
        nodes = [
            helper.make_node("Squeeze", ["x"], ["s"], axes=[-2]),
            helper.make_node("Unsqueeze", ["s"], ["y"], axes=[-1, 0]),
        ]
        inits = {}
    else:
        nodes = [helper.make_node("Squeeze", ["x", "sa"], ["s"]), helper.make_node("Unsqueeze", ["s", "ua"], ["y"])]
        inits = {"sa": np.array([-2], np.int64), "ua": np.array([-1, 0], np.int64)}
    model = _model(nodes + [helper.make_node("Squeeze", ["y"], ["z"])], [("x", F, [2, 1, 3])], [("y", F, None), ("z", F, None)], inits, opset)
    _compare(model, {"x": _x(2, 1, 3)})


def test_transpose_default_and_perm():
    nodes = [helper.make_node("Transpose", ["x"], ["y"]), helper.make_node("Transpose", ["x"], ["z"], perm=[1, 2, 0])]
    model = _model(nodes, [("x", F, [2, 3, 4])], [("y", F, None), ("z", F, None)])
    _compare(model, {"x": _x(2, 3, 4)})


def test_concat_negative_axis():
    node = helper.make_node("Concat", ["a", "b"], ["y"], axis=-2)
    model = _model([node], [("a", F, [2, 1, 3]), ("b", F, [2, 4, 3])], [("y", F, None)])
    _compare(model, {"a": _x(2, 1, 3), "b": _x(2, 4, 3)})


def test_gather_negative_indices_on_axis_1():
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=-2)
    model = _model([node], [("x", F, [2, 4, 3]), ("i", I64, [2, 2])], [("y", F, None)])
    _compare(model, {"x": _x(2, 4, 3), "i": np.array([[-1, 0], [-4, 2]], np.int64)})


@pytest.mark.parametrize("shape", [[2, 1, 4], [3, 1], [1]])
def test_expand_is_bidirectional(shape):
    node = helper.make_node("Expand", ["x", "shape"], ["y"])
    model = _model([node], [("x", F, [3, 1])], [("y", F, None)], {"shape": np.array(shape, np.int64)})
    _compare(model, {"x": _x(3, 1)})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", [[1, 2, 2, 0], [0, -1, 1, 2], [-1, 0, 0, -2]])
def test_pad_modes_and_negative_pads(mode, pads):
    nodes = [_const("cv", np.float32(1.5)), helper.make_node("Pad", ["x", "pads", "cv"], ["y"], mode=mode)]
    model = _model(nodes, [("x", F, [3, 4])], [("y", F, None)], {"pads": np.array(pads, np.int64)})
    _compare(model, {"x": _x(3, 4)})


def test_pad_opset2_attributes_and_opset18_axes():
    old = _model([helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 1, 0], value=2.0)], [("x", F, [2, 3])], [("y", F, None)], opset=2)
    _compare(old, {"x": _x(2, 3)})
    node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], mode="edge")
    inits = {"pads": np.array([2, 1], np.int64), "axes": np.array([-1], np.int64)}
    new = _model([node], [("x", F, [2, 3])], [("y", F, None)], inits, opset=18)
    _compare(new, {"x": _x(2, 3)})


def test_slice_opset1_attributes():
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[1000, -1], axes=[0, 2])
    model = _model([node], [("x", F, [3, 2, 5])], [("y", F, None)], opset=9)
    _compare(model, {"x": _x(3, 2, 5)})


@pytest.mark.parametrize("repeats", [[2, 3], [1, 1], [3, 0]])
def test_tile(repeats):
    node = helper.make_node("Tile", ["x", "r"], ["y"])
    model = _model([node], [("x", F, [2, 3])], [("y", F, None)], {"r": np.array(repeats, np.int64)})
    _compare(model, {"x": _x(2, 3)})


def test_shape_start_end_and_size():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], start=-2),
        helper.make_node("Shape", ["x"], ["t"], start=1, end=-1),
        helper.make_node("Size", ["x"], ["n"]),
    ]
    model = _model(nodes, [("x", F, [2, 3, 4])], [("s", I64, None), ("t", I64, None), ("n", I64, None)], opset=15)
    module = _compare(model, {"x": _x(2, 3, 4)})
    assert not [op for op in module.walk() if op.name.startswith("graph.") and op.name != "graph.constant"]


def test_constants_constant_of_shape_and_range():
    nodes = [
        helper.make_node("Constant", [], ["a"], value_float=2.5),
        helper.make_node("Constant", [], ["b"], value_ints=[1, 2, 3]),
        helper.make_node("ConstantOfShape", ["shp"], ["c"], value=numpy_helper.from_array(np.array([7], np.int32))),
        helper.make_node("ConstantOfShape", ["shp"], ["d"]),
        helper.make_node("Range", ["r0", "r1", "r2"], ["e"]),
        helper.make_node("Add", ["x", "a"], ["f"]),
    ]
    inits = {"shp": np.array([2, 3], np.int64), "r0": np.array([10], np.int64), "r1": np.array([1], np.int64), "r2": np.array([-3], np.int64)}
    # Range takes scalars: reshape the 1-element initializers first.
    nodes = [helper.make_node("Squeeze", [k], [k + "s"]) for k in ("r0", "r1", "r2")] + nodes
    nodes[-2] = helper.make_node("Range", ["r0s", "r1s", "r2s"], ["e"])
    outs = [("b", I64, None), ("c", TensorProto.INT32, None), ("d", F, None), ("e", I64, None), ("f", F, None)]
    model = _model(nodes, [("x", F, [2])], outs, inits)
    _compare(model, {"x": _x(2)})


def test_sparse_constant_is_unsupported():
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0], np.float32), "v"), numpy_helper.from_array(np.array([1], np.int64), "i"), [3]
    )
    node = helper.make_node("Constant", [], ["y"], sparse_value=sparse, name="sp")
    model = _model([node], [], [("y", F, [3])])
    with pytest.raises(dsc.UnsupportedOpError, match=r"node 'sp'.*sparse_value"):
        import_onnx(model)
