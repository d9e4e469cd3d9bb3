"""@dsc.jit: tracing, graph.if from Python `if`, caching, untraceable code, dsc.nn, lower/compile.

Most tests run with target="reference" (the NumPy evaluator: no native
compile, fast); the `host` tests exercise the compiled path, including the
hybrid executor that runs graph.if as separately compiled pieces. Results
are compared with NumPy at rtol/atol 1e-5 (reference) and 1e-4 (host).
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

import dsc
import dsc.runtime
from dsc import DscError, DscWarning, ShapeError
from dsc.dialects.asm import parse_module, print_module

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def line_of(marker: str) -> int:
    """The line of this file holding `marker` (for errors that must name the user's line)."""
    with open(__file__) as f:
        hits = [i for i, text in enumerate(f, 1) if marker in text and "line_of(" not in text]
    assert len(hits) == 1, marker
    return hits[0]


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def leaky(y, alpha):
    return np.where(y >= 0, y, alpha * y)


# ------------------------------------------------------------ the issue's example


@dsc.jit
def hybrid_model(x):
    y = x * 2 + 1
    if y.mean() > 0:
        return dsc.nn.ReLU()(y)
    else:
        return dsc.nn.LeakyReLU(0.1)(y)


def hybrid_ref(x):
    y = x * 2 + 1
    return np.maximum(y, 0) if y.mean() > 0 else leaky(y, 0.1)


POS = np.abs(rand(4, 8)) + 0.1  # mean of 2x+1 > 0
NEG = -np.abs(rand(4, 8)) - 1.0  # mean of 2x+1 < 0, with positive elements too after mixing:
NEG[0, :3] = 2.0


def test_issue_example_ir_shows_graph_if_with_both_branches():
    module = hybrid_model.lower(POS)
    text = print_module(module)
    assert "graph.if" in text and "graph.relu" in text and "graph.leaky_relu" in text and "graph.yield" in text
    assert "graph.reduce_mean" in text and "graph.greater" in text
    assert f'loc("test_jit.py:{line_of("if y.mean() > 0:")}")' in text  # the if names the user's line
    parse_module(text).verify()  # the dump parses back


def test_issue_example_takes_both_branches_on_host():
    for x in (POS, NEG):
        close(hybrid_model(x), hybrid_ref(x), 1e-4)
    assert hybrid_model.cache_info().compiles == 1  # one compile serves both branches
    entry = next(iter(hybrid_model._cache.values()))
    assert entry.kind == "hybrid" and entry.pieces == 3  # prefix, then-branch, else-branch


def test_issue_example_single_artifact_is_if_converted():
    sess = dsc.runtime.load(hybrid_model.compile(POS, target="host"))
    for x in (POS, NEG):
        close(sess.run(None, {"x": x})[0], hybrid_ref(x), 1e-4)


def test_issue_example_reference_target():
    f = dsc.jit(hybrid_model.fn, target="reference")
    for x in (POS, NEG):
        close(f(x), hybrid_ref(x))


# ------------------------------------------------------------ tracing


def test_numpy_habits_match_numpy():
    x, w = rand(3, 4, 5), rand(5, 6)
    idx = np.array([2, 0], np.int64)

    def fn(x, w, idx, np=np):
        s = 0
        for i in range(3):  # a fixed Python loop unrolls
            s = s + x[i]
        return (
            (x @ w).sum(axis=-1, keepdims=True),
            x[1, :, ::2] + x[-1, 1:3, None, 0].T.reshape(1, 2).mean(),
            x.transpose(2, 0, 1).max(axis=(0, 2)),
            x.transpose(1, 0, 2)[idx],
            np.exp(x) * 2 - (x > 0),
            x[..., ::-1],
            s,
            x.var(axis=1),
            x // 0.3,
            x % 0.7,
            x**2 + 1 / (abs(x) + 1),
            np.maximum(x, 0.1) - np.minimum(x, w[:, 0]),
            x.reshape(-1, 5).T,
            (x >= 0) & (x < 0.5),
            x.min(0) + x.sum((0, 1)),
        )

    got = dsc.jit(fn, target="reference")(x, w, idx)
    want = fn(x, w, idx)
    assert len(got) == len(want)
    for g, r in zip(got, want):
        assert g.shape == r.shape and g.dtype == r.dtype
        close(g, r)


def test_dtype_promotion_follows_numpy():
    def fn(a, i):
        return a * 2, a * 2.5, i * 2, i / 2, i + 0.5, a + i

    a, i = rand(3), np.arange(3, dtype=np.int64)
    got = dsc.jit(fn, target="reference")(a, i)
    for g, r in zip(got, fn(a, i)):
        assert g.dtype == r.dtype, (g.dtype, r.dtype)
        close(g, r)


def test_outputs_keep_their_structure():
    @dsc.jit(target="reference")
    def fn(d):
        return {"sum": d["a"] + d["b"], "pair": (d["a"], 3)}

    a, b = rand(2), rand(2)
    out = fn({"a": a, "b": b})
    close(out["sum"], a + b)
    assert out["pair"][1] == 3 and isinstance(out["pair"], tuple)


def test_nested_ifs_trace_every_path():
    @dsc.jit(target="reference")
    def fn(x):
        if x.sum() > 0:
            if x.max() > 2:
                y = x * 3
            else:
                y = x * 2
        else:
            y = -x
        return y + 1

    text = print_module(fn.lower(rand(4)))
    assert text.count('"graph.if"') == 2
    for x in (np.array([3, 1, 0, 0], np.float32), np.array([1, 1, 0, 0], np.float32), -np.ones(4, np.float32)):
        want = (x * 3 if x.max() > 2 else x * 2) if x.sum() > 0 else -x
        close(fn(x), want + 1)


def test_if_on_constant_predicate_is_plain_python():
    @dsc.jit(target="reference")
    def fn(x):
        c = dsc.nn.functional.constant(np.array(3.0, np.float32))
        if c > 2:  # known while tracing: no graph.if
            return x + c
        return x

    assert "graph.if" not in print_module(fn.lower(rand(2)))


def _shape_mismatch(x):
    if x.sum() > 0:  # shape-mismatch
        return x
    return x[:1]


def test_branches_with_different_shapes_are_refused():
    with pytest.raises(ShapeError, match=f"test_jit.py:{line_of('# shape-mismatch')}"):
        dsc.jit(_shape_mismatch, target="reference")(rand(3))


# ------------------------------------------------------------ caching


def test_second_call_does_not_recompile():
    traces = []

    @dsc.jit(target="reference")
    def fn(x):
        traces.append(1)  # runs only while tracing
        return x * 2

    x = rand(3)
    close(fn(x), x * 2)
    close(fn(x + 1), (x + 1) * 2)
    info = fn.cache_info()
    assert (info.compiles, info.hits, info.misses, len(traces)) == (1, 1, 1, 1)


def test_new_shape_or_dtype_recompiles():
    @dsc.jit(target="reference")
    def fn(x):
        return x + 1

    fn(rand(3))
    fn(rand(4))
    fn(rand(4).astype(np.float64))
    fn(rand(3))
    info = fn.cache_info()
    assert (info.compiles, info.hits, info.size) == (3, 1, 3)


def test_python_numbers_are_compile_time_constants():
    @dsc.jit(target="reference")
    def fn(x, scale):
        return x * scale

    x = rand(3)
    close(fn(x, 2.0), x * 2)
    close(fn(x, 3.0), x * 3)
    assert fn.cache_info().compiles == 2


def test_lru_bound_warns_when_thrashing():
    @dsc.jit(target="reference", cache_size=2)
    def fn(x):
        return x - 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(rand(1))
        fn(rand(2))
    with pytest.warns(DscWarning, match="cache of 2 signatures is full"):
        fn(rand(3))
    assert fn.cache_info().size == 2
    with pytest.warns(DscWarning):
        fn(rand(1))  # evicted: compiles again
    assert fn.cache_info().compiles == 4


def test_reassigned_weights_retrace():
    lin = dsc.nn.Linear(3, 2)

    @dsc.jit(target="reference")
    def fn(x):
        return lin(x)

    x = rand(4, 3)
    close(fn(x), x @ lin.weight.T + lin.bias)
    lin.weight = np.ones((2, 3), np.float32)
    close(fn(x), x @ np.ones((3, 2)) + lin.bias)
    assert fn.cache_info().compiles == 2


# ------------------------------------------------------------ untraceable code


def _float_of(x):
    return float(x.sum())  # L:float


def _item_of(x):
    return x.max().item()  # L:item


def _asarray_of(x):
    return np.asarray(x) + 1  # L:asarray


def _print_of(x):
    print(x)  # L:print
    return x


def _assign_into(x):
    x[0] = 1.0  # L:setitem
    return x


def _ambiguous_if(x):
    if x > 0:  # L:ambiguous
        return x
    return -x


def _int_index(x):
    return x[: int(x[0])]  # L:int


@pytest.mark.parametrize(
    "fn, marker, words",
    [
        (_float_of, "float", "float()"),
        (_item_of, "item", ".item()"),
        (_asarray_of, "asarray", "NumPy array"),
        (_print_of, "print", "printing"),
        (_assign_into, "setitem", "in-place assignment"),
        (_ambiguous_if, "ambiguous", "ambiguous"),
        (_int_index, "int", "int()"),
    ],
)
def test_untraceable_code_names_the_users_line(fn, marker, words):
    marker = f"# L:{marker}"
    with pytest.raises(DscError) as info:
        dsc.jit(fn, target="reference")(rand(3))
    msg = str(info.value)
    assert f"test_jit.py:{line_of(marker)}:" in msg and words in msg, msg
    assert marker in msg  # the offending source line is quoted


_leaked = []


def test_tensor_leaking_out_of_a_trace_is_refused():
    @dsc.jit(target="reference")
    def keep(x):
        _leaked.append(x)
        return x + 1

    @dsc.jit(target="reference")
    def use(x):
        return x + _leaked[0]  # leaked tensor

    keep(rand(2))
    with pytest.raises(DscError, match="another trace"):
        use(rand(2))


def test_tensor_while_loop_is_refused_at_its_line():
    @dsc.jit(target="reference")
    def fn(x):
        while x.sum() > 0:  # data-dependent loop
            x = x - 1
        return x

    with pytest.raises(DscError, match=f"test_jit.py:{line_of('# data-dependent loop')}"):
        fn(np.ones(3, np.float32))


def test_side_effects_between_branch_runs_are_detected():
    state = {"n": 0}

    @dsc.jit(target="reference")
    def fn(x):
        state["n"] += 1
        y = x * state["n"]  # differs between the runs for each side of the if
        if y.sum() > 0:  # side-effect branch
            return y
        return -y

    with pytest.raises(DscError, match="traced differently"):
        fn(rand(3))


# ------------------------------------------------------------ dsc.nn


def _erf(x):
    return np.vectorize(math.erf)(x.astype(np.float64))


def _conv2d(x, w, b, stride, pad, groups=1):
    x = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, m, oh, ow), np.float64)
    mg = m // groups
    for o in range(m):
        gi = o // mg
        for i in range(oh):
            for j in range(ow):
                patch = x[:, gi * cg : (gi + 1) * cg, i * stride : i * stride + kh, j * stride : j * stride + kw]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return out + b.reshape(1, -1, 1, 1)


