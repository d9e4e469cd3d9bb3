"""The CUDA backend without a GPU: PTX for every SM (checked by ptxas), the artifact, the plan, the preflight,
and every kind of GPU kernel checked numerically on dsc's GPU emulator against onnxruntime.

GPU execution itself is in test_cuda_gpu.py (skipped without a GPU).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from onnx import helper

import dsc
import dsc.runtime
from dsc.backends.cuda.codegen import ptxas
from dsc.backends.cuda.target import PTX_ISA
from dsc.runtime.cuda_executor import driver_ptx_isa, gpu_preflight
from dsc.runtime.errors import DscError, TargetError
from dsc.tools import zoo

sys.path.insert(0, __import__("os").path.dirname(__file__))
from cuda_utils import ALL_GPU, F, I64, PTXAS_REASON, check, compile_gpu, conv_model, have_ptxas, model, ort, rand, run_gpu  # noqa: E402

needs_ptxas = pytest.mark.skipif(not have_ptxas(), reason=PTXAS_REASON)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def manifest(data: bytes) -> dict:
    return json.loads(members(data)["manifest.json"])


# ------------------------------------------------------------ the zoo: PTX for each SM, assembled by ptxas

ZOO_TARGETS = [(name, "sm_90", ALL_GPU) for name in ("resnet18", "resnet50", "mobilenetv2", "efficientnet_b0", "bert_base", "mlp")]
ZOO_TARGETS += [(name, t, ()) for name in ("resnet18", "mobilenetv2", "bert_base") for t in ("cuda", "sm_87")]


@pytest.fixture(scope="module")
def zoo_artifacts():
    cache = {}

    def get(name, target, place):
        key = (name, target, place)
        if key not in cache:
            cache[key] = compile_gpu(zoo.build(name, small=True), target, place, emulate=False)
        return cache[key]

    return get


@needs_ptxas
@pytest.mark.parametrize("name,target,place", ZOO_TARGETS, ids=[f"{n}-{t}{'-allgpu' if p else ''}" for n, t, p in ZOO_TARGETS])
def test_zoo_ptx_assembles(zoo_artifacts, name, target, place):
    data = zoo_artifacts(name, target, place)
    m = manifest(data)
    gpu = m["gpu"]
    sm = dsc.targets.get_target(target).sm
    assert gpu["sm"] == sm and m["target"]["sm"] == sm
    assert gpu["ptx_isa"] == "%d.%d" % PTX_ISA[sm]
    ptx = members(data)[gpu["member"]].decode()
    assert gpu["member"] == f"gpu/{sm}.ptx"
    launches = [s for s in m["plan"]["schedule"] if s["op"] == "launch"]
    if not launches:
        assert ptx == ""
        return
    assert f".version {gpu['ptx_isa']}" in ptx and f".target {sm}" in ptx
    entries = set(re.findall(r"\.entry\s+(\w+)\(", ptx))
    assert {s["kernel"] for s in launches} <= entries
    ok, log = ptxas(ptx, sm)
    assert ok, log[-3000:]


@needs_ptxas
@pytest.mark.parametrize("name,target,precision", [("resnet18", "orin", "fp16"), ("bert_base", "sm_90", "bf16"), ("mobilenetv2", "sm_80", "fp16")])
def test_zoo_ptx_assembles_reduced_precision(name, target, precision):
    """The small zoo in fp16/bf16 (tensor-core kernels) assembles for its SM, Orin's sm_87 included."""
    from dsc.pipeline import CompileOptions

    data = dsc.compile(zoo.build(name, small=True), target, options=CompileOptions(precision=precision))
    m = manifest(data)
    ptx = members(data)[m["gpu"]["member"]].decode()
    assert "mma.sync.aligned.m16n8k16" in ptx
    ok, log = ptxas(ptx, m["gpu"]["sm"])
    assert ok, log[-3000:]


