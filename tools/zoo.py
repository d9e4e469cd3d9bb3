"""The dsc model zoo: benchmark and test models built as ONNX, no downloads.

Every model is generated with ``onnx.helper`` and seeded random weights
(``numpy.random.default_rng``), so the same arguments always give a
byte-identical ``onnx.ModelProto``.  The graphs follow what ``torch.onnx.export``
produces at opset 17 for the torchvision / Hugging Face originals (same layers,
FLOPs, node and parameter names); see ``zoo_cnn`` and ``zoo_transformer``.
``export_torch_zoo`` exports the real torch models when torch is available.

    >>> from dsc.tools import zoo
    >>> model = zoo.build("resnet18", small=True)      # CI-sized variant
    >>> feeds = zoo.example_inputs(model)             # {"input": float32 array}

``ZOO`` maps each name to its builder (defaults give the real model), ``SMALL``
to a callable building the small variant used by the tests.  On the command
line: ``python -m dsc.tools.zoo NAME OUT.onnx [--small] [--batch N]``.
"""

from __future__ import annotations

import argparse
import functools
from typing import Callable

import numpy as np
import onnx

try:
    from . import zoo_cnn, zoo_transformer
except ImportError:  # imported as a top-level module with tools/ on sys.path
    import zoo_cnn
    import zoo_transformer

ZOO: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet18": zoo_cnn.resnet18,
    "resnet50": zoo_cnn.resnet50,
    "mobilenetv2": zoo_cnn.mobilenetv2,
    "efficientnet_b0": zoo_cnn.efficientnet_b0,
    "bert_base": zoo_transformer.bert_base,
    "mlp": zoo_cnn.mlp,
}

SMALL: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet18": functools.partial(zoo_cnn.resnet18, image=64, width=16),
    "resnet50": functools.partial(zoo_cnn.resnet50, image=64, width=16),
    "mobilenetv2": functools.partial(zoo_cnn.mobilenetv2, image=64, width=0.25),
    "efficientnet_b0": functools.partial(zoo_cnn.efficientnet_b0, image=64, width=0.25),
    "bert_base": functools.partial(zoo_transformer.bert_base, seq=16, layers=2, hidden=64,
                                   heads=2, intermediate=128, vocab=100),
    "mlp": functools.partial(zoo_cnn.mlp, hidden=64),
}


def build(name: str, batch: int = 1, small: bool = False, **kwargs) -> onnx.ModelProto:
    """Builds zoo model `name` (its small variant if `small`); `kwargs` go to the builder."""
    table = SMALL if small else ZOO
    if name not in table:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(sorted(table))}")
    return table[name](batch=batch, **kwargs)


def save(name: str, path: str, batch: int = 1, small: bool = False, **kwargs) -> str:
    """Builds zoo model `name` and writes it to `path`; returns `path`."""
    onnx.save(build(name, batch=batch, small=small, **kwargs), path)
    return path


def example_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for every graph input of `model`.

    float32 inputs are N(0, 1); int64 inputs whose name contains ``mask`` are
    ones with the last quarter of the last axis zeroed; other int64 inputs
    (``input_ids``) are uniform in [0, vocab).
    """
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        shape, elem = _static_shape(vi), vi.type.tensor_type.elem_type
        if elem == onnx.TensorProto.FLOAT:
            feeds[vi.name] = rng.standard_normal(shape, dtype=np.float32)
        elif elem == onnx.TensorProto.INT64 and "mask" in vi.name:
            mask = np.ones(shape, dtype=np.int64)
            mask[..., shape[-1] - shape[-1] // 4:] = 0
            feeds[vi.name] = mask
        elif elem == onnx.TensorProto.INT64:
            feeds[vi.name] = rng.integers(0, _vocab_size(model, vi.name), size=shape,
                                          dtype=np.int64)
        else:
            raise ValueError(f"input {vi.name!r}: unsupported element type {elem}")
    return feeds


def _static_shape(vi: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = vi.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        raise ValueError(f"input {vi.name!r} has a symbolic shape; build with a fixed batch")
    return tuple(d.dim_value for d in dims)


def _vocab_size(model: onnx.ModelProto, input_name: str) -> int:
    """From the zoo metadata, else from the table a ``Gather`` indexes with the input."""
    meta = {p.key: p.value for p in model.metadata_props}
    if "dsc.zoo.vocab_size" in meta:
        return int(meta["dsc.zoo.vocab_size"])
    tables = {t.name: t.dims[0] for t in model.graph.initializer if t.dims}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[1] == input_name and node.input[0] in tables:
            return int(tables[node.input[0]])
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a dsc zoo model as ONNX.")
    parser.add_argument("name", choices=sorted(ZOO))
    parser.add_argument("out", help="output .onnx path")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="the small CI variant")
    args = parser.parse_args(argv)
    save(args.name, args.out, batch=args.batch, small=args.small)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
