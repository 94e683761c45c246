"""Unit tests of nni_topo_pruner.compat: each patch fixes its symptom (and NNI's original
code still shows the symptom), patches are idempotent, feature checks skip what is not
broken, and an unknown NNI is left alone."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_topo_pruner import compat
from nni.common.concrete_trace_utils import concrete_proxy, concrete_trace, concrete_tracer

compat.apply()  # what a user of raw NNI does

ALL_PATCHES = [patch.name for patch in compat.PATCHES]


# ----------------------------------------------------------------------------------------
# bookkeeping
# ----------------------------------------------------------------------------------------

def test_apply_applies_every_patch_on_the_tested_stack():
    # torch 2.14 / Python 3.11 / NNI 3.0 (+ tensorboard): every symptom is present, so all apply
    assert compat.applied_patches() == ALL_PATCHES
    assert not any(patch.is_needed() for patch in compat.PATCHES)


def test_apply_is_idempotent():
    before = {
        "trace": concrete_tracer.ConcreteTracer.trace,
        "impure": concrete_tracer.node_is_impure_wrapper,
        "bool": concrete_proxy.ConcreteProxy.__bool__,
        "jumps": concrete_proxy.ConcreteProxy.jump_opcodes,
        "factory": concrete_tracer._create_wrapped_leaf_class,
    }
    assert compat.apply() == []
    assert compat.apply() == []
    assert compat.applied_patches() == ALL_PATCHES
    assert concrete_tracer.ConcreteTracer.trace is before["trace"]
    assert concrete_tracer.node_is_impure_wrapper is before["impure"]
    assert concrete_proxy.ConcreteProxy.__bool__ is before["bool"]
    assert concrete_proxy.ConcreteProxy.jump_opcodes == before["jumps"]
    assert concrete_tracer._create_wrapped_leaf_class is before["factory"]


def test_every_patch_is_documented():
    names = [patch.name for patch in compat.PATCHES]
    assert len(set(names)) == len(names)
    for patch in compat.PATCHES:
        assert patch.symptom and patch.cause and patch.fix
        assert patch.name in compat.describe()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "compat.md").read_text(encoding="utf-8")
    missing = [name for name in names if f"`{name}`" not in doc]
    assert not missing, f"docs/compat.md does not describe {missing}"


def test_recompile_refuses_unknown_source():
    def sample(x):
        return x + 1

    with pytest.raises(RuntimeError, match="expected text not found"):
        compat._recompile_with_edits(sample, [("return x - 1", "return x")], "demo")
    patched = compat._recompile_with_edits(sample, [("return x + 1", "return x + 2")], "demo")
    assert patched(1) == 3 and sample(1) == 2
    assert getattr(patched, compat.MARKER) == "demo"


# ----------------------------------------------------------------------------------------
# feature checks: nothing is patched where nothing is broken
# ----------------------------------------------------------------------------------------

def test_feature_checks_skip_code_they_do_not_recognise(monkeypatch):
    """A future NNI whose source differs: the source-edit patches are not needed."""
    monkeypatch.setattr(compat, "_is_marked", lambda obj, name: False)  # pretend unpatched
    monkeypatch.setattr(compat, "_source", lambda obj: "def changed_upstream(): pass\n")
    for name in ("tensorbase-qualname", "py311-bytecode-introspection",
                 "nomaskupdater-output-randomize", "depthwise-parent-search"):
        assert not _patch(name).is_needed(), name


def test_feature_checks_on_python_without_inline_caches(monkeypatch):
    monkeypatch.setattr(compat, "_is_marked", lambda obj, name: False)
    monkeypatch.setattr(compat, "_python_has_inline_caches", lambda: False)
    assert not _patch("py311-bytecode-introspection").is_needed()


def test_feature_check_is_impure_already_fixed(monkeypatch):
    def node_is_impure_wrapper(node, impure_random=True):  # an NNI that takes the new argument
        return False

    monkeypatch.setattr(concrete_tracer, "node_is_impure_wrapper", node_is_impure_wrapper)
    assert not _patch("node-is-impure-signature").is_needed()


def test_failing_patch_is_logged_and_others_still_apply(monkeypatch, caplog):
    broken = compat.Patch(name="broken", symptom="s", cause="c", fix="f",
                          is_needed=lambda: True, install=_raise, is_applied=lambda: False)
    monkeypatch.setattr(compat, "PATCHES", (broken, *compat.PATCHES))
    with caplog.at_level(logging.ERROR, logger="nni_topo_pruner.compat"):
        assert compat.apply() == []
    assert "broken" in caplog.text


def test_unknown_nni_is_left_alone(tmp_path):
    """An NNI without the concrete tracer (a future or foreign release): import works, no patch."""
    fake = tmp_path / "nni"
    fake.mkdir()
    (fake / "__init__.py").write_text("__version__ = '99.0'\n")
    code = textwrap.dedent("""
        import nni_topo_pruner
        from nni_topo_pruner import compat
        assert compat.applied_patches() == [], compat.applied_patches()
        assert compat.apply() == []
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ----------------------------------------------------------------------------------------
# each symptom: fixed now, and present in NNI's original code
# ----------------------------------------------------------------------------------------

