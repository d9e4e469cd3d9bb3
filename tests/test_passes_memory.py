"""place-devices and plan-memory: placement, transfers, liveness, offsets, reports.

Checks are independent of the planner: `arena_buffers` re-derives every
buffer's live interval from the IR and reads the offsets the pass wrote;
`run_with_arenas` executes the planned module with each intermediate stored
at its offset in a byte array per device (garbage-filled), so any overlap of
live buffers corrupts the numbers. Results are compared with the reference
evaluator on the unplanned module (rtol 1e-4, atol 1e-4). The full-size
ResNet-50 / MobileNetV2 / BERT-base targets (arena <= 50% of the no-reuse sum
and <= 110% of the lower bound) run with DSC_FULL_ZOO=1.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.ir import Block, Region
from xdsl.rewriter import InsertPoint, Rewriter

from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.asm import parse_module, print_module
from dsc.dialects.tensor_types import loc_name, sig_of
from dsc.frontends.onnx import import_onnx
from dsc.passes.base import main_func, top_ops
from dsc.passes.plan_memory import format_memory_report, memory_report
from dsc.pipeline import parse_passes, pipeline_for, run_pipeline, select
from dsc.reference import run_module
from dsc.reference.evaluator import run_block
from dsc.runtime.errors import DscError
from dsc.targets import get_target
from dsc.tools import zoo

RTOL = ATOL = 1e-4
SMALL = ["resnet18", "resnet50", "mobilenetv2", "efficientnet_b0", "bert_base", "mlp"]
PIPELINES = {
    "cpu": "plan-memory",
    "gpu": 'place-devices{gpu="sm_80" overrides="conv=gpu,matmul=gpu,gemm=gpu"},plan-memory',
    "orin": 'place-devices{gpu="sm_87" shared_memory=true overrides="conv=gpu,matmul=gpu,add=cpu"},plan-memory',
}

# ------------------------------------------------------------ helpers


def outline_each(module):
    """Every compute op of @main in its own kernel.fused (what fusion does, minus the fusing)."""
    block = main_func(module).body.block
    for n, op in enumerate([op for op in block.ops if isinstance(op, g.GraphOp) and not isinstance(op, g.ReshapeOp)]):
        ins = list(dict.fromkeys(op.operands))
        body = Block(arg_types=[v.type for v in ins])
        clone = op.clone()
        clone.operands = [body.args[ins.index(v)] for v in op.operands]
        body.add_ops([clone, k.YieldOp(*clone.results)])
        kind = op.name.split(".")[1]
        kern = k.FusedOp(ins, [r.type for r in op.results], Region(body), f"k{n}_{kind}", kind, [loc_name(op) or kind])
        Rewriter.insert_op(kern, InsertPoint.before(op))
        for a, b in zip(op.results, kern.outputs):
            a.replace_all_uses_with(b)
        Rewriter.erase_op(op)
    return module


def kernels_of(name: str, small: bool = True, fused: bool = True):
    """A zoo model as kernel IR: through graph-opt and fusion, or one kernel per op."""
    module = import_onnx(zoo.build(name, small=small))
    if not fused:
        return outline_each(module)
    stages = select(pipeline_for(get_target("host")), None, "fusion")
    run_pipeline(module, parse_passes(",".join(spec for _, spec in stages)))
    return module


def run(module, spec: str):
    run_pipeline(module, parse_passes(spec))
    return module


def nbytes(t) -> int:
    s = sig_of(t)
    return int(np.prod(s.shape, dtype=np.int64)) * s.dtype.itemsize


def _base(v):
    while isinstance(v.owner, g.ReshapeOp):
        v = v.owner.input
    return v


def arena_buffers(module) -> list[dict]:
    """Every arena buffer: device, offset, size, [def, last use], re-derived from the IR."""
    ops = top_ops(module)
    bufs: dict = {}
    for i, op in enumerate(ops):
        if not isinstance(op, g.ReshapeOp):
            for v in op.operands:
                if _base(v) in bufs:
                    bufs[_base(v)]["end"] = i
        if isinstance(op, k.FusedOp | k.TransferOp):
            dev = op.dst.data if isinstance(op, k.TransferOp) else (op.device.data or "cpu")
            offs = op.offsets.get_values()
            for r, off in zip(op.results, offs, strict=True):
                bufs[r] = {"value": r, "device": dev, "offset": off, "size": nbytes(r.type), "start": i, "end": i}
    return [b for b in bufs.values() if b["offset"] >= 0]


def arena_sizes(module) -> dict[str, int]:
    return {d: a.value.data for d, a in main_func(module).attributes["dsc.arena"].data.items()}


def check_plan(module) -> None:
    """Live buffers never share a byte (except an in-place hand-over); offsets aligned; inside the arena."""
    bufs = arena_buffers(module)
    arenas = arena_sizes(module)
    ops = top_ops(module)
    for b in bufs:
        assert b["offset"] % 64 == 0, b
        assert b["offset"] + b["size"] <= arenas[b["device"]], b
    for i, a in enumerate(bufs):
        for b in bufs[i + 1 :]:
            if a["device"] != b["device"]:
                continue
            live_together = a["start"] <= b["end"] and b["start"] <= a["end"]
            share_bytes = a["offset"] < b["offset"] + b["size"] and b["offset"] < a["offset"] + a["size"]
            if live_together and share_bytes:
                first, second = (a, b) if a["start"] < b["start"] else (b, a)
                user = ops[second["start"]]
                in_place = (
                    first["offset"] == second["offset"]
                    and first["end"] == second["start"]
                    and isinstance(user, k.FusedOp)
                    and first["value"] in {_base(v) for v in user.operands}
                )
                assert in_place, f"{a['value']} and {b['value']} overlap in time and memory"


def run_with_arenas(module, feeds) -> list[np.ndarray]:
    """Execute the planned module with intermediates stored at their offsets in per-device arenas."""
    fn = main_func(module)
    arenas = {d: np.full(n, 0xCD, np.uint8) for d, n in arena_sizes(module).items()}
    where: dict = {}  # value -> (device or None for constants, array or (offset, dtype, shape) or view source)
    names = [a.get("dsc.name") for a in (x.data for x in fn.arg_attrs.data)] if fn.arg_attrs else []
    for i, a in enumerate(fn.body.block.args):
        where[a] = ("cpu", np.asarray(feeds[names[i].data] if names and names[i] else list(feeds.values())[i]))

    def load(v, device):
        dev, data = where[v]
        assert dev is None or dev == device, f"{v} lives on {dev}, used on {device} without a transfer"
        if isinstance(data, g.ReshapeOp):
            return load(data.input, device).reshape(sig_of(v.type).shape)
        if isinstance(data, tuple):
            off, s = data
            return np.frombuffer(arenas[dev][off : off + nbytes(v.type)].tobytes(), s.dtype).reshape(s.shape)
        return data

    def store(r, array, device, off):
        if off < 0:
            where[r] = (device, array.copy())
        else:
            arenas[device][off : off + array.nbytes] = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
            where[r] = (device, (off, sig_of(r.type)))

    for op in fn.body.block.ops:
        if isinstance(op, g.ConstantOp):
            where[op.result] = (None, op.array)
        elif isinstance(op, g.ReshapeOp):
            where[op.result] = (where[op.input][0], op)
        elif isinstance(op, k.FusedOp):
            dev = op.device.data or "cpu"
            args = [load(v, dev) for v in op.operands]
            outs = run_block(op.body.block, dict(zip(op.body.block.args, args)))
            for r, out, off in zip(op.results, outs, op.offsets.get_values(), strict=True):
                store(r, out, dev, off)
        elif isinstance(op, k.TransferOp):
            store(op.result, load(op.input, op.src.data), op.dst.data, op.offsets.get_values()[0])
        elif isinstance(op, func.ReturnOp):
            return [load(v, "cpu") for v in op.operands]
    raise AssertionError("@main has no return")


def assert_close(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def devices(module) -> dict[str, str]:
    return {op.sym_name.data: op.device.data for op in top_ops(module) if isinstance(op, k.FusedOp)}


def offsets(module) -> dict[str, list[int]]:
    return {op.sym_name.data: list(op.offsets.get_values()) for op in top_ops(module) if isinstance(op, k.FusedOp)}


def check_transfers(module) -> None:
    """Every cross-device use goes through a transfer; one transfer per value and destination."""
    where = {a: "cpu" for a in main_func(module).body.block.args}
    seen = set()
    for op in top_ops(module):
        if isinstance(op, g.ConstantOp):
            where[op.result] = None
        elif isinstance(op, g.ReshapeOp):
            where[op.result] = where[op.input]
        elif isinstance(op, k.TransferOp):
            assert where[op.input] == op.src.data != op.dst.data
            assert (_base(op.input), op.dst.data) not in seen, "two transfers of one buffer to one device"
            seen.add((_base(op.input), op.dst.data))
            where[op.result] = op.dst.data
        else:
            dev = (op.device.data or "cpu") if isinstance(op, k.FusedOp) else "cpu"
            assert dev in ("cpu", "cuda:0")
            for v in op.operands:
                assert where[v] in (None, dev), f"{op.name} on {dev} reads a value on {where[v]}"
            where.update((r, dev) for r in op.results)


# ------------------------------------------------------------ zoo models, end to end


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "outlined"])
@pytest.mark.parametrize("name", SMALL)
def test_small_zoo_plan_is_valid_and_results_unchanged(name, fused, pipeline):
    model = zoo.build(name, small=True)
    feeds = zoo.example_inputs(model)
    module = kernels_of(name, fused=fused)
    want = run_module(module, feeds)
    run(module, PIPELINES[pipeline])
    check_transfers(module)
    check_plan(module)
    assert_close(run_module(module, feeds), want)
    assert_close(run_with_arenas(module, feeds), want)
    report = memory_report(module)
    for dev, r in report.items():
        assert r["arena"] == arena_sizes(module)[dev]
        assert r["lower_bound"] <= r["arena"] <= r["no_reuse"], (dev, r)
    if pipeline != "cpu":
        assert "cuda:0" in set(devices(module).values())


def test_plan_round_trips_through_text():
    module = run(kernels_of("resnet18"), PIPELINES["gpu"])
    text = print_module(module)
    again = parse_module(text)
    assert print_module(again) == text
    assert arena_sizes(again) == arena_sizes(module)


def test_passes_are_idempotent():
    module = run(kernels_of("bert_base"), PIPELINES["gpu"])
    text = print_module(module)
    assert print_module(run(module, PIPELINES["gpu"])) == text


# ------------------------------------------------------------ plan-memory, hand-built IR

T = "tensor<1x1000xf32>"


def kernel(name: str, op: str, args: list[str], result: str = T, arg_types: list[str] | None = None, device: str = "cpu", attrs: str = "") -> str:
    """One kernel.fused around one graph op, as MLIR text."""
    types = arg_types or [T] * len(args)
    params = ", ".join(f"%a{i}: {t}" for i, t in enumerate(types))
    operands = ", ".join(f"%a{i}" for i in range(len(args)))
    return (
        f'  %{name} = kernel.fused({", ".join("%" + a for a in args)}) {{sym_name = "{name}", pattern = "{op}", device = "{device}", sources = ["/{name}"]}}'
        f' : ({", ".join(types)}) -> {result} {{\n  ^bb0({params}):\n'
        f"    %r = graph.{op} {operands} {attrs}: ({', '.join(types)}) -> {result}\n    kernel.yield %r : {result}\n  }}\n"
    )


SOFTMAX = "{axis = 1 : i64} "


def module_of(body: str, ret: str, ret_type: str = T, args: str = f"%x: {T}"):
    return parse_module(f"func.func @main({args}) -> {ret_type} {{\n{body}  func.return {ret} : {ret_type}\n}}\n")


def test_in_place_for_an_elementwise_kernel_whose_input_dies():
    body = kernel("a", "softmax", ["x"], attrs=SOFTMAX) + kernel("b", "relu", ["a"]) + kernel("c", "softmax", ["b"], attrs=SOFTMAX) + kernel("d", "softmax", ["c"], attrs=SOFTMAX)
    m = run(module_of(body, "%d"), "plan-memory")
    off = offsets(m)
    assert off["b"] == off["a"]  # relu overwrites its dying input
    assert off["c"] != off["b"]  # softmax reads whole rows: never in place
    assert off["d"] == [-1]
    assert arena_sizes(m) == {"cpu": 2 * 4032}
    assert memory_report(m)["cpu"]["in_place"] == 1
    check_plan(m)


def test_no_in_place_when_the_input_lives_on_or_differs_in_size():
    small = "tensor<1x1xf32>"
    body = (
        kernel("a", "softmax", ["x"], attrs=SOFTMAX)
        + kernel("b", "relu", ["a"])  # a is used again below
        + kernel("s", "reduce_sum", ["b"], result=small, attrs="{axes = array<i64: 1>, keepdims = 1 : i64} ")
        + kernel("c", "add", ["s", "a"], arg_types=[small, T])  # s dies here but is smaller than c
        + kernel("d", "softmax", ["c"], attrs=SOFTMAX)
    )
    m = run(module_of(body, "%d"), "plan-memory")
    off = offsets(m)
    assert off["b"] != off["a"]
    assert off["c"] == off["a"]  # a dies at c, same size: in place
    assert off["c"] != off["s"]
    check_plan(m)


def test_reshape_views_extend_the_life_of_their_base():
    body = (
        kernel("a", "softmax", ["x"], attrs=SOFTMAX)
        + f"  %v = graph.reshape %a : ({T}) -> tensor<1000xf32>\n"
        + kernel("b", "softmax", ["x"], attrs=SOFTMAX)
        + kernel("c", "softmax", ["b"], attrs=SOFTMAX)
        + kernel("d", "add", ["v", "c"], arg_types=["tensor<1000xf32>", T])
        + kernel("e", "softmax", ["d"], attrs=SOFTMAX)
    )
    m = run(module_of(body, "%e"), "plan-memory")
    off = offsets(m)
    assert off["a"] not in (off["b"], off["c"])  # a stays live through its view until d
    assert off["d"] in (off["a"], off["c"])  # d is elementwise: in place of a dying input
    check_plan(m)
    assert_close(run_with_arenas(m, {"x": np.random.default_rng(0).standard_normal((1, 1000), np.float32)}), run_module(m, [np.random.default_rng(0).standard_normal((1, 1000), np.float32)]))


def test_outputs_inputs_and_weights_stay_out_of_the_arena():
    w = f"  %w = graph.constant dense<2.0> : {T}\n"
    body = w + kernel("a", "mul", ["x", "w"]) + f"  %v = graph.reshape %a : ({T}) -> tensor<1000xf32>\n"
    m = run(module_of(body, "%v", "tensor<1000xf32>"), "plan-memory")
    assert offsets(m)["a"] == [-1]  # returned through a view
    assert arena_sizes(m) == {"cpu": 0}
    r = memory_report(m)["cpu"]
    assert r["weights"] == 4000 and r["io"] == 8000 and r["no_reuse"] == 0
    assert "cpu" in format_memory_report(memory_report(m))


def test_unplaced_kernels_plan_on_the_cpu():
    m = run(kernels_of("mlp"), "plan-memory")
    assert set(devices(m).values()) <= {"", "cpu"}
    assert set(arena_sizes(m)) == {"cpu"}
    check_plan(m)


def test_plan_memory_needs_fused_ir():
    m = import_onnx(zoo.build("mlp", small=True))
    with pytest.raises(DscError, match="fused IR"):
        run(m, "plan-memory")


# ------------------------------------------------------------ place-devices


def test_overrides_by_op_and_node_name():
    m = kernels_of("resnet18")
    convs = [op for op in top_ops(m) if isinstance(op, k.FusedOp) and any(isinstance(o, g.ConvOp) for o in op.body.walk())]
    first = convs[0].source_names[0]
    run(m, f'place-devices{{gpu="sm_80" overrides="conv=gpu,{first}=cpu"}}')
    for op in convs:
        assert op.device.data == ("cpu" if first in op.source_names else "cuda:0"), op.sym_name.data
    check_transfers(m)
    assert any(isinstance(op, k.TransferOp) for op in top_ops(m))


def test_glob_override_and_cpu_wins_ties():
    m = run(kernels_of("resnet18"), 'place-devices{gpu="sm_80" overrides="conv=gpu,relu=gpu,/layer1/*=cpu,/layer1/*=gpu"}')
    for op in top_ops(m):
        if isinstance(op, k.FusedOp) and any(s.startswith("/layer1/") for s in op.source_names):
            assert op.device.data == "cpu"
    check_transfers(m)


def test_small_models_stay_on_the_cpu_and_big_kernels_move():
    m = run(kernels_of("mlp"), 'place-devices{gpu="sm_80"}')
    assert set(devices(m).values()) == {"cpu"}
    assert not any(isinstance(op, k.TransferOp) for op in top_ops(m))
    big = run(kernels_of("resnet50", small=False), 'place-devices{gpu="sm_80"}')
    assert set(devices(big).values()) == {"cuda:0"}
    assert sum(isinstance(op, k.TransferOp) for op in top_ops(big)) == 2  # the image in, the logits out


def test_bad_overrides_are_refused():
    m = kernels_of("mlp")
    with pytest.raises(DscError, match="matches no ONNX node"):
        run(m.clone(), 'place-devices{overrides="/no/such/Node=cpu"}')
    with pytest.raises(DscError, match="unknown device"):
        run(m.clone(), 'place-devices{overrides="gemm=tpu"}')
    lrn = module_of(kernel("a", "lrn", ["x"], result="tensor<1x8x4x4xf32>", arg_types=["tensor<1x8x4x4xf32>"], attrs="{size = 3 : i64, alpha = 1.0e-04 : f32, beta = 7.5e-01 : f32, bias = 1.0 : f32} "), "%a", "tensor<1x8x4x4xf32>", "%x: tensor<1x8x4x4xf32>")
    with pytest.raises(DscError, match="no graph.lrn"):
        run(lrn, 'place-devices{overrides="lrn=gpu"}')


def test_place_devices_needs_fused_ir():
    with pytest.raises(DscError, match="fused IR"):
        run(import_onnx(zoo.build("mlp", small=True)), "place-devices")


# ------------------------------------------------------------ the targets, full size

FULL = ["resnet50", "mobilenetv2", "bert_base"]


@pytest.mark.skipif(os.environ.get("DSC_FULL_ZOO") != "1", reason="full-size zoo runs with DSC_FULL_ZOO=1 (make test-zoo)")
@pytest.mark.parametrize("target", ["host", "sm_80"])
@pytest.mark.parametrize("name", FULL)
def test_full_zoo_arena_targets(name, target):
    module = import_onnx(zoo.build(name))
    run_pipeline(module, parse_passes(",".join(spec for _, spec in pipeline_for(get_target(target)))))
    check_plan(module)
    check_transfers(module)
    report = memory_report(module)
    print(f"\n{name} ({target}):\n{format_memory_report(report)}")
    main = max(report.values(), key=lambda r: r["no_reuse"])
    assert main["arena"] <= 0.5 * main["no_reuse"]
    assert main["arena"] <= 1.1 * main["lower_bound"]
