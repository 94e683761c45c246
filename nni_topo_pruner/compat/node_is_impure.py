"""Node.is_impure(impure_random).

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

from .base import Patch, nni_tracer_modules, is_marked, mark

_IMPURE = "node-is-impure-signature"


def _impure_needed() -> bool:
    mods = nni_tracer_modules()
    if mods is None or not hasattr(mods[0], "node_is_impure_wrapper"):
        return False
    import torch.fx

    wrapper = mods[0].node_is_impure_wrapper
    if is_marked(wrapper, _IMPURE):
        return False
    torch_params = inspect.signature(torch.fx.Node.is_impure).parameters
    try:
        wrapper_params = inspect.signature(wrapper, follow_wrapped=False).parameters
    except (TypeError, ValueError):
        return False
    return len(torch_params) > 1 and len(wrapper_params) == 1


def _impure_install() -> None:
    """Fix ``TypeError: Node.is_impure() takes 1 positional argument but 2 were given``."""
    tracer_mod = nni_tracer_modules()[0]
    nni_wrapper = tracer_mod.node_is_impure_wrapper

    @functools.wraps(nni_wrapper)
    def node_is_impure_wrapper(node: Any, *args: Any, **kwargs: Any) -> bool:
        # torch.fx passes impure_random (random ops count as impure); NNI's purity rule
        # predates it and decides on its own, so the extra arguments are accepted and ignored.
        return nni_wrapper(node)

    tracer_mod.node_is_impure_wrapper = mark(node_is_impure_wrapper, _IMPURE)


def _impure_applied() -> bool:
    mods = nni_tracer_modules()
    return mods is not None and is_marked(getattr(mods[0], "node_is_impure_wrapper", None), _IMPURE)


PATCH = Patch(
        name=_IMPURE,
        symptom="TypeError: Node.is_impure() takes 1 positional argument but 2 were given "
                "(dead-code elimination at the end of concrete_trace)",
        cause="torch.fx now calls node.is_impure(impure_random); NNI swaps Node.is_impure "
              "for node_is_impure_wrapper(node), which takes one argument",
        fix="concrete_tracer.node_is_impure_wrapper replaced by a wrapper that accepts and "
            "ignores the extra arguments and returns NNI's own purity verdict",
        is_needed=_impure_needed,
        install=_impure_install,
        is_applied=_impure_applied,
    )