def _pool(x, k, s, op):
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = op(x[:, :, i * s : i * s + k, j * s : j * s + k], axis=(2, 3))
    return out


def test_nn_layers_match_numpy():
    nn = dsc.nn
    x4, x2, x3 = rand(2, 4, 7, 7), rand(5, 6), rand(2, 3, 8)
    lin, conv, dw = nn.Linear(6, 3), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4)
    bn = nn.BatchNorm2d(4)
    bn.running_mean, bn.running_var = rand(4), np.abs(rand(4)) + 0.5
    bn.weight, bn.bias = rand(4), rand(4)
    ln = nn.LayerNorm(8)
    ln.weight, ln.bias = rand(8), rand(8)
    cases = [
        (lin, x2, x2 @ lin.weight.T + lin.bias),
        (conv, x4, _conv2d(x4, conv.weight, conv.bias, 2, 1)),
        (dw, x4, _conv2d(x4, dw.weight, dw.bias, 1, 1, groups=4)),
        (bn, x4, (x4 - bn.running_mean[:, None, None]) / np.sqrt(bn.running_var[:, None, None] + 1e-5) * bn.weight[:, None, None] + bn.bias[:, None, None]),
        (nn.ReLU(), x2, np.maximum(x2, 0)),
        (nn.LeakyReLU(0.2), x2, leaky(x2, 0.2)),
        (nn.GELU(), x2, 0.5 * x2 * (1 + _erf(x2 / np.sqrt(2)))),
        (nn.Softmax(dim=-1), x3, np.exp(x3) / np.exp(x3).sum(-1, keepdims=True)),
        (ln, x3, (x3 - x3.mean(-1, keepdims=True)) / np.sqrt(x3.var(-1, keepdims=True) + 1e-5) * ln.weight + ln.bias),
        (nn.MaxPool2d(2), x4, _pool(x4, 2, 2, np.max)),
        (nn.AvgPool2d(3, stride=2), x4, _pool(x4, 3, 2, np.mean)),
        (nn.Dropout(0.5), x2, x2),
        (nn.Sequential(nn.Linear(6, 4), nn.ReLU()), x2, None),
    ]
    seq = cases[-1][0]
    cases[-1] = (seq, x2, np.maximum(x2 @ seq[0].weight.T + seq[0].bias, 0))
    for layer, x, want in cases:
        got = dsc.jit(layer, target="reference")(x)
        close(got, want, 1e-4)
        close(layer(x), want, 1e-4)  # eager call on arrays


