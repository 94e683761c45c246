"""The BMVC paper's code lives in nni_topo_pruner/bmvc/ (issue 14); the old import paths are
the same modules, and the scorer needs neither torch nor NNI."""
from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.parametrize("old, new", [("betti_pruner", "pruner"), ("activation", "activation"),
                                      ("synthetic", "synthetic")])
def test_old_paths_are_the_bmvc_modules(old, new):
    assert importlib.import_module(f"nni_topo_pruner.{old}") is importlib.import_module(f"nni_topo_pruner.bmvc.{new}")


def test_old_names_resolve_to_the_moved_objects():
    from nni_topo_pruner.activation import ManyToOne
    from nni_topo_pruner.betti_pruner import BettiPruner, layer_betti
    from nni_topo_pruner.bmvc import BettiPruner as new_pruner, ManyToOne as new_activation
    from nni_topo_pruner.bmvc.scoring import layer_betti as scorer
    from nni_topo_pruner.registry import get_pruner

    assert BettiPruner is new_pruner is get_pruner("betti")
    assert ManyToOne is new_activation and layer_betti is scorer


def test_the_scorer_runs_on_numpy_alone():
    code = ("import sys, numpy as np\n"
            "from nni_topo_pruner.bmvc.scoring import BettiScale, betti_importance, layer_betti\n"
            "b, t = layer_betti(np.arange(8.0).reshape(4, 2, 1), BettiScale(0.5, 'absolute'), (0,))\n"
            "print(b.ravel().tolist(), betti_importance(b, t).dtype)\n"
            "assert 'torch' not in sys.modules and 'nni' not in sys.modules, sorted(sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[4,", "4]", "float32"]


def test_scorer_matches_the_tensor_path():
    torch = pytest.importorskip("torch")
    from nni_topo_pruner.bmvc.scoring import BettiScale, layer_betti

    cloud = torch.rand(20, 3, 5, generator=torch.Generator().manual_seed(0))
    from_tensor = layer_betti(cloud, BettiScale(0.5, "median"), (0,))
    from_array = layer_betti(cloud.numpy(), BettiScale(0.5, "median"), (0,))
    assert np.array_equal(from_tensor[0], from_array[0]) and np.array_equal(from_tensor[1], from_array[1])
