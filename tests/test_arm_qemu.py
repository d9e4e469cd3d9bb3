"""ARM64 (AArch64) code: cross-compiled from this machine, proven by running it under qemu-user.

`dsc.compile(model, target="aarch64" | "cortex-a78ae" | "orin-cpu")` produces an
artifact whose object code is AArch64. These tests link that object with the
C harness (tests/arm/harness.c, which calls the exported `dsc_run_single`)
using Debian's cross compiler, run it with qemu-aarch64 and compare the
outputs with onnxruntime's on this machine (rtol 1e-4, atol 1e-4). qemu
emulates the oldest CPU with the target's features (tests/arm/armrun.py:
QEMU_CPU), so code beyond the target's ISA level traps.

Needs `apt-get install -y qemu-user gcc-aarch64-linux-gnu` (CI installs
them); the running tests skip, saying so, without them. The full-size zoo
runs under qemu with DSC_FULL_ZOO=1 (about ten minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import dsc
import dsc.runtime
import dsc.runtime.artifact as artifact_mod
from dsc import TargetError
from dsc.tools import zoo
from dsc.tools.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent / "arm"))
import armrun  # noqa: E402

RTOL = ATOL = 1e-4
ARM_TARGETS = ["aarch64", "cortex-a78ae", "orin-cpu"]
NO_TOOLS = armrun.missing_tools()
needs_qemu = pytest.mark.skipif(NO_TOOLS is not None, reason=f"ARM64 code is run under qemu-user: {NO_TOOLS}")
needs_binutils = pytest.mark.skipif(shutil.which(armrun.OBJDUMP) is None, reason=f"{armrun.OBJDUMP} not found: {armrun.INSTALL_HINT}")

# /proc/cpuinfo of a Jetson AGX Orin (Cortex-A78AE), the Features line
ORIN_CPUINFO = "processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n"


def ort_run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def edge_model():
    """Several outputs: one computed (sigmoid, exp inside), one a reshape of it, one the input itself."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
        helper.make_node("Mul", ["s", "x"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "c"], ["y"], name="add"),
        helper.make_node("Reshape", ["y", "shape"], ["w"], name="reshape"),
        helper.make_node("Identity", ["x"], ["z"], name="id"),
    ]
    inits = [helper.make_tensor("c", TensorProto.FLOAT, [17], np.linspace(-2, 2, 17)), helper.make_tensor("shape", TensorProto.INT64, [2], [6, 17])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "w", "z")]
    gr = helper.make_graph(nodes, "edge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 17])], outs, inits)
    return helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)])


_cache: dict[tuple[str, str], bytes] = {}


def compiled(name: str, target: str) -> bytes:
    if (name, target) not in _cache:
        _cache[(name, target)] = dsc.compile(zoo.build(name, small=True), target=target)
    return _cache[(name, target)]


def members(data: bytes) -> dict[str, bytes]:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


# ------------------------------------------------------------------ compiling (no qemu needed)


@pytest.mark.parametrize("target", ARM_TARGETS)
def test_arm_targets_compile_to_aarch64_objects(target):
    m = members(compiled("mlp", target))
    manifest = json.loads(m["manifest.json"])
    assert manifest["target"]["name"] == target
    assert manifest["target"]["triple"].startswith("aarch64")
    assert "neon" in manifest["target"]["cpu_features"]
    if target != "aarch64":
        assert {"dotprod", "fullfp16"} <= set(manifest["target"]["cpu_features"])
    assert manifest["target"]["vector_width"] == 4  # NEON: 128-bit vectors
    obj = m["cpu/aarch64.o"]
    assert obj[:4] == b"\x7fELF" and int.from_bytes(obj[18:20], "little") == 183  # e_machine EM_AARCH64
    assert b"dsc_run_single\0" in obj and b"dsc_run\0" in obj


def test_inspect_shows_aarch64(tmp_path, capsys):
    onnx.save(zoo.build("mlp", small=True), tmp_path / "mlp.onnx")
    out = tmp_path / "mlp.dsc"
    assert main(["compile", str(tmp_path / "mlp.onnx"), "--target", "orin-cpu", "-o", str(out)]) == 0
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "orin-cpu (aarch64-unknown-linux-gnu, cpu cortex-a78ae" in text and "cpu/aarch64.o" in text


def test_orin_with_gpu():
    """Without the CUDA backend, `orin` is refused with a hint to use orin-cpu; with it, one artifact holds aarch64 + sm_87."""
    try:
        data = dsc.compile(zoo.build("mlp", small=True), target="orin")
    except TargetError as e:
        assert "GPU code generation" in str(e) and "--target orin-cpu" in e.hint
        return
    m = members(data)
    manifest = json.loads(m["manifest.json"])
    assert manifest["target"]["triple"].startswith("aarch64") and "sm_87" in json.dumps(manifest)
    assert "cpu/aarch64.o" in m


