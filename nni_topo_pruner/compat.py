"""Compatibility patches that make NNI 3.0's concrete tracer, ``ModelSpeedup`` and dependency
analysis work on current PyTorch (tested: torch 2.14.1, torchvision 0.29.1) and Python 3.11.

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

Each :class:`Patch` in :data:`PATCHES` says which symptom it fixes, why it happens and how
it is fixed; the table in ``docs/compat.md`` is :func:`describe` ``(markdown=True)``.
"""
from __future__ import annotations

import ast
import functools
import inspect
import logging
import re
import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

_logger = logging.getLogger(__name__)

#: Attribute set on every object this module replaces; its value is the patch name.
MARKER = "__nni_topo_pruner_compat__"


@dataclass(frozen=True)
class Patch:
    """One compatibility fix.

    ``is_needed()`` inspects the installed libraries and answers whether the broken
    behaviour is present (False when already fixed upstream, already patched, or when the
    code to patch is not the code this patch was written for); ``install()`` applies it.
    """

    name: str
    symptom: str
    cause: str
    fix: str
    is_needed: Callable[[], bool]
    install: Callable[[], None]
    is_applied: Callable[[], bool]


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def _nni_tracer_modules() -> tuple[Any, Any] | None:
    """Return NNI's (concrete_tracer, concrete_proxy) modules, or None if NNI lacks them."""
    try:
        from nni.common.concrete_trace_utils import concrete_proxy, concrete_tracer
    except Exception:  # NNI missing or a layout we do not know: nothing to patch
        return None
    return concrete_tracer, concrete_proxy


def _source(obj: Any) -> str:
    try:
        return textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
    except (OSError, TypeError):
        return ""


def _is_marked(obj: Any, name: str) -> bool:
    return getattr(obj, MARKER, None) == name


def _mark(obj: Any, name: str) -> Any:
    setattr(obj, MARKER, name)
    return obj


def _edit_pattern(old: str) -> re.Pattern[str]:
    """Regex for the lines of ``old`` (relative indentation kept) at any base indentation."""
    lines = [re.escape(line.rstrip()) for line in textwrap.dedent(old).strip("\n").splitlines()]
    return re.compile(r"^(?P<indent>[ \t]*)" + r"\n(?P=indent)".join(lines) + r"[ \t]*$", re.MULTILINE)


def _indent_like(new: str, indent: str) -> str:
    return "\n".join(indent + line for line in textwrap.dedent(new).strip("\n").splitlines())


def _recompile_with_edits(func: Callable, edits: list[tuple[str, str]], patch_name: str) -> Callable:
    """Return a copy of ``func`` compiled from its own source with exact text ``edits``.

    Used where the bug sits inside a long NNI function: the copy keeps NNI's code and
    behaviour line for line, tracebacks still point at NNI's file and line numbers, and a
    missing ``old`` text (a different NNI) raises instead of patching blindly.
    """
    source = _source(func)
    for old, new in edits:
        source, count = _edit_pattern(old).subn(
            lambda match, new=new: _indent_like(new, match.group("indent")), source)
        if count == 0:
            raise RuntimeError(f"{patch_name}: expected text not found in {func.__qualname__}: {old!r}")
    tree = ast.parse(source)
    ast.increment_lineno(tree, func.__code__.co_firstlineno - 1)
    code = compile(tree, func.__code__.co_filename, "exec")
    namespace: dict[str, Any] = {}
    exec(code, func.__globals__, namespace)  # noqa: S102 - NNI's own source, edited above
    new_func = namespace[func.__name__]
    new_func.__qualname__ = func.__qualname__
    new_func.__module__ = func.__module__
    new_func.__wrapped_original__ = func
    return _mark(new_func, patch_name)


# ---------------------------------------------------------------------------------------
# patch 1: torch builtins whose __module__ is None (TensorBase rename)
# ---------------------------------------------------------------------------------------

_TENSORBASE = "tensorbase-qualname"
_TENSORBASE_OLD = "if func.__qualname__.startswith('_TensorBase'):"
_TENSORBASE_NEW = "if func.__qualname__.startswith(('_TensorBase', 'TensorBase')):"


