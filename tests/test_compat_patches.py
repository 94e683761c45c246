"""Unit tests of nni_topo_pruner.compat's bookkeeping: patches in effect, idempotence."""
from __future__ import annotations

import nni_topo_pruner  # noqa: F401  (applies the patches)
from nni_topo_pruner import compat


def test_import_applies_every_needed_patch():
    applied = compat.applied_patches()
    assert "tensorbase-qualname" in applied
    assert "node-is-impure-signature" in applied
    assert not any(patch.is_needed() for patch in compat.PATCHES)


def test_apply_is_idempotent():
    before = compat.applied_patches()
    from nni.common.concrete_trace_utils import concrete_tracer
    trace_before = concrete_tracer.ConcreteTracer.trace
    impure_before = concrete_tracer.node_is_impure_wrapper
    assert compat.apply() == []
    assert compat.apply() == []
    assert compat.applied_patches() == before
    assert concrete_tracer.ConcreteTracer.trace is trace_before
    assert concrete_tracer.node_is_impure_wrapper is impure_before
