"""The `dsc` command line and developer tools (zoo builders, benchmarks)."""
