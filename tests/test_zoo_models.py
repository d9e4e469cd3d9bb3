"""The model zoo imports and evaluates to onnxruntime's outputs (rtol 1e-4, atol 1e-4).

The small variants always run. The full-size models (ResNet-18/50,
MobileNetV2, EfficientNet-B0, BERT-base seq 128) run when DSC_FULL_ZOO=1
(`make test-zoo`), since the NumPy evaluator takes seconds per model.
"""

import os

import numpy as np
import onnxruntime as ort
import pytest

from dsc.frontends.onnx import import_onnx
from dsc.reference import run_module
from dsc.tools import zoo

RTOL = ATOL = 1e-4


def check_against_ort(model):
    feeds = zoo.example_inputs(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    got = run_module(import_onnx(model), feeds)
    assert len(got) == len(want)
    for g_, w in zip(got, want):
        assert g_.shape == w.shape and g_.dtype == w.dtype
        np.testing.assert_allclose(g_, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(zoo.SMALL))
def test_small_zoo_matches_onnxruntime(name):
    check_against_ort(zoo.build(name, small=True))


@pytest.mark.skipif(os.environ.get("DSC_FULL_ZOO") != "1", reason="full-size zoo runs with DSC_FULL_ZOO=1 (make test-zoo)")
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenetv2", "efficientnet_b0", "bert_base", "mlp"])
def test_full_zoo_matches_onnxruntime(name):
    check_against_ort(zoo.build(name))


def test_bert_shape_chains_fold_to_static_reshapes():
    from dsc.dialects import graph as g

    m = import_onnx(zoo.build("bert_base", small=True))
    ops = [op for op in m.walk()]
    assert any(isinstance(op, g.ReshapeOp) for op in ops)
    # torch's Shape -> Gather -> Concat chains leave no data-dependent shape ops behind
    assert not any(isinstance(op, g.ConcatOp) and all(isinstance(o.owner, g.ConstantOp) for o in op.operands) for op in ops)