@needs_ptxas
def test_zoo_ptx_for_every_sm():
    """One model's PTX for each SM dsc targets, each assembled for its SM."""
    mdl = zoo.build("mlp", small=True)
    for sm in PTX_ISA:
        data = compile_gpu(mdl, sm, emulate=False)
        m = manifest(data)
        ok, log = ptxas(members(data)[m["gpu"]["member"]].decode(), sm)
        assert ok, (sm, log)


def test_placement_and_plan(zoo_artifacts):
    # small MobileNetV2 on sm_90: the cost model keeps most kernels on the CPU (mixed plan)
    m = manifest(zoo_artifacts("mobilenetv2", "cuda", ()))
    sched = m["plan"]["schedule"]
    ops = [s["op"] for s in sched]
    assert {"cpu", "copy", "launch"} <= set(ops)
    assert m["code"]["cpu"]["entries"] == [s["entry"] for s in sched if s["op"] == "cpu"]
    copies = [s for s in sched if s["op"] == "copy"]
    assert any(c["dst"]["kind"] == "gpu" for c in copies) and any(c["src"]["kind"] == "gpu" for c in copies)
    for s in sched:
        if s["op"] == "launch":
            assert all(a["kind"] in ("gpu", "weight") for a in s["args"])
            assert s["block"][0] % 32 == 0 and all(x >= 1 for x in s["grid"])
            assert all(a["index"] + int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize <= (m["gpu"]["arena_bytes"] if a["kind"] == "gpu" else m["weights"]["bytes"]) for a in s["args"])
    # ResNet-18 (small) goes to the GPU whole: input in, output out, launches between
    m = manifest(zoo_artifacts("resnet18", "sm_90", ALL_GPU))
    ops = [s["op"] for s in m["plan"]["schedule"]]
    assert ops[0] == "copy" and ops[-1] == "copy" and set(ops[1:-1]) == {"launch"}
    assert m["format_version"] == 2 and m["target"]["ptx_isa"] == "7.8"


def test_cpu_artifacts_unchanged():
    m = manifest(dsc.compile(zoo.build("mlp", small=True), "host"))
    assert m["format_version"] == 1 and "gpu" not in m and "schedule" not in m["plan"]


# ------------------------------------------------------------ preflight and installation


GPU_MANIFEST = {"sm": "sm_90", "ptx_isa": "7.8", "min_driver": 11080}


def test_preflight_accepts_and_refuses():
    gpu_preflight(GPU_MANIFEST, (9, 0), 13000)
    gpu_preflight({"sm": "sm_80", "ptx_isa": "7.0"}, (9, 0), 12040)  # PTX JIT-compiles for newer GPUs
    with pytest.raises(TargetError, match="compiled for sm_90.*is sm_87") as e:
        gpu_preflight(GPU_MANIFEST, (8, 7), 12060, "Orin")
    assert "--target sm_87" in str(e.value)
    with pytest.raises(TargetError, match="PTX ISA 7.8.*reads PTX up to 7.4") as e:
        gpu_preflight(GPU_MANIFEST, (9, 0), 11040)
    assert "update the NVIDIA driver to CUDA 11.8" in str(e.value)
    assert driver_ptx_isa(13000) == (9, 0) and driver_ptx_isa(12040) == (8, 4) and driver_ptx_isa(11080) == (7, 8)


def test_emulator_preflight_refuses_sm_above_it(monkeypatch):
    data = compile_gpu(zoo.build("mlp", small=True), "sm_90")
    from dsc.runtime.gpu_emulator import EmuDriver

    monkeypatch.setattr(EmuDriver, "device_info", lambda self: {"name": "old GPU", "compute_capability": (8, 6), "driver_version": 12000})
    with pytest.raises(TargetError, match="old GPU is sm_86"):
        dsc.runtime.load(data, gpu="emulate")


