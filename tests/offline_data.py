"""The mark for tests that read the offline CIFAR-10 subset (``../shared/data/cifar10_subset.npz``)."""
from __future__ import annotations

import os

import pytest

from benchmarks.core.data import DEFAULT_NPZ

#: Skips without the subset on a developer machine. Under CI (``CI=true``) the tests run anyway,
#: so a missing subset fails them loudly instead of silently skipping every benchmark test.
needs_offline_data = pytest.mark.skipif(
    not DEFAULT_NPZ.is_file() and os.environ.get("CI", "").lower() != "true",
    reason=f"offline CIFAR-10 subset missing at {DEFAULT_NPZ} (CI=true makes this a failure)")
