"""CPU backend: convolutions with output channels as vector lanes (emit_conv_cl.py).

The path serves small output maps (ResNet-50's 7x7 stage); here it is forced
on other shapes too, so its edges are covered: channels that are not a
multiple of the vector width (masked last channel block), odd maps, strides,
padding, groups, batch > 1, K split into chunks and into packed blocks
(partial sums in stack buffers), and fused epilogues (bias, folded or unfolded
batch norm, residual add, activations, two outputs). Each case is compiled
natively (2 threads) and compared with the reference evaluator at
rtol = atol = 1e-4 (atol scaled by sqrt(K) / 10 for long sums, as in
test_cpu_conv_gemm).
"""

import zlib

import numpy as np
import pytest
from cpu_utils import check_native
from dsc.backends.cpu import emit_conv, emit_conv_cl
from dsc.dialects import graph as g
from test_cpu_conv_gemm import ALL, TOL, conv_module, cst, rand


@pytest.fixture
def lanes(monkeypatch):
    """Force the channel-lanes path and count the convolutions it emitted."""
    calls = []
    real = emit_conv.emit_conv_cl

    def counting(kb, geo, *a, **kw):
        calls.append(geo)
        return real(kb, geo, *a, **kw)

    monkeypatch.setattr(emit_conv_cl, "FORCE", True)
    monkeypatch.setattr(emit_conv, "emit_conv_cl", counting)
    return calls


def _tol(xshape, k, group):
    K = xshape[1] // group * k * k
    return {"rtol": TOL["rtol"], "atol": TOL["atol"] * max(1.0, K**0.5 / 10)}


CASES = [
    # xshape, M, k, stride, pad, group, bias
    ((1, 64, 7, 7), 64, 1, 1, 0, 1, True),  # 1x1 on 7x7: direct
    ((2, 40, 7, 7), 37, 1, 1, 0, 1, False),  # batch 2, 37 channels: masked last block
    ((1, 48, 14, 14), 50, 1, 2, 0, 1, True),  # 1x1 stride 2 (ResNet downsample): packed
    ((1, 32, 14, 14), 40, 3, 2, 1, 1, True),  # 3x3 stride 2, padding
    ((2, 19, 9, 9), 33, 3, 2, 1, 1, False),  # odd channels and map, batch 2
    ((1, 24, 5, 5), 20, 3, 1, 1, 1, True),  # 3x3 stride 1 on 5x5
    ((1, 16, 6, 6), 48, 3, 1, 0, 1, True),  # valid padding: 4x4 output
    ((1, 32, 8, 8), 32, 3, 1, 1, 2, True),  # groups
    ((1, 512, 3, 3), 64, 3, 1, 1, 1, True),  # long K on a 3x3 map
]


@pytest.mark.parametrize("xshape,m,k,stride,pad,group,bias", CASES)
def test_conv_lanes(lanes, xshape, m, k, stride, pad, group, bias):
    rng = np.random.default_rng(zlib.crc32(repr((xshape, m, k, stride)).encode()))
    mod, ins = conv_module(rng, xshape, m, k, stride, pad, 1, group, bias)
    check_native(mod, ins, **_tol(xshape, k, group))
    assert lanes, "the channel-lanes path did not run"