# ------------------------------------------------------------------ the runtime's preflight


@pytest.mark.skipif(artifact_mod.host_arch() == "aarch64", reason="this machine is ARM64: the artifact is loadable here")
def test_runtime_refuses_arm_artifact_on_this_machine(tmp_path):
    p = tmp_path / "arm.dsc"
    p.write_bytes(compiled("mlp", "cortex-a78ae"))
    with pytest.raises(TargetError, match=f"compiled for aarch64 \\(target 'cortex-a78ae'\\), this machine is {artifact_mod.host_arch()}") as e:
        dsc.runtime.load(str(p))
    assert "ARM64 machine" in e.value.hint and "--target host" in e.value.hint


def test_arm_runtime_refuses_x86_artifact(tmp_path, monkeypatch):
    p = tmp_path / "x86.dsc"
    p.write_bytes(dsc.compile(zoo.build("mlp", small=True), target="x86-64"))
    monkeypatch.setattr(artifact_mod, "host_arch", lambda: "aarch64")
    with pytest.raises(TargetError, match="compiled for x86_64 \\(target 'x86-64'\\), this machine is aarch64") as e:
        dsc.runtime.load(str(p))
    assert "aarch64, cortex-a78ae or orin-cpu" in e.value.hint


def test_arm64_cpu_features_from_cpuinfo():
    feats = artifact_mod.arm64_features_from_cpuinfo(ORIN_CPUINFO)
    assert {"neon", "dotprod", "fullfp16", "lse", "crc"} <= feats


def test_preflight_on_a_jetson(monkeypatch):
    """On an Orin, an orin-cpu artifact passes preflight (LLVM's host detection alone misses dotprod/fullfp16)."""
    art = artifact_mod.read_artifact(compiled("mlp", "orin-cpu"))
    monkeypatch.setattr(artifact_mod, "host_arch", lambda: "aarch64")
    monkeypatch.setattr(artifact_mod, "host_cpu_features", lambda: artifact_mod.arm64_features_from_cpuinfo(ORIN_CPUINFO))
    artifact_mod.preflight(art)
    # an ARMv8.0 board (Cortex-A72: no dotprod, no fp16 arithmetic) is told to use the generic target
    monkeypatch.setattr(artifact_mod, "host_cpu_features", lambda: {"neon", "fp-armv8", "crc"})
    with pytest.raises(TargetError, match="lacks: dotprod, fullfp16") as e:
        artifact_mod.preflight(art)
    assert "--target aarch64" in e.value.hint
    artifact_mod.preflight(artifact_mod.read_artifact(compiled("mlp", "aarch64")))


# ------------------------------------------------------------------ the object code


@needs_binutils
def test_neon_fma_in_hot_loops(tmp_path):
    """The conv/gemm micro-kernels' loops are NEON fused multiply-adds on 4 x f32 vectors."""
    obj = tmp_path / "m.o"
    obj.write_bytes(members(compiled("resnet18", "cortex-a78ae"))["cpu/aarch64.o"])
    lines = [ln for ln in armrun.disassemble(obj).splitlines() if re.match(r"^\s+[0-9a-f]+:\t", ln)]
    addrs = [int(ln.split(":")[0], 16) for ln in lines]
    at = {a: i for i, a in enumerate(addrs)}
    best = 0.0
    for i, ln in enumerate(lines):  # loops = backward branches; the densest in fmla v.4s
        m = re.search(r"\tb\.\w+\s+([0-9a-f]+)", ln)
        if m and int(m.group(1), 16) < addrs[i] and int(m.group(1), 16) in at:
            body = lines[at[int(m.group(1), 16)] : i + 1]
            if len(body) >= 8:
                best = max(best, sum(bool(re.search(r"\tfmla\s+v\d+\.4s", x)) for x in body) / len(body))
    assert sum(bool(re.search(r"\tfmla\s+v\d+\.4s", x)) for x in lines) > 100
    assert best > 0.5, f"no loop is mostly fmla v.4s (best {best:.2f})"
    # no libm call; from libc only the waits of the worker threads (they sleep when idle)
    assert set(armrun.undefined_symbols(obj)) <= {"sched_yield", "usleep", "syscall"}


# ------------------------------------------------------------------ running it under qemu


def check_under_qemu(model, target, tmp_path, data: bytes | None = None):
    feeds = zoo.example_inputs(model)
    data = data if data is not None else dsc.compile(model, target=target)
    got = armrun.run_artifact(data, feeds, tmp_path)
    want = ort_run(model, feeds)
    assert len(got) == len(want)
    for g_, w in zip(got, want):
        assert g_.shape == w.shape and g_.dtype == w.dtype
        np.testing.assert_allclose(g_, w, rtol=RTOL, atol=ATOL)


