"""The BMVC paper's studies (convergence, Betti threshold, the activation's plot), on the framework.
Imports ``benchmarks.core`` and ``benchmarks.grid``."""
