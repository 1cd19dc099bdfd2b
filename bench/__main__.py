"""`python -m bench`: runs the benchmarks and prints their figures."""

from __future__ import annotations

from bench.cli import main

raise SystemExit(main())
