"""Issue 27: our pruners under NNI 3.0's scheduled pruners (AGPPruner, LinearPruner), with an
Evaluator (TorchEvaluator, LightningEvaluator), and in fused compression (a distiller or a
quantizer in the same compress()), tested the same way as NNI's L1NormPruner.

What is claimed and tested: masks are generated at the evaluator's optimizer steps where
L1NormPruner's are, with the schedule's intermediate ratios; each of our steps keeps a subset of
the previous step's channels (NNI's L1 does not promise it: it ranks raw weights, in which a
masked channel keeps its old values); the topology is recomputed at each step from the current
weights of the live channels only; every step is recorded (``steps``, ``reports``).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List

import nni
import numpy as np
import pytest
import torch
from nni.compression.distillation import DynamicLayerwiseDistiller
from nni.compression.pruning import AGPPruner, L1NormPruner, LinearPruner
from nni.compression.quantization import QATQuantizer
from nni.compression.utils import TorchEvaluator

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.bmvc.pruner import BettiPruner
from nni_topo_pruner.random_pruner import RandomPruner
from nni_topo_pruner.sparsity_allocator import channel_keep_mask
from tests.readme_blocks import readme_blocks

CONFIG = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
INTERVAL, TIMES = 2, 3
FAST_GA = dict(population_size=8, generations=3, progress=False)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))


GENERATOR = torch.Generator().manual_seed(1)
BATCHES = [(torch.rand(8, 3, 10, 10, generator=GENERATOR), torch.randint(0, 4, (8,), generator=GENERATOR))
           for _ in range(4)]
CALIBRATION = [images for images, _ in BATCHES]

PRUNERS: Dict[str, Callable] = {
    "l1": lambda model, config: L1NormPruner(model, config),
    "random": lambda model, config: RandomPruner(model, config, seed=0),
    "topological": lambda model, config: TopologicalPruner(model, config, seed=0, **FAST_GA),
    "betti": lambda model, config: BettiPruner(model, config, calibration_loader=CALIBRATION, num_images=16,
                                               progress=False),
}
OURS = ["random", "topological", "betti"]
SCHEDULES = {AGPPruner: lambda t: 1 - (1 - t / TIMES) ** 3, LinearPruner: lambda t: t / TIMES}


class StepCounter:
    """The training loop of the issue's snippet (4 batches per epoch), counting optimizer steps."""

    def __init__(self) -> None:
        self.steps = 0

    def training_func(self, model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        for _ in range(max_epochs or 100):
            for batch in BATCHES:
                optimizers.zero_grad()
                training_step(batch, model).backward()
                self.steps += 1  # before step(): NNI's tasks run inside it
                optimizers.step()
                if max_steps is not None and self.steps >= max_steps:
                    return


def training_step(batch, model):
    inputs, labels = batch
    return torch.nn.functional.cross_entropy(model(inputs), labels)


def torch_evaluator(model: torch.nn.Module, counter: StepCounter) -> TorchEvaluator:
    # momentum: masked weights keep moving for a while after their channel is masked (not zero)
    return TorchEvaluator(counter.training_func,
                          nni.trace(torch.optim.SGD)(model.parameters(), lr=0.05, momentum=0.9), training_step)


def record_updates(pruner, counter=None) -> List[Dict[str, np.ndarray]]:
    """Every mask update NNI's trigger makes on ``pruner``: per module, the kept channels (and,
    with a counter, the optimizer step it happened at, under key '_step')."""
    updates: List[Dict[str, np.ndarray]] = []
    original = pruner.update_masks

    def update_masks(masks):
        kept = {name: channel_keep_mask(targets["weight"]) for name, targets in masks.items() if "weight" in targets}
        if counter is not None:
            kept["_step"] = counter.steps
        updates.append(kept)
        return original(masks)

    pruner.update_masks = update_masks  # NNI's trigger calls self.update_masks
    return updates


def kept_counts(masks) -> Dict[str, int]:
    return {name: int(channel_keep_mask(t["weight"]).sum()) for name, t in masks.items() if t.get("weight") is not None}


def expected_kept(schedule, n: int) -> List[int]:
    return [n - int(n * (0.5 * schedule(t))) for t in range(1, TIMES + 1)]


def assert_nested(updates: List[Dict[str, np.ndarray]]) -> None:
    for before, after in zip(updates, updates[1:]):
        for name, kept in after.items():
            if name != "_step":
                assert not (kept & ~before[name]).any(), f"{name}: a channel pruned earlier is kept again"


# ----------------------------------------------------------------------------------------
# the snippet, TorchEvaluator
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", [AGPPruner, LinearPruner], ids=["agp", "linear"])
@pytest.mark.parametrize("name", ["l1", *OURS])
def test_snippet_with_torch_evaluator(name, scheduler):
    model, counter = make_model(), StepCounter()
    sub = PRUNERS[name](model, CONFIG)
    updates = record_updates(sub, counter)
    pruner = scheduler(sub, interval_steps=INTERVAL, total_times=TIMES, evaluator=torch_evaluator(model, counter))
    _, masks = pruner.compress(max_steps=None, max_epochs=2)  # 8 optimizer steps, 3 triggers
    # the triggers are L1NormPruner's: after optimizer steps 2, 4, 6
    assert [u["_step"] for u in updates] == [2, 4, 6]
    # the schedule's intermediate ratios, NNI's rounding (int(n * ratio) pruned)
    assert [int(u["0"].sum()) for u in updates] == expected_kept(SCHEDULES[scheduler], 16)
    assert [int(u["2"].sum()) for u in updates] == expected_kept(SCHEDULES[scheduler], 8)
    assert kept_counts(masks) == {"0": 8, "2": 4}
    if name in OURS:
        assert_nested(updates)
        assert [step.sparse_ratios["0"] for step in sub.steps] == pytest.approx(
            [0.5 * SCHEDULES[scheduler](t) for t in range(1, TIMES + 1)])
        assert [step.kept["0"] for step in sub.steps] == [int(u["0"].sum()) for u in updates]
    pruner.unwrap_model()
    assert model(BATCHES[0][0]).shape == (8, 4)


def test_topology_is_recomputed_on_the_live_channels_of_the_current_weights():
    model, counter = make_model(), StepCounter()
    sub = TopologicalPruner(model, CONFIG, seed=0, **FAST_GA)
    seen = []  # per step: (module, live channels the pruner analysed, weights at that moment)
    collect = sub._collect_data

    def spying_collect():
        units = collect()
        seen.append([(u.name, u.channels.copy(), u.points.copy(),
                      sub._module_wrappers[u.name].module.weight.detach().clone()) for u in units])
        return units

    sub._collect_data = spying_collect
    updates = record_updates(sub)
    pruner = AGPPruner(sub, interval_steps=INTERVAL, total_times=TIMES, evaluator=torch_evaluator(model, counter))
    pruner.compress(max_steps=3 * INTERVAL, max_epochs=None)
    assert len(seen) == len(sub.reports) == len(sub.steps) == TIMES
    for step, units in enumerate(seen):
        for name, channels, points, weight in units:
            live = np.ones(weight.shape[0], bool) if step == 0 else updates[step - 1][name]
            np.testing.assert_array_equal(channels, np.flatnonzero(live))        # only the live channels
            np.testing.assert_allclose(points, weight.reshape(weight.shape[0], -1)[channels].double().numpy())
            report = sub.reports[step].unit(name)
            assert report.neurons == len(channels) and report.kept == int(updates[step][name].sum())
            assert set(report.kept_channels) <= set(channels.tolist())
    # the weights trained between steps: each step saw other weights than the one before
    assert not torch.equal(seen[0][0][3], seen[1][0][3])
    assert all(step.seconds > 0 for step in sub.steps)


def test_betti_keeps_masked_filters_out():
    # a masked filter's output is constant, b0 = 1, the smallest Betti score: without the
    # dead-channel rule BettiPruner would keep it first. The rule keeps the masks nested.
    model = make_model()
    sub = PRUNERS["betti"](model, CONFIG)
    first = sub.generate_masks()
    sub.update_masks(first)
    sub._target_spaces["0"]["weight"].sparse_ratio = 0.75
    second = sub.generate_masks()
    before, after = channel_keep_mask(first["0"]["weight"]), channel_keep_mask(second["0"]["weight"])
    assert after.sum() == 4 and not (after & ~before).any()
    masked = np.flatnonzero(~before)
    assert (sub.scores["0"][masked] == 1).all()  # what would otherwise have ranked them first
    sub.unwrap_model()


def test_global_group_budget_counts_the_channels_already_pruned():
    model, counter = make_model(), StepCounter()
    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5, "global_group_id": "all"}]
    sub = TopologicalPruner(model, config, seed=0, **FAST_GA)
    updates = record_updates(sub)
    pruner = LinearPruner(sub, interval_steps=INTERVAL, total_times=TIMES, evaluator=torch_evaluator(model, counter))
    _, masks = pruner.compress(max_steps=3 * INTERVAL, max_epochs=None)
    assert_nested(updates)
    grains = {"0": 3 * 9, "2": 16 * 9}
    total = 16 * grains["0"] + 8 * grains["2"]
    for t, update in enumerate(updates, start=1):
        pruned = sum(int((~update[m]).sum()) * g for m, g in grains.items())
        budget = int(total * 0.5 * t / TIMES)
        assert budget - max(grains.values()) < pruned <= budget  # greedy: within one channel of the budget
    pruner.unwrap_model()


