"""Issue 26, item 23: pruner_options keys are matched case-insensitively, so two keys that
differ only in case would silently drop one; validate refuses them."""
from __future__ import annotations

import pytest

from benchmarks.core.config import preset_config, pruner_options_for, validate


def test_case_duplicate_pruner_options_keys_are_refused():
    config = preset_config("smoke")
    config.pruners = ["l1", "random"]
    config.pruner_options = {"random": {"seed": 1}, "Random": {"seed": 2}}
    with pytest.raises(ValueError, match=r"pruner_options names pruner 'random' twice.*'random', 'Random'"):
        validate(config)


def test_pruner_options_keys_still_match_in_any_case():
    config = preset_config("smoke")
    config.pruners = ["l1", "random"]
    config.pruner_options = {"RANDOM": {"seed": 3}}
    validate(config)
    assert pruner_options_for(config, "random") == {"seed": 3}
