"""The benchmark harness behind ``make bench`` (results in ``docs/BENCHMARKS.md``).

Pure pieces (percentiles, latency matching, the step search, the report) are
small functions tested in ``tests/unit/test_bench_*.py``; the rest starts a
local broker, the emulator, worker and load processes, and measures them.
"""
