"""Benchmarks run by `kb-assets bench …`: measured throughput and ratios, apart from the test suite."""
