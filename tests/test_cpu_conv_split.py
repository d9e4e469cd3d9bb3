"""CPU backend: how the threads split a convolution, and which convolution path is taken.

* `KernelBuilder.weighted_thread_range` (irb.py), compiled and run for every thread
  count: the shares tile range(n) without gaps or overlaps and follow the costs.
* emit_conv's tiles split by cost (a short last pixel block), checked numerically
  with 1-4 threads against the reference evaluator (rtol = atol = 1e-4), with and
  without the weight prefetch.
* which 3x3 convs take Winograd (a 14x14 map at batch 1 does; a 7x7 map at batch 1
  does not, at batch 4 its images share a block); all match the reference.
"""

import ctypes

import numpy as np
import pytest
from cpu_utils import mcjit_object, outline_each
from dsc.backends.cpu import emit_conv, emit_winograd
from dsc.backends.cpu.codegen import compile_llvm_ir, generate
from dsc.backends.cpu.irb import I64, VOID, KernelBuilder
from dsc.backends.cpu.target import host_target
from dsc.dialects import graph as g
from dsc.reference import run_module
from dsc.runtime.native import NativeModule
from llvmlite import ir
from test_cpu_conv_gemm import ALL, TOL, conv_module, cst, rand
from test_cpu_winograd import wino_module

F32 = np.float32
# (n, period, tail, cost, tail_cost)
RANGES = [(160, 160, 32, 64, 26), (40, 5, 1, 64, 20), (7, 7, 3, 10, 1), (12, 4, 4, 5, 2), (3, 3, 1, 64, 64), (96, 12, 2, 3, 7)]
_ranges_fn = {}


def weighted_ranges(n, period, tail, cost, tail_cost, nthreads):
    """[(lo, hi)] of each thread, from the compiled weighted_thread_range."""
    key = (n, period, tail, cost, tail_cost)
    if key not in _ranges_fn:
        mod = ir.Module(name="t")
        mod.triple = host_target().triple
        fn = ir.Function(mod, ir.FunctionType(VOID, [I64, I64, I64.as_pointer()]), "ranges")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        lo, hi = KernelBuilder(b, mod).weighted_thread_range(n, period, tail, cost, tail_cost, fn.args[0], fn.args[1])
        b.store(lo, b.gep(fn.args[2], [ir.Constant(I64, 0)]))
        b.store(hi, b.gep(fn.args[2], [ir.Constant(I64, 1)]))
        b.ret_void()
        engine = mcjit_object(compile_llvm_ir(str(mod), host_target()))
        proto = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
        _ranges_fn[key] = (engine, proto(engine.get_function_address("ranges")))
    out = []
    for t in range(nthreads):
        buf = np.zeros(2, np.int64)
        _ranges_fn[key][1](t, nthreads, buf.ctypes.data)
        out.append(tuple(int(v) for v in buf))
    return out


@pytest.mark.parametrize("n,period,tail,cost,tail_cost", RANGES)
@pytest.mark.parametrize("nthreads", [1, 2, 3, 4, 7])
def test_weighted_thread_range(n, period, tail, cost, tail_cost, nthreads):
    shares = weighted_ranges(n, period, tail, cost, tail_cost, nthreads)
    assert shares[0][0] == 0 and shares[-1][1] == n
    for (_, hi), (lo, _) in zip(shares, shares[1:]):
        assert hi == lo  # contiguous: no gap, no overlap
    costs = [tail_cost if i % period >= period - tail else cost for i in range(n)]
    start = np.concatenate([[0], np.cumsum(costs)[:-1]])
    total = sum(costs)
    for t, (lo, hi) in enumerate(shares):
        # item i is thread t's when its start lies in [t * total / nthreads, (t + 1) * total / nthreads)
        want = [i for i in range(n) if t * total // nthreads <= start[i] < (t + 1) * total // nthreads] if tail_cost != cost else None
        if want is not None:
            assert list(range(lo, hi)) == want


def _run(module, inputs, threads):
    prog = generate(outline_each(module.clone(), ALL), host_target())
    native = NativeModule(prog.object_code, threads)
    outs = [np.empty(o.shape, o.dtype) for o in prog.outputs]
    weights = np.frombuffer(prog.weights, np.uint8).copy() if prog.weights else np.zeros(64, np.uint8)
    arena = np.zeros(max(prog.arena_bytes, 64), np.uint8)
    native.run([np.ascontiguousarray(x, F32) for x in inputs], outs, weights, arena)
    return outs


@pytest.mark.parametrize("order", ["pb", "mb"])
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("xshape,m", [((1, 64, 14, 14), 40), ((2, 24, 13, 13), 45), ((1, 512, 14, 14), 130)])
def test_conv_split_by_cost(monkeypatch, order, threads, xshape, m):
    """1x1 convs whose last pixel block holds fewer vectors (196 = 4 x 48 + 4 pixels; 169 = 3 x 48 + 25);
    the third has weights big enough to be prefetched (emit_conv.W_PF_MIN_BYTES)."""
    monkeypatch.setattr(emit_conv, "FORCE_ORDER", order)
    rng = np.random.default_rng(11)
    n, _, h, w = xshape
    res = rand(rng, n, m, h, w)
    epilogue = lambda y, add: add(g.ReluOp.make([add(g.AddOp.make([y, add(cst(res, "r"))]))]))
    mod, ins = conv_module(rng, xshape, m, 1, 1, 0, epilogue=epilogue)
    want = run_module(mod, ins)
    for got, w_ in zip(_run(mod, ins, threads), want):
        np.testing.assert_allclose(got, w_, **TOL)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n,h,winograd", [(1, 14, True), (2, 14, True), (1, 7, False), (4, 7, True), (3, 7, True)])
def test_winograd_blocks(monkeypatch, n, h, winograd, threads):
    """256 channels: 14x14 is one block of tiles per image (Winograd, its weights prefetched);
    7x7 alone fills 4 of 16 lanes (direct), 4 images share one block (Winograd; 3 images: a
    block with its last tile rows empty)."""
    calls = []
    real = emit_winograd.transform_weights
    monkeypatch.setattr(emit_winograd, "transform_weights", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(12)
    mod, inputs = wino_module(rng, n, 256, 256, h, h, "residual")
    want = run_module(mod, inputs)
    got = _run(mod, inputs, threads)
    assert bool(calls) == winograd
    np.testing.assert_allclose(got[0], want[0], **TOL)