class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv(x), 2)


class _Branchy(nn.Module):
    """Every ConcreteProxy method that inspects the caller's bytecode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        batch, channels, height, width = y.shape        # __iter__ (UNPACK_SEQUENCE)
        if y.mean() > -1e9:                             # __bool__ (POP_JUMP_FORWARD_IF_FALSE)
            y = y + 1
        while y.sum() < -1e9:                           # __bool__ (backward jump)
            y = y - 1
        flat = y.reshape(*y.shape[:2], -1)              # __iter__ (CALL_FUNCTION_EX)
        sizes = {"dim": 2}
        return flat.sum(**sizes) * (batch * channels * height * width > 0)


def test_trace_tensorbase_builtins():
    traced = concrete_trace(_Small().eval(), (torch.rand(1, 3, 8, 8),))
    assert any(node.op == "call_module" for node in traced.graph.nodes)


def test_trace_tensorbase_builtins_fail_without_patch(monkeypatch):
    original = concrete_tracer.ConcreteTracer.trace.__wrapped_original__
    monkeypatch.setattr(concrete_tracer.ConcreteTracer, "trace", original)
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'startswith'"):
        concrete_trace(_Small().eval(), (torch.rand(1, 3, 8, 8),))


def test_is_impure_wrapper_accepts_impure_random():
    traced = concrete_trace(_Small().eval(), (torch.rand(1, 3, 8, 8),))
    node = next(iter(traced.graph.nodes))
    wrapper = concrete_tracer.node_is_impure_wrapper
    assert wrapper(node, True) == wrapper(node) == wrapper.__wrapped__(node)
    with pytest.raises(TypeError, match="takes 1 positional argument but 2 were given"):
        wrapper.__wrapped__(node, True)


def test_bytecode_introspection_on_branches():
    model = _Branchy().eval()
    x = torch.rand(2, 3, 8, 8)
    traced = concrete_trace(model, (x,))
    torch.testing.assert_close(traced(x), model(x))


def test_bytecode_introspection_fails_without_patch(monkeypatch):
    proxy = concrete_proxy.ConcreteProxy
    for name in compat._BYTECODE_METHODS:
        monkeypatch.setattr(proxy, name, getattr(proxy, name).__wrapped_original__)
    with pytest.raises((IndexError, TypeError)):
        concrete_trace(_Branchy().eval(), (torch.rand(2, 3, 8, 8),))


def test_generic_alias_on_wrapped_builtins_fails_without_patch(monkeypatch):
    for name in compat._GENERIC_FACTORIES:
        monkeypatch.setattr(concrete_tracer, name, getattr(concrete_tracer, name).__wrapped__)
    with pytest.raises(TypeError, match="not subscriptable"):
        concrete_trace(_Small().eval(), (torch.rand(1, 3, 8, 8),))


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 2, stride=2)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return (out + tokens).mean(1)


def test_dependency_graph_of_attention_model():
    from nni.compression.utils import auto_set_denpendency_group_ids

    config = auto_set_denpendency_group_ids(_Attention().eval(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
                                            torch.rand(1, 3, 8, 8))
    assert [c["op_names"] for c in config] == [["conv"]]


def test_dependency_graph_of_attention_model_fails_without_patch(monkeypatch):
    from nni.common.graph_utils import TorchGraph, TorchModuleGraph

    monkeypatch.setattr(TorchGraph, "_trace", TorchGraph._trace.__wrapped__)
    with pytest.raises(torch.jit.TracingCheckError):
        TorchModuleGraph(_Attention().eval(), torch.rand(1, 3, 8, 8))


class _SizeLastUse(nn.Module):
    """`y.size(0)` is the last use of y: NNI's NoMaskUpdater garbage-collects y there."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        z = self.conv2(y)
        batch = y.size(0)
        return z.view(batch, -1)


