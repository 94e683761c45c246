"""The shared core of the benchmarks: configuration and keys, data, models, training, the baseline,
measurements, files and locks, the environment, and the experiment framework. Imports no other
part of ``benchmarks`` (docs/architecture.md)."""
