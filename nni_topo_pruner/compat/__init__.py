"""Compatibility patches that make NNI 3.0's concrete tracer, ``ModelSpeedup`` and dependency
analysis work on current PyTorch (tested: torch 2.14.1, torchvision 0.29.1) and Python 3.11, and
its ``LightningEvaluator`` on pytorch-lightning 2.x (tested: 2.6.6).

NNI 3.0 is NNI's last release; its ``ModelSpeedup`` traces the model with its own
"concrete tracer", which breaks on today's torch and Python in several places. Every patch
below is a monkeypatch applied by :func:`apply` (nothing in site-packages is edited), guarded
by a feature check that looks at the broken behaviour itself, and idempotent.

This package calls :func:`apply` where it is about to use NNI: constructing one of its
pruners, ``registry.create_pruner`` (NNI's pruners included) and ``speedup.speedup_model``;
``import nni_topo_pruner`` alone imports and patches nothing. Code that uses NNI directly
(``ModelSpeedup``, ``auto_set_denpendency_group_ids``, a legacy config list) calls
:func:`apply` first. To see what is in effect::

    >>> from nni_topo_pruner import compat
    >>> compat.apply()                        # doctest: +SKIP
    >>> compat.applied_patches()              # doctest: +SKIP
    ['tensorbase-qualname', 'node-is-impure-signature', ...]
    >>> print(compat.describe())              # doctest: +SKIP

Each patch is one module of this package (its code beside its :class:`Patch` record:
symptom, cause, fix); :data:`PATCHES` lists them in order; the table in ``docs/compat.md``
is :func:`describe` ``(markdown=True)``.
"""
from __future__ import annotations

import logging

from . import (builtin_generics, depthwise_parent_search, jit_trace_grad_mode, legacy_total_sparsity,
               lightning_max_steps, node_is_impure, nomask_output_randomize, py311_bytecode, pytree_size_leaf,
               tensorbase_qualname)
from .base import MARKER, Patch

_logger = logging.getLogger(__name__)

#: every patch, in the order :func:`apply` installs them
PATCHES: tuple[Patch, ...] = tuple(module.PATCH for module in (
    tensorbase_qualname, node_is_impure, py311_bytecode, builtin_generics, jit_trace_grad_mode,
    nomask_output_randomize, depthwise_parent_search, legacy_total_sparsity, pytree_size_leaf,
    lightning_max_steps,
))

__all__ = ["MARKER", "PATCHES", "Patch", "apply", "applied_patches", "describe"]


def apply() -> list[str]:
    """Apply every patch whose broken behaviour is present; return the names applied now.

    Idempotent: a patch already in effect is not needed any more, so a second call
    applies nothing and returns ``[]``. A patch that fails to install is logged and
    skipped (the others still apply); NNI then behaves as it does without this package.

    Example::

        >>> from nni_topo_pruner import compat
        >>> _ = compat.apply()
        >>> compat.apply()   # a second call has nothing left to do
        []
    """
    applied: list[str] = []
    for patch in PATCHES:
        try:
            if not patch.is_needed():
                continue
            patch.install()
        except Exception:  # never break the caller over a compat patch
            _logger.exception("nni_topo_pruner.compat: patch %r could not be applied", patch.name)
            continue
        _logger.debug("nni_topo_pruner.compat: applied %s", patch.name)
        applied.append(patch.name)
    return applied


def applied_patches() -> list[str]:
    """Names of the patches currently in effect, in :data:`PATCHES` order."""
    return [patch.name for patch in PATCHES if patch.is_applied()]


def describe(markdown: bool = False) -> str:
    """A human-readable table: each patch, whether it is in effect, and what it fixes.

    With ``markdown=True``: the Markdown table of ``docs/compat.md`` (patch, symptom, cause,
    fix; no state), generated here so that the page cannot drift from the code.

    Example::

        >>> describe(markdown=True).splitlines()[:2]
        ['| patch | symptom | cause | fix |', '| --- | --- | --- | --- |']
    """
    if markdown:
        def cell(text: str) -> str:  # plain text in a Markdown cell: __bool__ must not turn bold
            return "".join("\\" + c if c in "\\|_*" else c for c in text)

        rows = [f"| `{p.name}` | {cell(p.symptom)} | {cell(p.cause)} | {cell(p.fix)} |" for p in PATCHES]
        return "\n".join(["| patch | symptom | cause | fix |", "| --- | --- | --- | --- |", *rows])
    lines = []
    for patch in PATCHES:
        state = "applied" if patch.is_applied() else "not needed / not applied"
        lines.append(f"{patch.name} [{state}]\n  symptom: {patch.symptom}\n  cause:   {patch.cause}\n"
                     f"  fix:     {patch.fix}")
    return "\n".join(lines)
