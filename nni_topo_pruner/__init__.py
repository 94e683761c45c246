"""nni-topo-pruner: topological neural-network pruning as a plugin for Microsoft NNI.

Public names are imported lazily so that ``import nni_topo_pruner`` stays cheap: the
topology code (:mod:`nni_topo_pruner.topology`, :mod:`nni_topo_pruner.engine`) needs only
NumPy and GUDHI. The patches of :mod:`nni_topo_pruner.compat`, which mend NNI 3.0's concrete
tracer, ``ModelSpeedup`` and config parsing for current PyTorch / Python 3.11, are applied
where this package is about to use NNI (constructing one of its pruners, ``create_pruner``,
``speedup_model``); code that uses NNI directly calls ``nni_topo_pruner.compat.apply()`` first.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "TopologicalPruner": "nni_topo_pruner.pruner",
    "get_pruner": "nni_topo_pruner.registry",
    "available_pruners": "nni_topo_pruner.registry",
    "register_pruner": "nni_topo_pruner.registry",
    "compress_from_config": "nni_topo_pruner.registry",
    "load_compression_config": "nni_topo_pruner.registry",
    "save_masks": "nni_topo_pruner.masks_io",
    "load_masks": "nni_topo_pruner.masks_io",
    "with_batchnorm_masks": "nni_topo_pruner.scheduled",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nni_topo_pruner' has no attribute {name!r}")
