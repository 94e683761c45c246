"""Legacy 'total_sparsity' translated to a key NNI's own schema rejects.

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

from typing import Any

from .base import Patch, source_of, is_marked, edit_pattern, recompile_with_edits

_LEGACY_TOTAL = "legacy-total-sparsity-group-key"
_LEGACY_TOTAL_OLD = "weight_setting['group_id'] = group_id"
_LEGACY_TOTAL_NEW = "weight_setting['global_group_id'] = group_id"
# modules that imported trans_legacy_config_list by name, and so hold their own reference
_LEGACY_TOTAL_USERS = ("nni.compression.base.config", "nni.compression.base.compressor",
                       "nni.compression.utils.dependency", "nni.compression.speedup.dependency")


def _legacy_config_module() -> Any | None:
    try:
        from nni.compression.base import config
    except Exception:
        return None
    return config


def _legacy_total_needed() -> bool:
    module = _legacy_config_module()
    func = getattr(module, "trans_legacy_config_list", None)
    if func is None or is_marked(func, _LEGACY_TOTAL):
        return False
    return bool(edit_pattern(_LEGACY_TOTAL_OLD).search(source_of(func)))


def _legacy_total_install() -> None:
    """Fix ``SchemaError: Wrong key 'group_id'`` for legacy ``total_sparsity`` config lists."""
    import importlib

    original = _legacy_config_module().trans_legacy_config_list
    fixed = recompile_with_edits(original, [(_LEGACY_TOTAL_OLD, _LEGACY_TOTAL_NEW)], _LEGACY_TOTAL)
    for name in _LEGACY_TOTAL_USERS:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        if getattr(module, "trans_legacy_config_list", None) is original:
            module.trans_legacy_config_list = fixed


def _legacy_total_applied() -> bool:
    module = _legacy_config_module()
    return module is not None and is_marked(getattr(module, "trans_legacy_config_list", None), _LEGACY_TOTAL)


PATCH = Patch(
        name=_LEGACY_TOTAL,
        symptom="schema.SchemaError: Key 'target_settings' error: Key 'weight' error: Wrong key 'group_id' "
                "for any legacy config list with 'total_sparsity' (every NNI pruner's constructor)",
        cause="trans_legacy_config_list translates total_sparsity into the setting 'group_id', a key "
              "NNI 3.0's own config schema does not know; the v2.5 key for a global group is "
              "'global_group_id'",
        fix="trans_legacy_config_list recompiled from NNI's source emitting 'global_group_id', and "
            "rebound in the NNI modules that imported it by name",
        is_needed=_legacy_total_needed,
        install=_legacy_total_install,
        is_applied=_legacy_total_applied,
    )
