"""bfloat16 mixed precision: lower-precision{precision=bf16}, the reference
evaluator on bfloat16 graphs, bfloat16 constants through print/parse, and
`dsc compile --precision bf16`.

bfloat16 is ml_dtypes' NumPy dtype (`dsc.dialects.tensor_types.BFLOAT16`):
8 significant bits and float32's exponent range.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from dsc.dialects import graph as g
from dsc.dialects.asm import parse_module, print_module
from dsc.dialects.tensor_types import BFLOAT16, element_type, numpy_dtype, sig_of
from dsc.passes.lower_precision import LowerPrecisionPass
from dsc.reference import run_module
from dsc.reference.evaluator import main_func
from dsc.tools import zoo
from dsc.tools.cli import main
from test_passes_cleanup import GRAPH_OPT, ZOO, apply, counts, zoo_case
from xdsl.dialects.builtin import bf16

# bfloat16 keeps 8 significant bits: unit roundoff 2**-9 = 2.0e-3, 4x
# float16's. Every bfloat16 op rounds its result once (the reference computes
# bfloat16 ops in float32, convolutions and matmuls accumulating in float32),
# and through the ~20 layers of the small zoo models the error measured
# against the float32 result, as max|got - want| / max(1, max|want|), is at
# most 9.9e-3 (MobileNetV2 at O1; ResNet-18 5.0e-3, BERT 7.8e-3 at O2, MLP
# 5.7e-3, EfficientNet-B0 2.4e-3), about 7x float16's errors on the same
# models. rtol 5e-2 and an atol of 5e-2 times the output's largest magnitude
# leave a 5x margin over that worst case while still catching a wrong cast, a
# missing rounding or an overflow (errors of order 1, inf or NaN).
BF16_RTOL = 5e-2
BF16_ATOL = 5e-2


def test_bf16_maps_to_ml_dtypes_bfloat16():
    assert BFLOAT16 == np.dtype(ml_dtypes.bfloat16)
    assert element_type(BFLOAT16) == bf16
    assert numpy_dtype(bf16) == BFLOAT16


@pytest.mark.parametrize("level", ["O1", "O2"])
@pytest.mark.parametrize("name", ZOO)
def test_lower_precision_bf16_zoo(name, level):
    module, feeds, want = zoo_case(name)
    apply(module, *GRAPH_OPT)
    signature = main_func(module).function_type
    apply(module, LowerPrecisionPass(precision="bf16", level=level))
    assert main_func(module).function_type == signature  # graph inputs and outputs keep their dtypes
    got = run_module(module, feeds)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=BF16_RTOL, atol=BF16_ATOL * max(1.0, float(np.max(np.abs(b)))))
        assert not np.array_equal(a, b)  # bfloat16 really ran: results differ from float32
    dtypes = set()
    for op in module.walk():
        if isinstance(op, g.ConvOp | g.MatMulOp | g.GemmOp):
            assert sig_of(op.result.type).dtype == BFLOAT16, op.name
        if isinstance(op, g.SoftmaxOp | g.LayerNormOp | g.ReduceOp):
            assert sig_of(op.result.type).dtype == np.float32, op.name
        if level == "O1" and isinstance(op, g.AddOp | g.MulOp | g.SigmoidOp) and sig_of(op.result.type).dtype == BFLOAT16:
            # autocast: an unlisted op runs in bfloat16 only when its inputs already are (no cast into it)
            assert not any(isinstance(v.owner, g.CastOp) for v in op.operands), op.name
        if isinstance(op, g.CastOp):  # no bf16 -> f32 -> bf16 pair left
            inner = op.input.owner
            assert not (isinstance(inner, g.CastOp) and sig_of(inner.input.type).dtype == BFLOAT16), "uncancelled cast pair"
        if isinstance(op, g.GraphOp | g.ConstantOp):
            dtypes.update(sig_of(r.type).dtype for r in op.results)
    assert np.dtype(np.float16) not in dtypes


@pytest.mark.parametrize("name", ["resnet18", "bert_base"])
def test_bf16_casts_like_fp16(name):
    """bf16 and fp16 lower the same ops, so they need exactly as many casts."""
    for level in ("O1", "O2"):
        fp16, _, _ = zoo_case(name)
        bf, _, _ = zoo_case(name)
        apply(fp16, *GRAPH_OPT, LowerPrecisionPass(precision="fp16", level=level))
        apply(bf, *GRAPH_OPT, LowerPrecisionPass(precision="bf16", level=level))
        assert counts(bf) == counts(fp16)


def test_lower_precision_bf16_saturates_masks():
    """float32's lowest, -3.4028e38, rounds to -inf in bfloat16: the constant must saturate instead."""
    assert np.isinf(np.float32(np.finfo(np.float32).min).astype(BFLOAT16))
    module, feeds, _ = zoo_case("bert_base")
    apply(module, *GRAPH_OPT, LowerPrecisionPass(precision="bf16", level="O2"))
    lowered = [op for op in module.walk() if isinstance(op, g.ConstantOp) and op.blob.array is not None and op.blob.array.dtype == BFLOAT16]
    assert lowered and all("_bf16_" in op.blob.key for op in lowered)  # <key>_bf16_<content hash>
    for op in lowered:
        assert np.all(np.isfinite(op.blob.array.astype(np.float32)))
    feeds = dict(feeds)
    feeds["attention_mask"] = np.zeros_like(feeds["attention_mask"])  # everything masked
    assert np.all(np.isfinite(run_module(module, feeds)[0]))


