"""Speedup module (thesis 6.7): masks -> a physically smaller model, through NNI's ``ModelSpeedup``.

Any NNI pruner's masks work here, ours included. The compat layer (applied by
:func:`speedup_model`) is what lets NNI 3.0's tracer run on current PyTorch.

:func:`speedup_model` adds to NNI's ``ModelSpeedup``:

* checks before the speed-up, each raising ``ValueError`` that names the layer: masks that
  name layers the model lacks, masks on layers with tied (shared) parameters, target a parameter the layer does not have (e.g. a ReLU's
  ``weight``) or have another shape; NaN/Inf parameters or buffers; layers whose (masked)
  weights are all zero (every channel masked, or an all-zero layer); layers that output a
  single value per sample (NNI cannot propagate masks through them); empty masks; weights
  on the ``meta`` device;
* Conv3d / BatchNorm3d replacement (:mod:`nni_topo_pruner.replacers`), which NNI lacks;
* float16 / bfloat16 models (sped up in float32 and cast back), float64 models (kept
  float64), ``torch.compile``\\ d models (their original module is sped up and returned) and
  ``DataParallel`` models (their ``.module`` is sped up); masks keyed by the wrapper's names
  (``_orig_mod.*``, ``module.*``) are accepted;
* checks after the speed-up: a layer with masked channels that kept its size is an error, and
  so is a model that no longer runs on ``dummy_input``.

Example
-------
>>> import torch
>>> from nni.compression.pruning import L1NormPruner
>>> from nni_topo_pruner.speedup import speedup_model
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
>>> pruner = L1NormPruner(model, [{'op_names': ['0'], 'sparse_ratio': 0.5}])
>>> _, masks = pruner.compress(); pruner.unwrap_model()
>>> import contextlib, io
>>> with contextlib.redirect_stdout(io.StringIO()):  # NNI prints '0 Filter' while resolving mask conflicts
...     model = speedup_model(model, torch.rand(1, 3, 16, 16), masks)
>>> model[0].out_channels
4
"""
from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from . import compat
from .checks import check_materialised
from .masks_io import Masks
from .tied import check_no_tied_targets

_logger = logging.getLogger(__name__)