def _tensorbase_needed() -> bool:
    mods = _nni_tracer_modules()
    if mods is None:
        return False
    import torch

    tracer = mods[0].ConcreteTracer
    if _is_marked(tracer.trace, _TENSORBASE):
        return False
    # newer torch renamed torch._C._TensorBase to TensorBase (the old name is an alias)
    qualname = torch._C._TensorBase.add.__qualname__
    return not qualname.startswith("_TensorBase") and bool(_edit_pattern(_TENSORBASE_OLD).search(_source(tracer.trace)))


def _tensorbase_install() -> None:
    """Fix ``AttributeError: 'NoneType' object has no attribute 'startswith'`` in ConcreteTracer.trace."""
    tracer = _nni_tracer_modules()[0].ConcreteTracer
    tracer.trace = _recompile_with_edits(tracer.trace, [(_TENSORBASE_OLD, _TENSORBASE_NEW)], _TENSORBASE)


def _tensorbase_applied() -> bool:
    mods = _nni_tracer_modules()
    return mods is not None and _is_marked(mods[0].ConcreteTracer.trace, _TENSORBASE)


# ---------------------------------------------------------------------------------------
# patch 2: Node.is_impure(impure_random)
# ---------------------------------------------------------------------------------------

_IMPURE = "node-is-impure-signature"


def _impure_needed() -> bool:
    mods = _nni_tracer_modules()
    if mods is None or not hasattr(mods[0], "node_is_impure_wrapper"):
        return False
    import torch.fx

    wrapper = mods[0].node_is_impure_wrapper
    if _is_marked(wrapper, _IMPURE):
        return False
    torch_params = inspect.signature(torch.fx.Node.is_impure).parameters
    try:
        wrapper_params = inspect.signature(wrapper, follow_wrapped=False).parameters
    except (TypeError, ValueError):
        return False
    return len(torch_params) > 1 and len(wrapper_params) == 1


def _impure_install() -> None:
    """Fix ``TypeError: Node.is_impure() takes 1 positional argument but 2 were given``."""
    tracer_mod = _nni_tracer_modules()[0]
    nni_wrapper = tracer_mod.node_is_impure_wrapper

    @functools.wraps(nni_wrapper)
    def node_is_impure_wrapper(node: Any, *args: Any, **kwargs: Any) -> bool:
        # torch.fx passes impure_random (random ops count as impure); NNI's purity rule
        # predates it and decides on its own, so the extra arguments are accepted and ignored.
        return nni_wrapper(node)

    tracer_mod.node_is_impure_wrapper = _mark(node_is_impure_wrapper, _IMPURE)


def _impure_applied() -> bool:
    mods = _nni_tracer_modules()
    return mods is not None and _is_marked(getattr(mods[0], "node_is_impure_wrapper", None), _IMPURE)


# ---------------------------------------------------------------------------------------
# patch 3: Python 3.11 bytecode (inline CACHE entries, renamed jump opcodes)
# ---------------------------------------------------------------------------------------

_BYTECODE = "py311-bytecode-introspection"
#: ConcreteProxy methods that find the caller's current instruction the Python <= 3.10 way
_BYTECODE_METHODS = ("__iter__", "__len__", "__bool__", "keys")
_BYTECODE_OLD = """
cur = calling_frame.f_lasti // 2
insts: List[dis.Instruction] = _orig_list(dis.get_instructions(calling_frame.f_code))
"""
# same instruction list (CACHE entries hidden, so insts[cur + 1] is still the next real
# instruction), but the current one is found by its byte offset instead of f_lasti // 2
_BYTECODE_NEW = """
insts: List[dis.Instruction] = _orig_list(dis.get_instructions(calling_frame.f_code))
cur = _orig_list(inst.offset for inst in insts).index(calling_frame.f_lasti)
"""
#: Python 3.11 names of the conditional jumps that call __bool__ (3.10 and 3.12 use POP_JUMP_IF_*)
_PY311_JUMPS = ("POP_JUMP_FORWARD_IF_FALSE", "POP_JUMP_FORWARD_IF_TRUE",
                "POP_JUMP_BACKWARD_IF_FALSE", "POP_JUMP_BACKWARD_IF_TRUE")


def _python_has_inline_caches() -> bool:
    import dis

    return "CACHE" in dis.opmap


def _bytecode_needed() -> bool:
    mods = _nni_tracer_modules()
    if mods is None or not _python_has_inline_caches():
        return False
    proxy = mods[1].ConcreteProxy
    return any(_edit_pattern(_BYTECODE_OLD).search(_source(getattr(proxy, name))) for name in _BYTECODE_METHODS
               if not _is_marked(getattr(proxy, name), _BYTECODE))