def test_gpu_artifact_without_pycuda_says_how_to_install():
    data = compile_gpu(zoo.build("mlp", small=True), "sm_90", emulate=False)
    code = (
        "import sys; sys.modules['pycuda'] = None\n"
        "import dsc.runtime\n"
        "from dsc.runtime.errors import DscError\n"
        "try:\n"
        "    dsc.runtime.load(sys.stdin.buffer.read())\n"
        "except DscError as e:\n"
        "    print(e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    assert "pip install dsc[cuda]" in p.stdout.decode()


def test_runtime_does_not_import_pycuda_for_cpu_artifacts():
    data = dsc.compile(zoo.build("mlp", small=True), "host")
    code = (
        "import sys, numpy as np, dsc.runtime\n"
        "s = dsc.runtime.load(sys.stdin.buffer.read())\n"
        "s.run(None, {'input': np.zeros(s.get_inputs()[0].shape, np.float32)})\n"
        "assert 'pycuda' not in sys.modules and 'dsc.runtime.cuda_executor' not in sys.modules\n"
    )
    p = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()


# ------------------------------------------------------------ kernels on the emulator: convolution


CONVS = {
    "3x3": dict(cin=5, cout=7, hw=9, k=3, pad=1, post=("Relu",)),
    "3x3-s2-residual": dict(cin=6, cout=8, hw=10, k=3, stride=2, pad=1, residual=True, post=("Relu",)),
    "1x1": dict(cin=16, cout=12, hw=7, k=1),
    "1x1-s2-batch3": dict(cin=8, cout=70, hw=8, k=1, stride=2, batch=3),
    "grouped": dict(cin=8, cout=6, hw=6, k=3, pad=1, group=2),
    "depthwise-silu": dict(cin=6, cout=6, hw=7, k=3, pad=1, group=6, post=("Sigmoid",)),
    "depthwise-multiplier": dict(cin=3, cout=6, hw=8, k=5, stride=2, pad=2, group=3),
    # row strips of 4 outputs: widths not a multiple of 4, stride 2, dilation, batch, residual
    "depthwise-strips-s2-batch2": dict(cin=5, cout=5, hw=11, k=3, stride=2, pad=1, group=5, batch=2, residual=True),
    "depthwise-strips-dilated": dict(cin=4, cout=4, hw=10, k=3, pad=2, dil=2, group=4, post=("Relu",)),
    "depthwise-strips-5x5": dict(cin=3, cout=3, hw=9, k=5, pad=2, group=3),
    "dilated": dict(cin=4, cout=5, hw=11, k=3, pad=2, dil=2, bias=False),
    "conv1d": dict(cin=3, cout=4, hw=13, k=3, nd=1),
    "splitk": dict(cin=64, cout=32, hw=2, k=3, pad=1),
    "large-tiles": dict(cin=3, cout=130, hw=40, k=3, pad=1, post=("Relu",)),
}


def case_conv_bn_silu_chain():
    c = 6
    inits = [("w", rand(c, 3, 3, 3, seed=1, scale=0.3)), ("s", rand(c, seed=2)), ("bb", rand(c, seed=3)), ("mu", rand(c, seed=4)), ("var", np.abs(rand(c, seed=5)) + 0.5)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["n"]),
        helper.make_node("Sigmoid", ["n"], ["g"]),
        helper.make_node("Mul", ["n", "g"], ["y"]),
    ]
    m = model(nodes, [("x", F, [2, 3, 8, 8])], [("y", F, None)], inits)
    yield m, {"x": rand(2, 3, 8, 8)}, 1e-4


# ------------------------------------------------------------ GEMM / matmul


def case_gemm_variants():
    a, b, c = rand(5, 9, seed=1), rand(9, 70, seed=2), rand(70, seed=3)
    for ta, tb, alpha, beta in ((0, 0, 1.0, 1.0), (1, 0, 0.5, 2.0), (0, 1, 1.0, 1.0), (1, 1, 2.0, 0.0)):
        A = a.T.copy() if ta else a
        B = b.T.copy() if tb else b
        nodes = [helper.make_node("Gemm", ["A", "B", "C"], ["y"], transA=ta, transB=tb, alpha=alpha, beta=beta), helper.make_node("Relu", ["y"], ["z"])]
        m = model(nodes, [("A", F, list(A.shape))], [("z", F, None)], [("B", B), ("C", c)])
        yield m, {"A": A}, 1e-4


