"""`dsc.nn`: layers with parameters for traced code (inference only).

    model = dsc.nn.Sequential(dsc.nn.Linear(4, 8), dsc.nn.ReLU(), dsc.nn.Linear(8, 2))
    model[0].weight = w                      # settable weights (shape checked)
    model.load_state_dict(torch_model.state_dict())   # same names as torch

    @dsc.jit
    def f(x):
        return model(x)

Parameters are float32 NumPy arrays in torch's layouts, initialised like
torch (uniform in +-1/sqrt(fan_in)) from one seeded generator
(`dsc.nn.manual_seed`, 0 by default), so a model is the same in every
process. In a trace, a module's parameters become `graph.constant`s named by
the module's path (`fc1_weight`); the trace remembers which modules it read,
and a jit-compiled function is retraced when one of their parameters is
reassigned (in-place edits of the arrays are not seen).

Called on NumPy arrays outside a trace, a module runs through a private
`dsc.jit(target="reference")` of itself: handy to check a layer alone.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from dsc.frontends.trace import functional as F
from dsc.frontends.trace import tracer as T
from dsc.frontends.trace.tensor import Tensor
from dsc.runtime.errors import DscError, ShapeError

functional = F

_RNG = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator that initialises new modules' parameters."""
    global _RNG
    _RNG = np.random.default_rng(seed)


def rng_state() -> dict:
    return _RNG.bit_generator.state


def set_rng_state(state: dict) -> None:
    _RNG.bit_generator.state = state


def _uniform(shape, bound: float) -> np.ndarray:
    return _RNG.uniform(-bound, bound, size=shape).astype(np.float32)


