"""Benchmarks: update latency against depth, transport overhead, and their plots."""
