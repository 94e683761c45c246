"""A base for our one-shot NNI pruners: masks from the weights (or calibration data) once,
no training-aware (fused) compression.

Construction is shared: NNI's config-list schema errors become a ``ValueError`` naming the
pruner, and the subclass's :meth:`OneShotPruner._check_target_spaces` runs on NNI's parsed
target spaces; if it refuses them, the model is unwrapped again so the user's model is left
as it was.

NNI 3.0's ``Compressor.compress(max_steps, max_epochs)`` dispatches to
``_single_compress`` or to the fused path; a one-shot pruner supports only the former and
says so clearly instead of failing deep inside NNI.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from nni.compression.base.compressor import Pruner
from nni.compression.utils.evaluator import Evaluator
from schema import SchemaError
from torch import nn

from . import compat


class OneShotPruner(Pruner):
    """``compress()`` computes masks once and applies them; returns ``(model, masks)``."""

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
            raise ValueError(f"{type(self).__name__} is a one-shot pruner: call compress() without "
                             f"max_steps/max_epochs")
        self.update_masks(self.generate_masks())

    def _fuse_preprocess(self, evaluator: Evaluator) -> None:
        raise ValueError(f"{type(self).__name__} does not support fused (training-aware) compression")

    def _fuse_postprocess(self, evaluator: Evaluator) -> None:
        raise ValueError(f"{type(self).__name__} does not support fused (training-aware) compression")

    def compress(self, max_steps: Optional[int] = None, max_epochs: Optional[int] = None):
        """Compute masks and apply them; returns ``(model, masks)`` like NNI's pruners."""
        return super().compress(max_steps, max_epochs)
