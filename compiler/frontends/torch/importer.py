"""torch.nn.Module -> graph dialect, through torch.export and dsc's tracer.

    module = dsc.frontends.torch.import_torch(model, (x,))     # an xDSL ModuleOp
    data = dsc.compile(model, (x,), target="host")              # artifact bytes

`torch.export.export` (in eval mode, without gradients) gives an ATen graph
with static shapes; the importer interprets it node by node inside a dsc
trace: parameters, buffers and lifted constants become named
`graph.constant`s (`layer1.0.conv1.weight`), user inputs become @main's
arguments (named as in `forward`), and each `call_function` node goes through
its converter in ops.py onto the traced Tensor API, so broadcasting, dtype
promotion and shape checks are the ones `@dsc.jit` uses. Every op carries
the node's module path and name as its location (`layer1.0.conv1/conv2d`).

Unsupported ATen ops are all listed at once, before any conversion.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from dsc.dialects.tensor_types import Sig
from dsc.frontends.torch.ops import CONVERTERS
from dsc.frontends.trace.branches import trace
from dsc.frontends.trace.tracer import Tracer, current
from dsc.runtime.errors import DscError, ModelError, UnsupportedOpError


def _require_torch():
    try:
        import torch
    except ImportError:
        raise DscError("the torch frontend needs PyTorch", hint="pip install 'dsc[torch]' (torch==2.13.0)") from None
    return torch


def _to_numpy(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


def export(model, example_inputs: Sequence):
    """torch.export in eval mode; the module's training flag is restored afterwards."""
    torch = _require_torch()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.export.export(model, tuple(example_inputs))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(
            f"torch.export could not trace {type(model).__name__}: {type(e).__name__}: {first[:300]}",
            hint="dsc compiles what torch.export can capture with static shapes; data-dependent Python control flow must use torch.cond",
        ) from None
    finally:
        model.train(was_training)


def _op_name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name.split("::")[-1]
    return getattr(target, "__name__", str(target))


def _lookup(name: str):
    if name in CONVERTERS:
        return CONVERTERS[name]
    if name.endswith("_") and name[:-1] in CONVERTERS:  # in-place variants (relu_, hardtanh_)
        return CONVERTERS[name[:-1]]
    return None


def _bind(node, args, kwargs) -> dict:
    """Arguments by schema name, with defaults; '__name__' is the op's name."""
    schema = node.target._schema
    out = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(args) and not arg.kwarg_only:
            out[arg.name] = args[i]
        elif arg.name in kwargs:
            out[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    name = _op_name(node.target)
    out["__name__"] = name[:-1] if name.endswith("_") and name not in CONVERTERS else name
    return out


def _location(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = ""
    if stack:
        path = list(stack.values())[-1][0]
    return f"{path}/{node.name}" if path else node.name


def _check_supported(graph) -> None:
    missing: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.op == "call_function" and node.target is not operator.getitem and _lookup(_op_name(node.target)) is None:
            missing.setdefault(str(node.target), []).append(node.name)
        elif node.op in ("call_module", "call_method", "get_attr"):
            missing.setdefault(f"{node.op} {node.target}", []).append(node.name)
    if missing:
        lines = "; ".join(f"{t} (nodes: {', '.join(ns[:3])}{', ...' if len(ns) > 3 else ''})" for t, ns in sorted(missing.items()))
        raise UnsupportedOpError(f"{len(missing)} unsupported torch op(s): {lines}", hint="file an issue with the op names; dsc maps ATen ops in dsc/frontends/torch/ops.py")


def import_torch(model, example_inputs, *, decompose: bool = False) -> ModuleOp:
    """Export `model` on `example_inputs` and import it as a graph-dialect module."""
    torch = _require_torch()
    from torch.export.graph_signature import InputKind, OutputKind

    example_inputs = tuple(example_inputs) if isinstance(example_inputs, tuple | list) else (example_inputs,)
    if not all(isinstance(x, torch.Tensor) for x in example_inputs):
        raise DscError("example inputs of a torch module must be torch tensors", hint="dsc.compile(model, (torch.randn(1, 3, 224, 224),))")
    ep = export(model, example_inputs)
    if decompose:
        ep = ep.run_decompositions()
    graph = ep.graph
    _check_supported(graph)
    state = {**ep.state_dict, **ep.constants}
    lifted: dict[str, str] = {}
    user_inputs: list[str] = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            user_inputs.append(spec.arg.name)
        elif spec.target is not None:
            lifted[spec.arg.name] = spec.target
    out_names = [s.arg.name for s in ep.graph_signature.output_specs if s.kind == OutputKind.USER_OUTPUT]
    sigs = [Sig(tuple(x.shape), _to_numpy(x).dtype) for x in example_inputs]
    arrays = {name: _to_numpy(v) if isinstance(v, torch.Tensor) else np.asarray(v) for name, v in state.items()}

    def interpret(*xs):
        tr: Tracer = current()
        env: dict = {}
        it = iter(xs)
        for node in graph.nodes:
            if node.op == "placeholder":
                if node.name in lifted:
                    if node.users:  # (unused buffers such as num_batches_tracked are skipped)
                        with tr.at(lifted[node.name]):
                            env[node] = tr.constant(arrays[lifted[node.name]], lifted[node.name])
                elif node.name in user_inputs:
                    env[node] = next(it)
                else:  # e.g. a token input of an effectful op
                    env[node] = None
            elif node.op == "call_function":
                args = torch.fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
                with tr.at(_location(node)):
                    if node.target is operator.getitem:
                        env[node] = args[0][args[1]]
                    else:
                        try:
                            env[node] = _lookup(_op_name(node.target))(_bind(node, args, kwargs))
                        except DscError as e:
                            raise type(e)(f"torch node '{node.name}' ({node.target}) at {_location(node)}: {e.message}", hint=e.hint) from None
            elif node.op == "output":
                outs = dict(zip([getattr(n, "name", None) for n in node.args[0]], node.args[0]))
                return tuple(env[outs[n]] for n in out_names)
        raise ModelError("the exported torch graph has no output node")

    def make_inputs(tr: Tracer):
        return tuple(tr.arg(s) for s in sigs), {}

    traced = trace(interpret, make_inputs, sigs, user_inputs, name=type(model).__name__, output_names=_unique(out_names))
    return traced.module


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


def compile_torch(model, example_inputs=None, target: str = "host", *, output: str | None = None, decompose: bool = False, options=None) -> bytes:
    """dsc.compile for a torch.nn.Module: artifact bytes (written to `output` if given)."""
    from dsc.compile_api import _as_tuple, _write
    from dsc.driver import compile_module
    from dsc.pipeline import CompileOptions
    from dsc.targets import get_target

    get_target(target)
    module = import_torch(model, _as_tuple(example_inputs), decompose=decompose)
    return _write(compile_module(module, target, options=options or CompileOptions()), output)