def case_matmul_batched_broadcast_and_transposes():
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Div", ["s", "d"], ["sd"]),
        helper.make_node("MatMul", ["sd", "v"], ["y"]),
    ]
    m = model(nodes, [("q", F, [2, 3, 5, 8]), ("k", F, [2, 3, 6, 8]), ("v", F, [3, 6, 4])], [("y", F, None)], [("d", np.array([2.0], np.float32))])
    yield m, {"q": rand(2, 3, 5, 8, seed=1), "k": rand(2, 3, 6, 8, seed=2), "v": rand(3, 6, 4, seed=3)}, 1e-4


def case_matmul_vector_and_gelu_epilogue():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Div", ["hb", "sq"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["hb", "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
        helper.make_node("MatMul", ["vec", "w2"], ["z"]),
    ]
    inits = [("w", rand(16, 40, seed=1, scale=0.2)), ("b", rand(40, seed=2)), ("sq", np.array(1.4142135, np.float32)), ("one", np.array(1.0, np.float32)), ("half", np.array(0.5, np.float32)), ("w2", rand(7, 3, seed=4))]
    m = model(nodes, [("x", F, [1, 6, 16]), ("vec", F, [7])], [("y", F, None), ("z", F, None)], inits)
    yield m, {"x": rand(1, 6, 16, seed=3), "vec": rand(7, seed=5)}, 1e-4


# ------------------------------------------------------------ reductions and normalization


def case_softmax_layernorm_reduce():
    nodes = [
        helper.make_node("Add", ["x", "mask"], ["xm"]),
        helper.make_node("Softmax", ["xm"], ["s"], axis=-1),
        helper.make_node("Softmax", ["x"], ["s1"], axis=1),
        helper.make_node("LogSoftmax", ["x"], ["ls"], axis=-1),
        helper.make_node("LayerNormalization", ["x", "g", "bt"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("ReduceMean", ["x"], ["rm"], axes=[1], keepdims=0),
        helper.make_node("ReduceMax", ["x"], ["rx"], axes=[2], keepdims=1),
        helper.make_node("ReduceSum", ["x", "rax"], ["rs"], keepdims=1),
    ]
    inits = [("mask", rand(1, 1, 300, seed=7)), ("g", rand(300, seed=8)), ("bt", rand(300, seed=9)), ("rax", np.array([0, 2], np.int64))]
    m = model(nodes, [("x", F, [2, 5, 300])], [(n, F, None) for n in ("s", "s1", "ls", "ln", "rm", "rx", "rs")], inits, opset=17)
    yield m, {"x": rand(2, 5, 300, seed=1)}, 2e-4


def case_long_rows_and_written_out_layernorm():
    # rows longer than 8 x 256 elements take the looped path
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1], keepdims=1),
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["y"]),
        helper.make_node("GlobalAveragePool", ["img"], ["gap"]),
        helper.make_node("GlobalMaxPool", ["img"], ["gmp"]),
    ]
    inits = [("two", np.array(2.0, np.float32)), ("eps", np.array(1e-5, np.float32))]
    m = model(nodes, [("x", F, [3, 2500]), ("img", F, [2, 3, 50, 50])], [("y", F, None), ("gap", F, None), ("gmp", F, None)], inits, opset=13)
    yield m, {"x": rand(3, 2500, seed=1), "img": rand(2, 3, 50, 50, seed=2)}, 2e-4


# ------------------------------------------------------------ pooling and data movement


