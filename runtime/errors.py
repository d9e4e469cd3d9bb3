"""The one error family of dsc.

Every failure a user can cause (a malformed model, an unsupported op, a bad
shape, a foreign artifact) raises a `DscError`. Messages say what was wrong,
where (file, node, op, shape) and what to do. The command line prints
`error: <message>` and exits non-zero; it never shows a traceback for these.

This module lives in the runtime because the runtime is the lowest layer: the
compiler imports it from here, the runtime never imports the compiler.
"""

from __future__ import annotations


class DscError(Exception):
    """Base class of every error dsc raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ModelError(DscError):
    """The input model is missing, malformed, truncated or under-specified."""


class UnsupportedOpError(DscError):
    """The model uses operators (or attributes of them) dsc cannot compile."""


class ShapeError(DscError):
    """Shapes or dtypes do not agree (at import, verification or run time)."""


class IRError(DscError):
    """IR text does not parse or does not verify."""


class TargetError(DscError):
    """An unknown target, or an artifact built for another machine."""


class ArtifactError(DscError):
    """A compiled artifact is truncated, altered or foreign."""
