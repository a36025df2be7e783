"""Benchmarks: warm-up, timed runs, peers in subprocesses, tables."""
