"""The thesis' pruning grid (``python -m benchmarks.run``): the plan of (sparsity, seed, pruner),
one record through a backend, executors, statistics, the report, plots, comparison of runs.
Imports ``benchmarks.core`` only."""
