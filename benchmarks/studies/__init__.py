"""One-off studies: both backends on one record, allocation curves, mask stability, the recipe check.
Imports ``benchmarks.core`` and ``benchmarks.grid``."""