def test_standalone_training_budget_is_still_refused():
    model = make_model()
    pruner = TopologicalPruner(model, CONFIG, **FAST_GA)
    with pytest.raises(ValueError, match="AGPPruner or LinearPruner"):
        pruner.compress(max_steps=4, max_epochs=None)
    pruner.unwrap_model()


@pytest.mark.parametrize("options, message", [
    (dict(calibration_loader=None), "needs calibration_loader"),
    (dict(calibration_loader=CALIBRATION, betti_threshold=3, config=[{"op_types": ["Conv2d"]}]), "betti_threshold"),
])
def test_betti_under_a_schedule_refuses_what_it_cannot_do(options, message):
    model, counter = make_model(), StepCounter()
    evaluator = torch_evaluator(model, counter)
    config = options.pop("config", CONFIG)
    sub = BettiPruner(model, config, evaluator, num_images=16, progress=False, **options)
    pruner = AGPPruner(sub, interval_steps=INTERVAL, total_times=TIMES)
    with pytest.raises(ValueError, match=message):
        pruner.compress(max_steps=3 * INTERVAL, max_epochs=None)
    assert counter.steps == 0  # refused before training


# ----------------------------------------------------------------------------------------
# fused compression: a distiller or a quantizer in the same compress()
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fused", ["distiller", "quantizer"])
@pytest.mark.parametrize("name", ["l1", "topological", "betti"])
def test_fused_compression(name, fused):
    model, counter = make_model(), StepCounter()
    teacher = copy.deepcopy(model)
    sub = PRUNERS[name](model, CONFIG)
    updates = record_updates(sub, counter)
    pruner = AGPPruner(sub, interval_steps=INTERVAL, total_times=TIMES, evaluator=torch_evaluator(model, counter))
    if fused == "distiller":
        compressor = DynamicLayerwiseDistiller.from_compressor(
            pruner, [{"op_names": ["6"], "target_names": ["_output_"], "lambda": 1.0}], teacher,
            lambda batch, teacher_model: teacher_model(batch[0]))
    else:
        compressor = QATQuantizer.from_compressor(
            pruner, [{"op_types": ["Conv2d"], "target_names": ["weight"], "quant_dtype": "int8"}])
    compressor.compress(max_steps=3 * INTERVAL, max_epochs=None)
    assert [u["_step"] for u in updates] == [2, 4, 6]
    assert kept_counts(pruner.get_masks()) == {"0": 8, "2": 4}
    if name != "l1":
        assert_nested(updates)
        assert len(sub.steps) == TIMES
    if fused == "quantizer":  # the quantizer ran too: it has calibrated scales for the conv weights
        assert compressor.get_calibration_config()["0"]["weight"]["scale"] is not None


