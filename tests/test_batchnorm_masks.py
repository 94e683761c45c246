"""``with_batchnorm_masks``: under NNI's scheduled pruning, the BatchNorm after each pruned layer is
masked with that layer's channels, so that the masked model that trains computes what the
sped-up model will (issue 27: without it, a pruned channel's BatchNorm shift survives in the
masked model, the next layer learns to use it, and ModelSpeedup removes it).

Properties: at every scheduled update each BatchNorm's masks are its layer's channel masks, for
NNI's L1 and our three pruners; after the schedule the masked model and the sped-up one give the
same outputs (they differ without the option, which is why it exists); only BatchNorms fed by a
pruned layer get an entry; a model torch.fx cannot trace gets an error that shows the entry.
"""
from __future__ import annotations

import copy

import pytest
import torch
from nni.compression.pruning import AGPPruner, LinearPruner

from nni_topo_pruner import with_batchnorm_masks
from nni_topo_pruner.sparsity_allocator import channel_keep_mask
from nni_topo_pruner.speedup import speedup_model
from tests.test_scheduled_pruning import BATCHES, INTERVAL, PRUNERS, TIMES, StepCounter, torch_evaluator

CONFIG = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
PAIRS = {"0": "1", "3": "4"}  # conv -> the BatchNorm it feeds


def bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    with torch.no_grad():  # shifts far from 0: a surviving shift is then visible in the outputs
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.uniform_(0.5, 1.5)
    return model


def test_entries_align_each_batchnorm_with_the_layer_that_feeds_it():
    model = bn_model()
    config = with_batchnorm_masks(model, CONFIG)
    assert config[:1] == CONFIG and len(config) == 3
    for conv, bn in PAIRS.items():
        entry = next(e for e in config[1:] if e["op_names"] == [bn])
        assert entry["target_names"] == ["weight", "bias"]
        for target in ("weight", "bias"):
            assert entry["target_settings"][target]["align"] == {"module_name": conv, "target_name": "weight",
                                                                 "dims": [0]}


def test_only_batchnorms_after_pruned_layers_get_an_entry_and_given_ones_are_kept():
    model = bn_model()
    only_second = [{"op_names": ["3"], "sparse_ratio": 0.5}]
    assert [e["op_names"] for e in with_batchnorm_masks(model, only_second)[1:]] == [["4"]]
    own = {"op_names": ["4"], "target_names": ["weight", "bias"],
           "target_settings": {t: {"align": {"module_name": "3", "target_name": "weight", "dims": [0]}}
                               for t in ("weight", "bias")}}
    assert with_batchnorm_masks(model, [*only_second, own]) == [*only_second, own]


def test_an_untraceable_model_gets_the_entry_to_write_by_hand():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    with pytest.raises(ValueError, match=r"torch.fx cannot trace Branchy .*'target_names': \['weight', 'bias'\], "
                                         r"'target_settings'.*'align'"):
        with_batchnorm_masks(Branchy(), CONFIG)


def _scheduled(name, config, scheduler=AGPPruner):
    model, counter = bn_model(), StepCounter()
    sub = PRUNERS[name](model, config)
    seen = []
    original = sub.update_masks

    def update_masks(masks):
        seen.append({module: {target: mask.clone() for target, mask in targets.items() if mask is not None}
                     for module, targets in masks.items()})
        return original(masks)

    sub.update_masks = update_masks
    pruner = scheduler(sub, interval_steps=INTERVAL, total_times=TIMES, evaluator=torch_evaluator(model, counter))
    _, masks = pruner.compress(max_steps=None, max_epochs=2)
    return model, masks, seen, pruner


def _masked_and_sped_up_outputs(model, masks, pruner):
    inputs = BATCHES[0][0]
    model.eval()
    with torch.no_grad():
        masked = model(inputs)  # still wrapped: NNI applies the masks in the forward pass
    pruner.unwrap_model()
    sped = copy.deepcopy(model)
    speedup_model(sped, inputs[:2], masks)
    with torch.no_grad():
        return masked, sped.eval()(inputs)


@pytest.mark.parametrize("scheduler", [AGPPruner, LinearPruner], ids=["agp", "linear"])
@pytest.mark.parametrize("name", ["l1", "random", "topological", "betti"])
def test_every_update_masks_each_batchnorm_with_its_layer(name, scheduler):
    _, _, seen, pruner = _scheduled(name, with_batchnorm_masks(bn_model(), CONFIG), scheduler)
    assert len(seen) == TIMES
    steps = getattr(pruner.bound_pruner, "steps", None)
    if steps is not None:  # our pruners' step records count the pruned layers, not the aligned BatchNorms
        assert [sorted(step.kept) for step in steps] == [sorted(PAIRS)] * TIMES
    for masks in seen:
        for conv, bn in PAIRS.items():
            kept = channel_keep_mask(masks[conv]["weight"])
            assert kept.sum() < len(kept)
            for target in ("weight", "bias"):
                assert channel_keep_mask(masks[bn][target]).tolist() == kept.tolist(), (conv, bn, target)


@pytest.mark.parametrize("name", ["l1", "random", "topological", "betti"])
def test_the_masked_model_computes_what_the_sped_up_model_will(name):
    model, masks, _, pruner = _scheduled(name, with_batchnorm_masks(bn_model(), CONFIG))
    masked, sped = _masked_and_sped_up_outputs(model, masks, pruner)
    torch.testing.assert_close(masked, sped, rtol=1e-5, atol=1e-5)
    # without the BatchNorm entries the pruned channels' shifts survive in the masked model only
    model, masks, _, pruner = _scheduled(name, CONFIG)
    masked, sped = _masked_and_sped_up_outputs(model, masks, pruner)
    assert (masked - sped).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["l1", "random", "topological", "betti"])
def test_the_entries_do_not_change_which_channels_a_pruner_chooses(name):
    # they change what the BatchNorms do, not the criterion: the same model gives the same layer masks
    plain, with_bn = bn_model(), bn_model()
    _, masks = PRUNERS[name](plain, CONFIG).compress()
    _, masks_bn = PRUNERS[name](with_bn, with_batchnorm_masks(with_bn, CONFIG)).compress()
    for conv in PAIRS:
        assert torch.equal(masks[conv]["weight"], masks_bn[conv]["weight"]), conv
