"""float16 tensors on CPU targets: conversions in the object, f32 compute, numpy as the reference.

The CPU backend keeps float16 as `half` in memory and computes in float32;
LLVM lowers the half <-> float conversions to compiler-rt calls on x86-64
without F16C (and double -> half on every x86 level), which
backends/cpu/float16.py defines inside each object. These tests check:

* the routines bit for bit against numpy (every half, float32 values around
  every rounding boundary, NaN/Inf/denormals), on the baseline x86-64 target
  (software) and the host (F16C where it has it);
* that no object references a compiler-rt routine it does not define;
* ops on float16 ONNX models, compiled for `host` and `x86-64`, against
  numpy computed in float32 and rounded to float16 (rtol 2e-3, atol 2e-3:
  a float16 ulp is 2^-10 relative, and unfused ops round after each op);
* that float16 gemm/conv, which the CPU backend does not generate, fail with a
  DscError naming the op (not a process abort);
* (with qemu-user and the cross compiler) one float16 model run as AArch64 code.
"""

import ctypes
import os
import struct
import sys

import dsc
import dsc.runtime
import numpy as np
import pytest
from dsc import DscError
from dsc.backends.cpu.codegen import compile_llvm_ir
from dsc.backends.cpu.float16 import F16_SYMBOLS
from dsc.backends.cpu.target import _X86_LEVELS, CpuTarget, host_target
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "arm"))
sys.path.insert(0, os.path.dirname(__file__))
import armrun
from cpu_utils import mcjit_object  # noqa: E402

H = TensorProto.FLOAT16
RTOL = ATOL = 2e-3
TARGETS = ["host", "x86-64"]
RNG = np.random.default_rng(0)


# ------------------------------------------------------------------ helpers


def undefined_symbols(obj: bytes) -> set[str]:
    """Names an ELF64 object references but does not define (its .symtab entries with st_shndx 0)."""
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    out = set()
    for _, sh_type, _, _, off, size, link, _, _, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        strtab = sections[link]
        for k in range(1, size // entsize):
            name, _, _, shndx, _, _ = struct.unpack_from("<IBBHQQ", obj, off + k * entsize)
            if shndx == 0 and name:
                s = obj[strtab[4] + name : obj.index(b"\0", strtab[4] + name)].decode()
                out.add(s)
    return out


def x86_target(level: str) -> CpuTarget:
    if level == "host":
        return host_target()
    cpu, features, width, regs = _X86_LEVELS[level]
    return CpuTarget(level, "x86_64-unknown-linux-gnu", cpu, features, width, regs)


_LOOP = """
define void @{name}({src}* %p, {dst}* %q, i64 %n) {{
entry:
  br label %head
head:
  %i = phi i64 [0, %entry], [%j, %body]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %done
body:
  %pi = getelementptr {src}, {src}* %p, i64 %i
  %x = load {src}, {src}* %pi
  %y = {conv} {src} %x to {dst}
  %qi = getelementptr {dst}, {dst}* %q, i64 %i
  store {dst} %y, {dst}* %qi
  %j = add i64 %i, 1
  br label %head
done:
  ret void
}}
"""
CONVERSIONS = {  # name: (LLVM source type, destination type, instruction, numpy dtypes)
    "ext": ("half", "float", "fpext", np.float16, np.float32),
    "trunc": ("float", "half", "fptrunc", np.float32, np.float16),
    "trunc_d": ("double", "half", "fptrunc", np.float64, np.float16),
}
_engines = {}


def conversion_loops(level: str):
    """The three conversions as loops `f(src*, dst*, n)`, compiled for an x86 level and loaded here."""
    if level not in _engines:
        text = "".join(_LOOP.format(name=n, src=s, dst=d, conv=c) for n, (s, d, c, _, _) in CONVERSIONS.items())
        obj = compile_llvm_ir(text, x86_target(level))
        assert not undefined_symbols(obj) & set(F16_SYMBOLS)
        engine = mcjit_object(obj)
        proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
        _engines[level] = (engine, {n: proto(engine.get_function_address(n)) for n in CONVERSIONS})
    return _engines[level][1]


def convert(level: str, name: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, CONVERSIONS[name][3])
    out = np.zeros(x.shape, CONVERSIONS[name][4])
    conversion_loops(level)[name](x.ctypes.data, out.ctypes.data, x.size)
    return out


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Equal bit patterns, except that any NaN matches any NaN."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.itemsize]
    np.testing.assert_array_equal(got[~nan].view(bits), want[~nan].view(bits))


ALL_HALVES = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)