def test_nn_default_init_is_deterministic_and_settable():
    dsc.nn.manual_seed(7)
    a = dsc.nn.Conv2d(3, 4, 3)
    dsc.nn.manual_seed(7)
    b = dsc.nn.Conv2d(3, 4, 3)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert np.abs(a.weight).max() <= 1 / math.sqrt(27)
    with pytest.raises(ShapeError):
        a.weight = np.zeros((4, 3, 5, 5), np.float32)
    model = dsc.nn.Sequential(dsc.nn.Linear(2, 3), dsc.nn.ReLU(), dsc.nn.Linear(3, 1))
    sd = {k: np.full_like(v, 0.5) for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    assert sorted(sd) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    close(model(np.ones((1, 2), np.float32)), np.array([[0.5 * 3 * 1.5 + 0.5]]))


def test_nn_params_are_named_constants():
    class Net(dsc.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = dsc.nn.Linear(20, 20)

        def forward(self, x):
            return self.fc1(x)

    text = print_module(dsc.jit(Net(), target="reference").lower(rand(1, 20)))
    assert "Net_fc1_weight" in text and "graph.gemm" in text


# ------------------------------------------------------------ lower / compile / host


def test_lower_and_compile_api():
    @dsc.jit
    def mlp(x, w1, w2):
        h = dsc.nn.functional.relu(x @ w1)
        return dsc.nn.functional.softmax(h @ w2, -1)

    x, w1, w2 = rand(4, 8), rand(8, 16), rand(16, 3)
    module = mlp.lower(x, w1, w2)
    text = print_module(module)
    assert "graph.matmul" in text and "graph.softmax" in text
    data = mlp.compile(x, w1, w2, target="host")
    assert isinstance(data, bytes)
    sess = dsc.runtime.load(data)
    assert [a.name for a in sess.get_inputs()] == ["x", "w1", "w2"]
    h = np.maximum(x @ w1, 0) @ w2
    want = np.exp(h - h.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    close(sess.run(None, {"x": x, "w1": w1, "w2": w2})[0], want, 1e-4)
    close(mlp(x, w1, w2), want, 1e-4)  # the host-compiled jit path
    assert next(iter(mlp._cache.values())).kind == "native"


def test_host_cnn_with_nn_modules():
    nn = dsc.nn
    nn.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    model[1].running_var = np.abs(rand(8)) + 0.5
    x = rand(2, 3, 8, 8)
    want = dsc.jit(model, target="reference")(x)
    close(dsc.jit(model)(x), want, 1e-4)
    sess = dsc.runtime.load(dsc.compile(model, (x,), target="host"))
    close(sess.run(None, {"x": x})[0], want, 1e-4)


def test_unknown_target_fails_at_decoration():
    with pytest.raises(dsc.TargetError):
        dsc.jit(lambda x: x, target="nope")


def test_import_dsc_stays_cheap():
    code = "import sys, dsc, dsc.runtime; assert 'xdsl' not in sys.modules and 'torch' not in sys.modules; dsc.jit; dsc.nn.ReLU; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