def case_pools():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["x"], ["mpc"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["x"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("AveragePool", ["x"], ["api"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
    ]
    m = model(nodes, [("x", F, [2, 3, 9, 9])], [(n, F, None) for n in ("mp", "mpc", "ap", "api")])
    yield m, {"x": rand(2, 3, 9, 9)}, 1e-4


def case_data_movement():
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
        helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["sl"]),
        helper.make_node("Pad", ["x", "pads"], ["pc"], mode="constant"),
        helper.make_node("Pad", ["x", "pads2"], ["pr"], mode="reflect"),
        helper.make_node("Pad", ["x", "pads2"], ["pe"], mode="edge"),
        helper.make_node("Gather", ["x", "idx"], ["g0"], axis=1),
        helper.make_node("Concat", ["x", "t2"], ["cc"], axis=1),
        helper.make_node("Expand", ["v", "shp"], ["ex"]),
        helper.make_node("Relu", ["x"], ["xr"]),
        helper.make_node("Reshape", ["xr", "rs"], ["rsh"]),
        helper.make_node("Neg", ["rsh"], ["rn"]),
    ]
    inits = [
        ("st", np.array([0, 1], np.int64)), ("en", np.array([2, 7], np.int64)), ("ax", np.array([0, 2], np.int64)), ("sp", np.array([1, 2], np.int64)),
        ("pads", np.array([0, 1, 2, 1, 0, 3], np.int64)), ("pads2", np.array([0, 2, 1, 0, 1, 2], np.int64)),
        ("idx", np.array([[3, -1], [0, 2]], np.int64)), ("shp", np.array([2, 4, 3], np.int64)), ("rs", np.array([4, -1], np.int64)),
    ]
    outs = ["t", "sl", "pc", "pr", "pe", "g0", "cc", "ex", "rn"]
    m = model(nodes, [("x", F, [2, 4, 7]), ("t2", F, [2, 3, 7]), ("v", F, [4, 1])], [(n, F, None) for n in outs], inits, opset=13)
    yield m, {"x": rand(2, 4, 7, seed=1), "t2": rand(2, 3, 7, seed=2), "v": rand(4, 1, seed=3)}, 1e-4


def case_elementwise_broadcast_math_and_types():
    nodes = [
        helper.make_node("Mul", ["x", "c"], ["m"]),
        helper.make_node("Add", ["m", "row"], ["a"]),
        helper.make_node("Tanh", ["a"], ["t"]),
        helper.make_node("Exp", ["t"], ["e"]),
        helper.make_node("Log", ["e"], ["l"]),
        helper.make_node("Abs", ["x"], ["ab"]),
        helper.make_node("Pow", ["ab", "p"], ["pw"]),
        helper.make_node("Sqrt", ["ab"], ["sq"]),
        helper.make_node("Greater", ["x", "row"], ["gt"]),
        helper.make_node("Where", ["gt", "x", "pw"], ["w"]),
        helper.make_node("Cast", ["ids"], ["idf"], to=1),
        helper.make_node("Mul", ["idf", "x"], ["mi"]),
        helper.make_node("HardSwish", ["x"], ["hs"]),
        helper.make_node("LeakyRelu", ["x"], ["lr"], alpha=0.1),
        helper.make_node("Cast", ["x"], ["xi"], to=7),
        helper.make_node("Div", ["x", "c"], ["dv"]),
    ]
    inits = [("c", rand(3, 1, seed=5)), ("p", np.array(1.7, np.float32))]
    outs = [("l", F), ("sq", F), ("w", F), ("mi", F), ("hs", F), ("lr", F), ("xi", I64), ("gt", 9), ("dv", F)]
    m = model(nodes, [("x", F, [2, 3, 5]), ("row", F, [5]), ("ids", I64, [2, 3, 5])], [(n, t, None) for n, t in outs], inits)
    x = rand(2, 3, 5, seed=1) * 3
    yield m, {"x": x, "row": rand(5, seed=2), "ids": np.arange(30, dtype=np.int64).reshape(2, 3, 5) - 7}, 1e-4


def _cases():
    out = {}
    for name, kw in CONVS.items():
        out[f"conv-{name}"] = lambda kw=kw: [(*conv_model(**kw), 1e-4)]
    for name, fn in list(globals().items()):
        if name.startswith("case_"):
            out[name[5:]] = lambda fn=fn: list(fn())
    return out


KERNEL_CASES = _cases()
"""name -> () -> [(onnx model, feeds, tolerance)]: every kind of GPU kernel (also run on a real GPU by test_cuda_gpu.py)."""


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernels_on_emulator(name):
    for mdl, feeds, tol in KERNEL_CASES[name]():
        check(mdl, feeds, rtol=tol, atol=tol)


# ------------------------------------------------------------ the SIMT GEMM's tiles


@pytest.mark.parametrize("sms", [1, 132])
def test_simt_gemm_tiles_on_emulator(sms, monkeypatch):
    """fp32 without TF32 (exact FMA kernel): with one multiprocessor the big tiles (two shared buffers, next
    tile prefetched), with 132 the mid/small ones (loaded in place); both match onnxruntime."""
    from dsc.backends.cuda import target

    monkeypatch.setitem(target.SM_COUNT, "sm_90", sms)
    m, feeds = conv_model(cin=8, cout=130, hw=12, k=3, pad=1, post=("Relu",), batch=2)
    data = compile_gpu(m)
    got = run_gpu(data, feeds)[0]
    np.testing.assert_allclose(got, ort(m, feeds)[0], rtol=1e-4, atol=1e-4)
    plan = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))["plan"]["schedule"]
    conv = [s for s in plan if s["op"] == "launch" and "conv" in s["label"]]
    assert conv and "tensor cores" not in conv[0]["label"]
    assert (conv[0]["block"][0] == 256 and conv[0]["smem"] == 2 * 4 * 8 * (132 + 132)) if sms == 1 else conv[0]["smem"] < 2 * 4 * 16 * 68, conv


