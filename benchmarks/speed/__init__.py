"""Speed benchmarks: pruners, the engine, Torch-Pruning importances, training throughput.
Imports ``benchmarks.core`` only."""
