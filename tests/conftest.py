"""Shared fixtures: small models that run in milliseconds on CPU."""
from __future__ import annotations

import os

import pytest
import torch

from nni_topo_pruner import compat

# Many tests drive NNI directly (auto_set_denpendency_group_ids, L1NormPruner with legacy config
# lists, ModelSpeedup), as a user of raw NNI would: they need the patches first.
# tests/test_compat_lazy.py checks, in fresh processes, where the package applies them itself.
compat.apply()
torch.set_num_threads(int(os.environ.get("TEST_TORCH_THREADS", "2")))


class SmallCNN(torch.nn.Module):
    """Two convs, a grouped-free path, and a Linear head: enough for config-list semantics."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 24, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(24, 10, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc1 = torch.nn.Linear(10, 12)
        self.fc2 = torch.nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = self.pool(x).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


class ResidualCNN(torch.nn.Module):
    """conv1 and conv3 outputs meet in an add: one dependency group."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 12, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(12, 8, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(8, 12, 3, padding=1)
        self.head = torch.nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv1(x))
        b = self.conv3(torch.relu(self.conv2(a)))
        return self.head(torch.relu(a + b).mean(dim=(2, 3)))


@pytest.fixture
def small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture
def residual_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return ResidualCNN().eval()
