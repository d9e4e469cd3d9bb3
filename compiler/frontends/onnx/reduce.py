"""Converters of ONNX reduce ops (to be filled)."""

from dsc.frontends.onnx.importer import NodeBuilder, converter  # noqa: F401
