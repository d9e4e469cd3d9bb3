"""Test helpers for the CUDA backend: tiny ONNX models, compiled for a GPU target, run on the emulator or a GPU.

`compile_gpu(model)` compiles for a CPU+GPU target with every kernel forced
onto the GPU (`*=gpu`) and, by default, the emulation build of the kernels;
`run_gpu(data, feeds, device)` runs the artifact on dsc's GPU emulator
("emulate") or on the real GPU (None); `ort(model, feeds)` is the reference.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import dsc
import dsc.runtime
from dsc.pipeline import CompileOptions

ALL_GPU = ("*=gpu",)


def have_ptxas() -> bool:
    return shutil.which("ptxas") is not None


def have_gpu() -> bool:
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False


GPU_REASON = "needs a CUDA GPU and pycuda"
PTXAS_REASON = "needs CUDA's ptxas on the PATH"


def compile_gpu(model: onnx.ModelProto, target: str = "sm_90", place=ALL_GPU, emulate: bool = True) -> bytes:
    return dsc.compile(model, target, options=CompileOptions(place=tuple(place)), gpu_emulation=emulate)


def run_gpu(data: bytes, feeds: dict, device="emulate") -> list[np.ndarray]:
    return dsc.runtime.load(data, gpu=device).run(None, feeds)


def ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as rt

    return rt.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def check(model: onnx.ModelProto, feeds: dict, rtol=1e-4, atol=1e-4, device="emulate", target="sm_90", place=ALL_GPU) -> None:
    got = run_gpu(compile_gpu(model, target, place, emulate=device == "emulate"), feeds, device)
    want = ort(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


# ------------------------------------------------------------ tiny models


def model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    """inputs/outputs: [(name, elem type, shape)]; inits: [(name, array)]."""
    vi = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    vo = [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs]
    ts = [helper.make_tensor(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape, a.reshape(-1).tolist()) for n, a in inits]
    g = helper.make_graph(nodes, "g", vi, vo, ts)
    # IR version 8: what torch exports and every onnxruntime (the GPU machine's too) reads
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


F = TensorProto.FLOAT
I64 = TensorProto.INT64


def rand(*shape, seed=0, scale=1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ------------------------------------------------------------ tensor-core (mma.sync) GEMM cases


def round_tf32(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest tf32 (10-bit mantissa, ties away from zero), as PTX's cvt.rna.tf32.f32."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def conv_model(cin, cout, hw, k, stride=1, pad=0, group=1, dil=1, post=(), bias=True, residual=False, nd=2, batch=1):
    ks = [k] * nd
    w = rand(cout, cin // group, *ks, seed=1, scale=0.3)
    inits = [("w", w)] + ([("b", rand(cout, seed=2))] if bias else [])
    attrs = dict(kernel_shape=ks, strides=[stride] * nd, pads=[pad] * 2 * nd, group=group, dilations=[dil] * nd)
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["c"], **attrs)]
    out = "c"
    if residual:
        nodes.append(helper.make_node("Add", [out, "r"], ["a"]))
        out = "a"
    for i, p in enumerate(post):
        nodes.append(helper.make_node(p, [out], [f"p{i}"]))
        out = f"p{i}"
    o = (hw + 2 * pad - dil * (k - 1) - 1) // stride + 1
    ins = [("x", F, [batch, cin] + [hw] * nd)] + ([("r", F, [batch, cout] + [o] * nd)] if residual else [])
    m = model(nodes, ins, [(out, F, None)], inits)
    feeds = {"x": rand(batch, cin, *[hw] * nd, seed=3)}
    if residual:
        feeds["r"] = rand(batch, cout, *[o] * nd, seed=4)
    return m, feeds


def _mm_model(M, K, N, batch=()):
    b = np.random.default_rng(2).standard_normal((*batch, K, N)).astype(np.float32)
    m = model([helper.make_node("MatMul", ["A", "B"], ["y"]), helper.make_node("Relu", ["y"], ["z"])], [("A", F, [*batch, M, K])], [("z", F, None)], [("B", b)])
    return m, {"A": rand(*batch, M, K, seed=1)}


def _conv_model(cin, cout, hw, k, stride=1, pad=0, batch=1):
    w = rand(cout, cin, k, k, seed=1, scale=0.3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4), helper.make_node("Relu", ["c"], ["y"])]
    m = model(nodes, [("x", F, [batch, cin, hw, hw])], [("y", F, None)], [("w", w), ("b", rand(cout, seed=2))])
    return m, {"x": rand(batch, cin, hw, hw, seed=3)}


def _conv_chain_model(cin, mid, cout, hw, batch=1):
    """1x1 conv + ReLU -> 3x3 conv + ReLU: with tensor cores the first stores its output channels-last for the second."""
    w1, w2 = rand(mid, cin, 1, 1, seed=1, scale=0.3), rand(cout, mid, 3, 3, seed=2, scale=0.1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    m = model(nodes, [("x", F, [batch, cin, hw, hw])], [("y", F, None)], [("w1", w1), ("b1", rand(mid, seed=3)), ("w2", w2), ("b2", rand(cout, seed=4))])
    return m, {"x": rand(batch, cin, hw, hw, seed=5)}


def _residual_model(cin, mid, cout, hw, batch=1, pool="GlobalAveragePool"):
    """Two bottleneck blocks (1x1 -> 3x3 -> 1x1 + shortcut, ReLU; the first with a 1x1 projection shortcut,
    the second with the identity), then a global average pool: with tensor cores every convolution output
    is stored channels-last, read so by the convolutions, the residual adds and the pool."""
    ws = {f"w{i}": rand(*shape, seed=i, scale=s) for i, (shape, s) in enumerate([((mid, cin, 1, 1), 0.3), ((mid, mid, 3, 3), 0.1), ((cout, mid, 1, 1), 0.2), ((cout, cin, 1, 1), 0.3), ((mid, cout, 1, 1), 0.2), ((mid, mid, 3, 3), 0.1), ((cout, mid, 1, 1), 0.2)], 1)}

    def conv(x, w, y, k=1):
        return helper.make_node("Conv", [x, w], [y], kernel_shape=[k, k], pads=[k // 2] * 4)

    nodes = [
        conv("x", "w1", "c1"), helper.make_node("Relu", ["c1"], ["r1"]), conv("r1", "w2", "c2", 3), helper.make_node("Relu", ["c2"], ["r2"]),
        conv("r2", "w3", "c3"), conv("x", "w4", "s"), helper.make_node("Add", ["c3", "s"], ["a1"]), helper.make_node("Relu", ["a1"], ["y1"]),
        conv("y1", "w5", "d1"), helper.make_node("Relu", ["d1"], ["q1"]), conv("q1", "w6", "d2", 3), helper.make_node("Relu", ["d2"], ["q2"]),
        conv("q2", "w7", "d3"), helper.make_node("Add", ["d3", "y1"], ["a2"]), helper.make_node("Relu", ["a2"], ["y2"]),
        helper.make_node(pool, ["y2"], ["y"]),
    ]
    m = model(nodes, [("x", F, [batch, cin, hw, hw])], [("y", F, None)], list(ws.items()))
    return m, {"x": rand(batch, cin, hw, hw, seed=9)}


def _grouped_chain_model(cin, mid, cout, hw, groups, batch=1):
    """1x1 conv + ReLU -> grouped 3x3 conv + ReLU -> 1x1 conv: the grouped one (a GEMM per group) stores
    its output channels-last for the last one."""
    w1, w2, w3 = rand(mid, cin, 1, 1, seed=1, scale=0.3), rand(mid, mid // groups, 3, 3, seed=2, scale=0.1), rand(cout, mid, 1, 1, seed=3, scale=0.2)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4, group=groups),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["y"], kernel_shape=[1, 1]),
    ]
    m = model(nodes, [("x", F, [batch, cin, hw, hw])], [("y", F, None)], [("w1", w1), ("w2", w2), ("w3", w3)])
    return m, {"x": rand(batch, cin, hw, hw, seed=5)}


def _pool_chain_model(batch=2):
    """conv 3x3 -> max pool 3x3/2 -> 1x1 conv -> avg pool 3x3/1 (padded, pads counted) -> 1x1 conv: both
    pools read and write channels-last between tensor-core convolutions."""
    w1, w2, w3 = rand(32, 16, 3, 3, seed=1, scale=0.1), rand(24, 32, 1, 1, seed=2, scale=0.2), rand(16, 24, 1, 1, seed=3, scale=0.2)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("AveragePool", ["c2"], ["p2"], kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=1),
        helper.make_node("Conv", ["p2", "w3"], ["y"], kernel_shape=[1, 1]),
    ]
    m = model(nodes, [("x", F, [batch, 16, 11, 11])], [("y", F, None)], [("w1", w1), ("w2", w2), ("w3", w3)])
    return m, {"x": rand(batch, 16, 11, 11, seed=5)}


# name -> (builder, multiprocessors to size the grid for: few make the emulator use the big tiles)
MMA_CASES = {
    "matmul-edges": (lambda: _mm_model(40, 48, 56), None),
    "matmul-batched": (lambda: _mm_model(20, 40, 24, batch=(3,)), None),
    "conv3x3": (lambda: _conv_model(16, 24, 9, 3, pad=1), None),
    "conv1x1-batch2": (lambda: _conv_model(32, 40, 8, 1, batch=2), None),
    "conv3x3-s2": (lambda: _conv_model(8, 20, 11, 3, stride=2, pad=1), None),
    "splitk": (lambda: _conv_model(64, 32, 4, 3, pad=1), None),
    "tap-major-s2-batch2": (lambda: _conv_model(64, 48, 9, 3, stride=2, pad=1, batch=2), None),
    "big-tiles": (lambda: _conv_model(24, 128, 16, 3, pad=1), 1),
    "wide-tiles": (lambda: _conv_model(16, 64, 16, 1, batch=2), 1),
    "mid-tiles": (lambda: _conv_model(16, 64, 8, 1), 1),
    # 16-bit kinds read these inputs channels-last (a copy to NHWC, then 16-byte runs of channels)
    "1x1-s2-batch2": (lambda: _conv_model(32, 48, 9, 1, stride=2, batch=2), None),
    "1x1-7x7-batch2": (lambda: _conv_model(64, 40, 7, 1, batch=2), None),
    # an image stem: 3 channels copied channels-last padded to 4, 8-byte copies, K rounded up to 8
    "stem-7x7-s2": (lambda: _conv_model(3, 24, 19, 7, stride=2, pad=3, batch=2), None),
    # a 1x1 convolution storing its output channels-last for the 3x3 one it feeds (no copy); split-K too
    "chain-channels-last": (lambda: _conv_chain_model(24, 32, 40, 8, batch=2), None),
    "chain-channels-last-splitk": (lambda: _conv_chain_model(256, 32, 16, 4), None),
    # ResNet-like blocks, channels-last from the first convolutions to the pool (the input read NCHW: 8x8;
    # copied channels-last first: 7x7)
    "residual-channels-last": (lambda: _residual_model(16, 32, 24, 8, batch=2), None),
    "residual-channels-last-7x7": (lambda: _residual_model(16, 32, 24, 7), None),
    "residual-channels-last-maxpool": (lambda: _residual_model(16, 32, 24, 6, batch=2, pool="GlobalMaxPool"), None),
    "chain-grouped-channels-last": (lambda: _grouped_chain_model(16, 32, 24, 8, 2, batch=2), 1),
    "residual-channels-last-big": (lambda: _residual_model(32, 128, 120, 16), 1),  # 128x128 tiles, an m edge
    "chain-pools-channels-last": (_pool_chain_model, None),
}

# sm_90a: GEMMs that take wgmma (wgmma.py: block tiles of 64+ rows, both operands contiguous along k)
WGMMA_CASES = {
    # 128x128 tiles (two warpgroups), an m edge (120 of 128), K = 120 (64-byte rows, a k edge), residuals
    "wg-residual-big": (lambda: _residual_model(32, 128, 120, 16), 1),
    # 64x128 tiles (one warpgroup, n = 128): a 3x3 on a channels-last input, K = 576 (128-byte rows)
    "wg-chain-wide": (lambda: _conv_chain_model(24, 64, 64, 16, batch=2), 1),
    # 64x64 tiles (n = 64), 64-byte rows (K = 288), an n edge (8x8 positions of 64: none; 7x7: 49)
    "wg-chain-mid": (lambda: _conv_chain_model(24, 32, 64, 7), 1),
    # a 7x7 stem: 3 channels padded to 4, K = 200 (64-byte rows, a k edge): tf32's 16-byte copies take wgmma,
    # 16-bit kinds' 8-byte copies stay on mma.sync (see wgmma_expected)
    "wg-stem": (lambda: _conv_model(3, 64, 19, 7, stride=2, pad=3, batch=2), 1),
}


def wgmma_expected(name: str, kind: str) -> bool:
    """Whether WGMMA_CASES[name] runs a GEMM on wgmma in `kind` (the 16-bit stem copies 8 bytes: mma.sync)."""
    return name in WGMMA_CASES and not (name == "wg-stem" and kind != "tf32")


def check_mma(name: str, kind: str, device="emulate", monkeypatch=None, target: str = "sm_90") -> str:
    """Compile MMA_CASES[name] with tensor cores of `kind` ("tf32", "f16" or "bf16") and check it; returns the GEMM's launch label.

    The reference is onnxruntime on the model with its input and weights
    rounded to the MMA's input type, so only the accumulation order (and, for
    f16, the f16 result) differs: a wrong fragment layout shows as O(1) errors.
    """
    build, sms = {**MMA_CASES, **WGMMA_CASES}[name]
    m, feeds = build()
    if sms is not None and monkeypatch is not None:
        from dsc.backends.cuda.target import SM_COUNT

        monkeypatch.setitem(SM_COUNT, target, sms)
    precision = {"f16": "fp16", "bf16": "bf16"}.get(kind, "fp32")
    options = CompileOptions(place=ALL_GPU, tf32=kind == "tf32", precision=precision)
    data = dsc.compile(m, target, options=options, gpu_emulation=device == "emulate")
    if kind == "tf32":
        rnd = round_tf32
    else:
        import ml_dtypes

        low = np.float16 if kind == "f16" else ml_dtypes.bfloat16
        rnd = lambda a: np.asarray(a, np.float32).astype(low).astype(np.float32)  # noqa: E731
    ref_model = onnx.ModelProto()
    ref_model.CopyFrom(m)
    for init in ref_model.graph.initializer:
        if init.name != "b":
            init.CopyFrom(numpy_helper.from_array(rnd(numpy_helper.to_array(init)), init.name))
    want = ort(ref_model, {k: rnd(v) for k, v in feeds.items()})[0]
    got = dsc.runtime.load(data, gpu=device).run(None, feeds)[0]
    tol = {"f16": 2e-3, "bf16": 1e-2}.get(kind, 1e-4)  # the result rounds to f16 (2^-11) / bf16 (2^-8)
    if kind == "tf32" and name.startswith(("chain", "residual", "wg-")):
        tol = 3e-3  # later convolutions round their inputs (earlier ones' outputs) to tf32; the reference does not
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))
    import io
    import json
    import zipfile

    plan = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))["plan"]["schedule"]
    return " | ".join(s["label"] for s in plan if s["op"] == "launch")
