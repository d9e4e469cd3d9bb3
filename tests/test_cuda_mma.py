"""Tensor cores without a GPU: the pipelined mma.sync kernel (fp16, bf16, tf32) on dsc's GPU emulator against
onnxruntime, its PTX through ptxas, the channels-last layout plan, dynamic shared memory, the flags.

Split from test_cuda_codegen.py; the same cases run on a real GPU in test_cuda_gpu.py.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile

import numpy as np
import pytest

import dsc
import dsc.runtime
from dsc.backends.cuda.codegen import ptxas
from dsc.runtime.errors import TargetError
from dsc.tools import zoo

sys.path.insert(0, __import__("os").path.dirname(__file__))
from cuda_utils import ALL_GPU, MMA_CASES, PTXAS_REASON, check_mma, compile_gpu, conv_model, have_ptxas, ort  # noqa: E402

needs_ptxas = pytest.mark.skipif(not have_ptxas(), reason=PTXAS_REASON)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def manifest(data: bytes) -> dict:
    return json.loads(members(data)["manifest.json"])


# ------------------------------------------------------------ tensor cores (mma.sync) on the emulator


@pytest.mark.parametrize("kind", ["tf32", "f16", "bf16"])
@pytest.mark.parametrize("name", MMA_CASES)
def test_tensor_core_gemm_on_emulator(name, kind, monkeypatch):
    labels = check_mma(name, kind, monkeypatch=monkeypatch)
    assert f"({kind} tensor cores)" in labels, labels


def test_tensor_cores_only_when_asked_or_half():
    """fp32 GEMMs stay exact (SIMT FMA) unless tf32 is allowed; GEMV-like shapes stay SIMT."""
    from dsc.backends.cuda.mma import mma_kind, worth_mma
    from dsc.dialects.tensor_types import BFLOAT16

    assert mma_kind(np.float32, np.float32, tf32=False) is None
    assert mma_kind(np.float32, np.float32, tf32=True) == "tf32"
    assert mma_kind(np.float16, np.float16, tf32=False) == "f16"
    assert mma_kind(BFLOAT16, BFLOAT16, tf32=False) == "bf16"
    assert not worth_mma(1, 1000, 1000) and worth_mma(64, 64, 64)
    mdl, feeds = conv_model(cin=16, cout=24, hw=9, k=3, pad=1)
    plan = manifest(compile_gpu(mdl, "sm_90", emulate=False))["plan"]["schedule"]
    assert not any("tensor cores" in s.get("label", "") for s in plan)


def test_tap_major_conv_repacks_weights_once():
    """A 3x3 convolution with 64 input channels on tensor cores reads OHWI weights: the OIHW copy is not stored."""
    from dsc.pipeline import CompileOptions

    mdl, _ = conv_model(cin=64, cout=32, hw=6, k=3, pad=1)
    data = dsc.compile(mdl, "sm_90", options=CompileOptions(place=ALL_GPU, precision="fp16", amp_level="O2"))
    wbytes = manifest(data)["weights"]["bytes"]
    assert wbytes < 1.2 * 32 * 64 * 9 * 2, wbytes  # the fp16 weights once (plus the bias, alignment)


def test_cli_tf32_and_fp16_flags(tmp_path):
    """`dsc compile --target sm_90 --tf32` / `--precision fp16`: recorded in the manifest, tensor-core launches in the plan."""
    import onnx

    from dsc.tools.cli import main

    mdl, _ = conv_model(cin=16, cout=24, hw=9, k=3, pad=1)
    path = tmp_path / "m.onnx"
    onnx.save(mdl, str(path))
    for flags, kind in ((["--tf32"], "tf32"), (["--precision", "fp16"], "f16")):
        out = tmp_path / f"m_{kind}.dsc"
        assert main(["compile", str(path), "--target", "sm_90", "--place", "*=gpu", *flags, "-o", str(out)]) == 0
        man = manifest(out.read_bytes())
        assert man["options"].get("tf32", False) == (kind == "tf32")
        assert any(f"({kind} tensor cores)" in s.get("label", "") for s in man["plan"]["schedule"])



def test_tf32_on_a_cpu_target_is_refused(tmp_path, capsys):
    import onnx

    from dsc.tools.cli import main

    mdl, _ = conv_model(cin=4, cout=4, hw=5, k=3, pad=1)
    path = tmp_path / "m.onnx"
    onnx.save(mdl, str(path))
    assert main(["compile", str(path), "--tf32", "-o", str(tmp_path / "m.dsc")]) == 1
    err = capsys.readouterr().err
    assert "--tf32" in err and "has no GPU" in err and "hint:" in err


@needs_ptxas
@pytest.mark.parametrize("sm", ["sm_80", "sm_87", "sm_90"])
def test_tensor_core_ptx_assembles(sm):
    from dsc.pipeline import CompileOptions

    mdl, _ = conv_model(cin=16, cout=24, hw=9, k=3, pad=1)
    for opts in (CompileOptions(place=ALL_GPU, tf32=True), CompileOptions(place=ALL_GPU, precision="fp16"), CompileOptions(place=ALL_GPU, precision="bf16")):
        data = dsc.compile(mdl, sm, options=opts)
        ptx = members(data)[f"gpu/{sm}.ptx"].decode()
        assert "mma.sync.aligned" in ptx
        ok, log = ptxas(ptx, sm)
        assert ok, log


@pytest.mark.parametrize("name,precision", [("resnet18", "fp16"), ("resnet18", "tf32"), ("resnet18", "bf16"), ("bert_base", "bf16")])
def test_small_zoo_on_tensor_cores_on_emulator(name, precision):
    """Whole models on the emulated tensor cores: fp16 (O2), bf16 (O2) and tf32 against onnxruntime in fp32."""
    from dsc.pipeline import CompileOptions

    mdl = zoo.build(name, small=True)
    feeds = zoo.example_inputs(mdl)
    opts = CompileOptions(tf32=True) if precision == "tf32" else CompileOptions(precision=precision, amp_level="O2")
    data = dsc.compile(mdl, "sm_90", options=opts, gpu_emulation=True)
    labels = [s.get("label", "") for s in manifest(data)["plan"]["schedule"]]
    assert sum("tensor cores" in lb for lb in labels) >= 4, labels
    got = dsc.runtime.load(data, gpu="emulate").run(None, feeds)[0].astype(np.float32)
    want = ort(mdl, feeds)[0]
    # measured worst relative errors (max |err| / max |ref|): fp16 6e-4 (ResNet) - 1.4e-3
    # (MobileNetV2); bf16 (8 significant bits, 2^-8 per rounding) 4.7e-3 (ResNet, BERT) -
    # 7.8e-3 (MobileNetV2); tf32 inputs ~1e-3. Tolerances leave a 4-7x margin.
    tol = {"fp16": 1e-2, "bf16": 3e-2}.get(precision, 1e-2)
    assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max()), np.abs(got - want).max()


def test_dynamic_shared_memory_opt_in():
    """Launches pass each kernel's shared memory as dynamic bytes; above 48 KiB the function opts in once, and a
    GPU that refuses gets a TargetError naming the size (the pycuda driver, with a stand-in for pycuda)."""
    from types import SimpleNamespace

    from dsc.runtime.cuda_executor import PycudaDriver

    class Refused(Exception):
        pass

    calls = []

    class Fn:
        def set_attribute(self, attr, value):
            if value > 200 * 1024:
                raise Refused("CUDA_ERROR_INVALID_VALUE")
            calls.append((attr, value))

        def _launch_kernel(self, grid, block, args, smem, stream):
            calls.append(("launch", smem))

    drv = object.__new__(PycudaDriver)
    drv.cuda = SimpleNamespace(function_attribute=SimpleNamespace(MAX_DYNAMIC_SHARED_SIZE_BYTES="max_dyn"), Error=Refused)
    f = Fn()
    drv.packed_launch(f, (1, 1, 1), (128, 1, 1), [0], 20480)(None)
    assert calls == [("launch", 20480)]  # under 48 KiB: no opt-in
    run = drv.packed_launch(f, (1, 1, 1), (256, 1, 1), [0], 69632)
    run(None)
    run(None)
    assert calls[1:] == [("max_dyn", 69632), ("launch", 69632), ("launch", 69632)]  # opted in once
    with pytest.raises(TargetError, match="300000 bytes of shared memory"):
        drv.launch(Fn(), (1, 1, 1), (32, 1, 1), [0], 300000, None)


def test_resnet50_fp16_layouts_and_copies():
    """ResNet-50 in fp16, batch 1: every tensor-core convolution output is stored channels-last and read so
    by the convolutions, the residual adds, the max pool and the global pool (codegen.channels_last_values),
    so no transpose kernel is left but the stem's (its 3-channel image, copied padded to 4). The max pool
    reads and writes channels-last between the stem and layer 1."""
    from dsc.pipeline import CompileOptions

    data = dsc.compile(zoo.build("resnet50", batch=1), "sm_90", options=CompileOptions(precision="fp16", amp_level="O2"))
    launches = [s["label"] for s in manifest(data)["plan"]["schedule"] if s["op"] == "launch"]

    def kernels(text):
        return {lb.split(":")[0] for lb in launches if text in lb}

    reads, writes, copies = kernels("channels-last input"), kernels("channels-last output"), kernels("to channels-last")
    convs = kernels("tensor cores")
    assert len(convs) == 53, launches  # the 53 convolutions (the classifier, M = 1, is not)
    assert copies == {"k1_conv_bn_relu"}, sorted(copies)  # the stem
    assert convs <= reads and convs <= writes, sorted((convs - reads) | (convs - writes))
    assert reads - convs == {"k55_single"}, sorted(reads - convs)  # the global pool, one thread per channel
    assert kernels("max_pool (channels-last)") == {"k2_single"}, launches


@pytest.mark.parametrize("name,copies", [("residual-channels-last", 0), ("residual-channels-last-7x7", 2)])
def test_residual_blocks_stay_channels_last(name, copies):
    """Two bottleneck blocks and a pool (cuda_utils._residual_model), fp16: all seven convolutions store
    their outputs channels-last, read so by the next convolutions, both residual adds and the pool. The
    network input is NCHW: read as it is where its positions make 16-byte runs (8x8), else each of its
    two readers copies it (7x7)."""
    from dsc.pipeline import CompileOptions

    m, _ = MMA_CASES[name][0]()
    data = dsc.compile(m, "sm_90", options=CompileOptions(place=ALL_GPU, precision="fp16"))
    launches = [s["label"] for s in manifest(data)["plan"]["schedule"] if s["op"] == "launch"]
    convs = [lb for lb in launches if "tensor cores" in lb and "split-K sum" not in lb]
    assert len(convs) == 7 and all("channels-last output" in lb for lb in convs), launches
    readers = [lb.split(":")[0] for lb in convs if "channels-last input" not in lb]
    assert len(readers) == (0 if copies else 2), launches  # conv1 and the shortcut of block 1 read x
    assert sum("to channels-last" in lb for lb in launches) == copies, launches
    assert any("global_avg_pool (channels-last input)" in lb for lb in launches), launches


def test_row_bytes_deep_stages_where_k_and_shared_memory_allow():
    """128-byte stage rows (BK = 64 16-bit values, 32 tf32) when K is a multiple of that, at least two
    stages, the target grants the shared memory (sm_90), and a tap-major convolution's channels are a
    multiple of the stage; else 64."""
    from dsc.backends.cuda.mma import row_bytes, stage_depth
    from dsc.backends.cuda.target import gpu_target

    sm90, sm80, sm87 = (gpu_target(s).smem_limit for s in ("sm_90", "sm_80", "sm_87"))
    assert row_bytes("f16", 576, sm90, channels=64) == 128 and stage_depth("f16", 128) == 64
    assert row_bytes("f16", 64, sm90) == 64  # one deep stage: no gain (measured even)
    assert row_bytes("f16", 200, sm90) == 64  # the padded stem: not a multiple
    assert row_bytes("f16", 288, sm90, channels=32) == 64  # a stage would straddle kernel positions
    assert row_bytes("tf32", 64, sm90) == 128 and stage_depth("tf32", 128) == 32
    assert row_bytes("f16", 4608, sm80) == 64 and row_bytes("f16", 4608, sm87) == 64  # 99 / 163 KiB
