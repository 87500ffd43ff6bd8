"""Benchmarks: `python -m gsa.bench.ops` (kernels; `gsa bench ops`)."""