@needs_qemu
@pytest.mark.parametrize(
    "name,target",
    [(n, "cortex-a78ae") for n in ("resnet18", "mobilenetv2", "bert_base", "efficientnet_b0", "mlp")] + [("resnet18", "aarch64"), ("bert_base", "aarch64"), ("mlp", "orin-cpu")],
)
def test_small_zoo_under_qemu_matches_onnxruntime(name, target, tmp_path):
    check_under_qemu(zoo.build(name, small=True), target, tmp_path, compiled(name, target))


@needs_qemu
def test_outputs_that_alias_under_qemu(tmp_path):
    """Several outputs, one a reshape of another, one the input itself (copied by the host, not dsc_run)."""
    check_under_qemu(edge_model(), "aarch64", tmp_path)


@pytest.mark.skipif(shutil.which("gcc") is None or artifact_mod.host_arch() != "x86_64", reason="needs gcc on an x86-64 machine")
def test_c_entry_point_on_this_machine(tmp_path):
    """The same harness, linked natively (gcc, default PIE) with an x86-64 object: the C entry point is not ARM-only."""
    model = zoo.build("resnet18", small=True)
    feeds = zoo.example_inputs(model)
    manifest = armrun.extract(dsc.compile(model, target="x86-64"), feeds, tmp_path, arch="x86_64")
    armrun.build(tmp_path, cc="gcc")
    got = armrun.run(tmp_path, manifest, native=True)
    for g_, w in zip(got, ort_run(model, feeds), strict=True):
        np.testing.assert_allclose(g_, w, rtol=RTOL, atol=ATOL)


@needs_qemu
def test_harness_rejects_wrong_input_size(tmp_path):
    data = compiled("mlp", "aarch64")
    feeds = zoo.example_inputs(zoo.build("mlp", small=True))
    manifest = armrun.extract(data, feeds, tmp_path)
    armrun.build(tmp_path)
    (tmp_path / "in0.bin").write_bytes(b"\0" * 12)
    r = subprocess.run([armrun.QEMU, "./run", "io.txt"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "the model takes" in r.stderr
    assert manifest["target"]["name"] == "aarch64"


@needs_qemu
@pytest.mark.skipif(os.environ.get("DSC_FULL_ZOO") != "1", reason="the full-size zoo runs under qemu with DSC_FULL_ZOO=1 (DSC_FULL_ZOO=1 make test)")
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "efficientnet_b0", "bert_base", "mlp"])
def test_full_zoo_under_qemu_matches_onnxruntime(name, tmp_path):
    check_under_qemu(zoo.build(name), "cortex-a78ae", tmp_path)


# ------------------------------------------------------------------ dsc.runtime itself on ARM64

ARM64_PYTHON_DIR = os.environ.get("DSC_ARM64_PYTHON_DIR")


@needs_qemu
@pytest.mark.skipif(not ARM64_PYTHON_DIR, reason="an AArch64 Python with numpy and llvmlite under qemu: build it with tests/arm/arm64_python.sh DIR, then set DSC_ARM64_PYTHON_DIR=DIR")
@pytest.mark.parametrize("name,threads", [("mlp", 1), ("resnet18", 2), ("bert_base", 4)])
def test_python_runtime_on_arm64(name, threads, tmp_path):
    """dsc.runtime on an ARM64 Python loads an ARM artifact (preflight, MCJIT, threads) as on x86."""
    root, site = Path(ARM64_PYTHON_DIR) / "root", Path(ARM64_PYTHON_DIR) / "site"
    repo = Path(__file__).resolve().parent.parent
    pkg = tmp_path / "pkg" / "dsc"  # the runtime alone, as a user on a Jetson would have it
    shutil.copytree(repo / "runtime", pkg / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "compiler" / "__init__.py", pkg / "__init__.py")
    model = zoo.build(name, small=True)
    feeds = zoo.example_inputs(model)
    (tmp_path / "m.dsc").write_bytes(compiled(name, "aarch64"))  # qemu shows the host's /proc/cpuinfo: no dotprod
    np.savez(tmp_path / "feeds.npz", **feeds)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'pkg'}:{site}", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [armrun.QEMU, "-L", str(root), str(root / "usr/bin/python3.11"), str(repo / "tests/arm/runtime_run.py"), "m.dsc", "feeds.npz", "out.npz", str(threads)]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("aarch64: ")
    got = list(np.load(tmp_path / "out.npz").values())
    for g_, w in zip(got, ort_run(model, feeds), strict=True):
        np.testing.assert_allclose(g_, w, rtol=RTOL, atol=ATOL)