def _bytecode_install() -> None:
    """Fix ``IndexError: list index out of range`` in ConcreteProxy.__bool__/__iter__/__len__/keys."""
    import dis

    proxy = _nni_tracer_modules()[1].ConcreteProxy
    for name in _BYTECODE_METHODS:
        method = proxy.__dict__[name]
        if _is_marked(method, _BYTECODE) or not _edit_pattern(_BYTECODE_OLD).search(_source(method)):
            continue
        setattr(proxy, name, _recompile_with_edits(method, [(_BYTECODE_OLD, _BYTECODE_NEW)], _BYTECODE))
    extra_jumps = tuple(dis.opmap[op] for op in _PY311_JUMPS
                        if op in dis.opmap and dis.opmap[op] not in proxy.jump_opcodes)
    proxy.jump_opcodes = tuple(proxy.jump_opcodes) + extra_jumps


def _bytecode_applied() -> bool:
    mods = _nni_tracer_modules()
    return mods is not None and all(_is_marked(getattr(mods[1].ConcreteProxy, name), _BYTECODE)
                                    for name in _BYTECODE_METHODS)


# ---------------------------------------------------------------------------------------
# patch 3b: PEP 585 generics (list[int]) on the builtins NNI swaps out while tracing
# ---------------------------------------------------------------------------------------

_GENERICS = "wrapped-builtin-generics"
_GENERIC_FACTORIES = ("_create_wrapped_leaf_class", "_create_wrapped_leaf_iterable_class")


def _generics_needed() -> bool:
    mods = _nni_tracer_modules()
    if mods is None or sys.version_info < (3, 9):
        return False
    for factory_name in _GENERIC_FACTORIES:
        factory = getattr(mods[0], factory_name, None)
        if factory is None or _is_marked(factory, _GENERICS):
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
    tracer_mod = _nni_tracer_modules()[0]
    for factory_name in _GENERIC_FACTORIES:
        nni_factory = getattr(tracer_mod, factory_name, None)
        if nni_factory is None or _is_marked(nni_factory, _GENERICS):
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

        setattr(tracer_mod, factory_name, _mark(make_factory(nni_factory), _GENERICS))


def _generics_applied() -> bool:
    mods = _nni_tracer_modules()
    return mods is not None and all(_is_marked(getattr(mods[0], name, None), _GENERICS)
                                    for name in _GENERIC_FACTORIES)


# ---------------------------------------------------------------------------------------
# patch 4: torch.jit.trace's sanity check runs under no_grad (NNI's TorchModuleGraph)
# ---------------------------------------------------------------------------------------

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
    if _is_marked(trace, _JIT_NO_GRAD) or "no_grad" in _source(trace):
        return False
    return "@torch.no_grad()" in _source(torch.jit._trace._check_trace)


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

    graph._trace = _mark(_trace, _JIT_NO_GRAD)


def _jit_no_grad_applied() -> bool:
    graph_utils = _nni_graph_utils()
    return graph_utils is not None and _is_marked(getattr(graph_utils.TorchGraph, "_trace", None), _JIT_NO_GRAD)


# ---------------------------------------------------------------------------------------
# patch 5: NoMaskUpdater deletes a misspelt attribute
# ---------------------------------------------------------------------------------------

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
    return not _is_marked(method, _NOMASK) and bool(_edit_pattern(_NOMASK_OLD).search(_source(method)))


def _nomask_install() -> None:
    """Fix ``AttributeError: 'NodeInfo' object has no attribute '_output_randomize'``."""
    cls = _nni_mask_updater().NoMaskUpdater
    cls.direct_update_process = _recompile_with_edits(
        cls.direct_update_process, [(_NOMASK_OLD, _NOMASK_NEW)], _NOMASK)


def _nomask_applied() -> bool:
    updater = _nni_mask_updater()
    return updater is not None and _is_marked(updater.NoMaskUpdater.direct_update_process, _NOMASK)


# ---------------------------------------------------------------------------------------
# patch 6: exponential search in ChannelDependency._depthwise_get_parent
# ---------------------------------------------------------------------------------------

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
    if method is None or _is_marked(method, _DEPTHWISE):
        return False
    source = _source(method)
    return all(_edit_pattern(old).search(source) for old, _ in _DEPTHWISE_EDITS)


