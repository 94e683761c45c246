"""NNI's ``LightningEvaluator.train(max_steps=...)`` on pytorch-lightning 2.x.

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

from typing import Any

from .base import Patch, edit_pattern, is_marked, recompile_with_edits, source_of

_NAME = "lightning-fit-loop-max-steps"
_OLD = "trainer.fit_loop.max_steps = max_steps  # type: ignore"
_NEW = "trainer.fit_loop.epoch_loop.max_steps = max_steps  # type: ignore"


def _evaluator_class() -> Any | None:
    try:
        from nni.compression.utils import evaluator
    except Exception:
        return None
    if not getattr(evaluator, "LIGHTNING_INSTALLED", False):
        return None  # no pytorch-lightning: nothing runs this code
    return evaluator.LightningEvaluator


def _fit_loop_max_steps_is_read_only() -> bool:
    import pytorch_lightning as pl

    prop = getattr(pl.loops.fit_loop._FitLoop, "max_steps", None)
    return isinstance(prop, property) and prop.fset is None


def _needed() -> bool:
    cls = _evaluator_class()
    if cls is None or is_marked(cls.train, _NAME):
        return False
    return bool(edit_pattern(_OLD).search(source_of(cls.train))) and _fit_loop_max_steps_is_read_only()


def _install() -> None:
    cls = _evaluator_class()
    cls.train = recompile_with_edits(cls.train, [(_OLD, _NEW)], _NAME)


def _applied() -> bool:
    cls = _evaluator_class()
    return cls is not None and is_marked(cls.train, _NAME)


PATCH = Patch(
    name=_NAME,
    symptom="AttributeError: property 'max_steps' of '_FitLoop' object has no setter in "
            "nni/compression/utils/evaluator.py LightningEvaluator.train, whenever NNI trains with a max_steps "
            "budget (AGPPruner/LinearPruner, fused compression) on pytorch-lightning 2.x",
    cause="pytorch-lightning 2.0 made _FitLoop.max_steps a read-only view of its epoch loop's max_steps; NNI 3.0 "
          "assigns the fit loop's",
    fix="LightningEvaluator.train recompiled from NNI's source assigning trainer.fit_loop.epoch_loop.max_steps "
        "(what the read-only property returns)",
    is_needed=_needed,
    install=_install,
    is_applied=_applied,
)
