"""Hopper's warpgroup MMA (sm_90a, backends/cuda/wgmma.py) without a GPU: the kernels on dsc's GPU emulator
(which decodes the shared-memory descriptors and the swizzle as the hardware does) against onnxruntime,
the PTX through ptxas for sm_90a, where wgmma applies and where mma.sync stays, and the preflight of an
architecture-specific artifact. The same cases run on the H200 in test_cuda_gpu.py."""

from __future__ import annotations

import io
import json
import sys
import zipfile

import pytest

import dsc
from dsc.backends.cuda import wgmma
from dsc.backends.cuda.codegen import ptxas
from dsc.backends.cuda.mma_pipe import PIPE_BIG, PIPE_MID, PIPE_SMALL, PIPE_WIDE
from dsc.backends.cuda.target import gpu_target
from dsc.pipeline import CompileOptions
from dsc.runtime.cuda_executor import gpu_preflight
from dsc.runtime.errors import TargetError

sys.path.insert(0, __import__("os").path.dirname(__file__))
from cuda_utils import PTXAS_REASON, WGMMA_CASES, _residual_model, check_mma, have_ptxas, wgmma_expected  # noqa: E402

needs_ptxas = pytest.mark.skipif(not have_ptxas(), reason=PTXAS_REASON)


def _artifact(data: bytes):
    z = zipfile.ZipFile(io.BytesIO(data))
    m = json.loads(z.read("manifest.json"))
    labels = [s["label"] for s in m["plan"]["schedule"] if s["op"] == "launch"]
    return m, z.read(m["gpu"]["member"]).decode(), labels


@pytest.mark.parametrize("kind", ["f16", "bf16", "tf32"])
@pytest.mark.parametrize("name", WGMMA_CASES)
def test_wgmma_gemm_on_emulator(name, kind, monkeypatch):
    labels = check_mma(name, kind, monkeypatch=monkeypatch, target="sm_90a")
    assert (f"({kind} tensor cores, wgmma)" in labels) == wgmma_expected(name, kind), labels


def test_warpgroup_plans():
    """Block tiles -> (warpgroups along m, along n, n per wgmma): 128x128 two stacked m64n128, 64x128 one
    m64n128, 64x64 one m64n64; 32x32 tiles (64 threads' worth of rows) stay on mma.sync."""
    assert wgmma.plan(PIPE_BIG) == (2, 1, 128)
    assert wgmma.plan(PIPE_WIDE) == (1, 1, 128)
    assert wgmma.plan(PIPE_MID) == (1, 1, 64)
    assert wgmma.plan(PIPE_SMALL) is None


def test_sm90a_target():
    t = gpu_target("sm_90a")
    assert t.wgmma and t.arch_specific and t.ptx_isa == (8, 0) and t.compute_capability == (9, 0)
    assert not gpu_target("sm_90").wgmma
    assert "sm_90a" in dsc.targets.TARGETS


@needs_ptxas
def test_wgmma_ptx_assembles_unserialized(monkeypatch):
    """The PTX for sm_90a holds wgmma with its fences and assembles; ptxas serializes none of them (it would
    warn when an accumulator is touched between a wgmma and its wait)."""
    from dsc.backends.cuda import target

    monkeypatch.setitem(target.SM_COUNT, "sm_90a", 1)  # big tiles
    mdl, _ = _residual_model(32, 128, 120, 16, batch=2)
    data = dsc.compile(mdl, "sm_90a", options=CompileOptions(precision="fp16"))
    m, ptx, labels = _artifact(data)
    assert m["gpu"]["sm"] == "sm_90a" and m["gpu"]["ptx_isa"] == "8.0"
    assert ".target sm_90a" in ptx and ".align 1024 .b8 dsc_smem[]" in ptx
    for needle in ("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16", "wgmma.fence.sync.aligned", "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned 0", "fence.proxy.async.shared::cta"):
        assert needle in ptx, needle
    assert sum("wgmma" in lab for lab in labels) >= 3, labels
    ok, log = ptxas(ptx, "sm_90a")
    assert ok, log[-3000:]
    assert "wgmma" not in log and "serializ" not in log, log


def test_unsuited_operands_stay_on_mma_sync(monkeypatch):
    """An NCHW im2col (a 3x3 convolution reading NCHW: no 16-byte runs along k) keeps mma.sync on sm_90a."""
    labels = check_mma("big-tiles", "f16", monkeypatch=monkeypatch, target="sm_90a")
    assert "tile 128x128" in labels and "wgmma" not in labels, labels


def test_sm90a_preflight():
    """Architecture-specific PTX runs on compute capability 9.0 alone: newer and older GPUs are refused, naming
    the target that would run."""
    gpu = {"sm": "sm_90a", "ptx_isa": "8.0"}
    gpu_preflight(gpu, (9, 0), 12080)
    with pytest.raises(TargetError, match=r"sm_90a \(compute capability 9.0 only\).*sm_100") as e:
        gpu_preflight(gpu, (10, 0), 13000, "B200")
    assert "--target sm_90" in e.value.hint
    with pytest.raises(TargetError, match="compute capability 9.0 only"):
        gpu_preflight(gpu, (8, 9), 13000, "L4")
    with pytest.raises(TargetError, match="PTX ISA 8.0"):
        gpu_preflight(gpu, (9, 0), 11080)