#: floating dtypes that NNI 3.0's ModelSpeedup cannot propagate; sped up in float32 and cast back
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def speedup_model(model: torch.nn.Module, dummy_input: Any, masks: Union[Masks, str, Path],
                  **speedup_options: Any) -> torch.nn.Module:
    """Replace masked channels by physically smaller layers, in place; returns the model.

    ``model`` must be unwrapped (``pruner.unwrap_model()``) first. ``masks`` is NNI's
    ``{layer_name: {'weight': Tensor, 'bias': Tensor}}`` or a file saved by
    :func:`nni_topo_pruner.masks_io.save_masks`. Extra keyword arguments go to
    ``nni.compression.speedup.ModelSpeedup`` (``customized_replacers`` run before ours).

    A ``torch.compile``\\ d model: its original module (``model._orig_mod``) is sped up and
    returned, uncompiled (compile the result again). A ``DataParallel`` /
    ``DistributedDataParallel`` model: its ``.module`` is sped up in place and the wrapper
    returned. Masks computed on the wrapper (keys ``_orig_mod.*`` / ``module.*``) and on the
    wrapped module are both accepted. A float16 / bfloat16 model is sped up in float32 and cast
    back; a float64 model stays float64. Raises ``ValueError`` naming the layer for the problems
    listed in the module docstring; the model is left untouched by a check that fails before
    the speed-up. After the speed-up the model runs once on ``dummy_input``; a model that no
    longer runs (channels tied by an add that NNI's dependency groups did not cover) is an error.
    """
    from nni.compression.speedup import ModelSpeedup

    from .replacers import extra_replacers

    compat.apply()  # idempotent: ModelSpeedup's tracer needs the patches
    model, returned, prefixes = _unwrap(model)
    if any(type(m).__name__.endswith("ModuleWrapper") for m in model.modules()):
        raise ValueError("model is still wrapped by an NNI pruner: call pruner.unwrap_model() before speedup_model()")
    check_materialised(model)
    if isinstance(masks, (str, Path)):
        from .masks_io import load_masks

        masks = load_masks(masks)
    if isinstance(masks, Mapping) and not masks:
        raise ValueError("masks are empty ({}): there is nothing to speed up. Did the pruner's config list select no "
                         "layer? op_types are class names, case-sensitive ('Conv2d', not 'conv2d'), and op_names "
                         "must name the model's layers; fix the config list and prune again")
    masks = _strip_prefixes(masks, prefixes)
    check_masks(model, masks)
    check_no_tied_targets(model, list(masks))
    dtype = _speedup_dtype(model)
    was_training = model.training
    batch_dim = speedup_options.get("batch_dim", 0)
    replacers = [*(speedup_options.pop("customized_replacers", None) or []), extra_replacers()]
    run_error: Optional[BaseException] = None
    default_dtype = torch.get_default_dtype()
    try:
        model.eval()
        if dtype in _LOW_PRECISION:
            _logger.info("speedup_model: %s model sped up in float32, then cast back", dtype)
            model.float()
            dummy_input = _to_float32(dummy_input)
            masks = {name: {target: mask.float() if isinstance(mask, torch.Tensor) and mask.is_floating_point()
                            else mask for target, mask in targets.items()} for name, targets in masks.items()}
        elif dtype is not None:
            torch.set_default_dtype(dtype)  # NNI builds the replacement layers in the default dtype
        check_before_speedup(model, dummy_input, masks, batch_dim=batch_dim)
        widths = masked_channels(model, masks)
        ModelSpeedup(model, dummy_input, dict(masks), customized_replacers=replacers, **speedup_options).speedup_model()
        torch.set_default_dtype(default_dtype)
        model.eval()  # NNI builds replacement layers in training mode: the check must not update BN statistics
        run_error = _run_error(model, dummy_input)
    finally:
        torch.set_default_dtype(default_dtype)
        if dtype in _LOW_PRECISION:
            model.to(dtype)
        model.train(was_training)
    check_after_speedup(model, widths)
    if run_error is not None:
        raise ValueError(f"the sped-up model cannot run on dummy_input ({type(run_error).__name__}: {run_error}). "
                         f"NNI's ModelSpeedup shrank a layer whose channels are tied to a tensor it did not shrink "
                         f"(e.g. a residual add or a concat of a pruned layer with the network input or with an "
                         f"unpruned layer). Give such layers one mask with dependency groups before pruning "
                         f"(nni.compression.utils.auto_set_denpendency_group_ids(model, config_list, dummy_input)), "
                         f"or exclude them from the config list; the model was changed in place, so reload it "
                         f"before trying again") from run_error
    return returned


# ---------------------------------------------------------------------------------------
# model preparation
# ---------------------------------------------------------------------------------------

_PARALLEL = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)


def _unwrap(model: torch.nn.Module) -> Tuple[torch.nn.Module, torch.nn.Module, Tuple[str, ...]]:
    """``(module to speed up, module to return, prefixes its wrappers add to layer names)``.

    NNI's tracer traces neither a ``torch.compile``\\ d model (its original module is sped up
    and returned uncompiled) nor ``DataParallel`` / ``DistributedDataParallel`` (their
    ``.module`` is sped up in place, so the wrapper stays valid and is returned).
    """
    returned, prefixes = model, []
    while True:
        original = getattr(model, "_orig_mod", None)
        if isinstance(original, torch.nn.Module):
            _logger.warning("speedup_model: %s is a torch.compile'd model; its original module is sped up and "
                            "returned uncompiled: call torch.compile on the result again", type(original).__name__)
            model = returned = original
            prefixes.append("_orig_mod.")
        elif isinstance(model, _PARALLEL):
            model = model.module
            prefixes.append("module.")
        else:
            return model, returned, tuple(prefixes)


def _strip_prefixes(masks: Any, prefixes: Tuple[str, ...]) -> Any:
    """Mask keys of a wrapper (``_orig_mod.0``, ``module.0``) as the wrapped module's (``0``)."""
    if not prefixes or not isinstance(masks, Mapping):
        return masks
    renamed: Dict[str, Any] = {}
    for name, targets in masks.items():
        key = str(name)
        for prefix in prefixes:
            key = key[len(prefix):] if key.startswith(prefix) else key
        if key in renamed:
            raise ValueError(f"masks name layer {key!r} twice (once as {name!r}, the name under the model's "
                             f"torch.compile / DataParallel wrapper): keep one of the two")
        renamed[key] = targets
    return renamed