def _depthwise_install() -> None:
    """Fix ChannelDependency._depthwise_get_parent never returning (exponential walk, ShuffleNetV2)."""
    cls = _nni_shape_dependency().ChannelDependency
    cls._depthwise_get_parent = _recompile_with_edits(cls._depthwise_get_parent, _DEPTHWISE_EDITS, _DEPTHWISE)


def _depthwise_applied() -> bool:
    module = _nni_shape_dependency()
    return module is not None and _is_marked(getattr(module.ChannelDependency, "_depthwise_get_parent", None),
                                             _DEPTHWISE)


# ---------------------------------------------------------------------------------------
# patch 8: legacy 'total_sparsity' translated to a key NNI's own schema rejects
# ---------------------------------------------------------------------------------------

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
    if func is None or _is_marked(func, _LEGACY_TOTAL):
        return False
    return bool(_edit_pattern(_LEGACY_TOTAL_OLD).search(_source(func)))


def _legacy_total_install() -> None:
    """Fix ``SchemaError: Wrong key 'group_id'`` for legacy ``total_sparsity`` config lists."""
    import importlib

    original = _legacy_config_module().trans_legacy_config_list
    fixed = _recompile_with_edits(original, [(_LEGACY_TOTAL_OLD, _LEGACY_TOTAL_NEW)], _LEGACY_TOTAL)
    for name in _LEGACY_TOTAL_USERS:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        if getattr(module, "trans_legacy_config_list", None) is original:
            module.trans_legacy_config_list = fixed


def _legacy_total_applied() -> bool:
    module = _legacy_config_module()
    return module is not None and _is_marked(getattr(module, "trans_legacy_config_list", None), _LEGACY_TOTAL)


# ---------------------------------------------------------------------------------------
# patch 9: torch's pytree turns torch.Size into a plain tuple (NNI's tree_map_zip)
# ---------------------------------------------------------------------------------------

_SIZE_LEAF = "pytree-torch-size-leaf"
#: NNI modules that imported tree_map_zip by name, and so hold their own reference
_SIZE_LEAF_USERS = ("nni.compression.speedup.utils", "nni.compression.speedup.mask_updater",
                    "nni.compression.speedup.model_speedup")


def _nni_speedup_utils() -> Any | None:
    try:
        from nni.compression.speedup import utils
    except Exception:
        return None
    return utils


def _pytree_flattens_size() -> bool:
    """True when torch's pytree maps a torch.Size to a plain tuple (torch >= 2.1 registers it)."""
    import torch
    from torch.utils import _pytree

    return type(_pytree.tree_map(lambda x: x, torch.Size([1, 2]))) is not torch.Size


def _size_leaf_needed() -> bool:
    utils = _nni_speedup_utils()
    func = getattr(utils, "tree_map_zip", None)
    if func is None or _is_marked(func, _SIZE_LEAF):
        return False
    from torch.utils import _pytree

    if "is_leaf" not in inspect.signature(_pytree.tree_map).parameters:
        return False
    source = _source(func)
    return _pytree_flattens_size() and "tree_map(fn, pytrees[0])" in source and "tree_flatten(pytree)" in source


def _size_leaf_install() -> None:
    """Fix ``AttributeError: 'tuple' object has no attribute 'numel'`` (``x.size()[1:].numel()``)."""
    import importlib

    import torch
    from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

    original = _nni_speedup_utils().tree_map_zip

    def is_size(obj: Any) -> bool:
        return isinstance(obj, torch.Size)

    @functools.wraps(original)
    def tree_map_zip(fn: Any, *pytrees: Any) -> Any:
        # NNI's own function, with torch.Size a leaf as it was in torch 2.0's pytree: the
        # value of x.size() stays a torch.Size through ModelSpeedup's propagation
        assert len(pytrees) > 0
        if len(pytrees) == 1:
            return tree_map(fn, pytrees[0], is_leaf=is_size)
        flat_args_list, spec_list = [], []
        for pytree in pytrees:
            flat_args, spec = tree_flatten(pytree, is_leaf=is_size)
            flat_args_list.append(flat_args)
            spec_list.append(spec)
        assert all(len(args) == len(flat_args_list[0]) for args in flat_args_list), "Inconsistent tree nodes length."
        return tree_unflatten([fn(*args) for args in zip(*flat_args_list)], spec_list[0])

    tree_map_zip.__wrapped_original__ = original
    fixed = _mark(tree_map_zip, _SIZE_LEAF)
    for name in _SIZE_LEAF_USERS:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        if getattr(module, "tree_map_zip", None) is original:
            module.tree_map_zip = fixed


