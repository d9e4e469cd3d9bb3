"""The default pipeline preserves semantics: the reference evaluator agrees after every pass.

Small zoo models are checked after each pass of the host and the sm_90
pipelines; the nine light models of the onnx package after the whole
pipeline (after each pass with DSC_FULL_ZOO=1, which takes minutes).
Tolerance: rtol 1e-4, atol 1e-4 (fp32; folding batch norm and reassociating
constants change rounding only).
"""

import glob
import os

import numpy as np
import onnx
import pytest

from dsc.dialects.asm import make_context
from dsc.frontends.onnx import import_onnx
from dsc.pipeline import parse_passes, pipeline_for
from dsc.reference import run_module
from dsc.targets import get_target
from dsc.tools import zoo

FULL = os.environ.get("DSC_FULL_ZOO") == "1"
LIGHT = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "*.onnx")))


def _feeds(model, module):
    from dsc.dialects.tensor_types import sig_of
    from dsc.reference.evaluator import arg_names, main_func

    f = main_func(module)
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal(sig_of(a.type).shape).astype(sig_of(a.type).dtype) for n, a in zip(arg_names(f), f.body.block.args)}


def check_pipeline(module, feeds, target: str, per_pass: bool):
    want = run_module(module, feeds)
    ctx = make_context()
    passes = parse_passes(",".join(spec for _, spec in pipeline_for(get_target(target))))
    for p in passes:
        p.apply(ctx, module)
        module.verify()
        if per_pass or p is passes[-1]:
            got = run_module(module, feeds)
            for g_, w in zip(got, want):
                np.testing.assert_allclose(g_, w, rtol=1e-4, atol=1e-4, err_msg=f"after pass {p.name}")


@pytest.mark.parametrize("target", ["host", "sm_90"])
@pytest.mark.parametrize("name", sorted(zoo.SMALL))
def test_small_zoo_every_pass(name, target):
    model = zoo.build(name, small=True)
    check_pipeline(import_onnx(model), zoo.example_inputs(model), target, per_pass=True)


@pytest.mark.parametrize("path", LIGHT, ids=lambda p: os.path.basename(p)[:-5])
def test_light_models(path):
    module = import_onnx(path)
    check_pipeline(module, _feeds(None, module), "host", per_pass=FULL)


def test_resnet_has_no_standalone_bn_or_relu_kernel():
    from dsc.dialects import graph as g
    from dsc.dialects import kernel as k

    module = import_onnx(zoo.build("resnet50", small=False, image=64, width=16))
    passes = parse_passes(",".join(spec for _, spec in pipeline_for(get_target("host"))))
    ctx = make_context()
    for p in passes:
        p.apply(ctx, module)
    kernels = [op for op in module.walk() if isinstance(op, k.FusedOp)]
    for kop in kernels:
        body = [op for op in kop.body.block.ops if not isinstance(op, k.YieldOp | g.ConstantOp)]
        assert not any(isinstance(op, g.BatchNormOp) for op in body), kop.sym_name.data
        if any(isinstance(op, g.ReluOp) for op in body):
            assert any(isinstance(op, g.ConvOp | g.GemmOp | g.MatMulOp) for op in body), f"standalone relu kernel {kop.sym_name.data}"