@pytest.mark.parametrize("pack,panel", [(None, 1024), (8 * 1024, None), (4 * 1024, 2048)])
@pytest.mark.parametrize("k,stride", [(1, 1), (3, 2)])
def test_conv_lanes_k_blocked(lanes, monkeypatch, pack, panel, k, stride):
    """K in chunks (weight panels kept in L1) and in packed blocks (partial sums of every channel block)."""
    if pack:
        monkeypatch.setattr(emit_conv_cl, "PACK_BYTES", pack)
    if panel:
        monkeypatch.setattr(emit_conv_cl, "PANEL_BYTES", panel)
    rng = np.random.default_rng(14)
    oh = (14 + 2 * (k // 2) - k) // stride + 1
    res = rand(rng, 2, 45, oh, oh)
    epilogue = lambda y, add: add(g.ReluOp.make([add(g.AddOp.make([y, add(cst(res, "r"))]))]))
    mod, ins = conv_module(rng, (2, 72, 14, 14), 45, k, stride, k // 2, epilogue=epilogue)
    check_native(mod, ins, group=ALL, **_tol((2, 72), k, 1))
    assert lanes


@pytest.mark.parametrize("k,stride,c", [(1, 1, 200), (3, 2, 70)])
def test_conv_lanes_batch1_small_panels(lanes, k, stride, c):
    """Batch 1: PANEL_BYTES_B1 chunks (with a short last one) and the next panel prefetched."""
    assert emit_conv_cl.PANEL_BYTES_B1 < 200 * 32 * 4
    rng = np.random.default_rng(19)
    h = 7 * stride  # a 7x7 output
    res = rand(rng, 1, 64, 7, 7)
    epilogue = lambda y, add: add(g.ReluOp.make([add(g.AddOp.make([y, add(cst(res, "r"))]))]))
    mod, ins = conv_module(rng, (1, c, h, h), 64, k, stride, k // 2, epilogue=epilogue)
    check_native(mod, ins, group=ALL, **_tol((1, c), k, 1))
    assert lanes


@pytest.mark.parametrize("k,stride", [(1, 1), (3, 2), (1, 2)])
def test_fused_conv_lanes_bn_residual_relu(lanes, k, stride):
    """The folded-BN ResNet block: per-channel scale and shift (vector loads), residual (gathers)."""
    rng = np.random.default_rng(15)
    c = 40
    oh = (13 + 2 * (k // 2) - k) // stride + 1
    scale, shift, res = rand(rng, 1, c, 1, 1), rand(rng, c, 1, 1), rand(rng, 1, c, oh, oh)

    def epi(y, add):
        y = add(g.MulOp.make([y, add(cst(scale, "s"))]))
        y = add(g.AddOp.make([y, add(cst(shift, "t"))]))
        y = add(g.AddOp.make([y, add(cst(res, "r"))]))
        return add(g.ReluOp.make([y]))

    mod, ins = conv_module(rng, (1, 24, 13, 13), c, k, stride, bias=False, epilogue=epi)
    check_native(mod, ins, group=ALL, **TOL)
    assert lanes


def test_fused_conv_lanes_batch_norm_two_outputs(lanes):
    """An unfolded batch_norm, a per-pixel operand ([1, 1, H, W]: a splat per pixel) and two outputs."""
    rng = np.random.default_rng(16)
    c = 35
    params = [rand(rng, c), rand(rng, c), rand(rng, c), np.abs(rand(rng, c)) + 0.5]
    gate = rand(rng, 1, 1, 7, 7)

    def epi(y, add):
        y = add(g.BatchNormOp.make([y] + [add(cst(p, f"bn{i}")) for i, p in enumerate(params)], epsilon=1e-5))
        z = add(g.MulOp.make([y, add(cst(gate, "gate"))]))
        return [y, add(g.MulOp.make([z, add(g.SigmoidOp.make([z]))]))]

    mod, ins = conv_module(rng, (2, 16, 7, 7), c, 3, 1, epilogue=epi)
    check_native(mod, ins, group=ALL, **TOL)
    assert lanes


def test_lanes_chosen_for_small_maps():
    """Unforced: 7x7 outputs with many channels take the path, and 14x14 strided ones with a long K;
    1x1 on 14x14, big maps, depthwise and tiny channel counts do not."""
    from dsc.backends.cpu.emit_conv import ConvGeom

    def geo(C, H, M, k, s, G=1):
        OH = (H + 2 * (k // 2) - k) // s + 1
        return ConvGeom(1, C, H, H, M, G, k, k, s, s, 1, 1, k // 2, k // 2, OH, OH)

    w = np.zeros(1, np.float32)
    assert emit_conv_cl.use_channel_lanes(geo(2048, 7, 512, 1, 1), w, True, 16, 32)
    assert emit_conv_cl.use_channel_lanes(geo(512, 14, 512, 3, 2), w, True, 16, 32)
    assert emit_conv_cl.use_channel_lanes(geo(1024, 14, 2048, 1, 2), w, True, 16, 32)
    assert emit_conv_cl.use_channel_lanes(geo(256, 28, 256, 3, 2), w, True, 16, 32)  # 14x14 output, K = 2304
    assert not emit_conv_cl.use_channel_lanes(geo(1024, 14, 256, 1, 1), w, True, 16, 32)  # 1x1 on 14x14
    assert not emit_conv_cl.use_channel_lanes(geo(256, 56, 64, 1, 1), w, True, 16, 32)
    assert not emit_conv_cl.use_channel_lanes(geo(64, 7, 64, 3, 1, G=64), w, True, 16, 32)
    assert not emit_conv_cl.use_channel_lanes(geo(64, 7, 8, 1, 1), w, True, 16, 32)
    assert not emit_conv_cl.use_channel_lanes(geo(64, 7, 64, 1, 1), None, True, 16, 32)


@pytest.mark.parametrize("part", [None, 2 * 49 * 32 * 4])
def test_conv_lanes_images_share_weight_chunks(lanes, monkeypatch, part):
    """1x1 on a batch: each k chunk of weights serves several images (3 images, runs of 2 leave a short last run)."""
    monkeypatch.setattr(emit_conv_cl, "PANEL_BYTES", 4096)
    monkeypatch.setattr(emit_conv_cl, "FORCE_TILE", (7, 2))
    if part:
        monkeypatch.setattr(emit_conv_cl, "PART_BYTES", part)
    rng = np.random.default_rng(17)
    res = rand(rng, 3, 50, 7, 7)
    epilogue = lambda y, add: add(g.ReluOp.make([add(g.AddOp.make([y, add(cst(res, "r"))]))]))
    mod, ins = conv_module(rng, (3, 96, 7, 7), 50, 1, 1, 0, epilogue=epilogue)
    check_native(mod, ins, group=ALL, **TOL)
    assert lanes


@pytest.mark.parametrize("xshape,m,k,stride,pad", [((1, 32, 14, 14), 40, 3, 2, 1), ((1, 48, 14, 14), 50, 1, 2, 0), ((2, 19, 9, 9), 33, 3, 2, 1)])
def test_conv_lanes_packed_by_gathers(lanes, monkeypatch, xshape, m, k, stride, pad):
    """The im2col block gathered lane by lane (maps whose rows do not fit two vectors) instead of row loads and shuffles."""
    monkeypatch.setattr(emit_conv_cl, "PACK_BY_ROWS", False)
    rng = np.random.default_rng(18)
    mod, ins = conv_module(rng, xshape, m, k, stride, pad)
    check_native(mod, ins, **_tol(xshape, k, 1))
    assert lanes
