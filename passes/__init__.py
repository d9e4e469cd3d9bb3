"""Transforms on dsc IR, one pass per file, named by its verb."""
