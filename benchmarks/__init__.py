"""Benchmarks of llmfactory against its peers and the floor (raw httpx).

Run by hand: ``python -m benchmarks [NAME ...] [--markdown FILE]``; results are
recorded in docs/benchmarks.md. Every server a benchmark talks to runs on
127.0.0.1; every figure is a median over repeated runs; every comparison is a
ratio taken in the same run.
"""
