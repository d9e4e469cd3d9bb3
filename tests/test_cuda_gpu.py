"""The CUDA backend on a real GPU: every kernel kind and the small zoo, against onnxruntime.

Skipped, with the reason, where there is no CUDA GPU or no pycuda (CI). On the
GPU machine, tests/gpu/run_gpu.sh runs this file and the full-size models.
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cuda_utils import ALL_GPU, GPU_REASON, MMA_CASES, WGMMA_CASES, check, wgmma_expected, check_mma, compile_gpu, have_gpu, ort  # noqa: E402

pytestmark = pytest.mark.skipif(not have_gpu(), reason=GPU_REASON)

import dsc  # noqa: E402
import dsc.runtime  # noqa: E402
from dsc.runtime.errors import TargetError  # noqa: E402
from dsc.tools import zoo  # noqa: E402


def _cases():
    try:
        from test_cuda_codegen import KERNEL_CASES
    except Exception:  # pragma: no cover
        return {}
    return KERNEL_CASES


KERNEL_CASES = _cases()


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernels_on_gpu(name):
    for mdl, feeds, tol in KERNEL_CASES[name]():
        check(mdl, feeds, rtol=max(tol, 1e-4), atol=max(tol, 1e-4), device=None)


ZOO = [("resnet18", ()), ("mobilenetv2", ()), ("bert_base", ()), ("bert_base", ALL_GPU), ("mlp", ALL_GPU)]


@pytest.mark.parametrize("name,place", ZOO, ids=[f"{n}{'-allgpu' if p else ''}" for n, p in ZOO])
def test_small_zoo_on_gpu(name, place):
    mdl = zoo.build(name, small=True)
    feeds = zoo.example_inputs(mdl)
    sess = dsc.runtime.load(compile_gpu(mdl, "sm_90", place, emulate=False))
    got = sess.run(None, feeds)
    for g, w in zip(got, ort(mdl, feeds)):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3)
    for a, b in zip(sess.run(None, feeds), got):  # graph replay: same numbers
        np.testing.assert_array_equal(a, b)


def test_targets_cuda_and_sm80_ptx_run_on_newer_gpu():
    mdl = zoo.build("resnet18", small=True)
    feeds = zoo.example_inputs(mdl)
    want = ort(mdl, feeds)
    for target in ("cuda", "sm_87"):
        got = dsc.runtime.load(compile_gpu(mdl, target, ALL_GPU, emulate=False)).run(None, feeds)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=1e-3)


def test_device_array_input_and_graphs_off():
    torch = pytest.importorskip("torch")
    mdl = zoo.build("resnet18", small=True)
    feeds = zoo.example_inputs(mdl)
    data = compile_gpu(mdl, "sm_90", ALL_GPU, emulate=False)
    sess = dsc.runtime.load(data)
    want = sess.run(None, feeds)[0]
    x = torch.from_numpy(feeds["input"]).cuda()
    got = sess.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ex = sess.gpu_executor
    assert ex.use_graphs, ex.graph_note
    from dsc.runtime.artifact import read_artifact
    from dsc.runtime.cuda_executor import GpuExecutor

    plain = GpuExecutor(read_artifact(data), sess._native, ex.driver, use_graphs=False)
    np.testing.assert_allclose(plain.run([feeds["input"]])[0], want, rtol=1e-5, atol=1e-5)


def test_preflight_refuses_a_newer_sm(tmp_path):
    data = compile_gpu(zoo.build("mlp", small=True), "sm_90", emulate=False)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    m = json.loads(members["manifest.json"])
    m["gpu"]["sm"] = "sm_120"
    with zipfile.ZipFile(tmp_path / "new.dsc", "w") as z:
        z.writestr("manifest.json", json.dumps(m))
        for n, d in members.items():
            if n != "manifest.json":
                z.writestr(n, d)
    with pytest.raises(TargetError, match="compiled for sm_120"):
        dsc.runtime.load(str(tmp_path / "new.dsc"))


@pytest.mark.parametrize("kind", ["tf32", "f16", "bf16"])
@pytest.mark.parametrize("name", MMA_CASES)
def test_tensor_core_gemm_on_gpu(name, kind, monkeypatch):
    labels = check_mma(name, kind, device=None, monkeypatch=monkeypatch)
    assert f"({kind} tensor cores)" in labels, labels


# the cases whose GEMMs take wgmma on sm_90a (both operands contiguous along k: channels-last inputs, weights)
@pytest.mark.parametrize("kind", ["f16", "bf16", "tf32"])
@pytest.mark.parametrize("name", list(WGMMA_CASES) + ["residual-channels-last", "chain-channels-last", "tap-major-s2-batch2", "matmul-edges"])
def test_wgmma_gemm_on_gpu(name, kind, monkeypatch):
    """sm_90a: Hopper's warpgroup MMA from swizzled shared memory (and mma.sync where it does not apply),
    against the rounded-input reference."""
    labels = check_mma(name, kind, device=None, monkeypatch=monkeypatch, target="sm_90a")
    assert name not in WGMMA_CASES or ("wgmma" in labels) == wgmma_expected(name, kind), labels


def test_resnet18_fp16_sm90a_on_gpu():
    """ResNet-18 (full size, batch 8) in fp16 for sm_90a: wgmma kernels, within fp16 tolerance of fp32
    onnxruntime and of sm_90's mma.sync kernels."""
    from dsc.pipeline import CompileOptions

    mdl = zoo.build("resnet18", batch=8)
    feeds = zoo.example_inputs(mdl)
    data = dsc.compile(mdl, "sm_90a", options=CompileOptions(precision="fp16"))
    labels = [s["label"] for s in json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))["plan"]["schedule"] if s["op"] == "launch"]
    assert any("wgmma" in lab for lab in labels), labels
    got = dsc.runtime.load(data).run(None, feeds)[0]
    sync = dsc.runtime.load(dsc.compile(mdl, "sm_90", options=CompileOptions(precision="fp16"))).run(None, feeds)[0]
    want = ort(mdl, feeds)[0]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=3e-2, atol=3e-2 * scale)
    np.testing.assert_allclose(got, sync, rtol=1e-2, atol=1e-2 * scale)
