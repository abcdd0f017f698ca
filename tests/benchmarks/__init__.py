"""Benchmarks, run on demand (``make bench``); never collected by the test suite.

Each compares the library with the floor (the same writes issued directly through the database
driver) in the same run, interleaved, and reports medians, ranges and ratios. See
``docs/performance.md``.
"""
