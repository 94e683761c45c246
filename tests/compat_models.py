"""Models and the prune -> unwrap -> ModelSpeedup pipeline used by the compat tests.

Imported by tests/test_compat_speedup.py and tests/test_compat_torchvision.py.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from nni_topo_pruner import compat

compat.apply()  # these models go through NNI directly


def in_patch_modules(monkeypatch, name: str, value: Any) -> None:
    """Replace ``name`` (a helper each patch module imported from compat.base) in every patch module."""
    import sys

    for module in {sys.modules[patch.install.__module__] for patch in compat.PATCHES}:
        if hasattr(module, name):
            monkeypatch.setattr(module, name, value)


# ----------------------------------------------------------------------------------------
# small hand-written models
# ----------------------------------------------------------------------------------------

class FunctionalSoftmaxNet(nn.Module):
    """Conv stack ending in functional activations along a dim, with type annotations."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv2(x))
        x = F.adaptive_avg_pool2d(x, 4)
        x = x.view(x.size(0), -1)
        logits: torch.Tensor = self.fc(x)
        return F.log_softmax(F.softmax(logits, dim=1) + logits, dim=-1)


class ConcatAddNet(nn.Module):
    """Two branches concatenated along channels, a residual add, flatten, softmax(dim=1)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.branch_a = nn.Conv2d(16, 8, 1)
        self.branch_b = nn.Conv2d(16, 8, 3, padding=1)
        self.mix = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        stem = F.relu(self.stem(x))
        joined = torch.cat([self.branch_a(stem), self.branch_b(stem)], dim=1)
        out = F.relu(self.mix(joined)) + stem * scale
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return torch.softmax(self.head(out), dim=1)


class DataDependentNet(nn.Module):
    """Python branches on tensor values and shapes (the IndexError path of NNI on 3.11)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        if x.shape[-1] > 4 and x.dim() == 4:  # shape branch
            x = F.max_pool2d(x, 2)
        if not self.training:  # attribute branch
            x = self.conv2(x)
        batch, channels, *_ = x.shape  # unpacking a torch.Size
        if bool(x.mean() > -1e9):  # value branch
            x = x.reshape(batch, channels, -1).mean(-1)
        return F.softmax(self.fc(x), dim=-1)


class Swish(nn.Module):
    """A custom activation module (not a torch.nn built-in)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class LeNet(nn.Module):
    """LeNet-style: flattens with ``x.view(-1, x.size()[1:].numel())`` (a torch.Size slice).

    ``activation`` is ``"relu"`` (functional), ``"relu6"`` (nn.ReLU6) or ``"custom"`` (a
    module of ours); ``head`` is ``None``, ``"functional_softmax"`` or ``"softmax_module"``.
    """

    def __init__(self, activation: str = "relu", head: str | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3)
        self.conv2 = nn.Conv2d(6, 8, 3)
        self.act = {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "custom": Swish()}[activation]
        self.fc1 = nn.Linear(8 * 2 * 2, 12)
        self.fc2 = nn.Linear(12, 10)
        self.head = head
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.act(self.conv1(x)), 2)
        x = F.max_pool2d(self.act(self.conv2(x)), 2)
        x = x.view(-1, x.size()[1:].numel())
        x = self.fc2(self.act(self.fc1(x)))
        if self.head == "functional_softmax":
            return F.softmax(x, dim=1)
        if self.head == "softmax_module":
            return self.softmax(x)
        return x


def small_models() -> dict[str, Callable[[], nn.Module]]:
    return {
        "functional_softmax": FunctionalSoftmaxNet,
        "concat_add": ConcatAddNet,
        "data_dependent": DataDependentNet,
    }


# ----------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------

def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class SpeedupResult:
    original_output: torch.Tensor
    output: torch.Tensor
    params_before: int
    params_after: int
    masks: dict[str, dict[str, torch.Tensor]] = field(repr=False)
    model: nn.Module = field(repr=False)


def conv_config(model: nn.Module, dummy: torch.Tensor, *, sparse_ratio: float = 0.5,
                exclude: tuple[str, ...] = (), dependency_groups: bool = True) -> list[dict[str, Any]]:
    """L1 config on every Conv2d (minus ``exclude``), with NNI's dependency group ids."""
    from nni.compression.utils import auto_set_denpendency_group_ids

    config: list[dict[str, Any]] = [{"op_types": ["Conv2d"], "sparse_ratio": sparse_ratio}]
    if exclude:
        config[0]["exclude_op_names"] = list(exclude)
    if dependency_groups:
        config = auto_set_denpendency_group_ids(model, config, dummy)
    return config


def prune_and_speedup(model: nn.Module, dummy: torch.Tensor, config: list[dict[str, Any]]) -> SpeedupResult:
    """L1NormPruner masks -> unwrap -> ModelSpeedup; the model is changed in place."""
    from nni.compression.pruning import L1NormPruner
    from nni.compression.speedup import ModelSpeedup

    model.eval()
    with torch.no_grad():
        original_output = model(dummy)
    params_before = count_parameters(model)
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(model, dummy, masks).speedup_model()
    # NNI builds replacement modules in training mode (torch's default); set eval again
    model.eval()
    with torch.no_grad():
        output = model(dummy)
    return SpeedupResult(original_output, output, params_before, count_parameters(model), masks, model)