# ----------------------------------------------------------------------------------------
# LightningEvaluator (pytorch-lightning, the 'lightning' / 'dev' extra)
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", [AGPPruner, LinearPruner], ids=["agp", "linear"])
@pytest.mark.parametrize("name", ["l1", *OURS])
def test_snippet_with_lightning_evaluator(name, scheduler):
    pl = pytest.importorskip("pytorch_lightning")
    from nni.compression.utils import LightningEvaluator

    from nni_topo_pruner import compat
    compat.apply()  # NNI 3.0's LightningEvaluator.train sets a read-only property of lightning 2.x

    class Classifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_model()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return training_step(batch, self)

        def configure_optimizers(self):
            return nni.trace(torch.optim.SGD)(self.parameters(), lr=0.05, momentum=0.9)

    class Data(pl.LightningDataModule):
        def train_dataloader(self):  # the same 4 batches
            dataset = torch.utils.data.TensorDataset(torch.cat([x for x, _ in BATCHES]), torch.cat([y for _, y in BATCHES]))
            return torch.utils.data.DataLoader(dataset, batch_size=8)

    module = Classifier()
    trainer = nni.trace(pl.Trainer)(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, accelerator="cpu")
    sub = PRUNERS[name](module, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    updates = record_updates(sub)
    pruner = scheduler(sub, interval_steps=INTERVAL, total_times=TIMES, evaluator=LightningEvaluator(trainer, nni.trace(Data)()))
    _, masks = pruner.compress(max_steps=3 * INTERVAL, max_epochs=None)
    assert [int(u["net.0"].sum()) for u in updates] == expected_kept(SCHEDULES[scheduler], 16)
    assert kept_counts(masks) == {"net.0": 8, "net.2": 4}
    if name in OURS:
        assert_nested(updates)


# ----------------------------------------------------------------------------------------
# README: the "Gradual pruning" recipes run
# ----------------------------------------------------------------------------------------

def test_readme_gradual_pruning_recipes_run():
    """Beyond tests/test_readme.py (every README block runs): what the two recipes compute."""
    blocks = [block for block in readme_blocks(language="python") if block.section == "Gradual pruning"]
    assert len(blocks) == 2
    nni_recipe, torch_pruning_recipe = blocks
    namespace: dict = {}
    exec(nni_recipe.compiled(), namespace)
    assert kept_counts(namespace["masks"]) == {"0": 8, "2": 4}
    assert len(namespace["pruner"].bound_pruner.reports) == 5
    pytest.importorskip("torch_pruning")
    namespace = {}
    exec(torch_pruning_recipe.compiled(), namespace)
    assert [m.out_channels for m in namespace["model"] if isinstance(m, torch.nn.Conv2d)] == [8, 4]
