"""NoMaskUpdater deletes a misspelt attribute.

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

from typing import Any

from .base import Patch, source_of, is_marked, edit_pattern, recompile_with_edits

_NOMASK = "nomaskupdater-output-randomize"
_NOMASK_OLD = "del model_speedup.node_infos[to_delete]._output_randomize"
_NOMASK_NEW = "del model_speedup.node_infos[to_delete].output_randomize"


def _nni_mask_updater() -> Any | None:
    try:
        from nni.compression.speedup import mask_updater
    except Exception:
        return None
    return mask_updater


def _nomask_needed() -> bool:
    updater = _nni_mask_updater()
    if updater is None or not hasattr(updater, "NoMaskUpdater"):
        return False
    method = updater.NoMaskUpdater.direct_update_process
    return not is_marked(method, _NOMASK) and bool(edit_pattern(_NOMASK_OLD).search(source_of(method)))


def _nomask_install() -> None:
    """Fix ``AttributeError: 'NodeInfo' object has no attribute '_output_randomize'``."""
    cls = _nni_mask_updater().NoMaskUpdater
    cls.direct_update_process = recompile_with_edits(
        cls.direct_update_process, [(_NOMASK_OLD, _NOMASK_NEW)], _NOMASK)


def _nomask_applied() -> bool:
    updater = _nni_mask_updater()
    return updater is not None and is_marked(updater.NoMaskUpdater.direct_update_process, _NOMASK)


PATCH = Patch(
        name=_NOMASK,
        symptom="AttributeError: 'NodeInfo' object has no attribute '_output_randomize' in "
                "nni/compression/speedup/mask_updater.py NoMaskUpdater.direct_update_process "
                "(swin_t: a size()/dim() node is the last user of a value)",
        cause="typo in NNI: the attribute is output_randomize; the misspelt name is only "
              "reached when a size/dim/len/is/in node is the last use of a value",
        fix="NoMaskUpdater.direct_update_process recompiled from NNI's source with the "
            "attribute name corrected",
        is_needed=_nomask_needed,
        install=_nomask_install,
        is_applied=_nomask_applied,
    )
