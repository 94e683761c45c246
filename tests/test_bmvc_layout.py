"""The BMVC paper's code lives in nni_topo_pruner/bmvc/ (issue 14), with no stand-ins at the
package root (issue 28), and the scorer needs neither torch nor NNI."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import numpy as np
import pytest


def test_the_root_holds_no_stand_ins():
    # the package's own folder, not the import system: an editable install of another checkout
    # (its finder maps submodules to that tree) could still resolve a removed name
    import nni_topo_pruner

    root = {m.name for m in pkgutil.iter_modules(nni_topo_pruner.__path__)}
    assert not root & {"betti_pruner", "activation", "synthetic"}, sorted(root)


def test_names_resolve_to_the_bmvc_modules():
    from nni_topo_pruner.bmvc import BettiPruner, ManyToOne, layer_betti
    from nni_topo_pruner.bmvc.activation import ManyToOne as activation
    from nni_topo_pruner.bmvc.pruner import BettiPruner as pruner
    from nni_topo_pruner.bmvc.scoring import layer_betti as scorer
    from nni_topo_pruner.registry import get_pruner

    assert BettiPruner is pruner is get_pruner("betti")
    assert ManyToOne is activation and layer_betti is scorer


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
