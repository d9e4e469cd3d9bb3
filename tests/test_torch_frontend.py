"""The torch frontend: torch.nn.Module -> torch.export -> graph dialect -> native code.

Skipped where torch is absent (it is the optional extra `dsc[torch]`; CI
installs `torch==2.13.0`). torchvision is not a dependency, so the blocks
below are written in plain torch.nn with the same structure as ResNet's
basic block, MobileNetV2's inverted residual and a pre-norm transformer
block. Outputs are compared with torch at rtol 1e-4 / atol 1e-4.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (optional extra: pip install 'dsc[torch]', i.e. torch==2.13.0)")
nn = torch.nn
F = torch.nn.functional

import dsc  # noqa: E402
import dsc.runtime  # noqa: E402
from dsc.dialects.asm import print_module  # noqa: E402
from dsc.frontends.torch import import_torch  # noqa: E402
from dsc.reference import run_module  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-4)


class ResNetBlock(nn.Module):
    """conv-bn-relu, conv-bn, identity residual; then a strided block with a 1x1 downsample."""

    def __init__(self, c=8):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c)
        self.downsample = nn.Sequential(nn.Conv2d(c, 2 * c, 1, stride=2, bias=False), nn.BatchNorm2d(2 * c))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(2 * c, 10)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)) + x)
        z = F.relu(self.bn3(self.conv3(y)) + self.downsample(y))
        z = F.adaptive_avg_pool2d(self.pool(z), 1)
        return self.fc(torch.flatten(z, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2: 1x1 expand, 3x3 depthwise, ReLU6, 1x1 project, residual; pooled classifier head."""

    def __init__(self, c=8, t=4):
        super().__init__()
        h = c * t
        self.block = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(c, 5))

    def forward(self, x):
        return self.head(x + self.block(x))


class SelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) / hd**0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-norm: x + attn(ln(x)), then x + mlp(ln(x)) with a GELU MLP."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), SelfAttention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def prepared(model_cls, seed=0):
    """The model in eval mode, with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    m = model_cls()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return m.eval()


MODELS = [
    (ResNetBlock, (2, 8, 16, 16)),
    (InvertedResidual, (2, 8, 12, 12)),
    (TransformerBlock, (2, 10, 32)),
]


def torch_out(model, x):
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("model_cls, shape", MODELS, ids=[m.__name__ for m, _ in MODELS])
def test_compiled_block_matches_torch(model_cls, shape):
    model = prepared(model_cls)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    data = dsc.compile(model, (x,), target="host")
    sess = dsc.runtime.load(data)
    assert [a.name for a in sess.get_inputs()] == ["x"]
    np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], torch_out(model, x), **TOL)


@pytest.mark.parametrize("decompose", [False, True], ids=["export-ir", "core-aten"])
@pytest.mark.parametrize("model_cls, shape", MODELS, ids=[m.__name__ for m, _ in MODELS])
def test_reference_matches_torch(model_cls, shape, decompose):
    model = prepared(model_cls)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    module = import_torch(model, (x,), decompose=decompose)
    np.testing.assert_allclose(run_module(module, [x.numpy()])[0], torch_out(model, x), **TOL)


def test_ir_names_ops_and_weights_after_the_module():
    model = prepared(ResNetBlock)
    text = print_module(import_torch(model, torch.randn(1, 8, 8, 8)))
    assert 'loc("conv1/conv2d")' in text and 'loc("downsample.1/batch_norm_' in text and 'loc("fc/linear")' in text
    assert "dense_resource<conv1_weight>" in text and 'loc("bn1.running_var")' in text


def test_training_flag_is_restored():
    model = ResNetBlock().train()
    import_torch(model, (torch.randn(1, 8, 8, 8),))
    assert model.training


def test_functional_ops():
    class Ops(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)

        def forward(self, x, ids):
            y = F.silu(x) + F.hardswish(x) * F.sigmoid(x) - torch.tanh(x)
            y = torch.cat([y, F.leaky_relu(x, 0.2)], dim=-1)
            y = F.avg_pool2d(y, 2) + F.max_pool2d(y, 2)
            z = y.permute(0, 2, 3, 1).reshape(2, -1, 4)
            z = F.layer_norm(z, (4,)) @ z.transpose(1, 2)
            e = self.emb(ids).sum(1)
            return z.mean(dim=-1), e, y[:, 1:3, ::2].clamp(-0.5, 0.5), torch.where(x > 0, x, x * 0.1)

    model = Ops().eval()
    x, ids = torch.randn(2, 4, 4, 3), torch.tensor([[1, 2, 3], [4, 5, 9]])
    with torch.no_grad():
        want = [t.numpy() for t in model(x, ids)]
    got = run_module(import_torch(model, (x, ids)), [x.numpy(), ids.numpy()])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **TOL)
    sess = dsc.runtime.load(dsc.compile(model, (x, ids), target="host"))
    for g, w in zip(sess.run(None, {"x": x.numpy(), "ids": ids.numpy()}), want):
        np.testing.assert_allclose(g, w, **TOL)


def test_unsupported_ops_are_listed():
    model = nn.Sequential(nn.ConvTranspose2d(3, 3, 2), nn.Upsample(scale_factor=2))
    with pytest.raises(dsc.UnsupportedOpError, match="conv_transpose2d"):
        dsc.compile(model, (torch.randn(1, 3, 4, 4),))


# ------------------------------------------------------------ full-size networks (DSC_FULL_ZOO=1)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18, layer for layer (same module names and parameter shapes)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _cbr(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvRes(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        h = cin * t
        layers = ([_cbr(cin, h, 1)] if t != 1 else []) + [_cbr(h, h, 3, stride, h), nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 (width 1.0), block for block."""

    def __init__(self, num_classes=1000):
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        feats, cin = [_cbr(3, 32, 3, 2)], 32
        for t, c, n, s in cfg:
            for i in range(n):
                feats.append(_InvRes(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(_cbr(cin, 1280, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


@pytest.mark.skipif(not os.environ.get("DSC_FULL_ZOO"), reason="full-size networks take about a minute each to compile: set DSC_FULL_ZOO=1")
@pytest.mark.parametrize("model_cls", [ResNet18, MobileNetV2], ids=["resnet18", "mobilenet_v2"])
def test_full_size_network_matches_torch(model_cls):
    model = prepared(model_cls)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    sess = dsc.runtime.load(dsc.compile(model, (x,), target="host"))
    np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], torch_out(model, x), **TOL)
