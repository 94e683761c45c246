"""Full compat acceptance matrix (slow; run with `pytest -m slow tests/test_compat*.py`).

For each torchvision model (weights=None, eval mode, inputs of TorchvisionCase.resolution
pixels): NNI L1NormPruner at sparse_ratio 0.5 on its Conv2d layers with NNI's dependency
group ids, unwrap, ModelSpeedup; the model runs, keeps its output shape and has strictly
fewer parameters. With all-ones masks the sped-up model's outputs equal the original's.
Models that cannot be made to work are strict xfails with their exact error (docs/compat.md,
"Known limitations").
"""
from __future__ import annotations

import pytest
import torch

from .compat_models import TORCHVISION_CASES, run_torchvision_case, run_torchvision_ones_case


pytestmark = pytest.mark.slow


def _params(field: str):
    for name, case in TORCHVISION_CASES.items():
        marks = []
        known = getattr(case, field)
        if known is not None:
            error_type, message = known
            marks.append(pytest.mark.xfail(strict=True, raises=error_type,
                                           reason=f"{error_type.__name__}: {message}"))
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params("known_failure")))
def test_prune_and_speedup(name):
    result = run_torchvision_case(TORCHVISION_CASES[name])
    assert result.output.shape == result.original_output.shape
    assert result.params_after < result.params_before
    assert torch.isfinite(result.output).all()


@pytest.mark.parametrize("name", list(_params("known_ones_failure")))
def test_all_ones_masks_keep_outputs(name):
    original, sped_up, _ = run_torchvision_ones_case(TORCHVISION_CASES[name])
    torch.testing.assert_close(sped_up, original, rtol=1e-4, atol=1e-4)
