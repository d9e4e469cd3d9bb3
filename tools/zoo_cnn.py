"""Image classifiers of the model zoo: ResNet-18/50, MobileNetV2, EfficientNet-B0, MLP.

Each builder returns an opset-17 ``onnx.ModelProto`` with the layer structure,
node names and parameter names of the torchvision model exported by
``torch.onnx.export(model.eval(), ..., opset_version=17, do_constant_folding=False)``:
Conv, BatchNormalization and the activation stay separate nodes; ReLU6 is
``Clip`` with ``Constant`` min/max inputs; SiLU is ``x * Sigmoid(x)``; the head is
GlobalAveragePool -> Flatten -> Gemm(transB=1).  Input ``input`` is
float32 [batch, 3, image, image]; output ``output`` is [batch, num_classes].

Weights are random but scaled so activations stay O(1) through the whole
network: convolutions use He-style init with a gain matched to the activation
that feeds them, BatchNorm has gamma ~ U(0.85, 1.05), beta, running_mean
~ N(0, 0.1), running_var ~ U(0.5, 1.5), and the last BatchNorm of every residual
branch gets a small gamma ~ U(0.2, 0.4) so residual sums do not blow up.

`width` scales the channels (base width for ResNets, width multiplier for
MobileNetV2/EfficientNet) and `image` the input size; the defaults give the
real models, whose parameter counts match torchvision's.
"""

from __future__ import annotations

import math

import onnx

try:
    from .zoo_graph import FLOAT, GraphBuilder, Scope
except ImportError:  # imported as a top-level module with tools/ on sys.path
    from zoo_graph import FLOAT, GraphBuilder, Scope

# 1 / E[act(z)^2] for z ~ N(0, 1): keeps the second moment through conv + act.
GAIN = {"linear": 1.0, "relu": 2.0, "silu": 1.0 / 0.3553}
SE_GAIN = 3.0  # empirical: the SE scale Sigmoid(.) has rms ~0.6 and SiLU is sub-linear near 0
BN_GAMMA = (0.85, 1.05)
RESIDUAL_GAMMA = (0.2, 0.4)