def float_probes() -> np.ndarray:
    """Every half, the midpoints between neighbours and values a float ulp either side, specials, random bits."""
    h = np.unique(np.abs(ALL_HALVES[np.isfinite(ALL_HALVES)]).astype(np.float64))
    mid = (h[:-1] + h[1:]) / 2
    mid = np.concatenate([mid, [65520.0]])  # halfway from 65504 to the next binade: rounds to Inf
    m32 = mid.astype(np.float32)
    near = np.concatenate([m32, np.nextafter(m32, np.float32(np.inf)), np.nextafter(m32, np.float32(0))])
    special = np.array([np.nan, np.inf, 65504, 65519.996, 1e5, 3.4e38, 1e-45, 1e-30, 2.0**-25, 2.0**-24, 2.0**-14, 0.0], np.float32)
    rand = RNG.integers(0, 1 << 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([ALL_HALVES.astype(np.float32), near, special, rand])
    return np.concatenate([x, -x])


# ------------------------------------------------------------------ the conversion routines


@pytest.mark.parametrize("level", ["x86-64", "host"])
def test_half_to_float_is_exact_for_every_half(level):
    assert_same_bits(convert(level, "ext", ALL_HALVES), ALL_HALVES.astype(np.float32))


@pytest.mark.parametrize("level", ["x86-64", "host"])
def test_float_to_half_rounds_to_nearest_even(level):
    x = float_probes()
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    assert_same_bits(convert(level, "trunc", x), want)


@pytest.mark.parametrize("level", ["x86-64", "host"])
def test_double_to_half_rounds_once(level):
    """double -> half directly (not through float, which would round twice near half midpoints)."""
    x = float_probes().astype(np.float64)
    h = np.unique(np.abs(ALL_HALVES[np.isfinite(ALL_HALVES)]).astype(np.float64))
    mid = (h[:-1] + h[1:]) / 2
    x = np.concatenate([x, mid * (1 + 2.0**-40), mid * (1 - 2.0**-40), [1e300, 5e-324, 65520 * (1 - 2.0**-40)]])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    assert_same_bits(convert(level, "trunc_d", x), want)


def test_special_values_by_name():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 65504, 65520, 2.0**-24, 2.0**-25, 3 * 2.0**-25, 2.0**-14 - 2.0**-25], np.float32)
    got = convert("x86-64", "trunc", x)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf
    assert got[3] == 0 and np.signbit(got[3])
    assert got[4] == 65504 and got[5] == np.inf  # 65520 is halfway to 65536: ties to even = Inf
    assert got[6] == np.float16(2.0**-24) and got[7] == 0  # 2^-25 ties to even: 0
    assert got[8].view(np.uint16) == 2  # 1.5 * 2^-24 ties to even: 2 * 2^-24
    assert got[9].view(np.uint16) == 0x400  # the largest denormal rounds up into the smallest normal


def test_objects_define_what_they_call():
    """No target's object leaves a half conversion to compiler-rt (MCJIT would abort on it)."""
    text = "".join(_LOOP.format(name=n, src=s, dst=d, conv=c) for n, (s, d, c, _, _) in CONVERSIONS.items())
    targets = [x86_target(lv) for lv in ("x86-64", "x86-64-v3", "x86-64-v4")]
    targets.append(CpuTarget("aarch64", "aarch64-unknown-linux-gnu", "generic", "+neon", 4, 32))
    for t in targets:
        assert not undefined_symbols(compile_llvm_ir(text, t)) & set(F16_SYMBOLS), t.name


# ------------------------------------------------------------------ models