def _speedup_dtype(model: torch.nn.Module) -> Optional[torch.dtype]:
    """The model's floating dtype when it is not float32 (None for float32 or no floats).

    float16 / bfloat16 are sped up in float32 and cast back; other dtypes (float64) are sped up
    with that dtype as torch's default, so NNI's replacement layers keep it.
    """
    dtypes = {t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()}
    low = dtypes & set(_LOW_PRECISION)
    if low and len(dtypes) > 1:
        raise ValueError(f"speedup_model: the model mixes floating dtypes {sorted(map(str, dtypes))}; NNI's "
                         f"ModelSpeedup cannot propagate masks through float16/bfloat16 layers, and speedup_model "
                         f"can only cast a model of one dtype to float32 and back. Cast it to one dtype first "
                         f"(e.g. model.float()), speed it up, then cast the layers you want back")
    if len(dtypes) != 1 or torch.float32 in dtypes:
        return None
    return dtypes.pop()


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    if isinstance(value, list):
        return [_to_float32(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


def _run(model: torch.nn.Module, dummy_input: Any) -> Any:
    if isinstance(dummy_input, dict):
        return model(**dummy_input)
    if isinstance(dummy_input, (tuple, list)):
        return model(*dummy_input)
    return model(dummy_input)


def _run_error(model: torch.nn.Module, dummy_input: Any) -> Optional[BaseException]:
    """The error of one forward pass of ``model`` on ``dummy_input``, or None when it runs."""
    try:
        with torch.no_grad():
            _run(model, dummy_input)
    except Exception as error:  # noqa: BLE001 - any failure means the sped-up model is unusable
        return error
    return None


def _out_channels(module: torch.nn.Module) -> Optional[int]:
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() > 0 else None


def masked_channels(model: torch.nn.Module, masks: Masks) -> Dict[str, Tuple[int, int]]:
    """``{layer: (output channels masked to zero, output channels)}`` for the layers whose weight mask removes some."""
    found: Dict[str, Tuple[int, int]] = {}
    for name, targets in masks.items():
        mask = targets.get("weight")
        width = _out_channels(model.get_submodule(name))
        if mask is None or width is None or mask.dim() < 2:
            continue
        masked = int((mask.reshape(mask.shape[0], -1) == 0).all(dim=1).sum())
        if masked:
            found[name] = (masked, width)
    return found


# ---------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------

def _suggest(name: str, names: List[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    if close:
        return f"did you mean {', '.join(map(repr, close))}?"
    return f"the model's layers with weights are: {', '.join(map(repr, names[:12]))}{' ...' if len(names) > 12 else ''}"


def check_masks(model: torch.nn.Module, masks: Masks) -> None:
    """Raise ``ValueError`` unless every mask names a layer of ``model``, a parameter it has, and its shape.

    NNI's ``ModelSpeedup`` ignores masks on names the model lacks and applies masks on
    weightless modules (Identity, ReLU) silently; masks made for another model must fail here.
    NNI's activation masks (targets ``_input_*`` / ``_output_*``) are not checked.
    """
    if not isinstance(masks, Mapping):
        raise ValueError(f"masks must be a mapping {{layer_name: {{'weight': Tensor, ...}}}}, got {type(masks).__name__}")
    modules = dict(model.named_modules())
    weighted = [name for name, module in modules.items()
                if name and isinstance(getattr(module, "weight", None), torch.Tensor)]
    for name, targets in masks.items():
        if name not in modules:
            raise ValueError(f"masks name layer {name!r}, which the model does not have ({_suggest(name, weighted)}); "
                             f"were the masks made for another model? Compute them on this model or rename their keys")
        if not isinstance(targets, Mapping):
            raise ValueError(f"masks[{name!r}] must map a parameter name to a Tensor, got {type(targets).__name__}")
        module = modules[name]
        for target, mask in targets.items():
            if mask is None or str(target).startswith(("_input_", "_output_")):
                continue  # None: a bias-free layer's bias (NNI pruners emit it)
            if not isinstance(mask, torch.Tensor):
                raise ValueError(f"mask {name}.{target} is a {type(mask).__name__}, not a Tensor")
            param = getattr(module, target, None)
            if not isinstance(param, torch.Tensor):
                raise ValueError(f"mask {name}.{target}: layer {name!r} ({type(module).__name__}) has no parameter "
                                 f"{target!r}, so the mask prunes nothing; masks must target layers with weights "
                                 f"({_suggest(name, weighted)}). Were the masks made for another model?")
            if tuple(mask.shape) != tuple(param.shape):
                raise ValueError(f"mask {name}.{target} has shape {tuple(mask.shape)} but layer {name!r} "
                                 f"({type(module).__name__}) has {target} of shape {tuple(param.shape)}: the masks "
                                 f"were made for another model (or another width); compute them on this model")


def check_before_speedup(model: torch.nn.Module, dummy_input: Any, masks: Masks, *, batch_dim: int = 0) -> None:
    """Raise ``ValueError`` naming the layer for what NNI's speed-up would crash on, obscurely.

    * a NaN/Inf parameter or buffer (NNI: ``RuntimeError: from is out of bounds for float``);
    * a layer whose weight, times its mask, is all zero: every channel masked, or an all-zero
      layer (NNI treats channels whose output is the same for every input as pruned:
      ``EmptyLayerError`` or ``AttributeError: 'NoneType' object has no attribute 'data'``);
    * a layer that outputs one value per sample, e.g. ``Linear(n, 1)`` (NNI skips tensors of
      at most ``batch_size`` elements: ``TypeError: rand_like(): ... NoneType``).
    """
    for module_name, module in model.named_modules():
        for tensor_name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"layer {module_name!r} ({type(module).__name__}): {tensor_name} holds NaN or Inf "
                                 f"values; NNI's ModelSpeedup cannot propagate masks through it (RuntimeError: from "
                                 f"is out of bounds for float). Repair the weights (retrain, reload a checkpoint, or "
                                 f"torch.nan_to_num_) before pruning")
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or weight.numel() == 0:
            continue
        mask = masks.get(module_name, {}).get("weight")
        effective = weight.detach() if mask is None else weight.detach() * mask.to(weight.device, weight.dtype)
        if bool((effective == 0).all()):
            if mask is not None and bool((mask == 0).all()):
                raise ValueError(f"the masks remove every output channel of layer {module_name!r} "
                                 f"({type(module).__name__}): NNI cannot speed up an empty layer (EmptyLayerError). "
                                 f"Lower its sparse_ratio (or set max_sparse_ratio < 1) or exclude it from the "
                                 f"config list")
            raise ValueError(f"layer {module_name!r} ({type(module).__name__}) has all-zero weights{' after masking' if mask is not None else ''}: "
                             f"its output is the same for every input, and NNI's ModelSpeedup treats such channels "
                             f"as pruned and empties the layer (EmptyLayerError). Initialise or train the layer "
                             f"(or remove it from the model) before speeding up")
    single: List[str] = []

    def hook(module: torch.nn.Module, _inputs: Any, output: Any, name: str = "") -> None:
        if (isinstance(output, torch.Tensor) and output.dim() > batch_dim
                and output.numel() == output.shape[batch_dim] and not single):
            single.append(f"{name!r} ({type(module).__name__}, output shape {tuple(output.shape)})")

    handles = [module.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name))
               for name, module in model.named_modules()
               if name and not list(module.children()) and any(True for _ in module.parameters(recurse=False))]
    try:
        with torch.no_grad():
            _run(model, dummy_input)
    finally:
        for handle in handles:
            handle.remove()
    if single:
        raise ValueError(f"layer {single[0]} outputs a single value per sample; NNI 3.0's ModelSpeedup ignores "
                         f"tensors of one value per sample and crashes after it (TypeError: rand_like(): ... "
                         f"NoneType). Speed up the part of the model before this layer, or widen the layer")


def check_after_speedup(model: torch.nn.Module, masked: Mapping[str, Tuple[int, int]]) -> None:
    """Raise ``ValueError`` for a layer with masked output channels that kept its size.

    ``masked`` is :func:`masked_channels` of the model and masks before the speed-up.
    """
    from .replacers import replaceable_types

    for name, (count, width) in masked.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if _out_channels(module) != width:
            continue
        kind = type(module).__name__
        if kind not in replaceable_types():
            why = (f"NNI's ModelSpeedup cannot replace {kind} (it logs 'Has not supported replacing module with "
                   f"type: {kind}'): exclude {kind} layers from the config list, or pass a Replacer for it in "
                   f"customized_replacers")
        else:
            why = ("NNI's mask-conflict resolution restored its channels (layers joined by an add, a concat or a "
                   "grouped convolution had different masks): set dependency groups with "
                   "nni.compression.utils.auto_set_denpendency_group_ids(model, config_list, dummy_input) before "
                   "pruning")
        raise ValueError(f"layer {name!r} ({kind}) has {count} of {width} output channels masked to zero but kept "
                         f"all {width} after the speed-up: {why}")