# ---------------------------------------------------------------- layers
def conv(gb: GraphBuilder, x: str, s: Scope, cin: int, cout: int, k: int, stride: int = 1,
         groups: int = 1, gain: float = 2.0, bias: bool = False) -> str:
    """``nn.Conv2d(cin, cout, k, stride, padding=(k-1)//2, groups=groups, bias=bias)``."""
    fan_in = cin // groups * k * k
    inputs = [x, gb.randn(s.p("weight"), (cout, cin // groups, k, k), math.sqrt(gain / fan_in))]
    if bias:
        inputs.append(gb.randn(s.p("bias"), (cout,), 0.1))
    pad = (k - 1) // 2
    return gb.op("Conv", inputs, s, dilations=[1, 1], group=groups, kernel_shape=[k, k],
                 pads=[pad] * 4, strides=[stride, stride])


def batch_norm(gb: GraphBuilder, x: str, s: Scope, c: int, gamma=BN_GAMMA,
               eps: float = 1e-5) -> str:
    """``nn.BatchNorm2d(c)`` in eval mode (running statistics)."""
    inputs = [x, gb.uniform(s.p("weight"), (c,), *gamma), gb.randn(s.p("bias"), (c,), 0.1),
              gb.randn(s.p("running_mean"), (c,), 0.1),
              gb.uniform(s.p("running_var"), (c,), 0.5, 1.5)]
    return gb.op("BatchNormalization", inputs, s, epsilon=eps, momentum=0.9)


def activation(gb: GraphBuilder, x: str, s: Scope, kind: str | None) -> str:
    """ReLU, ReLU6 (Clip 0..6) or SiLU (x * Sigmoid(x)); `None` is the identity."""
    if kind is None:
        return x
    if kind == "relu":
        return gb.op("Relu", [x], s)
    if kind == "relu6":
        return gb.op("Clip", [x, gb.constant(s, 0.0), gb.constant(s, 6.0)], s)
    if kind == "silu":
        return gb.op("Mul", [x, gb.op("Sigmoid", [x], s)], s)
    raise ValueError(f"unknown activation {kind!r}")


def conv_norm_act(gb: GraphBuilder, x: str, s: Scope, cin: int, cout: int, k: int,
                  stride: int = 1, groups: int = 1, act: str | None = "relu",
                  gain: float = 2.0, gamma=BN_GAMMA) -> str:
    """torchvision ``Conv2dNormActivation``: children 0 (conv), 1 (BN), 2 (act)."""
    x = conv(gb, x, s.idx(0), cin, cout, k, stride, groups, gain)
    x = batch_norm(gb, x, s.idx(1), cout, gamma)
    return activation(gb, x, s.idx(2), act)


def classifier(gb: GraphBuilder, x: str, pool: Scope, fc: Scope, c: int, num_classes: int,
               batch: int) -> str:
    """GlobalAveragePool -> Flatten(1) -> Linear, output named ``output``."""
    x = gb.op("GlobalAveragePool", [x], pool)
    x = gb.op("Flatten", [x], Scope(), axis=1)
    w = gb.randn(fc.p("weight"), (num_classes, c), 1.0 / math.sqrt(c))
    b = gb.randn(fc.p("bias"), (num_classes,), 0.01)
    gb.add_output("output", FLOAT, [batch, num_classes])
    return gb.op("Gemm", [x, w, b], fc, output="output", alpha=1.0, beta=1.0, transB=1)


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision ``_make_divisible``: round to a multiple of 8, at most 10% down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _image_input(gb: GraphBuilder, batch: int, image: int) -> str:
    return gb.add_input("input", FLOAT, [batch, 3, image, image])


def _meta(name: str, **kw) -> dict[str, str]:
    return {"dsc.zoo.model": name, **{f"dsc.zoo.{k}": str(v) for k, v in kw.items()}}


# ---------------------------------------------------------------- ResNet
def _basic_block(gb, s: Scope, x, cin, planes, stride):
    y = conv(gb, x, s.sub("conv1"), cin, planes, 3, stride)
    y = activation(gb, batch_norm(gb, y, s.sub("bn1"), planes), s.sub("relu"), "relu")
    y = conv(gb, y, s.sub("conv2"), planes, planes, 3)
    y = batch_norm(gb, y, s.sub("bn2"), planes, RESIDUAL_GAMMA)
    x = _shortcut(gb, s, x, cin, planes, stride)
    return activation(gb, gb.op("Add", [y, x], s), s.sub("relu_1"), "relu"), planes


def _bottleneck(gb, s: Scope, x, cin, planes, stride):
    cout = planes * 4
    y = conv(gb, x, s.sub("conv1"), cin, planes, 1)
    y = activation(gb, batch_norm(gb, y, s.sub("bn1"), planes), s.sub("relu"), "relu")
    y = conv(gb, y, s.sub("conv2"), planes, planes, 3, stride)
    y = activation(gb, batch_norm(gb, y, s.sub("bn2"), planes), s.sub("relu_1"), "relu")
    y = conv(gb, y, s.sub("conv3"), planes, cout, 1)
    y = batch_norm(gb, y, s.sub("bn3"), cout, RESIDUAL_GAMMA)
    x = _shortcut(gb, s, x, cin, cout, stride)
    return activation(gb, gb.op("Add", [y, x], s), s.sub("relu_2"), "relu"), cout


def _shortcut(gb, s: Scope, x, cin, cout, stride):
    if stride == 1 and cin == cout:
        return x
    ds = s.sub("downsample")
    x = conv(gb, x, ds.idx(0), cin, cout, 1, stride)
    return batch_norm(gb, x, ds.idx(1), cout)


def _resnet(name, block, depths, batch, image, width, num_classes, seed) -> onnx.ModelProto:
    gb, root = GraphBuilder(seed), Scope()
    x = conv(gb, _image_input(gb, batch, image), root.sub("conv1"), 3, width, 7, 2,
             gain=GAIN["linear"])
    x = activation(gb, batch_norm(gb, x, root.sub("bn1"), width), root.sub("relu"), "relu")
    x = gb.op("MaxPool", [x], root.sub("maxpool"), ceil_mode=0, dilations=[1, 1],
              kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    cin = width
    for li, n in enumerate(depths):
        layer = root.sub(f"layer{li + 1}")
        for bi in range(n):
            stride = 2 if li > 0 and bi == 0 else 1
            x, cin = block(gb, layer.idx(bi), x, cin, width * 2 ** li, stride)
    classifier(gb, x, root.sub("avgpool"), root.sub("fc"), cin, num_classes, batch)
    return gb.build(f"torchvision {name} (random weights)",
                    _meta(name, image=image, width=width, num_classes=num_classes, seed=seed))


def resnet18(batch: int = 1, image: int = 224, width: int = 64, num_classes: int = 1000,
             seed: int = 0) -> onnx.ModelProto:
    """torchvision ``resnet18`` (BasicBlock x [2, 2, 2, 2]); `width` is the base width."""
    return _resnet("resnet18", _basic_block, [2, 2, 2, 2], batch, image, width, num_classes, seed)


def resnet50(batch: int = 1, image: int = 224, width: int = 64, num_classes: int = 1000,
             seed: int = 0) -> onnx.ModelProto:
    """torchvision ``resnet50`` (Bottleneck v1.5 x [3, 4, 6, 3]); `width` is the base width."""
    return _resnet("resnet50", _bottleneck, [3, 4, 6, 3], batch, image, width, num_classes, seed)


# ---------------------------------------------------------------- MobileNetV2
_MBV2_SETTING = [  # expand ratio t, channels c, repeats n, first stride s
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def _inverted_residual(gb, s: Scope, x, cin, cout, stride, t, in_gain):
    body, i, hidden = s.sub("conv"), 0, int(round(cin * t))
    y = x
    if t != 1:
        y = conv_norm_act(gb, y, body.idx(0), cin, hidden, 1, act="relu6", gain=in_gain)
        i, in_gain = 1, GAIN["relu"]
    y = conv_norm_act(gb, y, body.idx(i), hidden, hidden, 3, stride, groups=hidden,
                      act="relu6", gain=in_gain)
    residual = stride == 1 and cin == cout
    y = conv(gb, y, body.idx(i + 1), hidden, cout, 1, gain=GAIN["relu"])
    y = batch_norm(gb, y, body.idx(i + 2), cout, RESIDUAL_GAMMA if residual else BN_GAMMA)
    return gb.op("Add", [x, y], s) if residual else y


def mobilenetv2(batch: int = 1, image: int = 224, width: float = 1.0, num_classes: int = 1000,
                seed: int = 0) -> onnx.ModelProto:
    """torchvision ``mobilenet_v2``; `width` is torchvision's ``width_mult``."""
    gb, root = GraphBuilder(seed), Scope()
    features = root.sub("features")
    cin = make_divisible(32 * width)
    x = conv_norm_act(gb, _image_input(gb, batch, image), features.idx(0), 3, cin, 3, 2,
                      act="relu6", gain=GAIN["linear"])
    idx, in_gain = 1, GAIN["relu"]
    for t, c, n, s in _MBV2_SETTING:
        cout = make_divisible(c * width)
        for j in range(n):
            x = _inverted_residual(gb, features.idx(idx), x, cin, cout, s if j == 0 else 1, t,
                                   in_gain)
            cin, idx, in_gain = cout, idx + 1, GAIN["linear"]
    last = make_divisible(1280 * max(1.0, width))
    x = conv_norm_act(gb, x, features.idx(idx), cin, last, 1, act="relu6", gain=in_gain)
    classifier(gb, x, Scope(), root.sub("classifier").idx(1), last, num_classes, batch)
    return gb.build("torchvision mobilenet_v2 (random weights)",
                    _meta("mobilenetv2", image=image, width=width, num_classes=num_classes,
                          seed=seed))


# ---------------------------------------------------------------- EfficientNet
_B0_SETTING = [  # expand ratio, kernel, stride, in channels, out channels, layers
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
]


def _squeeze_excitation(gb, s: Scope, x, c, squeeze):
    scale = gb.op("GlobalAveragePool", [x], s.sub("avgpool"))
    scale = conv(gb, scale, s.sub("fc1"), c, squeeze, 1, gain=GAIN["silu"], bias=True)
    scale = activation(gb, scale, s.sub("activation"), "silu")
    scale = conv(gb, scale, s.sub("fc2"), squeeze, c, 1, gain=GAIN["silu"], bias=True)
    scale = gb.op("Sigmoid", [scale], s.sub("scale_activation"))
    return gb.op("Mul", [scale, x], s)


def _mbconv(gb, s: Scope, x, cin, cout, k, stride, t, in_gain):
    body, i, y = s.sub("block"), 0, x
    expanded = make_divisible(cin * t)
    if expanded != cin:
        y = conv_norm_act(gb, y, body.idx(0), cin, expanded, 1, act="silu", gain=in_gain)
        i, in_gain = 1, GAIN["silu"]
    y = conv_norm_act(gb, y, body.idx(i), expanded, expanded, k, stride, groups=expanded,
                      act="silu", gain=in_gain)
    y = _squeeze_excitation(gb, body.idx(i + 1), y, expanded, max(1, cin // 4))
    residual = stride == 1 and cin == cout
    y = conv_norm_act(gb, y, body.idx(i + 2), expanded, cout, 1, act=None,
                      gain=GAIN["silu"] * SE_GAIN,
                      gamma=RESIDUAL_GAMMA if residual else BN_GAMMA)
    return gb.op("Add", [y, x], s) if residual else y


def efficientnet_b0(batch: int = 1, image: int = 224, width: float = 1.0,
                    num_classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """torchvision ``efficientnet_b0``; `width` is the width multiplier (B0: 1.0)."""
    gb, root = GraphBuilder(seed), Scope()
    features = root.sub("features")
    cin = make_divisible(32 * width)
    x = conv_norm_act(gb, _image_input(gb, batch, image), features.idx(0), 3, cin, 3, 2,
                      act="silu", gain=GAIN["linear"])
    in_gain = GAIN["silu"]
    for stage, (t, k, s, _, c, n) in enumerate(_B0_SETTING, start=1):
        cout = make_divisible(c * width)
        for j in range(n):
            x = _mbconv(gb, features.idx(stage).idx(j), x, cin, cout, k, s if j == 0 else 1, t,
                        in_gain)
            cin, in_gain = cout, GAIN["linear"]
    last = 4 * cin
    x = conv_norm_act(gb, x, features.idx(len(_B0_SETTING) + 1), cin, last, 1, act="silu",
                      gain=in_gain)
    classifier(gb, x, root.sub("avgpool"), root.sub("classifier").idx(1), last, num_classes,
               batch)
    return gb.build("torchvision efficientnet_b0 (random weights)",
                    _meta("efficientnet_b0", image=image, width=width, num_classes=num_classes,
                          seed=seed))


# ---------------------------------------------------------------- MLP
def mlp(batch: int = 1, features: int = 784, hidden: int = 512, num_classes: int = 10,
        seed: int = 0) -> onnx.ModelProto:
    """fc1 -> ReLU -> fc2 -> ReLU -> fc3 (784-512-512-10 by default)."""
    gb, root = GraphBuilder(seed), Scope()
    x = gb.add_input("input", FLOAT, [batch, features])
    dims = [features, hidden, hidden, num_classes]
    for i in range(3):
        fc = root.sub(f"fc{i + 1}")
        w = gb.randn(fc.p("weight"), (dims[i + 1], dims[i]),
                     math.sqrt((GAIN["linear"] if i == 0 else GAIN["relu"]) / dims[i]))
        b = gb.randn(fc.p("bias"), (dims[i + 1],), 0.1)
        last = i == 2
        x = gb.op("Gemm", [x, w, b], fc, output="output" if last else None,
                  alpha=1.0, beta=1.0, transB=1)
        if not last:
            x = activation(gb, x, root.sub("relu" if i == 0 else "relu_1"), "relu")
    gb.add_output("output", FLOAT, [batch, num_classes])
    return gb.build("784-512-512-10 MLP (random weights)",
                    _meta("mlp", hidden=hidden, num_classes=num_classes, seed=seed))