def model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(
        nodes, "f16",
        [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def run(m, feeds, target):
    return dsc.runtime.load(dsc.compile(m, target=target), num_threads=2).run(None, feeds)


def const(name, array):
    a = np.asarray(array)
    dt = {np.dtype(np.float16): H, np.dtype(np.int64): TensorProto.INT64}[a.dtype]
    return helper.make_tensor(name, dt, list(a.shape), a.tobytes(), raw=True)


def close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=RTOL, atol=ATOL)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


X = RNG.standard_normal((3, 5, 37)).astype(np.float16)
Y = RNG.standard_normal((3, 5, 37)).astype(np.float16)
XY = [("x", H, X.shape), ("y", H, Y.shape)]
X32, Y32 = X.astype(np.float32), Y.astype(np.float32)


@pytest.mark.parametrize("target", TARGETS)
def test_elementwise_fused_and_alone(target):
    """A fused chain (one rounding at the store) and single ops, with a float16 scalar constant."""
    nodes = [
        helper.make_node("Add", ["x", "y"], ["a"]),
        helper.make_node("Mul", ["a", "c"], ["m"]),
        helper.make_node("Sigmoid", ["m"], ["s"]),
        helper.make_node("Max", ["s", "y"], ["mx"]),
        helper.make_node("Min", ["x", "y"], ["mn"]),
        helper.make_node("Exp", ["x"], ["e"]),
        helper.make_node("Tanh", ["y"], ["t"]),
        helper.make_node("Div", ["x", "y"], ["d"]),
        helper.make_node("Less", ["x", "y"], ["l"]),
        helper.make_node("Where", ["l", "x", "c"], ["w"]),
    ]
    outs = ["mx", "mn", "e", "t", "d", "l", "w"]
    m = model(nodes, XY, [(n, TensorProto.BOOL if n == "l" else H) for n in outs], [const("c", np.float16(0.3))])
    got = dict(zip(outs, run(m, {"x": X, "y": Y}, target)))
    c = np.float32(np.float16(0.3))
    f16 = np.float16
    close(got["mx"], np.maximum(sigmoid((X32 + Y32) * c), Y32).astype(f16))
    close(got["mn"], np.minimum(X, Y))
    close(got["e"], np.exp(X32).astype(f16))
    close(got["t"], np.tanh(Y32).astype(f16))
    with np.errstate(over="ignore"):
        d = (X32 / Y32).astype(f16)
    big = np.abs(X32 / Y32) < 1000  # near a zero divisor rounding order decides: compare the rest
    close(got["d"][big], d[big])
    np.testing.assert_array_equal(got["l"], X < Y)
    close(got["w"], np.where(X < Y, X, np.float16(0.3)))


@pytest.mark.parametrize("target", TARGETS)
def test_cast_to_and_from_float16(target):
    x = np.concatenate([RNG.standard_normal(100) * 1000, [np.nan, np.inf, -np.inf, 65519.99, 65520, 1e-8, 2.0**-25, 3 * 2.0**-25, -0.0]])
    x32, x64 = x.astype(np.float32), x.astype(np.float64)
    i = RNG.integers(-70000, 70000, 64).astype(np.int64)
    nodes = [
        helper.make_node("Cast", ["a"], ["a16"], to=H),
        helper.make_node("Cast", ["b"], ["b16"], to=H),
        helper.make_node("Cast", ["i"], ["i16"], to=H),
        helper.make_node("Cast", ["h"], ["h32"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["h"], ["h64"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["h"], ["hb"], to=TensorProto.BOOL),
        helper.make_node("Cast", ["hs"], ["hi"], to=TensorProto.INT32),
    ]
    ins = [("a", TensorProto.FLOAT, x.shape), ("b", TensorProto.DOUBLE, x.shape), ("i", TensorProto.INT64, i.shape), ("h", H, ALL_HALVES.shape), ("hs", H, X.shape)]
    outs = [("a16", H), ("b16", H), ("i16", H), ("h32", TensorProto.FLOAT), ("h64", TensorProto.DOUBLE), ("hb", TensorProto.BOOL), ("hi", TensorProto.INT32)]
    hs = (X * 100).astype(np.float16)
    got = run(model(nodes, ins, outs), {"a": x32, "b": x64, "i": i, "h": ALL_HALVES, "hs": hs}, target)
    with np.errstate(over="ignore", invalid="ignore"):
        want = [x32.astype(np.float16), x64.astype(np.float16), i.astype(np.float16), ALL_HALVES.astype(np.float32), ALL_HALVES.astype(np.float64)]
    for g_, w in zip(got, want):
        assert_same_bits(g_, w)
    np.testing.assert_array_equal(got[5], ALL_HALVES != 0)
    np.testing.assert_array_equal(got[6], hs.astype(np.int32))


@pytest.mark.parametrize("target", TARGETS)
def test_data_movement(target):
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
        helper.make_node("Concat", ["x", "y"], ["c"], axis=1),
        helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]),
        helper.make_node("Gather", ["y", "idx"], ["g"], axis=2),
        helper.make_node("Pad", ["x", "pads", "pv"], ["p"]),
    ]
    inits = [
        const("st", np.array([30, 1], np.int64)), const("en", np.array([2, 4], np.int64)),
        const("ax", np.array([2, 1], np.int64)), const("sp", np.array([-3, 1], np.int64)),
        const("idx", np.array([5, 0, 36, -1], np.int64)),
        const("pads", np.array([0, 1, 2, 1, 0, 3], np.int64)), const("pv", np.float16(0.1)),
    ]
    got = run(model(nodes, XY, [(n, H) for n in "tcsgp"], inits), {"x": X, "y": Y}, target)
    want = [
        X.transpose(2, 0, 1), np.concatenate([X, Y], 1), X[:, 1:4, 30:2:-3], Y[:, :, [5, 0, 36, -1]],
        np.pad(X, [(0, 1), (1, 0), (2, 3)], constant_values=np.float16(0.1)),
    ]
    for g_, w in zip(got, want):
        np.testing.assert_array_equal(g_.view(np.uint16), w.view(np.uint16))  # moved, not converted


