"""Models exported from torch with torch.onnx.export (opset 17) import, compile and match torch.

Skipped where torch is not installed (it is an optional extra: `pip install torch==2.13.0`).
The zoo (tools/zoo*.py) builds the full architectures with onnx.helper for CI;
tools/export_torch_zoo.py exports the real torchvision/HF models where those are installed.
"""

import io

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (optional extra: pip install torch==2.13.0)")
nn = torch.nn

import dsc.runtime  # noqa: E402
from dsc.driver import compile as dsc_compile  # noqa: E402
from dsc.frontends.onnx import import_onnx  # noqa: E402
from dsc.reference import run_module  # noqa: E402


class ResBlock(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)) + x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, c=16, e=4):
        super().__init__()
        h = c * e
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.body(x)


class Encoder(nn.Module):
    def __init__(self, d=32, heads=4, ff=64):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / self.dk**0.5, dim=-1)
        y = self.ln1(x + self.out((att @ v).transpose(1, 2).reshape(b, t, d)))
        return self.ln2(y + self.ff2(nn.functional.gelu(self.ff1(y))))


CASES = {
    "resnet_block": (ResBlock, (1, 16, 16, 16)),
    "mobilenet_block": (InvertedResidual, (1, 16, 14, 14)),
    "transformer_block": (Encoder, (1, 16, 32)),
}


def export(module, x) -> onnx.ModelProto:
    f = io.BytesIO()
    kwargs = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
    torch.onnx.export(module, (x,), f, opset_version=17, input_names=["input"], output_names=["output"], **kwargs)
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_export_matches_torch(name):
    cls, shape = CASES[name]
    torch.manual_seed(0)
    module = cls().eval()
    for m in module.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(*shape)
    with torch.no_grad():
        want = module(x).numpy()
    model = export(module, x)
    got_ref = run_module(import_onnx(model), {"input": x.numpy()})[0]
    np.testing.assert_allclose(got_ref, want, rtol=1e-4, atol=1e-4)
    got = dsc.runtime.load(dsc_compile(model)).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
