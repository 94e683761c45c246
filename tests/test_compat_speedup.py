"""CI subset of the compat acceptance: NNI L1NormPruner + ModelSpeedup on small hand-written
models (functional softmax/log_softmax along a dim, view/flatten/cat/add, annotations,
Python branches; plain and torch.fx-traced) and three torchvision models at small inputs.

The full torchvision matrix is tests/test_compat_torchvision.py (pytest -m slow).
"""
from __future__ import annotations

import pytest
import torch
import torch.fx

from .compat_models import (TORCHVISION_CASES, ones_masks_speedup, prune_and_speedup, conv_config,
                           run_torchvision_case, small_models)


SMALL = small_models()
# symbolic_trace cannot follow DataDependentNet's value branches (that's what NNI's concrete
# tracer is for), so it is tested only as a plain module
FX_TRACEABLE = ["functional_softmax", "concat_add"]


def _build(name: str, fx_traced: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = SMALL[name]().eval()
    return torch.fx.symbolic_trace(model) if fx_traced else model


def _dummy() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


CASES = [(name, False) for name in SMALL] + [(name, True) for name in FX_TRACEABLE]
IDS = [f"{name}{'-fx' if fx else ''}" for name, fx in CASES]


@pytest.mark.parametrize(("name", "fx_traced"), CASES, ids=IDS)
def test_small_model_prune_and_speedup(name, fx_traced):
    model = _build(name, fx_traced)
    dummy = _dummy()
    result = prune_and_speedup(model, dummy, conv_config(model, dummy))
    assert result.output.shape == result.original_output.shape
    assert result.params_after < result.params_before
    assert torch.isfinite(result.output).all()


@pytest.mark.parametrize(("name", "fx_traced"), CASES, ids=IDS)
def test_small_model_all_ones_masks_keep_outputs(name, fx_traced):
    original, sped_up, _ = ones_masks_speedup(_build(name, fx_traced), _dummy())
    torch.testing.assert_close(sped_up, original, rtol=1e-4, atol=1e-5)


# residual adds, depthwise convs + squeeze-excitation, concatenation (about 60 s together here)
CI_TORCHVISION = ["resnet18", "mobilenet_v3_small", "squeezenet1_0"]


@pytest.mark.parametrize("name", CI_TORCHVISION)
def test_torchvision_subset_prune_and_speedup(name):
    result = run_torchvision_case(TORCHVISION_CASES[name])
    assert result.output.shape == result.original_output.shape
    assert result.params_after < result.params_before

