"""Issue 15, item 1: LeNet-style models that flatten with ``x.view(-1, x.size()[1:].numel())``
through NNI's ModelSpeedup (patch ``pytree-torch-size-leaf``), plain and already traced by
NNI's ``concrete_trace``, under several activations and softmax heads."""
from __future__ import annotations

import pytest
import torch
from nni.common.concrete_trace_utils import concrete_trace

from nni_topo_pruner import compat

from .compat_models import LeNet, conv_config, in_patch_modules, ones_masks_speedup, prune_and_speedup

VARIANTS = [("relu", None), ("relu6", None), ("custom", None),
            ("relu", "functional_softmax"), ("relu6", "softmax_module")]
IDS = [f"{act}-{head or 'logits'}" for act, head in VARIANTS]


def _dummy() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _build(activation: str, head: str | None, traced: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = LeNet(activation, head).eval()
    return concrete_trace(model, {"x": _dummy()}) if traced else model


CASES = [(act, head, False) for act, head in VARIANTS] + [("relu", None, True), ("custom", "softmax_module", True)]
CASE_IDS = IDS + ["relu-logits-concrete_traced", "custom-softmax_module-concrete_traced"]


@pytest.mark.parametrize(("activation", "head", "traced"), CASES, ids=CASE_IDS)
def test_size_slice_numel_model_prunes_and_shrinks(activation, head, traced):
    model = _build(activation, head, traced)
    dummy = _dummy()
    result = prune_and_speedup(model, dummy, conv_config(model, dummy, dependency_groups=False))
    assert result.output.shape == result.original_output.shape == (2, 10)
    assert result.params_after < result.params_before
    assert result.model.conv2.out_channels == 4 and result.model.fc1.in_features == 4 * 2 * 2
    assert torch.isfinite(result.output).all()


@pytest.mark.parametrize(("activation", "head", "traced"), CASES, ids=CASE_IDS)
def test_size_slice_numel_model_all_ones_masks_keep_outputs(activation, head, traced):
    original, sped_up, _ = ones_masks_speedup(_build(activation, head, traced), _dummy())
    torch.testing.assert_close(sped_up, original, rtol=1e-4, atol=1e-5)


def test_size_slice_numel_fails_without_patch(monkeypatch):
    from nni.compression.speedup import mask_updater, model_speedup, utils

    original = utils.tree_map_zip.__wrapped_original__
    for module in (utils, mask_updater, model_speedup):
        monkeypatch.setattr(module, "tree_map_zip", original)
    with pytest.raises(AttributeError, match="'tuple' object has no attribute 'numel'"):
        ones_masks_speedup(LeNet().eval(), _dummy())


def test_size_leaf_patch_is_in_effect_and_idempotent():
    from nni.compression.speedup import mask_updater, model_speedup, utils

    assert "pytree-torch-size-leaf" in compat.applied_patches()
    assert compat.pytree_size_leaf._pytree_flattens_size()  # the broken torch behaviour is still there upstream
    assert mask_updater.tree_map_zip is model_speedup.tree_map_zip is utils.tree_map_zip
    assert compat.apply() == []
    size = torch.Size([2, 3])
    assert type(utils.tree_map_zip(lambda x: x, size)) is torch.Size
    assert utils.tree_map_zip(lambda a, b: (a, b), (size, 1), (size, 2)) == ((size, size), (1, 2))
    assert utils.tree_map_zip(lambda t: t * 2, [torch.ones(1), {"k": 1}])[1] == {"k": 2}


def test_size_leaf_feature_check_skips_what_is_not_broken(monkeypatch):
    patch = next(p for p in compat.PATCHES if p.name == "pytree-torch-size-leaf")
    in_patch_modules(monkeypatch, "is_marked", lambda obj, name: False)  # pretend unpatched
    assert patch.is_needed()
    monkeypatch.setattr(compat.pytree_size_leaf, "_pytree_flattens_size", lambda: False)  # a torch that keeps torch.Size
    assert not patch.is_needed()
    monkeypatch.undo()
    in_patch_modules(monkeypatch, "is_marked", lambda obj, name: False)
    in_patch_modules(monkeypatch, "source_of", lambda obj: "def changed_upstream(): pass\n")  # another NNI
    assert not patch.is_needed()