def _speedup_size_last_use() -> nn.Module:
    from nni.compression.speedup import ModelSpeedup

    model = _SizeLastUse().eval()
    masks = {"conv1": {"weight": torch.ones_like(model.conv1.weight)}}
    return ModelSpeedup(model, torch.rand(2, 3, 8, 8), masks).speedup_model()


def test_nomaskupdater_garbage_collection():
    model = _speedup_size_last_use()
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 8 * 4 * 4)


def test_nomaskupdater_garbage_collection_fails_without_patch(monkeypatch):
    from nni.compression.speedup import mask_updater

    method = mask_updater.NoMaskUpdater.direct_update_process
    monkeypatch.setattr(mask_updater.NoMaskUpdater, "direct_update_process", method.__wrapped_original__)
    with pytest.raises(AttributeError, match="_output_randomize"):
        _speedup_size_last_use()


class _Diamonds(nn.Module):
    """`depth` diamonds (2**depth paths) in front of a depthwise conv."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.conv = nn.Conv2d(3, 8, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        for _ in range(self.depth):
            x = torch.relu(x) + torch.sigmoid(x)
        return self.depthwise(x)


def _depthwise_parents(depth: int, method_name: str | None = None) -> list[str]:
    from nni.compression.utils.shape_dependency import ChannelDependency

    dependency = ChannelDependency(_Diamonds(depth).eval(), torch.rand(1, 3, 8, 8))
    node = next(n for n in dependency.graph.nodes_py.nodes_op if n.name == "depthwise")
    method = dependency._depthwise_get_parent
    if method_name == "original":
        method = ChannelDependency._depthwise_get_parent.__wrapped_original__.__get__(dependency)
    return method(node)


def test_depthwise_parent_search_is_linear():
    # 2**40 paths: unpatched NNI would never finish; patched it is a plain graph walk
    assert _depthwise_parents(40) == ["conv"]


def test_depthwise_parent_search_finds_what_nni_finds():
    assert set(_depthwise_parents(6)) == set(_depthwise_parents(6, "original")) == {"conv"}
    assert len(_depthwise_parents(6, "original")) == 2 ** 6  # one entry per path: exponential


# ----------------------------------------------------------------------------------------

def _patch(name: str) -> compat.Patch:
    return next(patch for patch in compat.PATCHES if patch.name == name)


def _raise() -> None:
    raise RuntimeError("simulated failure")


# ----------------------------------------------------------------------------------------
# legacy 'total_sparsity' config lists
# ----------------------------------------------------------------------------------------

LEGACY_TOTAL = [{"op_types": ["Linear"], "total_sparsity": 0.5, "max_sparsity_per_layer": 0.7}]


def _two_linear_model():
    import torch
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6))


def test_legacy_total_sparsity_becomes_a_global_group():
    from nni.compression.pruning import L1NormPruner

    pruner = L1NormPruner(_two_linear_model(), LEGACY_TOTAL)
    spaces = [pruner._target_spaces[name]["weight"] for name in ("0", "2")]
    assert [s.global_group_id for s in spaces] == [0, 0]
    assert [s.max_sparse_ratio for s in spaces] == [0.7, 0.7]
    assert all(s.sparse_ratio == 0.5 for s in spaces)


def test_legacy_total_sparsity_fails_without_patch(monkeypatch):
    import schema
    from nni.compression.base import compressor, config
    from nni.compression.pruning import L1NormPruner

    original = config.trans_legacy_config_list.__wrapped_original__
    monkeypatch.setattr(compressor, "trans_legacy_config_list", original)
    with pytest.raises(schema.SchemaError, match="Wrong key 'group_id'"):
        L1NormPruner(_two_linear_model(), LEGACY_TOTAL)
