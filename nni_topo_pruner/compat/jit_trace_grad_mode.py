"""Torch.jit.trace's sanity check runs under no_grad (NNI's TorchModuleGraph).

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

import functools
from typing import Any

from .base import Patch, source_of, is_marked, mark

_JIT_NO_GRAD = "jit-trace-grad-mode"


def _nni_graph_utils() -> Any | None:
    try:
        from nni.common import graph_utils
    except Exception:  # e.g. tensorboard missing: NNI's dependency analysis fails anyway
        return None
    return graph_utils


def _jit_no_grad_needed() -> bool:
    graph_utils = _nni_graph_utils()
    if graph_utils is None or not hasattr(graph_utils.TorchGraph, "_trace"):
        return False
    import torch.jit._trace

    trace = graph_utils.TorchGraph._trace
    if is_marked(trace, _JIT_NO_GRAD) or "no_grad" in source_of(trace):
        return False
    return "@torch.no_grad()" in source_of(torch.jit._trace._check_trace)


def _jit_no_grad_install() -> None:
    """Fix ``TracingCheckError: Graphs differed across invocations!`` in NNI's TorchGraph._trace."""
    import torch

    graph = _nni_graph_utils().TorchGraph
    nni_trace = graph._trace

    @functools.wraps(nni_trace)
    def _trace(self: Any, model: Any, dummy_input: Any) -> Any:
        # trace in the grad mode torch.jit uses for its check; NNI needs the graph only
        with torch.no_grad():
            return nni_trace(self, model, dummy_input)

    graph._trace = mark(_trace, _JIT_NO_GRAD)


def _jit_no_grad_applied() -> bool:
    graph_utils = _nni_graph_utils()
    return graph_utils is not None and is_marked(getattr(graph_utils.TorchGraph, "_trace", None), _JIT_NO_GRAD)


PATCH = Patch(
        name=_JIT_NO_GRAD,
        symptom="torch.jit._trace.TracingCheckError: Tracing failed sanity checks! ERROR: "
                "Graphs differed across invocations! from nni.compression.utils."
                "auto_set_denpendency_group_ids / ChannelDependency (nni/common/graph_utils.py "
                "TorchGraph._trace) on models with nn.MultiheadAttention (vit_b_16)",
        cause="torch.jit.trace re-runs the model for its sanity check under torch.no_grad(); "
              "nn.MultiheadAttention takes its fused fast path only when grad is off, so the "
              "check's graph differs from the traced one",
        fix="TorchGraph._trace runs NNI's jit trace under torch.no_grad(), the grad mode of "
            "torch's own check (NNI uses the graph's structure only)",
        is_needed=_jit_no_grad_needed,
        install=_jit_no_grad_install,
        is_applied=_jit_no_grad_applied,
    )
