"""Benchmarks that run real chatterd processes on loopback (``python -m benchmarks.latency``).

One module per benchmark over the shared ``benchmarks._lib`` (see benchmarks/README.md).
"""
