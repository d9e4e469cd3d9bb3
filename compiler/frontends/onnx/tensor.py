"""Converters of ONNX tensor ops (to be filled)."""

from dsc.frontends.onnx.importer import NodeBuilder, converter  # noqa: F401
