"""Exponential search in ChannelDependency._depthwise_get_parent.

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

from typing import Any

from .base import Patch, source_of, is_marked, edit_pattern, recompile_with_edits

_DEPTHWISE = "depthwise-parent-search"
# a breadth-first search without a visited set walks every path of the graph: on
# ShuffleNetV2 (split/concat in every block) that is exponential. Same set of layers found.
_DEPTHWISE_EDITS = [
    ("""
queue = predeessors
while queue:
    curnode = queue.pop(0)
""", """
queue, visited = predeessors, set(predeessors)
while queue:
    curnode = queue.pop(0)
"""),
    ("""
for parent in parents:
    queue.append(parent)
""", """
for parent in parents:
    if parent not in visited:
        visited.add(parent)
        queue.append(parent)
"""),
]


def _nni_shape_dependency() -> Any | None:
    try:
        from nni.compression.utils import shape_dependency
    except Exception:
        return None
    return shape_dependency


def _depthwise_needed() -> bool:
    module = _nni_shape_dependency()
    if module is None or not hasattr(module, "ChannelDependency"):
        return False
    method = getattr(module.ChannelDependency, "_depthwise_get_parent", None)
    if method is None or is_marked(method, _DEPTHWISE):
        return False
    source = source_of(method)
    return all(edit_pattern(old).search(source) for old, _ in _DEPTHWISE_EDITS)


def _depthwise_install() -> None:
    """Fix ChannelDependency._depthwise_get_parent never returning (exponential walk, ShuffleNetV2)."""
    cls = _nni_shape_dependency().ChannelDependency
    cls._depthwise_get_parent = recompile_with_edits(cls._depthwise_get_parent, _DEPTHWISE_EDITS, _DEPTHWISE)


def _depthwise_applied() -> bool:
    module = _nni_shape_dependency()
    return module is not None and is_marked(getattr(module.ChannelDependency, "_depthwise_get_parent", None),
                                             _DEPTHWISE)


PATCH = Patch(
        name=_DEPTHWISE,
        symptom="auto_set_denpendency_group_ids / ChannelDependency never returns "
                "(ShuffleNetV2: > 15 minutes in shape_dependency.py _depthwise_get_parent)",
        cause="ChannelDependency._depthwise_get_parent walks the graph breadth-first with no "
              "visited set, so it follows every path: exponential on split/concat blocks",
        fix="the same search with a visited set (finds the same layers)",
        is_needed=_depthwise_needed,
        install=_depthwise_install,
        is_applied=_depthwise_applied,
    )
