"""The one validation module (issue 14): every check names the parameter in the same form,
and its error is both a ValueError and a TypeError (as scikit-learn's InvalidParameterError)."""
from __future__ import annotations

import numpy as np
import pytest

from nni_topo_pruner.evolutionary import GAConfig
from nni_topo_pruner.metric_calculator import MetricCalculator
from nni_topo_pruner.topology.betti import BettiScale, betti_numbers
from nni_topo_pruner.topology.validation import (
    InvalidParameterError,
    check_choice,
    check_distance_matrix,
    check_homology_dims,
    check_int,
    check_number,
    check_points,
    check_probability,
)


@pytest.mark.parametrize("call, message", [
    (lambda: check_int(2.0, "num_images", 3), "num_images must be an int >= 3, got 2.0"),
    (lambda: check_int(True, "seed"), "seed must be an int, got True"),
    (lambda: check_int("x", "max_feature_dim", 1, allow_none=True), "max_feature_dim must be an int >= 1 or None, got 'x'"),
    (lambda: check_number(float("nan"), "scale", minimum=0), "scale must be a finite number >= 0, got nan"),
    (lambda: check_number(3, "ratio", minimum=0, maximum=1), "ratio must be a finite number >= 0 and <= 1, got 3"),
    (lambda: check_probability(1.5, "mutation_probability"), "mutation_probability must be a probability in [0, 1], got 1.5"),
    (lambda: check_choice(3, "count", ("alive", "persistent")), "count must be one of ('alive', 'persistent'), got 3"),
    (lambda: check_homology_dims((0, 0), "dims"), "dims must be a non-empty sequence of distinct non-negative ints"),
    (lambda: check_homology_dims(0, allow_int=False), "homology_dims must be a non-empty sequence"),
])
def test_messages_name_the_parameter_in_one_form(call, message):
    with pytest.raises(InvalidParameterError) as error:
        call()
    assert str(error.value).startswith(message)
    assert isinstance(error.value, ValueError) and isinstance(error.value, TypeError)


def test_array_checks_name_the_argument():
    with pytest.raises(InvalidParameterError, match=r"^cloud must be a 2-D array"):
        check_points(np.zeros(3), "cloud")
    with pytest.raises(InvalidParameterError, match=r"^distance_matrix must be a non-empty square"):
        check_distance_matrix(np.zeros((0, 0)), "distance_matrix", min_points=1)
    assert check_distance_matrix(np.zeros((0, 0))).shape == (0, 0)   # empty allowed by default
    with pytest.raises(InvalidParameterError, match=r"^dist must hold non-negative distances"):
        check_distance_matrix(-np.ones((2, 2)))


def test_callers_share_the_checks():
    # the same rule, reached through three rooms, gives the same message
    for call in (lambda: check_homology_dims(()), lambda: MetricCalculator(homology_dims=()),
                 lambda: betti_numbers(np.zeros((3, 2)), dims=())):
        with pytest.raises(InvalidParameterError, match="must be a non-empty sequence of distinct non-negative ints"):
            call()
    with pytest.raises(InvalidParameterError, match="^elitism must be True or False, got 1"):
        GAConfig(elitism=1)


def test_betti_dims_keep_their_order_and_scale_names_are_canonical():
    two = np.array([[0.0, 0.0], [10.0, 0.0]])
    assert betti_numbers(two, dims=(1, 0), scale=0.5) == (0, 2)
    assert BettiScale(0.5, "Median", "ALIVE") == BettiScale(0.5, "median", "alive")