def _size_leaf_applied() -> bool:
    utils = _nni_speedup_utils()
    return utils is not None and _is_marked(getattr(utils, "tree_map_zip", None), _SIZE_LEAF)


# ---------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------

PATCHES: tuple[Patch, ...] = (
    Patch(
        name=_TENSORBASE,
        symptom="AttributeError: 'NoneType' object has no attribute 'startswith' in "
                "nni/common/concrete_trace_utils/concrete_tracer.py ConcreteTracer.trace",
        cause="torch 2.x renamed torch._C._TensorBase to TensorBase; NNI recognises tensor "
              "methods by the qualname prefix '_TensorBase', so builtins such as "
              "TensorBase._make_subclass (whose __module__ is None) fall through to the "
              "'plain method' branch, which calls func.__module__.startswith",
        fix="ConcreteTracer.trace recompiled from NNI's own source with the prefix test "
            "accepting both '_TensorBase' and 'TensorBase' (upstream behaviour on torch 2.0)",
        is_needed=_tensorbase_needed,
        install=_tensorbase_install,
        is_applied=_tensorbase_applied,
    ),
    Patch(
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
    ),
    Patch(
        name=_BYTECODE,
        symptom="IndexError: list index out of range in nni/common/concrete_trace_utils/"
                "concrete_proxy.py ConcreteProxy.__bool__ (also __iter__, __len__, keys) on "
                "models with data-dependent Python branches (ConvNeXt, EfficientNet, ViT, "
                "Inception), or a branch traced as a node followed by "
                "'TypeError: __bool__ should return bool, returned ConcreteProxy'",
        cause="NNI finds the caller's current instruction as dis.get_instructions(code)"
              "[f_lasti // 2]; Python 3.11 stores inline CACHE entries in the bytecode that "
              "dis hides, so the index points past the instruction (or off the list). 3.11 "
              "also renamed the conditional jumps (POP_JUMP_FORWARD_IF_FALSE, ...), which "
              "NNI's jump_opcodes table does not list",
        fix="the four ConcreteProxy methods recompiled from NNI's source with the "
            "instruction looked up by byte offset (inst.offset == f_lasti); the 3.11 jump "
            "opcodes added to ConcreteProxy.jump_opcodes",
        is_needed=_bytecode_needed,
        install=_bytecode_install,
        is_applied=_bytecode_applied,
    ),
    Patch(
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
    ),
    Patch(
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
    ),
    Patch(
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
    ),
    Patch(
        name=_DEPTHWISE,
        symptom="auto_set_denpendency_group_ids / ChannelDependency never returns "
                "(ShuffleNetV2: > 15 minutes in shape_dependency.py _depthwise_get_parent)",
        cause="ChannelDependency._depthwise_get_parent walks the graph breadth-first with no "
              "visited set, so it follows every path: exponential on split/concat blocks",
        fix="the same search with a visited set (finds the same layers)",
        is_needed=_depthwise_needed,
        install=_depthwise_install,
        is_applied=_depthwise_applied,
    ),
    Patch(
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
    ),
    Patch(
        name=_SIZE_LEAF,
        symptom="AttributeError: 'tuple' object has no attribute 'numel' in torch/fx/interpreter.py "
                "call_method during ModelSpeedup.propagate_originally, for a model that flattens with "
                "x.view(-1, x.size()[1:].numel()) (LeNet style), plain or already traced",
        cause="torch (>= 2.1, torch/fx/experimental/proxy_tensor.py) registers torch.Size as a pytree "
              "node that unflattens to a plain tuple; NNI copies every node's value with "
              "tree_map_zip (torch's tree_map), so the value of x.size() becomes a tuple and its "
              "slice has no numel(). In torch 2.0, which NNI 3.0 was written for, torch.Size was a "
              "pytree leaf",
        fix="nni.compression.speedup.utils.tree_map_zip replaced by NNI's same function with "
            "torch.Size as a pytree leaf (is_leaf), rebound in mask_updater and model_speedup, "
            "which imported it by name",
        is_needed=_size_leaf_needed,
        install=_size_leaf_install,
        is_applied=_size_leaf_applied,
    ),
)


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
