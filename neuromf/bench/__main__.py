"""`python -m neuromf.bench`: the benchmark CLI (neuromf/bench/cli.py)."""

from neuromf.bench.cli import main

raise SystemExit(main())
