"""Frontends: ONNX import, tracing."""
