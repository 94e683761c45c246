"""The compat patches are applied where the package is about to use NNI, not on import:
``import nni_topo_pruner`` and the topology code need neither NNI nor torch. Each check runs
in a fresh interpreter (this test session has applied the patches already, see conftest)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

PATCHED = "[p.name for p in compat.PATCHES]"


def run_fresh(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok"), result.stdout[-3000:]


def test_topology_code_imports_no_nni_and_pruner_construction_applies_the_patches():
    run_fresh(f"""
        import sys
        import numpy as np
        import nni_topo_pruner
        from nni_topo_pruner import compat
        from nni_topo_pruner.engine import analyse_unit, build_criterion, choose_kept
        from nni_topo_pruner.topology import distance_matrix, persistence_diagrams
        calculator, ga = build_criterion(seed=0)
        cloud = np.random.default_rng(0).normal(size=(6, 3))
        assert choose_kept(calculator, analyse_unit(calculator, cloud), 3, ga).keep_mask.sum() == 3
        assert "nni" not in sys.modules and "torch" not in sys.modules, sorted(
            m for m in sys.modules if m.split(".")[0] in ("nni", "torch"))[:5]

        import torch
        from nni_topo_pruner import TopologicalPruner
        assert compat.applied_patches() == [], compat.applied_patches()  # importing NNI patches nothing
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
        pruner = TopologicalPruner(model, [{{"op_types": ["Conv2d"], "total_sparsity": 0.5}}], progress=False)
        assert compat.applied_patches() == {PATCHED}, compat.applied_patches()
        print("ok")
    """)


def test_registry_applies_the_patches_for_nni_pruners():
    run_fresh(f"""
        import torch
        from nni_topo_pruner import compat, registry
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
        # a legacy config list: NNI's own translation of it needs the legacy-total-sparsity patch
        pruner = registry.create_pruner("l1", model, [{{"op_types": ["Conv2d"], "total_sparsity": 0.5}}])
        assert compat.applied_patches() == {PATCHED}, compat.applied_patches()
        print("ok")
    """)
