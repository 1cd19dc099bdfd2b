"""Benchmarks for the Gate4 Platform: `make bench` or `python -m bench [gateway|storage]`.

Every figure is printed next to a baseline measured in the same run (a ratio), because
absolute throughput on a shared two-core machine says little; nothing here passes or fails
on wall-clock time. See docs/architecture/benchmarks.md.
"""
