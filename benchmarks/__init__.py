"""Benchmarks of odedsl's backward modes and of memory-free peers (``python -m benchmarks.modes``,
``python -m benchmarks.peers``); results land in ``benchmarks/results/``."""
