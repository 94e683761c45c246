"""The TopologicalPruner's masks, pinned: the same seed and options give the same channels
as when the fixture was written, across refactors of the pipeline.

``tests/data/pinned_masks.json`` holds, per case and per ``module.target``, the mask's shape
and the output channels it keeps. Regenerate it (only when a change of masks is intended
and named) with ``python -m tests.test_mask_pinning``.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch
from nni.compression.utils import auto_set_denpendency_group_ids

from nni_topo_pruner import TopologicalPruner
from tests.conftest import ResidualCNN, SmallCNN

FIXTURE = Path(__file__).parent / "data" / "pinned_masks.json"
_logger = logging.getLogger(__name__)


class BNCNN(torch.nn.Module):
    """Conv-BN-ReLU x3 and a Linear head: the BN case (scale-free filters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.BatchNorm2d(12), torch.nn.ReLU(),
            torch.nn.Conv2d(12, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 10, 3, padding=1), torch.nn.BatchNorm2d(10), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def vgg_chain() -> torch.nn.Module:
    """A CIFAR VGG-like chain, narrowed: [16, 16, M, 24, 24, M, 32], BN after every conv."""
    layers: List[torch.nn.Module] = []
    channels = 3
    for width in (16, 16, "M", 24, 24, "M", 32):
        if width == "M":
            layers.append(torch.nn.MaxPool2d(2))
            continue
        layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU()]
        channels = width
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(channels, 20), torch.nn.ReLU(), torch.nn.Linear(20, 10))


