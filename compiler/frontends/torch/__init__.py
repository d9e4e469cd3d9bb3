"""The torch frontend (optional extra `dsc[torch]`): torch.nn.Module -> graph dialect via torch.export.

torch is imported when a function here is called, never at import of dsc.
"""

from dsc.frontends.torch.importer import compile_torch, export, import_torch

__all__ = ["compile_torch", "export", "import_torch"]
