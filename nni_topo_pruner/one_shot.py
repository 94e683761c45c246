"""A base for our one-shot NNI pruners: masks from the weights (or calibration data) once,
no training-aware (fused) compression.

NNI 3.0's ``Compressor.compress(max_steps, max_epochs)`` dispatches to
``_single_compress`` or to the fused path; a one-shot pruner supports only the former and
says so clearly instead of failing deep inside NNI.
"""
from __future__ import annotations

from typing import Any, Optional

from nni.compression.base.compressor import Pruner
from nni.compression.utils.evaluator import Evaluator

from . import compat


class OneShotPruner(Pruner):
    """``compress()`` computes masks once and applies them; returns ``(model, masks)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        compat.apply()  # before NNI parses the config list and wraps the model
        super().__init__(*args, **kwargs)

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