# ------------------------------------------------------------ whole models on the emulator


EMULATED_ZOO = [("resnet18", ()), ("mobilenetv2", ()), ("bert_base", ALL_GPU), ("efficientnet_b0", ALL_GPU)]


@pytest.mark.parametrize("name,place", EMULATED_ZOO, ids=[n for n, _ in EMULATED_ZOO])
def test_zoo_on_emulator(name, place):
    mdl = zoo.build(name, small=True)
    feeds = zoo.example_inputs(mdl)
    data = compile_gpu(mdl, "sm_90", place)
    sess = dsc.runtime.load(data, gpu="emulate")
    got = sess.run(None, feeds)
    for g, w in zip(got, ort(mdl, feeds)):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3)
    ex = sess.gpu_executor
    assert ex.use_graphs and ex.graphs, "GPU runs are replayed as (emulated) graphs"
    # the replay gives the same numbers
    for a, b in zip(sess.run(None, feeds), got):
        np.testing.assert_array_equal(a, b)


def test_emulated_run_without_graphs_and_thread_safety():
    mdl = zoo.build("mlp", small=True)
    feeds = zoo.example_inputs(mdl)
    data = compile_gpu(mdl)
    from dsc.runtime.artifact import read_artifact
    from dsc.runtime.cuda_executor import GpuExecutor
    from dsc.runtime.gpu_emulator import EmuDriver
    from dsc.runtime.native import NativeModule

    art = read_artifact(data)
    ex = GpuExecutor(art, NativeModule(art.cpu_object, 1), EmuDriver(), use_graphs=False)
    want = ort(mdl, feeds)[0]
    np.testing.assert_allclose(ex.run([feeds["input"]])[0], want, rtol=1e-4, atol=1e-4)
    assert not ex.graphs


def test_unsupported_gpu_override_is_a_clear_error():
    m = model([helper.make_node("LRN", ["x"], ["y"], size=3)], [("x", F, [1, 4, 5, 5])], [("y", F, None)])
    with pytest.raises(DscError, match="forced onto the GPU"):
        compile_gpu(m, place=("graph.lrn=gpu",))
