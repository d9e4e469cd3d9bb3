"""Builds onnx's backend test suite for a dsc backend from the lists in onnx_backend_excludes.py."""

import onnx.backend.test
from onnx_backend_excludes import EXCLUDED, INCLUDED_OPS, LIGHT_MODELS


def make_suite(backend, module_name: str, extra_excluded: dict[str, str] | None = None) -> dict:
    """The unittest TestCase classes of the included tests (others are left out, not skipped)."""
    suite = onnx.backend.test.BackendTest(backend, module_name)
    for op in INCLUDED_OPS:
        suite.include(rf"^test_{op}(_.*)?_cpu$")
    for m in LIGHT_MODELS:
        suite.include(rf"^test_{m}_cpu$")
    for pattern in {**EXCLUDED, **(extra_excluded or {})}:
        suite.exclude(pattern)
    for items in suite._test_items.values():
        for name in [n for n in items if not any(p.search(n) for p in suite._include_patterns)]:
            del items[name]
    return suite.test_cases