class Grouped(torch.nn.Module):
    """A grouped conv (internal_metric_block = 4 once dependency groups are set)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3)))


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 20), torch.nn.ReLU(), torch.nn.Linear(20, 14), torch.nn.ReLU(),
                               torch.nn.Linear(14, 3))


def tiny() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(2, 9, 3), torch.nn.ReLU(), torch.nn.Conv2d(9, 4, 3))


def _seeded(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = factory().eval()
    # non-trivial BN scales, so BN layers are not all identity
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


def _calibration() -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(8, 3, 8, 8, generator=generator) for _ in range(2)]


CONV_LINEAR = [{"op_types": ["Conv2d", "Linear"], "exclude_op_names": ["head"], "sparse_ratio": 0.5}]
# NNI keeps a target's first matching config: the specific entries come first
VGG = [{"op_names": ["7"], "sparse_ratio": 0.6}, {"op_names": ["19"], "sparse_ratio": 0.5},
       {"op_types": ["Conv2d"], "sparse_ratio": 0.3}]
GLOBAL = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5, "max_sparse_ratio": 0.6, "global_group_id": "g"}]


def _dependency(model: torch.nn.Module, ratio: float = 0.5) -> List[Dict]:
    return auto_set_denpendency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": ratio}],
                                          torch.rand(1, 3, 16, 16))


# name -> (model factory, config list (a function of the model), pruner options)
CASES: Dict[str, Tuple[Callable[[], torch.nn.Module], Callable[[torch.nn.Module], List[Dict]], Dict]] = {
    "bn_cnn-default": (BNCNN, lambda m: CONV_LINEAR, {}),
    "bn_cnn-bottleneck": (BNCNN, lambda m: CONV_LINEAR, {"distance": "bottleneck"}),
    "bn_cnn-cosine": (BNCNN, lambda m: CONV_LINEAR, {"cloud_metric": "cosine"}),
    "bn_cnn-no_anchor": (BNCNN, lambda m: CONV_LINEAR, {"zero_anchor": False}),
    "bn_cnn-activations": (BNCNN, lambda m: CONV_LINEAR, {"cloud": "activations", "num_images": 16}),
    "bn_cnn-activations-local": (BNCNN, lambda m: CONV_LINEAR, {"cloud": "activations", "num_images": 16,
                                                                 "search": "local"}),
    "vgg_chain-local": (vgg_chain, lambda m: VGG, {"search": "local"}),
    "vgg_chain-default": (vgg_chain, lambda m: VGG, {}),
    "vgg_chain-seed7": (vgg_chain, lambda m: VGG, {"seed": 7, "population_size": 10, "generations": 6}),
    "residual-dependency": (ResidualCNN, _dependency, {}),
    "grouped-blocks": (Grouped, _dependency, {}),
    "small_cnn-global": (SmallCNN, lambda m: GLOBAL, {}),
    "small_cnn-global-bottleneck": (SmallCNN, lambda m: GLOBAL, {"distance": "bottleneck"}),
    "mlp-default": (mlp, lambda m: [{"op_types": ["Linear"], "exclude_op_names": ["4"], "sparse_ratio": 0.4}], {}),
    "mlp-bottleneck-no_anchor": (mlp, lambda m: [{"op_types": ["Linear"], "exclude_op_names": ["4"],
                                                   "sparse_ratio": 0.6}], {"distance": "bottleneck",
                                                                            "zero_anchor": False}),
    "tiny-h01": (tiny, lambda m: [{"op_names": ["0"], "sparse_ratio": 0.4}], {"homology_dims": (0, 1)}),
    "tiny-h01-bottleneck": (tiny, lambda m: [{"op_names": ["0"], "sparse_ratio": 0.5}],
                            {"homology_dims": (0, 1), "distance": "bottleneck"}),
}


def _kept_channels(mask: torch.Tensor) -> List[int]:
    return np.flatnonzero(mask.detach().reshape(mask.shape[0], -1).ne(0).any(dim=1).numpy()).tolist()


def pinned_view(name: str, model_change: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None,
                images_change: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, Dict]:
    """Run one case: ``{"module.target": {"shape": [...], "dtype": ..., "kept": [...]}}``;
    ``model_change`` / ``images_change`` alter the seeded model / the calibration batches first
    (the property tests of ``tests/test_mask_stability.py``)."""
    factory, config_of, options = CASES[name]
    model = _seeded(factory)
    if model_change is not None:
        model = model_change(model)
    config_list = copy.deepcopy(config_of(model))
    if options.get("cloud") == "activations":
        images = _calibration()
        options = {**options, "calibration_loader": images if images_change is None else [images_change(b) for b in images]}
    pruner = TopologicalPruner(model, config_list, progress=False, **options)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    view = {}
    for module_name in sorted(masks):
        for target_name in sorted(masks[module_name]):
            mask = masks[module_name][target_name]
            # whole output channels only: each row all ones or all zeros
            rows = mask.detach().reshape(mask.shape[0], -1)
            assert torch.all((rows == 0).all(dim=1) | (rows == 1).all(dim=1)), f"{module_name}.{target_name}"
            view[f"{module_name}.{target_name}"] = {"shape": list(mask.shape), "dtype": str(mask.dtype),
                                                    "kept": _kept_channels(mask)}
    return view


@pytest.fixture(scope="module")
def pinned() -> Dict[str, Dict]:
    return json.loads(FIXTURE.read_text())


def test_fixture_covers_every_case(pinned):
    assert sorted(pinned) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_masks_are_pinned(pinned, name):
    assert pinned_view(name) == pinned[name]


def _dump(cases: Dict[str, Dict[str, Dict]]) -> str:
    """JSON with one line per target, so that a diff names the mask that moved."""
    lines = ["{"]
    for i, (name, view) in enumerate(sorted(cases.items())):
        lines.append(f"  {json.dumps(name)}: {{")
        items = sorted(view.items())
        for j, (target, entry) in enumerate(items):
            lines.append(f"    {json.dumps(target)}: {json.dumps(entry)}" + ("," if j < len(items) - 1 else ""))
        lines.append("  }" + ("," if i < len(cases) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(_dump({name: pinned_view(name) for name in sorted(CASES)}))
    _logger.info("wrote %s (%d cases)", FIXTURE, len(CASES))
