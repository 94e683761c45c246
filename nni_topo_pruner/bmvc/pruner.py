"""BettiPruner: the BMVC paper's filter pruning by Betti numbers (seed 000, section 3.6).

For every target convolution, calibration images are run through the model; each filter's
feature map over the ``N`` images is a cloud of ``N`` points (one per image, dimension
``H*W``). The Betti numbers of that cloud -- of its Vietoris-Rips complex at a configured
scale, from GUDHI persistent homology (:mod:`nni_topo_pruner.topology.betti`) -- score the
filter, and the filters with the **largest** Betti numbers are pruned: the paper's reading
is that they scatter same-class images and so increase intra-class distance.

Two ways to say how much to prune, NNI's config-list semantics unchanged:

* ``sparse_ratio`` in the config list (NNI's ratio, dependency-group and global-group
  rules via NNI's own ``generate_sparsity``; ``max_sparse_ratio`` / ``min_sparse_ratio``
  honoured), ranking filters by Betti score;
* ``betti_threshold=T`` (the paper: 300): every filter whose Betti score exceeds ``T`` is
  pruned (config entries then carry no ``sparse_ratio``; ``max_sparse_ratio`` /
  ``min_sparse_ratio`` still cap the result, as for NNI's ``sparse_threshold``).

Score and ties
    The score is the sum of the Betti numbers over ``homology_dims`` (default ``(0,)``:
    ``b0``, the number of connected components). Integer scores tie often; ties are broken
    by the cloud's mean H0 count over ``[0, s]`` (how late its components merge, a number in
    ``[0, 1)`` after normalising by ``N``), which never changes the integer order. NNI
    prunes the smallest metric, so the metric handed to NNI is ``-(score + tie/2)``.

Scale
    ``scale`` is a fraction of each cloud's median pairwise distance
    (``scale_reference="median"``, default), of its diameter (``"diameter"``) or an
    absolute distance (``"absolute"``); see :mod:`nni_topo_pruner.topology.betti`. The two
    relative references make the score invariant to the filter's output magnitude; the
    median is the default because a few outlying images set a cloud's diameter alone (on
    a CIFAR VGG-16, 0.5 x diameter gave b0 = 1 for almost every filter past the first
    block, while 0.5 x median spread the scores in all but the 2x2 layers). The paper
    states neither its scale nor its number of images, so its threshold of 300 has no
    fixed meaning here: ``b0 <= num_images``, and which filters exceed 300 depends on both.
    With ``homology_dims=(0,)`` the H0 bars come from a minimum spanning tree (exactly
    GUDHI's H0, tested); other dimensions use GUDHI's Rips complex.

Memory
    Feature maps are streamed into one preallocated ``(N, C, D)`` float32 buffer per layer
    (``D = H*W``). When ``H*W > max_feature_dim`` each map is reduced to at most
    ``max_feature_dim`` values first, by a fixed Gaussian random projection
    (``feature_reduction="random_projection"``, default; preserves pairwise distances up to
    ``1 +- eps`` by Johnson-Lindenstrauss) or adaptive average pooling (``"avgpool"``);
    ``"none"`` keeps full maps. Memory is ``4 * N * sum_layers(C * D)`` bytes, logged
    before collection. Distance matrices are computed per chunk of channels in float64.

Example
-------
>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
>>> images = [torch.rand(16, 3, 12, 12) for _ in range(4)]
>>> pruner = BettiPruner(model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}],
...                      calibration_loader=images, num_images=64, progress=False)
>>> _, masks = pruner.compress()
>>> pruner.unwrap_model()
>>> int(masks['0']['weight'].sum(dim=(1, 2, 3)).count_nonzero()), len(pruner.scores['0'])
(4, 8)
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from nni.compression.pruning.tools import generate_sparsity
from nni.compression.utils.evaluator import Evaluator
from torch import nn
from tqdm.auto import tqdm

from ..feature_collector import (CALIBRATION_PRECISIONS, SUPPORTED_REDUCTIONS, FeatureCollector,
                                 feed_calibration_loader)
from ..masks_io import Masks
from ..one_shot import OneShotPruner
from ..scheduled import dead_channels_last
from ..checks import check_config_list
from ..topology.validation import check_bool, check_choice, check_homology_dims, check_int, check_number
from .scoring import BettiScale, betti_importance, layer_betti

_logger = logging.getLogger(__name__)

_SUPPORTED_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class BettiPruner(OneShotPruner):
    """Prune the convolution filters whose feature-map clouds have the largest Betti numbers.

    Parameters
    ----------
    model, config_list
        As for any NNI pruner; targets must be ``Conv1d/2d/3d`` layers pruned along output
        channels (``granularity`` ``'default'`` / ``'out_channel'``).
    evaluator
        Optional NNI ``Evaluator``: when no ``calibration_loader`` is given, the feature
        maps are recorded while ``evaluator.evaluate()`` runs its ``evaluating_func`` (the
        first ``num_images`` images it feeds the model are used).
    calibration_loader
        An iterable of input batches: tensors, or ``(inputs, targets, ...)`` tuples/lists
        whose first element is the model input (a ``DataLoader`` works). Iterated once,
        until ``num_images`` images have been seen.
    num_images
        Points per cloud ``N`` (default 512). Fewer is fine when the data runs out (>= 3).
    scale, scale_reference, count
        Where Betti numbers are read (see module doc and :class:`BettiScale`); default
        ``0.5`` x the cloud's median pairwise distance, ``"alive"`` bars.
    homology_dims
        Homology dimensions summed into the score: ``(0,)`` (default) or e.g. ``(0, 1)``
        (H1 at large scales is much slower: triangles of the Rips complex are built).
    betti_threshold
        Prune every filter whose score exceeds this (the paper: 300) instead of using
        ``sparse_ratio``.
    max_feature_dim, feature_reduction
        Memory bound for large feature maps (see module doc).
    calibration_precision
        ``'float64'`` (default): ``calibration_loader``'s batches run through the model in
        float64, so the feature maps do not depend on the CPU's float32 rounding (the model's
        tensors are put back afterwards, bit for bit); ``'model'``: in the model's own precision.
        Maps recorded through an evaluator are in whatever precision its loop runs.
    seed
        Seed of the random projection (per layer: derived from the layer name).
    progress
        tqdm progress bars for collection and scoring.

    Gradual pruning: as the bound pruner of NNI's ``AGPPruner`` / ``LinearPruner`` the feature
    maps are recorded again at every step (from ``calibration_loader``, which is then required)
    on the current trained, masked model; channels already masked out stay out (a masked
    filter's output is constant, the smallest Betti score, which would otherwise keep it).
    ``pruner.steps`` records each step.
    """

    requires_calibration_data = True

    def __init__(self, model: nn.Module, config_list: List[Dict], evaluator: Optional[Evaluator] = None, *,
                 calibration_loader: Optional[Iterable] = None, num_images: int = 512, scale: float = 0.5,
                 scale_reference: str = "median", count: str = "alive", homology_dims: Sequence[int] = (0,),
                 betti_threshold: Optional[float] = None, max_feature_dim: Optional[int] = 1024,
                 feature_reduction: str = "random_projection", calibration_precision: str = "float64", seed: int = 0,
                 progress: bool = True, existed_wrappers=None):
        # validate our own options first: a bad option leaves the model unwrapped
        if calibration_loader is None and evaluator is None:
            raise ValueError("BettiPruner needs calibration data: pass calibration_loader= (a DataLoader or an "
                             "iterable of input batches) or an NNI evaluator= whose evaluating_func runs the model")
        if calibration_loader is not None and (isinstance(calibration_loader, (torch.Tensor, str, bytes))
                                               or not hasattr(calibration_loader, "__iter__")):
            raise TypeError("calibration_loader must be an iterable of batches (e.g. a DataLoader or a list of "
                            f"tensors), got {type(calibration_loader).__name__}; wrap a single tensor as [tensor]")
        num_images = check_int(num_images, "num_images", 3)
        seed = check_int(seed, "seed")  # the random projection's seed
        self.betti_scale = BettiScale(scale, scale_reference, count)  # validates
        dims = check_homology_dims(homology_dims, "homology_dims", sort=False)  # order = columns of .betti
        if betti_threshold is not None:
            check_number(betti_threshold, "betti_threshold", minimum=0)
        feature_reduction = check_choice(feature_reduction, "feature_reduction", SUPPORTED_REDUCTIONS)
        max_feature_dim = check_int(max_feature_dim, "max_feature_dim", 1, allow_none=True)
        self.calibration_precision = check_choice(calibration_precision, "calibration_precision",
                                                  CALIBRATION_PRECISIONS)
        self.calibration_loader = calibration_loader
        self.num_images = num_images
        self.homology_dims = dims
        self.betti_threshold = betti_threshold
        self.max_feature_dim = max_feature_dim
        self.feature_reduction = feature_reduction
        self.seed = int(seed)
        self.progress = check_bool(progress, "progress")
        #: per layer: the score (sum of Betti numbers) of every output channel, after compress()
        self.scores: Dict[str, np.ndarray] = {}
        #: per layer: Betti numbers per channel, shape (C, len(homology_dims))
        self.betti: Dict[str, np.ndarray] = {}
        #: per layer: number of images the clouds were built from
        self.images_used: Dict[str, int] = {}
        check_config_list(model, config_list, require_ratio=betti_threshold is None)
        super().__init__(model, config_list, evaluator, existed_wrappers)

    # ----------------------------------------------------------------- validation
    def _check_target_spaces(self) -> None:
        #: betti_threshold mode: NNI sparse_threshold per pruned module (its weight target); NNI's
        #: target spaces are left as configured, the threshold goes in through _sparsity_spaces
        self._thresholds: Dict[str, float] = {}
        found = 0
        for module_name, spaces in self._target_spaces.items():
            module = self._module_wrappers[module_name].module
            for target_name, space in spaces.items():
                if space.align is not None:
                    continue  # e.g. the bias, masked like the weight
                if space.sparse_threshold is not None:
                    raise ValueError(
                        f"{module_name}: 'sparse_threshold' in the config list is not used by BettiPruner (its metric "
                        f"is a negated Betti score); pass betti_threshold=T to prune filters with Betti score > T")
                if self.betti_threshold is not None:
                    if space.sparse_ratio is not None:
                        raise ValueError(f"{module_name}: give either betti_threshold or a 'sparse_ratio' in the "
                                         f"config list, not both")
                    if target_name != "weight":
                        continue
                    if space.dependency_group_id is not None or space.global_group_id is not None:
                        raise ValueError(f"{module_name}: betti_threshold cannot be combined with NNI's "
                                         f"dependency_group_id / global_group_id, whose rules need a 'sparse_ratio'")
                    # keep iff score + tie <= floor(T) + 0.75  <=>  integer score <= T (tie < 0.5)
                    self._thresholds[module_name] = -(math.floor(self.betti_threshold) + 0.75)
                elif space.sparse_ratio is None:
                    continue
                if target_name != "weight":
                    raise ValueError(f"{module_name}: BettiPruner prunes output channels through the 'weight' "
                                     f"target; target {target_name!r} cannot carry a sparse ratio")
                if not isinstance(module, _SUPPORTED_MODULES):
                    raise ValueError(
                        f"{module_name}: BettiPruner scores convolution filters by their feature maps; "
                        f"{type(module).__name__} is not a Conv1d/Conv2d/Conv3d. Restrict the config list, e.g. "
                        f"op_types=['Conv2d'], or add exclude_op_names=['{module_name}']")
                if space.granularity != "out_channel":
                    raise ValueError(f"{module_name}: granularity {space.granularity!r} is not supported; BettiPruner "
                                     f"prunes whole output channels ('out_channel')")
                found += 1
        if found == 0:
            raise ValueError("the config list selects no layer to prune: give 'sparse_ratio' in a config entry that "
                             "matches Conv layers, or betti_threshold=")

    def _active_modules(self) -> List[str]:
        return sorted({name for name, spaces in self._target_spaces.items()
                       for space in spaces.values() if space.sparse_ratio is not None} | set(self._thresholds))

    def _is_pruned(self, module_name: str, target_name: str) -> bool:
        return (self._target_spaces[module_name][target_name].sparse_ratio is not None
                or (target_name == "weight" and module_name in self._thresholds))

    def _sparsity_spaces(self) -> Dict[str, Dict[str, object]]:
        """The target spaces as NNI's ``generate_sparsity`` sees them: with our thresholds."""
        return {module_name: {target_name: (_WithThreshold(space, self._thresholds[module_name])
                                            if target_name == "weight" and module_name in self._thresholds else space)
                              for target_name, space in spaces.items()}
                for module_name, spaces in self._target_spaces.items()}

    # ----------------------------------------------------------------- NNI hooks
    def _collect_data(self) -> Dict[str, torch.Tensor]:
        """``{module_name: (N, C, D) float32 feature clouds}`` from the calibration data."""
        modules = {name: self._module_wrappers[name].module for name in self._active_modules()}
        collector = FeatureCollector(modules, self.num_images, self.max_feature_dim, self.feature_reduction,
                                      self.seed)
        started = time.perf_counter()
        with collector.hooked():
            if self.calibration_loader is not None:
                self._run_loader(collector)
            else:
                self._run_evaluator(collector)
        buffers = collector.result()
        _logger.info("BettiPruner: feature clouds of %d layers from %d images in %.1f s (%.1f MiB)",
                     len(buffers), collector.images_seen, time.perf_counter() - started,
                     sum(b.numel() for b in buffers.values()) * 4 / 2**20)
        return buffers

    def _calculate_metrics(self, data: Dict[str, torch.Tensor]) -> Masks:
        metrics: Masks = defaultdict(dict)
        total = sum(b.shape[1] for b in data.values())
        bar = tqdm(total=total, desc="BettiPruner persistence", unit="filter", disable=not self.progress, leave=False)
        for module_name, cloud in data.items():
            if not bool(torch.isfinite(cloud).all()):
                bar.close()
                raise ValueError(f"BettiPruner: the feature maps of layer {module_name!r} on the calibration images "
                                 f"hold NaN or Inf values, so its filters cannot be scored; check the calibration "
                                 f"images (NaN/Inf pixels?) and the weights of the layers up to {module_name!r}")
            try:
                betti, tie = layer_betti(cloud.numpy(), self.betti_scale, self.homology_dims, on_filter=bar.update)
            except ValueError as error:
                bar.close()
                raise ValueError(f"BettiPruner: layer {module_name!r}: {error}") from error
            score = betti.sum(axis=1)
            self.betti[module_name], self.scores[module_name] = betti, score
            self.images_used[module_name] = int(cloud.shape[0])
            metric = torch.from_numpy(betti_importance(betti, tie))
            for target_name, space in self._target_spaces[module_name].items():
                if not self._is_pruned(module_name, target_name):
                    continue
                # one value per output channel ('out_channel' granularity, checked at construction)
                shape = [space.shape[0]] + [1] * (len(space.shape) - 1)
                metrics[module_name][target_name] = metric.to(space.target.device).reshape(shape)
            _logger.debug("%s: Betti scores min %d, median %.1f, max %d", module_name, score.min(),
                          float(np.median(score)), score.max())
        bar.close()
        return metrics

    def _generate_sparsity(self, metrics: Masks) -> Masks:
        masks = generate_sparsity(dead_channels_last(metrics, self._target_spaces), self._sparsity_spaces())
        for module_name, targets in masks.items():
            weight = targets.get("weight")
            if weight is not None and not weight.any():
                # the paper's rule can do this when every filter's score exceeds the threshold
                _logger.warning("BettiPruner: %s loses every filter (scores %s); ModelSpeedup cannot remove a whole "
                                "layer -- cap it with 'max_sparse_ratio' in the config list", module_name,
                                np.unique(self.scores.get(module_name, np.array([]))).tolist()[:10])
        return masks


    def _fuse_preprocess(self, evaluator: Evaluator) -> None:
        # checked here, where NNI's schedulers and fused compressors start the training loop
        if self.calibration_loader is None:
            raise ValueError("BettiPruner under AGPPruner/LinearPruner or fused compression needs calibration_loader=: "
                             "its evaluator is training the model, so evaluate() cannot be run for the feature maps")
        if self.betti_threshold is not None:
            raise ValueError("betti_threshold is not scheduled by AGPPruner/LinearPruner (it would apply whole at the "
                             "first step); give a 'sparse_ratio' in the config list for gradual pruning")
        super()._fuse_preprocess(evaluator)

    # ----------------------------------------------------------------- data
    def _run_loader(self, collector: FeatureCollector) -> None:
        feed_calibration_loader(self.bound_model, self.calibration_loader, collector, self.calibration_precision)

    def _run_evaluator(self, collector: FeatureCollector) -> None:
        evaluator = self.evaluator
        if getattr(evaluator, "evaluating_func", True) is None:
            raise ValueError("the evaluator has no evaluating_func, so BettiPruner cannot run calibration images "
                             "through the model; pass calibration_loader= or an evaluator with evaluating_func")
        evaluator.bind_model(self.bound_model, self._get_param_names_map())
        try:
            evaluator.evaluate()
        finally:
            evaluator.unbind_model()
        if collector.images_seen == 0:
            raise ValueError("evaluator.evaluate() ran no images through the pruned layers")


class _WithThreshold:
    """A target space with ``sparse_threshold`` set, for NNI's ``generate_sparsity`` (which
    reads it there); every other attribute is the wrapped space's, which stays untouched."""

    def __init__(self, space: object, sparse_threshold: float) -> None:
        self._space = space
        self.sparse_threshold = sparse_threshold

    def __getattr__(self, name: str) -> object:
        if name == "_space":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self._space, name)
