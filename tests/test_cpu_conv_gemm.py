"""CPU backend: graph.conv / graph.gemm / graph.matmul emitters and their fused kernels.

Each case is compiled natively (2 threads) and compared with the reference
evaluator at rtol = atol = 1e-4. Fused cases also check that the kernel was
emitted by the fused conv/gemm emitter (one step, epilogue in registers) rather
than op by op.
"""

import zlib

import numpy as np
import pytest
from cpu_utils import check_native, outline_each
from dsc.backends.cpu import emit_conv, emit_gemm
from dsc.backends.cpu.codegen import generate
from dsc.backends.cpu.target import cpu_target_for, host_target
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import tensor_type
from dsc.reference import run_module
from dsc.runtime.native import NativeModule
from dsc.targets import get_target
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

F32 = np.float32
TOL = {"rtol": 1e-4, "atol": 1e-4}
ALL = lambda ops: [ops]


def build(arg_shapes, body):
    """A module @main(args) whose ops `body(block_args, add)` creates."""
    blk = Block(arg_types=[tensor_type(s, F32) for s in arg_shapes])

    def add(op):
        blk.add_op(op)
        return op.results[0]

    outs = body(list(blk.args), add)
    outs = outs if isinstance(outs, list) else [outs]
    blk.add_op(func.ReturnOp(*outs))
    f = func.FuncOp("main", ([a.type for a in blk.args], [o.type for o in outs]), Region(blk))
    m = ModuleOp([f])
    m.verify()
    return m


def cst(arr, key):
    return g.ConstantOp.from_array(np.asarray(arr, F32), key)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


def step_labels(module, group=ALL, target=None):
    prog = generate(outline_each(module.clone(), group), target or host_target())
    return [s.label for s in prog.steps]


