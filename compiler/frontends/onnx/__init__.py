"""The ONNX frontend: one converter per op, grouped by family in this folder."""

from dsc.frontends.onnx.importer import CONVERTERS, converter, import_onnx, load_model, supported_ops

__all__ = ["CONVERTERS", "converter", "import_onnx", "load_model", "supported_ops"]