@pytest.mark.parametrize("target", TARGETS)
def test_reductions_and_normalizations_widen(target):
    x4 = RNG.standard_normal((2, 3, 8, 8)).astype(np.float16)
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["rs"], keepdims=0),
        helper.make_node("ReduceMax", ["x"], ["rm"], axes=[1], keepdims=1),
        helper.make_node("Softmax", ["x"], ["sm"], axis=-1),
        helper.make_node("MaxPool", ["x"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["x"], ["gap"]),
    ]
    got = run(model(nodes, [("x", H, x4.shape)], [(n, H) for n in ("rs", "rm", "sm", "mp", "gap")]), {"x": x4}, target)
    x = x4.astype(np.float32)
    e = np.exp(x - x.max(-1, keepdims=True))
    want = [
        x.sum(), x.max(1, keepdims=True), e / e.sum(-1, keepdims=True),
        x.reshape(2, 3, 4, 2, 4, 2).max((3, 5)), x.mean((2, 3), keepdims=True),
    ]
    for g_, w in zip(got, want):
        close(g_, w.astype(np.float16))


@pytest.mark.parametrize(
    "node,inits,shape,op",
    [
        (helper.make_node("MatMul", ["x", "w"], ["o"]), [const("w", np.ones((37, 4), np.float16))], (3, 5, 37), "graph.matmul"),
        (helper.make_node("Conv", ["x", "w"], ["o"], kernel_shape=[3, 3]), [const("w", np.ones((4, 3, 3, 3), np.float16))], (1, 3, 8, 8), "graph.conv"),
    ],
)
def test_float16_gemm_and_conv_are_refused(node, inits, shape, op):
    m = model([node], [("x", H, shape)], [("o", H)], inits)
    with pytest.raises(DscError, match=f"{op} supports float32 only, not float16") as e:
        dsc.compile(m, target="x86-64")
    assert "float32" in e.value.hint


@pytest.mark.skipif(armrun.missing_tools() is not None, reason=f"AArch64 code runs under qemu-user: {armrun.missing_tools()}")
def test_float16_model_under_qemu(tmp_path):
    """AArch64 converts in hardware (fcvt): the same model, run as ARM code."""
    nodes = [
        helper.make_node("Add", ["x", "y"], ["a"]),
        helper.make_node("Sigmoid", ["a"], ["s"]),
        helper.make_node("Transpose", ["s"], ["t"], perm=[1, 0, 2]),
        helper.make_node("Cast", ["t"], ["o"], to=TensorProto.DOUBLE),
    ]
    m = model(nodes, XY, [("t", H), ("o", TensorProto.DOUBLE)])
    got = armrun.run_artifact(dsc.compile(m, target="aarch64"), {"x": X, "y": Y}, tmp_path)
    want = sigmoid(X32 + Y32).astype(np.float16).transpose(1, 0, 2)
    close(got[0], want)
    np.testing.assert_array_equal(got[1], got[0].astype(np.float64))