def conv_module(rng, xshape, m, k, stride=1, pad=None, dil=1, group=1, bias=True, const_w=True, epilogue=None):
    nd = len(xshape) - 2
    ks = (k,) * nd if isinstance(k, int) else tuple(k)
    st = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dl = (dil,) * nd if isinstance(dil, int) else tuple(dil)
    pads = tuple(pad) if isinstance(pad, tuple | list) else ((ks[0] - 1) // 2 * dl[0] if pad is None else pad,) * (2 * nd)
    wshape = (m, xshape[1] // group) + ks
    w = rand(rng, *wshape)
    shapes = [xshape] + ([] if const_w else [wshape])

    def body(a, add):
        wv = add(cst(w, "w")) if const_w else a[1]
        ops = [a[0], wv] + ([add(cst(rand(rng, m), "b"))] if bias else [])
        y = add(g.ConvOp.make(ops, strides=st, pads=pads, dilations=dl, group=group))
        return epilogue(y, add) if epilogue else y

    inputs = [rand(rng, *s) for s in shapes]
    return build(shapes, body), inputs


# ------------------------------------------------------------------ conv

CONV_CASES = [
    # xshape, M, k, stride, pad, dil, group, bias
    ((1, 8, 9, 9), 16, 1, 1, 0, 1, 1, True),  # 1x1: direct
    ((2, 24, 7, 6), 40, 1, 1, 0, 1, 1, False),  # batch 2, tails in M and pixels
    ((1, 16, 10, 10), 16, 1, 2, 0, 1, 1, True),  # 1x1 stride 2: packed
    ((2, 5, 7, 11), 19, 3, 1, 1, 1, 1, True),  # 3x3 same: taps
    ((1, 3, 23, 21), 8, 7, 2, 3, 1, 1, True),  # the 7x7/2 stem
    ((1, 16, 10, 11), 24, 3, 2, 1, 1, 1, True),  # stride 2
    ((1, 8, 9, 10), 8, 3, 1, 0, 1, 1, False),  # valid padding (OW != W): packed
    ((1, 6, 12, 12), 12, 3, 1, 2, 2, 1, True),  # dilation 2, same
    ((1, 6, 13, 12), 12, 3, 2, 1, 2, 1, True),  # dilation 2, stride 2
    ((1, 4, 11, 11), 8, 5, 1, 2, 1, 1, True),  # 5x5
    ((1, 3, 17, 15), 5, 7, 1, 3, 1, 1, False),  # 7x7 stride 1
    ((1, 8, 8, 8), 16, 3, 1, 1, 1, 2, True),  # groups
    ((1, 12, 9, 9), 6, 1, 1, 0, 1, 3, True),  # grouped 1x1
    ((1, 8, 9, 9), 8, 3, 3, 1, 1, 1, True),  # stride 3
    ((1, 8, 5, 20), 16, (1, 3), (1, 2), (0, 1, 0, 1), 1, 1, True),  # rectangular kernel / strides
    ((1, 8, 9, 9), 16, 3, 1, (0, 1, 2, 1), 1, 1, False),  # asymmetric pads
    ((1, 512, 3, 3), 64, 3, 1, 1, 1, 1, True),  # large K, 3x3 pixels
    ((2, 3, 64, 64), 16, 7, 2, 3, 1, 1, True),  # stem: stride 2, whole output rows per vector (loads + shuffle)
    ((1, 5, 33, 64), 8, 3, 2, 1, 1, 1, False),  # same path, odd input height, padding on every border
]


@pytest.mark.parametrize("xshape,m,k,stride,pad,dil,group,bias", CONV_CASES)
def test_conv(xshape, m, k, stride, pad, dil, group, bias):
    # a seed that is the same in every process (str hashes are randomized per process)
    rng = np.random.default_rng(zlib.crc32(repr((xshape, m, k)).encode()))
    mod, ins = conv_module(rng, xshape, m, k, stride, pad, dil, group, bias)
    # N(0,1) data: float32 rounding of a K-term sum grows like sqrt(K) (K = 4608 for 512 channels, 3x3)
    kk = k if isinstance(k, int) else int(np.prod(k))
    K = xshape[1] // group * kk * (kk if isinstance(k, int) else 1)
    check_native(mod, ins, rtol=TOL["rtol"], atol=TOL["atol"] * max(1.0, K**0.5 / 10))


DEPTHWISE_CASES = [
    # xshape, mult, k, stride, pad, dil
    ((1, 32, 12, 33), 1, 3, 1, 1, 1),
    ((2, 16, 13, 13), 1, 3, 2, 1, 1),
    ((1, 8, 11, 40), 1, 5, 1, 2, 1),
    ((1, 24, 9, 9), 1, 5, 2, 2, 1),
    ((1, 4, 10, 40), 1, 3, 3, 1, 1),  # stride 3: gathers
    ((1, 7, 8, 8), 1, 3, 1, 2, 2),  # dilation
    ((1, 8, 14, 14), 2, 3, 1, 1, 1),  # channel multiplier 2
    ((1, 8, 9, 9), 1, 3, 1, (0, 1, 2, 1), 1),  # asymmetric pads
    ((1, 16, 7, 7), 1, 3, 1, 1, 1),  # smaller than a vector
    ((1, 16, 40, 37), 1, 3, 2, 0, 1),  # stride 2, no padding
]


@pytest.mark.parametrize("xshape,mult,k,stride,pad,dil", DEPTHWISE_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_depthwise(xshape, mult, k, stride, pad, dil, bias):
    rng = np.random.default_rng(3)
    c = xshape[1]
    mod, ins = conv_module(rng, xshape, c * mult, k, stride, pad, dil, c, bias)
    check_native(mod, ins, **TOL)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_1d(stride):
    rng = np.random.default_rng(4)
    mod, ins = conv_module(rng, (2, 8, 30), 16, 3, stride, 1)
    check_native(mod, ins, **TOL)
    mod, ins = conv_module(rng, (1, 8, 30), 8, 3, stride, 1, group=8)
    check_native(mod, ins, **TOL)


@pytest.mark.parametrize("k,stride", [(1, 1), (3, 1), (3, 2)])
def test_conv_weight_not_constant(k, stride):
    rng = np.random.default_rng(5)
    mod, ins = conv_module(rng, (1, 6, 9, 9), 10, k, stride, None, const_w=False)
    check_native(mod, ins, **TOL)


@pytest.mark.parametrize("order", ["pb", "mb"])
@pytest.mark.parametrize("k,pad", [(1, 0), (3, 1)])
def test_conv_loop_orders(monkeypatch, order, k, pad):
    """Pixel blocks outer / channel blocks outer, with tails in both (direct and taps modes)."""
    monkeypatch.setattr(emit_conv, "FORCE_ORDER", order)
    rng = np.random.default_rng(27)
    res = rand(rng, 2, 45, 9, 11)
    epilogue = lambda y, add: add(g.ReluOp.make([add(g.AddOp.make([y, add(cst(res, "r"))]))]))
    mod, ins = conv_module(rng, (2, 24, 9, 11), 45, k, 1, pad, epilogue=epilogue)
    check_native(mod, ins, group=ALL, **TOL)


@pytest.mark.parametrize("epi", [False, True])
def test_conv_k_blocked(monkeypatch, epi):
    """The packed path with K split in blocks (partial sums through the output)."""
    monkeypatch.setattr(emit_conv, "PACK_BYTES", 4096)
    rng = np.random.default_rng(6)
    res = rand(rng, 1, 16, 5, 5)
    epilogue = (lambda y, add: add(g.ReluOp.make([add(g.AddOp.make([y, add(cst(res, "r"))]))]))) if epi else None
    mod, ins = conv_module(rng, (1, 20, 10, 10), 16, 3, 2, 1, epilogue=epilogue)
    check_native(mod, ins, group=ALL, **TOL)


# ------------------------------------------------------------------ fused conv


def _assert_fused(mod, name):
    labels = step_labels(mod)
    assert len(labels) == 1 and labels[0].endswith(f"({name})"), labels


def test_fused_conv_bias_relu():
    rng = np.random.default_rng(7)
    mod, ins = conv_module(rng, (2, 8, 12, 12), 24, 3, epilogue=lambda y, add: add(g.ReluOp.make([y])))
    _assert_fused(mod, "conv")
    check_native(mod, ins, group=ALL, **TOL)


@pytest.mark.parametrize("k,stride,group", [(3, 1, 1), (1, 1, 1), (3, 2, 1), (3, 1, 16), (3, 2, 16)])
def test_fused_conv_bn_residual_relu(k, stride, group):
    """conv -> per-channel mul -> per-channel add -> add(residual) -> relu (the folded-BN ResNet block)."""
    rng = np.random.default_rng(8)
    oh = (13 + 2 * (k // 2) - k) // stride + 1
    scale, shift, res = rand(rng, 1, 16, 1, 1), rand(rng, 16, 1, 1), rand(rng, 1, 16, oh, oh)

    def epi(y, add):
        y = add(g.MulOp.make([y, add(cst(scale, "s"))]))
        y = add(g.AddOp.make([y, add(cst(shift, "t"))]))
        y = add(g.AddOp.make([y, add(cst(res, "r"))]))
        return add(g.ReluOp.make([y]))

    mod, ins = conv_module(rng, (1, 16, 13, 13), 16, k, stride, group=group, bias=False, epilogue=epi)
    _assert_fused(mod, "conv")
    check_native(mod, ins, group=ALL, **TOL)


def test_fused_conv_residual_is_graph_input():
    rng = np.random.default_rng(9)
    w = rand(rng, 8, 8, 3, 3)

    def body(a, add):
        y = add(g.ConvOp.make([a[0], add(cst(w, "w"))], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1))
        return add(g.ReluOp.make([add(g.AddOp.make([a[1], y]))]))

    mod = build([(2, 8, 7, 9), (2, 8, 7, 9)], body)
    check_native(mod, [rand(rng, 2, 8, 7, 9), rand(rng, 2, 8, 7, 9)], group=ALL, **TOL)


def test_fused_conv_batch_norm_silu():
    """An unfolded batch_norm and x * sigmoid(x) in the epilogue."""
    rng = np.random.default_rng(10)
    c = 12
    params = [rand(rng, c), rand(rng, c), rand(rng, c), np.abs(rand(rng, c)) + 0.5]

    def epi(y, add):
        y = add(g.BatchNormOp.make([y] + [add(cst(p, f"bn{i}")) for i, p in enumerate(params)], epsilon=1e-5))
        return add(g.MulOp.make([y, add(g.SigmoidOp.make([y]))]))

    mod, ins = conv_module(rng, (1, 6, 10, 10), c, 3, epilogue=epi)
    _assert_fused(mod, "conv")
    check_native(mod, ins, group=ALL, **TOL)


def test_fused_depthwise_relu6_and_two_outputs():
    rng = np.random.default_rng(11)

    def epi(y, add):
        z = add(g.ClipOp.make([y], min=0.0, max=6.0))
        return [y, add(g.HardSwishOp.make([z]))]

    mod, ins = conv_module(rng, (1, 16, 15, 18), 16, 3, 2, group=16, epilogue=epi)
    check_native(mod, ins, group=ALL, **TOL)


def test_fused_conv_se_gate():
    """1x1 spatial (squeeze-excite): every pixel block is one lane."""
    rng = np.random.default_rng(12)
    mod, ins = conv_module(rng, (2, 32, 1, 1), 8, 1, epilogue=lambda y, add: add(g.SigmoidOp.make([y])))
    check_native(mod, ins, group=ALL, **TOL)


# ------------------------------------------------------------------ gemm


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha,beta,cshape", [(1.0, 1.0, None), (0.5, 2.0, (37,)), (1.0, 0.5, (13, 1)), (2.0, 1.0, (13, 37)), (1.0, 1.0, ())])
def test_gemm(trans_a, trans_b, alpha, beta, cshape):
    rng = np.random.default_rng(13)
    m, kk, n = 13, 20, 37
    w = rand(rng, *((n, kk) if trans_b else (kk, n)))

    def body(a, add):
        ops = [a[0], add(cst(w, "w"))]
        if cshape is not None:
            ops.append(add(cst(rand(rng, *cshape), "c")))
        return add(g.GemmOp.make(ops, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b))

    ashape = (kk, m) if trans_a else (m, kk)
    check_native(build([ashape], body), [rand(rng, *ashape)], **TOL)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_activation_b(trans_b):
    """B is not a constant: loaded directly (trans_b=0) or packed per thread with gathers (trans_b=1)."""
    rng = np.random.default_rng(14)
    bshape = (50, 24) if trans_b else (24, 50)
    mod = build([(9, 24), bshape, (50,)], lambda a, add: add(g.GemmOp.make([a[0], a[1], a[2]], alpha=1.5, beta=1.0, trans_a=0, trans_b=trans_b)))
    check_native(mod, [rand(rng, 9, 24), rand(rng, *bshape), rand(rng, 50)], **TOL)


def test_gemm_b_gathered_in_kernel(monkeypatch):
    """A strided activation B too large to pack: gathered inside the micro-kernel."""
    monkeypatch.setattr(emit_gemm, "PACK_BYTES", 1024)
    rng = np.random.default_rng(15)
    mod = build([(7, 40), (33, 40)], lambda a, add: add(g.GemmOp.make([a[0], a[1]], alpha=1.0, beta=1.0, trans_a=0, trans_b=1)))
    check_native(mod, [rand(rng, 7, 40), rand(rng, 33, 40)], **TOL)


@pytest.mark.parametrize("m,k,n", [(1, 64, 1000), (1, 17, 5), (64, 96, 48), (6, 300, 16), (100, 8, 130)])
def test_gemm_shapes(m, k, n):
    rng = np.random.default_rng(16)
    w, c = rand(rng, n, k), rand(rng, n)
    mod = build([(m, k)], lambda a, add: add(g.GemmOp.make([a[0], add(cst(w, "w")), add(cst(c, "c"))], alpha=1.0, beta=1.0, trans_a=0, trans_b=1)))
    check_native(mod, [rand(rng, m, k)], **TOL)


# ------------------------------------------------------------------ matmul


MATMUL_CASES = [
    ((2, 3, 5, 7), (2, 3, 7, 9)),
    ((4, 7), (3, 7, 20)),  # broadcast A
    ((3, 4, 7), (7, 20)),  # broadcast B
    ((2, 1, 6, 8), (3, 8, 33)),  # broadcast both
    ((7,), (7, 5)),  # 1-D A
    ((5, 7), (7,)),  # 1-D B
    ((7,), (7,)),  # dot
    ((2, 7), (3, 1, 7, 4)),
    ((1, 130, 64), (1, 64, 130)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_CASES)
def test_matmul(sa, sb):
    rng = np.random.default_rng(17)
    mod = build([sa, sb], lambda a, add: add(g.MatMulOp.make([a[0], a[1]])))
    check_native(mod, [rand(rng, *sa), rand(rng, *sb)], **TOL)


@pytest.mark.parametrize("sb", [(7, 20), (3, 7, 20), (1, 7, 20), (7,)])
def test_matmul_constant_b(sb):
    rng = np.random.default_rng(18)
    w = rand(rng, *sb)
    mod = build([(3, 5, 7)], lambda a, add: add(g.MatMulOp.make([a[0], add(cst(w, "w"))])))
    check_native(mod, [rand(rng, 3, 5, 7)], **TOL)


# ------------------------------------------------------------------ fused matmul


def test_fused_gemm_gelu():
    rng = np.random.default_rng(19)
    w, c = rand(rng, 64, 100), rand(rng, 100)

    def body(a, add):
        y = add(g.GemmOp.make([a[0], add(cst(w, "w")), add(cst(c, "c"))], alpha=1.0, beta=1.0, trans_a=0, trans_b=0))
        return add(g.GeluOp.make([y], approximate="none"))

    mod = build([(13, 64)], body)
    _assert_fused(mod, "gemm")
    check_native(mod, [rand(rng, 13, 64)], group=ALL, **TOL)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_matmul_transposed_weight_bias_gelu(approximate):
    """x @ transpose(W) + b, GELU: the transpose is applied when repacking the weight."""
    rng = np.random.default_rng(20)
    w, bias = rand(rng, 48, 32), rand(rng, 48)

    def body(a, add):
        t = add(g.TransposeOp.make([add(cst(w, "w"))], perm=(1, 0)))
        y = add(g.AddOp.make([add(g.MatMulOp.make([a[0], t])), add(cst(bias, "b"))]))
        return add(g.GeluOp.make([y], approximate=approximate))

    mod = build([(2, 10, 32)], body)
    _assert_fused(mod, "gemm")
    check_native(mod, [rand(rng, 2, 10, 32)], group=ALL, **TOL)


def test_fused_torch_erf_gelu():
    """x * (1 + erf(x / sqrt 2)) * 0.5 after matmul + bias, as torch exports it."""
    rng = np.random.default_rng(21)
    w, bias = rand(rng, 16, 40), rand(rng, 40)

    def body(a, add):
        x = add(g.AddOp.make([add(g.MatMulOp.make([a[0], add(cst(w, "w"))])), add(cst(bias, "b"))]))
        e = add(g.ErfOp.make([add(g.DivOp.make([x, add(cst(np.float32(1.4142135), "s2"))]))]))
        y = add(g.MulOp.make([x, add(g.AddOp.make([e, add(cst(np.float32(1.0), "one"))]))]))
        return add(g.MulOp.make([y, add(cst(np.float32(0.5), "half"))]))

    mod = build([(3, 7, 16)], body)
    _assert_fused(mod, "gemm")
    check_native(mod, [rand(rng, 3, 7, 16)], group=ALL, **TOL)


def test_fused_attention_scores():
    """q @ transpose(k) / 8 + mask: the transposed activation is packed per thread."""
    rng = np.random.default_rng(22)

    def body(a, add):
        kt = add(g.TransposeOp.make([a[1]], perm=(0, 2, 3, 1)))
        s = add(g.DivOp.make([add(g.MatMulOp.make([a[0], kt])), add(cst(np.float32(8.0), "s"))]))
        return add(g.AddOp.make([s, a[2]]))

    shapes = [(2, 3, 37, 16), (2, 37, 3, 16), (2, 1, 1, 37)]
    mod = build(shapes, body)
    _assert_fused(mod, "gemm")
    check_native(mod, [rand(rng, *s) for s in shapes], group=ALL, **TOL)


def test_fused_attention_context():
    """probs @ v then transpose out (the transpose stays a separate kernel)."""
    rng = np.random.default_rng(23)
    shapes = [(2, 3, 20, 20), (2, 3, 20, 16)]
    mod = build(shapes, lambda a, add: add(g.MatMulOp.make([a[0], a[1]])))
    check_native(mod, [rand(rng, *s) for s in shapes], group=ALL, **TOL)


def test_fused_matmul_residual_two_outputs():
    rng = np.random.default_rng(24)

    def body(a, add):
        z = add(g.AddOp.make([add(g.MatMulOp.make([a[0], a[1]])), a[2]]))
        return [z, add(g.SigmoidOp.make([z]))]

    shapes = [(20, 30), (30, 50), (20, 50)]
    mod = build(shapes, body)
    check_native(mod, [rand(rng, *s) for s in shapes], group=ALL, **TOL)


# ------------------------------------------------------------------ from the fusion passes


def test_fusion_pass_kernels():
    """conv+bn+residual+relu and matmul+bias+gelu as the fusion passes build them."""
    from dsc.passes.fold_batchnorm import FoldBatchNormPass
    from dsc.passes.fuse_conv_bn_relu import FuseConvBnReluPass
    from dsc.passes.fuse_matmul_epilogue import FuseMatmulEpiloguePass
    from dsc.passes.outline_kernels import OutlineKernelsPass
    from dsc.passes.plan_memory import PlanMemoryPass
    from xdsl.context import Context

    rng = np.random.default_rng(25)
    w, bn = rand(rng, 8, 8, 3, 3), [rand(rng, 8), rand(rng, 8), rand(rng, 8), np.abs(rand(rng, 8)) + 0.5]
    fw, fb = rand(rng, 8 * 36, 10), rand(rng, 10)

    def body(a, add):
        y = add(g.ConvOp.make([a[0], add(cst(w, "w"))], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1))
        y = add(g.BatchNormOp.make([y] + [add(cst(p, f"bn{i}")) for i, p in enumerate(bn)], epsilon=1e-5))
        y = add(g.ReluOp.make([add(g.AddOp.make([y, a[0]]))]))
        flat = add(g.ReshapeOp.make([y], [tensor_type((1, 8 * 36), F32)]))
        z = add(g.AddOp.make([add(g.MatMulOp.make([flat, add(cst(fw, "fw"))])), add(cst(fb, "fb"))]))
        return add(g.GeluOp.make([z], approximate="none"))

    mod = build([(1, 8, 6, 6)], body)
    x = rand(rng, 1, 8, 6, 6)
    want = run_module(mod, [x])
    fused = mod.clone()
    for p in (FoldBatchNormPass(), FuseConvBnReluPass(), FuseMatmulEpiloguePass(), OutlineKernelsPass(), PlanMemoryPass()):
        p.apply(Context(), fused)
    prog = generate(fused, host_target())
    assert [s.label.split(" ")[-1] for s in prog.steps] == ["(conv)", "(gemm)"], [s.label for s in prog.steps]
    got = _run_program(prog, [x])
    np.testing.assert_allclose(got[0], want[0], **TOL)


def _run_program(prog, inputs, threads=2):
    native = NativeModule(prog.object_code, threads)
    outs = [np.empty(o.shape, o.dtype) for o in prog.outputs]
    weights = np.frombuffer(prog.weights, np.uint8).copy() if prog.weights else np.zeros(64, np.uint8)
    native.run([np.ascontiguousarray(a) for a in inputs], outs, weights, np.zeros(max(prog.arena_bytes, 64), np.uint8))
    return outs


# ------------------------------------------------------------------ other vector widths


@pytest.mark.parametrize("target", ["x86-64-v3", "x86-64", "aarch64"])
def test_other_targets(target):
    """AVX2 (8 lanes) and SSE2 (4 lanes) run here; AArch64 (NEON) is only compiled."""
    t = cpu_target_for(get_target(target))
    rng = np.random.default_rng(26)
    cases = [
        conv_module(rng, (2, 8, 10, 11), 16, 3, epilogue=lambda y, add: add(g.ReluOp.make([y]))),
        conv_module(rng, (1, 8, 13, 13), 16, 3, 2),
        conv_module(rng, (1, 3, 32, 32), 8, 7, 2, 3),  # stride-2 rows path with 8 / 4 lanes
        conv_module(rng, (1, 8, 13, 21), 8, 3, 2, group=8),
        conv_module(rng, (1, 8, 13, 21), 8, 3, 1, group=8),
    ]
    shapes = [(2, 5, 9), (2, 30, 9)]
    cases.append((build(shapes, lambda a, add: add(g.MatMulOp.make([a[0], add(g.TransposeOp.make([a[1]], perm=(0, 2, 1)))]))), [rand(rng, *s) for s in shapes]))
    w = rand(rng, 37, 20)
    cases.append((build([(9, 20)], lambda a, add: add(g.GemmOp.make([a[0], add(cst(w, "w"))], alpha=1.0, beta=1.0, trans_a=0, trans_b=1))), [rand(rng, 9, 20)]))
    for mod, ins in cases:
        prog = generate(outline_each(mod.clone(), ALL), t)
        if target.startswith("aarch64"):
            assert prog.object_code
            continue
        np.testing.assert_allclose(_run_program(prog, ins)[0], run_module(mod, ins)[0], **TOL)


# ------------------------------------------------------------------ denormals


def test_denormal_inputs_and_mxcsr_restored():
    """Denormal activations (underflowed softmax probabilities) are flushed inside the
    conv/gemm steps only: results stay right and the calling thread's float mode is unchanged."""
    rng = np.random.default_rng(28)
    sa, sb = (2, 3, 20, 20), (2, 3, 20, 16)
    p = np.abs(rand(rng, *sa))
    p[rng.random(sa) < 0.3] = np.float32(1e-39)
    mod = build([sa, sb], lambda a, add: add(g.MatMulOp.make([a[0], a[1]])))
    ins = [p, rand(rng, *sb)]
    prog = generate(outline_each(mod.clone()), host_target())
    got = _run_program(prog, ins, threads=1)  # runs in this thread
    np.testing.assert_allclose(got[0], run_module(mod, ins)[0], **TOL)
    tiny = np.array([1e-39], np.float32)
    assert (tiny * np.float32(1.0))[0] != 0  # no DAZ / FTZ left behind
