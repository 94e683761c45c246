"""PEP 585 generics (list[int]) on the builtins NNI swaps out while tracing.

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

from .base import Patch, nni_tracer_modules, is_marked, mark

_GENERICS = "wrapped-builtin-generics"
_GENERIC_FACTORIES = ("_create_wrapped_leaf_class", "_create_wrapped_leaf_iterable_class")


def _generics_needed() -> bool:
    mods = nni_tracer_modules()
    if mods is None or sys.version_info < (3, 9):
        return False
    for factory_name in _GENERIC_FACTORIES:
        factory = getattr(mods[0], factory_name, None)
        if factory is None or is_marked(factory, _GENERICS):
            continue
        try:
            sample = factory(None, list)
        except Exception:
            continue
        if "__getitem__" not in type(sample).__dict__:
            return True
    return False


def _generics_install() -> None:
    """Fix ``TypeError: 'clz_wrapper_clz' object is not subscriptable`` (``list[int]`` while tracing)."""
    tracer_mod = nni_tracer_modules()[0]
    for factory_name in _GENERIC_FACTORIES:
        nni_factory = getattr(tracer_mod, factory_name, None)
        if nni_factory is None or is_marked(nni_factory, _GENERICS):
            continue

        def make_factory(nni_factory: Callable) -> Callable:
            @functools.wraps(nni_factory)
            def create_wrapper(tracer: Any, clz: Any) -> Any:
                wrapper = nni_factory(tracer, clz)
                if hasattr(clz, "__class_getitem__") and "__getitem__" not in wrapper.__class__.__dict__:
                    # subscripting looks __getitem__ up on the class: list[int] -> the real list[int]
                    wrapper.__class__.__getitem__ = lambda self, item: clz[item]
                return wrapper
            return create_wrapper

        setattr(tracer_mod, factory_name, mark(make_factory(nni_factory), _GENERICS))


def _generics_applied() -> bool:
    mods = nni_tracer_modules()
    return mods is not None and all(is_marked(getattr(mods[0], name, None), _GENERICS)
                                    for name in _GENERIC_FACTORIES)


PATCH = Patch(
        name=_GENERICS,
        symptom="TypeError: 'clz_wrapper_clz' object is not subscriptable while tracing, e.g. "
                "in torch/nn/functional.py _max_pool2d: torch.jit.annotate(list[int], []) "
                "(any model calling F.max_pool2d & co.)",
        cause="while tracing, NNI replaces builtins.list/tuple/dict/set/... by wrapper objects; "
              "today's torch writes PEP 585 hints (list[int]) inside functional code, and "
              "subscripting looks __getitem__ up on the wrapper's class, which has none",
        fix="NNI's wrapper factories (_create_wrapped_leaf_class, "
            "_create_wrapped_leaf_iterable_class) give the wrapper class a __getitem__ that "
            "returns the original class's generic alias (list[int] is the real list[int])",
        is_needed=_generics_needed,
        install=_generics_install,
        is_applied=_generics_applied,
    )