def test_bf16_module_round_trips_through_print_and_parse():
    module, feeds, _ = zoo_case("bert_base")
    apply(module, *GRAPH_OPT, LowerPrecisionPass(precision="bf16", level="O2"))
    text = print_module(module)
    assert "xbf16>" in text
    parsed = parse_module(text)
    assert print_module(parsed) == text
    before = {op.blob.key: op.blob.array for op in module.walk() if isinstance(op, g.ConstantOp)}
    after = {op.blob.key: op.blob.array for op in parsed.walk() if isinstance(op, g.ConstantOp)}
    assert before.keys() == after.keys()
    assert any(a.dtype == BFLOAT16 for a in after.values())
    for key, arr in after.items():
        assert arr.dtype == before[key].dtype and arr.tobytes() == before[key].tobytes(), key
    for a, b in zip(run_module(parsed, feeds), run_module(module, feeds)):
        np.testing.assert_array_equal(a, b)


def test_bf16_small_constants_parse_inline_and_print_as_resources():
    text = """builtin.module {
  func.func @main(%x: tensor<2xbf16>) -> tensor<2xf32> {
    %c = graph.constant dense<[1.5, -3.0]> : tensor<2xbf16>
    %y = graph.add %x, %c : (tensor<2xbf16>, tensor<2xbf16>) -> tensor<2xbf16>
    %z = graph.cast %y : (tensor<2xbf16>) -> tensor<2xf32>
    func.return %z : tensor<2xf32>
  }
}"""
    module = parse_module(text)
    printed = print_module(module)
    assert "dense_resource<" in printed  # bfloat16 has no exact float literal path: always a resource
    again = parse_module(printed)
    # 1 + 2**-8 is not a bfloat16: the input rounds to 1.0, the sum to bfloat16
    x = np.array([1 + 2**-8, 0.1], dtype=np.float32).astype(BFLOAT16)
    want = (x.astype(np.float32) + np.array([1.5, -3.0], np.float32)).astype(BFLOAT16).astype(np.float32)
    for m in (module, again):
        (got,) = run_module(m, [x])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_reference_bf16_ops_round_once_from_float32():
    """A bfloat16 op computes in float32 and rounds its result once (no NumPy bfloat16 arithmetic)."""
    from dsc.reference.evaluator import evaluate_op
    from dsc.dialects.tensor_types import tensor_type

    x = (np.arange(-8, 8, dtype=np.float32) / 3).reshape(4, 4).astype(BFLOAT16)
    t = tensor_type((4, 4), BFLOAT16)
    cst = g.ConstantOp.from_array(np.asarray(x), "x")
    for op_cls, ref in ((g.SigmoidOp, lambda v: 1 / (1 + np.exp(-v))), (g.ReluOp, lambda v: np.maximum(v, 0))):
        op = op_cls.make([cst.result], result_types=[t])
        (got,) = evaluate_op(op, [x])
        assert got.dtype == BFLOAT16
        np.testing.assert_array_equal(got.astype(np.float32), ref(x.astype(np.float32)).astype(BFLOAT16).astype(np.float32))
    mm = g.MatMulOp.make([cst.result, cst.result], result_types=[t])
    (got,) = evaluate_op(mm, [x, x])
    xf = x.astype(np.float32)
    np.testing.assert_array_equal(got.astype(np.float32), (xf @ xf).astype(BFLOAT16).astype(np.float32))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "resnet18_small.onnx"
    onnx.save(zoo.build("resnet18", small=True), p)
    return str(p)


def test_cli_compile_bf16_to_memory_planning(model_path, tmp_path, capsys):
    out = tmp_path / "planned.mlir"
    assert main(["compile", model_path, "--precision", "bf16", "--compile-to", "memory-planning", "-o", str(out)]) == 0
    assert "xbf16>" in out.read_text()


def test_cli_compile_bf16_artifact_for_cpu_fails_clearly(model_path, tmp_path, capsys):
    out = tmp_path / "m.dsc"
    assert main(["compile", model_path, "--precision", "bf16", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the CPU backend has no code for bfloat16 tensors" in err
    assert "--precision fp32" in err
    assert not out.exists()


def test_lower_precision_bf16_cancels_bf16_f32_bf16_casts():
    """canonicalize's cast-of-cast does not know bfloat16: lower-precision cancels bf16 -> f32 -> bf16 itself."""
    module = parse_module("""builtin.module {
  func.func @main(%h: tensor<3x2xbf16>) -> tensor<3x1xf32> {
    %w = graph.constant dense<[[1.0e+05], [-3.4028235e+38]]> : tensor<2x1xf32>
    %x = graph.cast %h : (tensor<3x2xbf16>) -> tensor<3x2xf32>
    %m = graph.matmul %x, %w : (tensor<3x2xf32>, tensor<2x1xf32>) -> tensor<3x1xf32>
    func.return %m : tensor<3x1xf32>
  }
}""")
    apply(module, LowerPrecisionPass(precision="bf16", level="O1"))
    (mm,) = [op for op in module.walk() if isinstance(op, g.MatMulOp)]
    assert mm.operands[0] is main_func(module).body.block.args[0]
    assert counts(module)["graph.cast"] == 1  # the result's, back to f32
    w = mm.operands[1].owner.blob.array.astype(np.float32)
    assert np.all(np.isfinite(w)) and w[1, 0] == -float(ml_dtypes.finfo(BFLOAT16).max)