def _as_array(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


class Module:
    """Base of dsc.nn layers: parameters, children, state dicts, tracing scopes."""

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_name", None)
        object.__setattr__(self, "_version", 0)
        object.__setattr__(self, "_eager", None)
        object.__setattr__(self, "training", False)

    # ---------------------------------------------------------- parameters
    def register_parameter(self, name: str, value) -> None:
        self._params[name] = np.ascontiguousarray(_as_array(value), dtype=np.float32)
        object.__setattr__(self, "_version", self._version + 1)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise DscError(f"{type(self).__name__}.__init__ must call super().__init__() before setting attributes")
        if isinstance(value, Module):
            self._modules[name] = value
            if value._name is None:
                object.__setattr__(value, "_name", name)
        elif name in self._params:
            old = self._params[name]
            arr = _as_array(value)
            if arr.shape != old.shape:
                raise ShapeError(f"{type(self).__name__}.{name} has shape {list(old.shape)}; cannot set an array of shape {list(arr.shape)}")
            self._params[name] = np.ascontiguousarray(arr, dtype=old.dtype)
            object.__setattr__(self, "_version", self._version + 1)
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        if name in d.get("_params", {}):
            return d["_params"][name]
        if name in d.get("_modules", {}):
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def param(self, name: str) -> Tensor:
        """Parameter `name` as a constant of the trace in progress (named after the module's path)."""
        tr = T.current()
        if tr is None:
            raise DscError(f"{type(self).__name__}.param('{name}') is only available while tracing")
        ref, version = weakref.ref(self), self._version
        tr.guards.setdefault(id(self), lambda: ref() is not None and ref()._version == version)
        prefix = "_".join(tr.scopes) if tr.scopes else type(self).__name__
        return tr.constant(self._params[name], f"{prefix}_{name}")

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for n, p in self._params.items():
            yield prefix + n, p
        for n, m in self._modules.items():
            yield from m.named_parameters(f"{prefix}{n}.")

    def parameters(self) -> Iterator[np.ndarray]:
        return (p for _, p in self.named_parameters())

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for n, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{n}" if prefix else n)

    def children(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def state_dict(self) -> dict[str, np.ndarray]:
        return {n: p.copy() for n, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Set parameters by name (torch's names; `num_batches_tracked` is ignored)."""
        own = dict(self.named_modules())
        names = {n for n, _ in self.named_parameters()}
        given = {k for k in state if not k.endswith("num_batches_tracked")}
        if strict and given != names:
            missing, unexpected = sorted(names - given), sorted(given - names)
            raise DscError(f"load_state_dict: {'missing ' + str(missing) if missing else ''}{'; ' if missing and unexpected else ''}{'unexpected ' + str(unexpected) if unexpected else ''}")
        for key in given & names:
            path, _, pname = key.rpartition(".")
            setattr(own[path], pname, state[key])

    def eval(self) -> Module:
        for _, m in self.named_modules():
            object.__setattr__(m, "training", False)
        return self

    def train(self, mode: bool = True) -> Module:
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    # ---------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        tr = T.current()
        if tr is None:
            traced = [a for a in args if isinstance(a, Tensor)]
            if not traced:
                return self._call_eager(*args, **kwargs)
            tr = traced[0]._tr
        with tr.scope(self._name or type(self).__name__):
            return self.forward(*args, **kwargs)

    def _call_eager(self, *args, **kwargs):
        if self._eager is None:
            from dsc.frontends.trace.jit import jit

            object.__setattr__(self, "_eager", jit(self, target="reference"))
        return self._eager(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        kids = "".join(f"\n  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items())
        return f"{type(self).__name__}({self.extra_repr()}{kids}{chr(10) if kids else ''})"


# ------------------------------------------------------------ layers with parameters


class Linear(Module):
    """y = x @ weight.T + bias; weight [out_features, in_features]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.register_parameter("weight", _uniform((out_features, in_features), bound))
        self.has_bias = bias
        if bias:
            self.register_parameter("bias", _uniform((out_features,), bound))

    def forward(self, x):
        return F.linear(x, self.param("weight"), self.param("bias") if self.has_bias else None)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.has_bias}"


class Conv2d(Module):
    """2-D convolution, NCHW; weight [out, in/groups, kh, kw]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1, bias: bool = True):
        super().__init__()
        kh, kw = F._pair(kernel_size, "kernel_size")
        if in_channels % groups or out_channels % groups:
            raise DscError(f"Conv2d: channels {in_channels} -> {out_channels} are not divisible by groups={groups}")
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.spec = f"{in_channels}, {out_channels}, kernel_size=({kh}, {kw}), stride={stride}, padding={padding}, groups={groups}"
        bound = 1 / math.sqrt(in_channels // groups * kh * kw)
        self.register_parameter("weight", _uniform((out_channels, in_channels // groups, kh, kw), bound))
        self.has_bias = bias
        if bias:
            self.register_parameter("bias", _uniform((out_channels,), bound))

    def forward(self, x):
        b = self.param("bias") if self.has_bias else None
        return F.conv2d(x, self.param("weight"), b, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return self.spec


class BatchNorm2d(Module):
    """Inference batch norm over channels with running statistics (eval mode only)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_parameter("weight", np.ones(num_features, np.float32))
        self.register_parameter("bias", np.zeros(num_features, np.float32))
        self.register_parameter("running_mean", np.zeros(num_features, np.float32))
        self.register_parameter("running_var", np.ones(num_features, np.float32))

    def forward(self, x):
        p = self.param
        return F.batch_norm(x, p("running_mean"), p("running_var"), p("weight"), p("bias"), self.training, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


class LayerNorm(Module):
    """Normalize over the trailing `normalized_shape` axes, then scale (and shift)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.affine, self.has_bias = elementwise_affine, elementwise_affine and bias
        if elementwise_affine:
            self.register_parameter("weight", np.ones(shape, np.float32))
            if bias:
                self.register_parameter("bias", np.zeros(shape, np.float32))

    def forward(self, x):
        w = self.param("weight") if self.affine else None
        b = self.param("bias") if self.has_bias else None
        return F.layer_norm(x, self.normalized_shape, w, b, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Embedding(Module):
    """Rows of weight [num_embeddings, embedding_dim] picked by integer ids."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.register_parameter("weight", _RNG.standard_normal((num_embeddings, embedding_dim)).astype(np.float32))

    def forward(self, ids):
        return F.embedding(ids, self.param("weight"))


# ------------------------------------------------------------ layers without parameters


class _Fn(Module):
    """A parameterless layer calling one functional op."""

    fn = staticmethod(lambda x: x)

    def forward(self, x):
        return type(self).fn(x)


class ReLU(_Fn):
    fn = staticmethod(F.relu)


class ReLU6(_Fn):
    fn = staticmethod(F.relu6)


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)


class SiLU(_Fn):
    fn = staticmethod(F.silu)


class Sigmoid(_Fn):
    fn = staticmethod(F.sigmoid)


class Tanh(_Fn):
    fn = staticmethod(F.tanh)


class Identity(_Fn):
    pass


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Softmax(Module):
    def __init__(self, dim: int = -1, *, axis: int | None = None):
        super().__init__()
        self.dim = axis if axis is not None else dim

    def forward(self, x):
        return F.softmax(x, self.dim)


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
        super().__init__()
        self.args = (kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x):
        return F.max_pool2d(x, *self.args)


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__()
        self.args = (kernel_size, stride, padding, ceil_mode, count_include_pad)

    def forward(self, x):
        return F.avg_pool2d(x, *self.args)


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)


class Dropout(Module):
    """The identity at inference (a traced Dropout in train() mode is an error)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class Sequential(Module):
    """Modules applied in order; indexable like a list."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            modules = list(modules[0].items())
        else:
            modules = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in modules:
            setattr(self, name, m)

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return Sequential(*mods[i]) if isinstance(i, slice) else mods[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules (registered, so their parameters are listed and named)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m: Module) -> None:
        setattr(self, str(len(self._modules)), m)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Conv2d", "Dropout", "Embedding", "Flatten", "GELU", "Identity",
    "LayerNorm", "LeakyReLU", "Linear", "MaxPool2d", "Module", "ModuleList", "ReLU", "ReLU6", "Sequential", "SiLU",
    "Sigmoid", "Softmax", "Tanh", "functional", "manual_seed",
]