def ones_masks_speedup(model: nn.Module, dummy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """ModelSpeedup with all-ones masks on every Conv2d: (original output, sped-up output, model)."""
    from nni.compression.speedup import ModelSpeedup

    model.eval()
    with torch.no_grad():
        original_output = model(dummy)
    masks = {
        name: {"weight": torch.ones_like(module.weight),
               **({"bias": torch.ones_like(module.bias)} if module.bias is not None else {})}
        for name, module in model.named_modules() if isinstance(module, nn.Conv2d)
    }
    sped_up = copy.deepcopy(model)
    ModelSpeedup(sped_up, dummy, masks).speedup_model()
    sped_up.eval()
    with torch.no_grad():
        output = sped_up(dummy)
    return original_output, output, sped_up


# ----------------------------------------------------------------------------------------
# torchvision acceptance matrix
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TorchvisionCase:
    """One torchvision model of the acceptance matrix and how it is run here."""

    name: str
    resolution: int = 64
    kwargs: dict[str, Any] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()  # conv layers that are the classifier (output shape must stay)
    # known limitations: (exception type, regex of its exact message) of the pruning run
    # and of the all-ones-masks run
    known_failure: tuple[type[BaseException], str] | None = None
    known_ones_failure: tuple[type[BaseException], str] | None = None

    def build(self) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, self.name)(weights=None, **self.kwargs).eval()

    def dummy(self) -> torch.Tensor:
        return torch.rand(1, 3, self.resolution, self.resolution, generator=torch.Generator().manual_seed(0))


def _empty_layer_error() -> type[BaseException]:
    from nni.compression.speedup.error_code import EmptyLayerError

    return EmptyLayerError


TORCHVISION_CASES: dict[str, TorchvisionCase] = {case.name: case for case in [
    TorchvisionCase("alexnet"),
    TorchvisionCase("vgg11", resolution=32),
    TorchvisionCase("vgg16", resolution=32),
    TorchvisionCase("resnet18", resolution=32),
    TorchvisionCase("resnet50"),
    TorchvisionCase("resnext50_32x4d"),
    TorchvisionCase("wide_resnet50_2"),
    TorchvisionCase("mobilenet_v2", resolution=32),
    TorchvisionCase("mobilenet_v3_small", resolution=32),
    TorchvisionCase("mnasnet0_5"),
    TorchvisionCase("squeezenet1_0", exclude=("classifier.1",)),
    TorchvisionCase("shufflenet_v2_x1_0", known_failure=(
        # the sizes vary between runs (116 vs 58 or 232): NNI orders the group's layers by set order
        RuntimeError, r"The size of tensor a \(\d+\) must match the size of tensor b \(\d+\) at non-singleton dimension 0")),
    TorchvisionCase("densenet121"),
    TorchvisionCase("googlenet", kwargs={"aux_logits": False, "init_weights": False}),
    TorchvisionCase("inception_v3", resolution=96, kwargs={"aux_logits": False, "init_weights": False}),
    TorchvisionCase("efficientnet_b0", resolution=32),
    TorchvisionCase("regnet_y_400mf"),
    TorchvisionCase("convnext_tiny",
                    known_failure=(_empty_layer_error(), r"Pruning a Layer to empty is not legal"),
                    known_ones_failure=(_empty_layer_error(), r"Pruning a Layer to empty is not legal")),
    TorchvisionCase("vit_b_16", resolution=32, kwargs={"image_size": 32},
                    known_failure=(RuntimeError, r"shape '\[1, 768, 4\]' is invalid for input of size 1536"),
                    known_ones_failure=(RuntimeError, r"Given normalized_shape=\[0\], expected input with shape "
                                                      r"\[\*, 0\], but got input of size\[1, 5, 768\]")),
    TorchvisionCase("swin_t", known_failure=(
        RuntimeError, r"mat1 and mat2 shapes cannot be multiplied \(\d+x48 and 96x288\)")),
]}


class UnexpectedFailure(AssertionError):
    """A known-limitation case failed, but not with its documented error."""


def _check_documented(case_name: str, error: Exception,
                      known: tuple[type[BaseException], str] | None) -> None:
    """Turn a failure other than the documented one into UnexpectedFailure (xfail won't match)."""
    import re

    if known is None:
        return
    error_type, message = known
    if not (isinstance(error, error_type) and re.search(message, str(error))):
        raise UnexpectedFailure(f"{case_name}: expected {error_type.__name__}({message!r}), got "
                                f"{type(error).__name__}: {error}") from error


def run_torchvision_case(case: TorchvisionCase) -> SpeedupResult:
    """Prune + speed up one case; a documented failure must carry its documented message."""
    torch.manual_seed(0)
    model = case.build()
    dummy = case.dummy()
    try:
        return prune_and_speedup(model, dummy, conv_config(model, dummy, exclude=case.exclude))
    except Exception as error:
        _check_documented(case.name, error, case.known_failure)
        raise


def run_torchvision_ones_case(case: TorchvisionCase) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """All-ones masks speed-up of one case; documented failures as in run_torchvision_case."""
    torch.manual_seed(0)
    try:
        return ones_masks_speedup(case.build(), case.dummy())
    except Exception as error:
        _check_documented(case.name, error, case.known_ones_failure)
        raise
