"""`python -m dsc` is the `dsc` command."""

from dsc.tools.cli import main

raise SystemExit(main())
