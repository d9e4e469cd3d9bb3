"""`dsc.compile`: one entry point for every kind of model.

    dsc.compile("model.onnx", target="host")              # ONNX path or ModelProto (dsc.driver.compile)
    dsc.compile(torch_module, (x,), target="host")        # a torch.nn.Module, traced by torch.export
    dsc.compile(dsc_module_or_jit_fn, (x,), target=...)   # a dsc.nn.Module or a @dsc.jit function

Each returns the artifact's bytes (and writes it when `output=` is given).
torch is imported only when the model is a torch module, so the ONNX path
never pays for it.
"""

from __future__ import annotations

import sys


def _is_torch_module(model) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _as_tuple(example_inputs) -> tuple:
    if example_inputs is None:
        from dsc.runtime.errors import DscError

        raise DscError("compiling a Python model needs example inputs", hint="dsc.compile(model, (x,), target=...)")
    return tuple(example_inputs) if isinstance(example_inputs, tuple | list) else (example_inputs,)


def _write(data: bytes, output: str | None) -> bytes:
    if output:
        from dsc.runtime.errors import DscError

        try:
            with open(output, "wb") as f:
                f.write(data)
        except OSError as e:
            raise DscError(f"{output}: cannot write the artifact: {e.strerror}") from None
    return data


def compile(model, *args, **kwargs) -> bytes:  # noqa: A001 (the public name)
    """Compile an ONNX model, a torch.nn.Module, a dsc.nn.Module or a @dsc.jit function to artifact bytes."""
    if _is_torch_module(model):
        from dsc.frontends.torch import compile_torch

        return compile_torch(model, *args, **kwargs)
    from dsc.frontends.trace.jit import JitFunction

    if isinstance(model, JitFunction) or _is_dsc_module(model):
        return _compile_traced(model, *args, **kwargs)
    from dsc.driver import compile as compile_onnx

    return compile_onnx(model, *args, **kwargs)


def _is_dsc_module(model) -> bool:
    from dsc.frontends.trace.nn import Module

    return isinstance(model, Module)


def _compile_traced(model, example_inputs=None, target: str = "host", *, output: str | None = None, options=None) -> bytes:
    from dsc.frontends.trace.jit import JitFunction, jit

    fn = model if isinstance(model, JitFunction) else jit(model, target=target)
    return _write(fn.compile(*_as_tuple(example_inputs), target=target, options=options), output)
