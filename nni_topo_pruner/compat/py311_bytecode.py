"""Python 3.11 bytecode (inline CACHE entries, renamed jump opcodes).

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

from .base import Patch, nni_tracer_modules, source_of, is_marked, edit_pattern, recompile_with_edits

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
    mods = nni_tracer_modules()
    if mods is None or not _python_has_inline_caches():
        return False
    proxy = mods[1].ConcreteProxy
    return any(edit_pattern(_BYTECODE_OLD).search(source_of(getattr(proxy, name))) for name in _BYTECODE_METHODS
               if not is_marked(getattr(proxy, name), _BYTECODE))


def _bytecode_install() -> None:
    """Fix ``IndexError: list index out of range`` in ConcreteProxy.__bool__/__iter__/__len__/keys."""
    import dis

    proxy = nni_tracer_modules()[1].ConcreteProxy
    for name in _BYTECODE_METHODS:
        method = proxy.__dict__[name]
        if is_marked(method, _BYTECODE) or not edit_pattern(_BYTECODE_OLD).search(source_of(method)):
            continue
        setattr(proxy, name, recompile_with_edits(method, [(_BYTECODE_OLD, _BYTECODE_NEW)], _BYTECODE))
    extra_jumps = tuple(dis.opmap[op] for op in _PY311_JUMPS
                        if op in dis.opmap and dis.opmap[op] not in proxy.jump_opcodes)
    proxy.jump_opcodes = tuple(proxy.jump_opcodes) + extra_jumps


def _bytecode_applied() -> bool:
    mods = nni_tracer_modules()
    return mods is not None and all(is_marked(getattr(mods[1].ConcreteProxy, name), _BYTECODE)
                                    for name in _BYTECODE_METHODS)


PATCH = Patch(
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
    )
