"""A base for our NNI pruners: masks from the weights (or calibration data) once per
``compress()``, or at an evaluator's optimizer steps when NNI's ``AGPPruner`` /
``LinearPruner`` or fused compression drives them (:class:`~.scheduled.ScheduledMasks`).

Construction is shared: NNI's config-list schema errors become a ``ValueError`` naming the
pruner, and the subclass's :meth:`OneShotPruner._check_target_spaces` runs on NNI's parsed
target spaces; if it refuses them, the model is unwrapped again so the user's model is left
as it was.

NNI 3.0's ``Compressor.compress(max_steps, max_epochs)`` dispatches to
``_single_compress`` or to the fused path. On its own, like NNI's norm pruners, the pruner is
one-shot and says so clearly when given a training budget instead of failing deep inside NNI;
training-aware pruning goes through a scheduler or a fused compressor, which call the
``_fuse_preprocess`` trigger of :class:`~.scheduled.ScheduledMasks`.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from nni.compression.base.compressor import Pruner
from nni.compression.utils.evaluator import Evaluator
from schema import SchemaError
from torch import nn

from . import compat
from .scheduled import ScheduledMasks


class OneShotPruner(ScheduledMasks, Pruner):
    """``compress()`` computes masks once and applies them; returns ``(model, masks)``. As the
    bound pruner of NNI's ``AGPPruner`` / ``LinearPruner`` masks follow the schedule."""

    def __init__(self, model: nn.Module, config_list: List[Dict], evaluator: Optional[Evaluator] = None,
                 existed_wrappers=None) -> None:
        compat.apply()  # before NNI parses the config list and wraps the model
        try:
            super().__init__(model, config_list, evaluator, existed_wrappers)
        except SchemaError as error:
            raise ValueError(f"invalid config_list for {type(self).__name__}: {error}") from error
        try:
            self._check_target_spaces()
        except Exception:
            self.unwrap_model()  # leave the user's model as it was
            raise

    def _check_target_spaces(self) -> None:
        """Refuse (``ValueError`` naming the module) target spaces this pruner cannot honour;
        called once NNI has parsed the config list. The default accepts all."""

    def _single_compress(self, max_steps: Optional[int], max_epochs: Optional[int]) -> None:
        if max_steps is not None or max_epochs is not None:
            raise ValueError(f"{type(self).__name__} is a one-shot pruner on its own: call compress() without "
                             f"max_steps/max_epochs, or prune during training by wrapping it in NNI's AGPPruner or "
                             f"LinearPruner (with an evaluator), as for L1NormPruner")
        self.update_masks(self.generate_masks())

    def compress(self, max_steps: Optional[int] = None, max_epochs: Optional[int] = None):
        """Compute masks and apply them; returns ``(model, masks)`` like NNI's pruners."""
        return super().compress(max_steps, max_epochs)
