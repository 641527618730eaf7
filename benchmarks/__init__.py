"""Benchmarks that run real chatterd processes on loopback (``python -m benchmarks.latency``)."""
