"""Issue 15, items 5, 8 and 9: bad options and inputs raise errors that name the option or
the layer and say what to do."""
from __future__ import annotations

import pytest
import torch

from nni_topo_pruner.metric_calculator import MetricCalculator
from nni_topo_pruner.topology.persistence import check_homology_dims


# ----------------------------------------------------------------------------------------
# item 5: homology_dims
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, 1.5, "0", "01", object(), -1, (0, 0), (), (0, None)])
def test_bad_homology_dims_raise_value_error_naming_the_option(value):
    with pytest.raises(ValueError, match="homology_dims"):
        check_homology_dims(value)
    with pytest.raises(ValueError, match="homology_dims"):
        MetricCalculator(homology_dims=value)


@pytest.mark.parametrize(("value", "expected"), [(0, (0,)), (1, (1,)), ([1, 0], (0, 1)), ((0,), (0,))])
def test_homology_dims_accepts_an_int_or_a_sequence(value, expected):
    assert check_homology_dims(value) == expected
    assert MetricCalculator(homology_dims=value).homology_dims == expected


@pytest.mark.parametrize("value", [0, None])
def test_topological_pruner_homology_dims_int_or_none(value):
    """Was ``TypeError: 'int' object is not iterable``: now accepted (an int) or a ValueError naming the option."""
    from nni_topo_pruner import TopologicalPruner

    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    try:
        pruner = TopologicalPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.5}], homology_dims=value,
                                   progress=False)
    except ValueError as error:
        assert "homology_dims" in str(error)
    else:
        assert value is not None
        pruner.unwrap_model()


# ----------------------------------------------------------------------------------------
# item 8: BettiPruner seed and non-finite calibration features
# ----------------------------------------------------------------------------------------

def _betti_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, 4, 3, padding=1)).eval()


def _images(n: int = 12, nan: bool = False) -> list:
    x = torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    if nan:
        x[3, 0, 2, 2] = float("nan")
    return [x[i:i + 4] for i in range(0, n, 4)]


@pytest.mark.parametrize("seed", ["x", 1.5, None, True, [0]])
def test_betti_pruner_bad_seed_names_the_option(seed):
    from nni_topo_pruner.bmvc.pruner import BettiPruner

    model = _betti_model()
    with pytest.raises(ValueError, match=r"seed must be an int.*got"):
        BettiPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], calibration_loader=_images(),
                    num_images=12, seed=seed, progress=False)
    assert not any("Wrapper" in type(m).__name__ for m in model.modules())


def test_betti_pruner_nan_calibration_images_name_the_layer():
    from nni_topo_pruner.bmvc.pruner import BettiPruner

    pruner = BettiPruner(_betti_model(), [{"op_names": ["2"], "sparse_ratio": 0.5}],
                         calibration_loader=_images(nan=True), num_images=12, progress=False)
    with pytest.raises(ValueError, match=r"layer '2'.*NaN or Inf.*calibration"):
        pruner.compress()
