"""The BMVC paper (seed 000): pruning filters by the Betti numbers of their feature maps.

=================  =====================================================================
module             what
=================  =====================================================================
``scoring``        the Betti score of each filter's feature cloud, on plain arrays (NumPy)
``pruner``         ``BettiPruner``: NNI pruner = ``feature_collector`` -> ``scoring`` ->
                   NNI's ``generate_sparsity``
``activation``     the many-to-one activation (``ManyToOne``)
``synthetic``      the nine-rings / nine-spheres data sets and the 9 x 25 MLP
=================  =====================================================================

Names are loaded on first use, so ``import nni_topo_pruner.bmvc`` imports neither torch
nor NNI.

Example:
    >>> from nni_topo_pruner.bmvc import layer_betti
    >>> layer_betti.__module__
    'nni_topo_pruner.bmvc.scoring'
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "BettiScale": "scoring", "betti_importance": "scoring", "h0_tie": "scoring", "layer_betti": "scoring",
    "BettiPruner": "pruner",
    "DEFAULT_CUTOFF": "activation", "ManyToOne": "activation", "many_to_one": "activation",
    "BmvcMLP": "synthetic", "SyntheticData": "synthetic", "make_dataset": "synthetic", "nine_rings": "synthetic",
    "nine_spheres": "synthetic",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
