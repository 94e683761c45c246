"""Benchmark configuration: presets, ``key=value`` overrides, validation and cache keys.

Example
-------
>>> config = preset_config("smoke")
>>> config = apply_overrides(config, ["finetune_epochs=3", "sparsities=0.3,0.7"])
>>> config.finetune_epochs, config.sparsities
(3, [0.3, 0.7])
>>> apply_overrides(config, ["no_such_key=1"])
Traceback (most recent call last):
...
ValueError: unknown config key 'no_such_key' in --set no_such_key=1; known keys: ...
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Sequence, Tuple, TypeVar

# Bump when the training/measurement recipe changes in a way that invalidates cached results.
RECIPE_VERSION = 1

DEFAULT_PRUNERS = ["l1", "l2", "fpgm", "topological", "random"]
#: per-layer sparse ratios: all at the run's sparsity, or allocated by nni_topo_pruner.allocation
ALLOCATIONS = ("uniform", "topological")

PRECISIONS = ("fp32", "bf16")
AUGMENTATIONS = ("per_image", "batched")
BASELINE_SCHEDULES = ("cosine", "onecycle")
#: training fields whose default leaves every key as it was before they existed (old caches and
#: records stay valid); a non-default value enters the baseline and run keys
TRAINING_RECIPE_DEFAULTS: Dict[str, Any] = {"nesterov": False, "label_smoothing": 0.0, "precision": "fp32",
                                            "channels_last": False, "augmentation": "per_image"}

# Who prunes: NNI (masks + ModelSpeedup) or Torch-Pruning (importance + DepGraph); see benchmarks.grid.backends.
BACKENDS = ("nni", "torch-pruning")
#: when the masks are made: once before fine-tuning, or by NNI's AGPPruner / LinearPruner during it
#: (benchmarks.grid.gradual); 'oneshot' leaves every key as it was before schedules existed
PRUNING_SCHEDULES = ("oneshot", "agp", "linear")

C = TypeVar("C")  # a config dataclass


def _option(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class BenchmarkConfig:
    """Every knob of a benchmark run; presets fill it, ``--set key=value`` overrides any field."""

    # data
    data: str = _option("auto", "'auto' (../shared/data/cifar10.npz next to the repo, else the subset "
                                "cifar10_subset.npz beside it), 'subset' (cifar10_subset.npz only), 'cifar10:ROOT' "
                                "(torchvision CIFAR-10, downloaded into ROOT) or a path to an .npz")
    train_size: int = _option(0, "training images to use (a fixed random subset); 0 = all")
    test_size: int = _option(0, "test images to use (a fixed random subset); 0 = all")
    # model
    width: float = _option(1.0, "VGG-16 width multiplier (1.0 = 64...512 channels)")
    # baseline training (trained once, cached by its config)
    baseline_epochs: int = _option(30, "epochs of baseline training")
    baseline_lr: float = _option(0.05, "baseline SGD learning rate (cosine schedule)")
    baseline_seed: int = _option(0, "seed of the baseline training")
    batch_size: int = _option(64, "training batch size (baseline and fine-tuning)")
    momentum: float = _option(0.9, "SGD momentum")
    weight_decay: float = _option(5e-4, "SGD weight decay")
    nesterov: bool = _option(False, "Nesterov momentum (baseline, fine-tuning and Scratch-E)")
    baseline_schedule: str = _option("cosine", "baseline learning-rate schedule: 'cosine' (per epoch, from "
                                               "baseline_lr to 0) or 'onecycle' (per batch, warm-up to baseline_lr "
                                               "then cosine down)")
    label_smoothing: float = _option(0.0, "label smoothing of the training loss (baseline, fine-tuning, Scratch-E)")
    # how training runs on the machine (they change the arithmetic, so they are part of the keys when set)
    precision: str = _option("fp32", "training arithmetic: 'fp32' or 'bf16' (autocast; evaluation stays fp32)")
    channels_last: bool = _option(False, "NHWC memory format for training (faster oneDNN convolutions on CPU)")
    augmentation: str = _option("per_image", "'per_image' (torchvision v2 transforms per image, DataLoader) or "
                                             "'batched' (the same crop + flip drawn per batch on uint8 tensors; "
                                             "benchmarks/results/cpu_throughput)")
    # pruning
    pruners: List[str] = _option(DEFAULT_PRUNERS, "pruner names from nni_topo_pruner.registry, or LABEL=NAME to run "
                                                   "a registry pruner under a label of its own (variants with "
                                                   "their own pruner_options, e.g. topo_w2=topological)")
    sparsities: List[float] = _option([0.5], "sparse ratios, each in (0, 1)")
    seeds: List[int] = _option([0, 1, 2], "seeds; one record per pruner x sparsity x seed")
    op_types: List[str] = _option(["Conv2d"], "layer types in the NNI config list")
    pruner_options: Dict[str, Dict[str, Any]] = _option(
        {}, "JSON {pruner: {option: value}} passed to the pruner's constructor")
    backend: str = _option("nni", "who prunes: 'nni' (the registry pruner's masks, then NNI ModelSpeedup) or "
                                  "'torch-pruning' (Torch-Pruning's BasePruner with the matching importance, "
                                  "the same per-layer counts; see benchmarks/grid/backends.py)")
    allocation: str = _option("uniform", "per-layer sparse ratios: 'uniform' (every layer at the run's sparsity) or "
                                         "'topological' (nni_topo_pruner.allocation: the uniform list's FLOPs budget "
                                         "shared out by how far each layer's diagram moves; the same ratios for "
                                         "every pruner, so random at those ratios is the matched control)")
    calibration_size: int = _option(256, "training images given to data-dependent pruners")
    bn_batches: int = _option(16, "batches (of batch_size training images, no augmentation unless bn_augmented) "
                                  "over which BatchNorm statistics are re-estimated after pruning, before any weight "
                                  "update (adaptive BN); 0 = off")
    bn_augmented: bool = _option(False, "re-estimate BatchNorm (after one-shot pruning; a schedule's final_bn) on the "
                                        "same bn_batches batches with the training augmentation (random crop, flip): "
                                        "un-augmented images cost a trained network 0.7-1.1 points "
                                        "(benchmarks/results/bn_reestimation); needs bn_batches >= 1")
    # fine-tuning
    finetune_epochs: int = _option(8, "fine-tuning budget in epochs (recoverability is measured after it)")
    finetune_lr: float = _option(0.01, "fine-tuning SGD learning rate (cosine schedule)")
    convergence_tolerance: float = _option(0.01, "converged = test accuracy within this of the unpruned model")
    schedule: str = _option("oneshot", "when the masks are made: 'oneshot' (prune the baseline once, then fine-tune "
                                       "for finetune_epochs) or 'agp' / 'linear' (NNI's AGPPruner / LinearPruner "
                                       "around the pruner: schedule_steps mask updates during the same "
                                       "finetune_epochs of training from the baseline, then the speed-up; "
                                       "benchmarks/grid/gradual.py, backend 'nni' only)")
    schedule_steps: int = _option(5, "mask updates of schedule 'agp' / 'linear' (NNI's total_times), one every "
                                     "(finetune_epochs x batches per epoch) // (schedule_steps + 1) optimizer steps, "
                                     "so the last one leaves at least that many steps at the final sparsity; "
                                     "ignored by 'oneshot'")
    batchnorm_masks: bool = _option(False, "under 'agp' / 'linear': also mask the BatchNorm after each pruned "
                                           "layer with its channels (nni_topo_pruner.with_batchnorm_masks), so that "
                                           "the masked model trained is the one the speed-up keeps; refused with "
                                           "'oneshot' (its speed-up comes before any training)")
    final_bn: bool = _option(True, "under 'agp' / 'linear': re-estimate BatchNorm once after the speed-up (bn_batches "
                                   "batches, as one-shot gets after its pruning); false keeps the statistics training "
                                   "left (with batchnorm_masks the speed-up changes nothing for them to repair); "
                                   "refused with 'oneshot'")
    scratch_e: List[str] = _option([], "pruner labels whose pruned architecture is also re-initialised and trained "
                                       "from scratch for baseline_epochs + finetune_epochs epochs (Scratch-E rows "
                                       "'scratch_e:LABEL', Liu et al. ICLR 2019); default none")
    # measurement
    eval_batch_size: int = _option(256, "batch size for test accuracy and calibration batches")
    latency_batch_size: int = _option(1, "batch size of the latency measurement")
    latency_warmup: int = _option(5, "untimed forward passes before timing")
    latency_repeats: int = _option(30, "timed forward passes (the median is reported)")
    # execution
    device: str = _option("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'")
    num_threads: int = _option(0, "torch intra-op threads; 0 = torch's default (honours OMP_NUM_THREADS)")
    num_workers: int = _option(0, "DataLoader worker processes for training batches")
    cache_dir: str = _option("", "baseline cache directory; '' = <repo>/benchmarks/cache")
    # per-record resource requests of --executor ray (not part of any cache key: they do not change results
    # when num_threads is set; otherwise a Ray task runs max(1, floor(ray_num_cpus)) torch threads)
    ray_num_cpus: float = _option(1.0, "CPUs each Ray task requests (--executor ray)")
    ray_num_gpus: float = _option(0.0, "GPUs each Ray task requests (--executor ray; fractions share a GPU)")

    def config_list(self, sparsity: float) -> List[Dict[str, Any]]:
        """The NNI config list every pruner gets at ``sparsity``."""
        return [{"op_types": list(self.op_types), "sparse_ratio": float(sparsity)}]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: Dict[str, Dict[str, Any]] = {
    # Tiny width and data: every step end to end in well under 3 minutes on a 2-core CPU.
    "smoke": dict(data="subset", width=0.125, train_size=1024, test_size=512, baseline_epochs=6, baseline_lr=0.05,
                  batch_size=64, finetune_epochs=2, seeds=[0, 1], sparsities=[0.5], calibration_size=64, bn_batches=4,
                  latency_warmup=2, latency_repeats=5, eval_batch_size=256),
    # Full-width VGG-16 on the offline subset (5170 train / 1017 test images).
    # 12 fine-tuning epochs: the shortest budget measured at which the curves end flat at 0.7
    # (docs/benchmarks.md, "The fine-tuning budget of cpu"). Measured on the 2-core dev machine:
    # baseline ~65 min once (cached); a fine-tuning epoch takes ~66 s at 0.3, ~34 s at 0.5 and
    # ~19 s at 0.7 on a free machine -> 45 pruner records in about 6 h (with --set scratch_e=topological,
    # 9 Scratch-E records of 32 epochs, about 3 h more).
    "cpu": dict(data="subset", width=1.0, train_size=0, test_size=0, baseline_epochs=20, baseline_lr=0.02,
                batch_size=64, finetune_epochs=12, seeds=[0, 1, 2], sparsities=[0.3, 0.5, 0.7],
                calibration_size=256, latency_warmup=5, latency_repeats=30),
    # The whole CIFAR-10 (50,000 / 10,000; ../shared/data/cifar10.npz offline) on the 2-core CPU, with the
    # fastest recipe measured in benchmarks/results/cpu_throughput: batched uint8 augmentation, bf16
    # autocast, channels_last, batch 128; a one-cycle schedule, Nesterov SGD and label smoothing 0.1
    # to reach a published-level baseline (>= 92%) in 30 epochs (docs/benchmarks.md, "The full preset").
    "full": dict(data="auto", width=1.0, train_size=0, test_size=0, baseline_epochs=30, baseline_lr=0.1,
                 baseline_schedule="onecycle", batch_size=128, nesterov=True, label_smoothing=0.1,
                 precision="bf16", channels_last=True, augmentation="batched", finetune_epochs=4,
                 finetune_lr=0.01, seeds=[0, 1, 2], sparsities=[0.3, 0.5, 0.7], calibration_size=256,
                 eval_batch_size=500, latency_warmup=5, latency_repeats=30),
    # Full CIFAR-10 at thesis scale, for a GPU (never run here: the dev machine has none).
    "paper": dict(data="cifar10:data/cifar10", width=1.0, train_size=0, test_size=0, baseline_epochs=160,
                  baseline_lr=0.05, batch_size=128, finetune_epochs=40, finetune_lr=0.01, seeds=[0, 1, 2],
                  sparsities=[0.3, 0.5, 0.7], calibration_size=512, latency_warmup=20, latency_repeats=200,
                  eval_batch_size=1000, num_workers=4, ray_num_cpus=5, ray_num_gpus=1),  # 4 loader workers + 1
}


def preset_config(name: str) -> BenchmarkConfig:
    """The configuration of preset ``name`` (``smoke``, ``cpu`` or ``paper``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return BenchmarkConfig(**PRESETS[name])


def config_keys() -> List[str]:
    return [f.name for f in dataclasses.fields(BenchmarkConfig)]


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parse_scalar(kind: type, text: str, key: str) -> Any:
    try:
        if kind is bool:
            return _BOOL_WORDS[text.strip().lower()]
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except (ValueError, KeyError):
        raise ValueError(f"--set {key}={text}: expected {kind.__name__}, got {text!r}") from None


def parse_value(key: str, text: str, config_class: type = BenchmarkConfig) -> Any:
    """Parse the text of ``--set key=text`` into the type of field ``key`` of ``config_class``
    (any dataclass of ``int`` / ``float`` / ``bool`` / ``str`` / list / dict fields).

    Lists take comma-separated items or a JSON list; dicts take JSON.
    """
    hints = typing.get_type_hints(config_class)
    if key not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(config_class))
        raise ValueError(f"unknown config key {key!r}; known keys: {known}")
    hint = hints[key]
    origin = typing.get_origin(hint)
    if origin is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--set {key}=...: expected a JSON object, e.g. "
                             f"{key}='{{\"topological\": {{\"seed\": 0}}}}' ({error})") from None
        if not isinstance(value, dict):
            raise ValueError(f"--set {key}=...: expected a JSON object, got {type(value).__name__}")
        return value
    if origin is list:
        (item_kind,) = typing.get_args(hint)
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                items = [str(item) for item in json.loads(stripped)]
            except json.JSONDecodeError as error:
                raise ValueError(f"--set {key}={text}: invalid JSON list ({error})") from None
        else:
            items = [item.strip() for item in stripped.split(",") if item.strip()]
        return [_parse_scalar(item_kind, item, key) for item in items]
    return _parse_scalar(hint, text, key)


def apply_overrides(config: C, assignments: Iterable[str]) -> C:
    """Return a copy of ``config`` (a :class:`BenchmarkConfig` or any other dataclass of plain
    fields, e.g. an experiment's) with each ``key=value`` applied (see :func:`parse_value`)."""
    keys = [f.name for f in dataclasses.fields(config)]
    changes: Dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        if key not in keys:
            raise ValueError(f"unknown config key {key!r} in --set {assignment}; known keys: {', '.join(keys)}")
        changes[key] = parse_value(key, text, type(config))
    return dataclasses.replace(config, **changes)


def pruner_spec(spec: str) -> Tuple[str, str]:
    """``(label, registry name)`` of an entry of ``pruners``: ``"l1"`` -> ``("l1", "l1")``,
    ``"topo_w2=topological"`` -> ``("topo_w2", "topological")``; labels are lower case.

    >>> pruner_spec("Topo_W2 = topological")
    ('topo_w2', 'topological')
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"pruners: each entry must be a pruner name or LABEL=NAME, got {spec!r}")
    label, sep, name = spec.partition("=")
    label, name = label.strip().lower(), (name if sep else label).strip()
    if not label or not name or not all(c.isalnum() or c in "_-." for c in label):
        raise ValueError(f"pruners: {spec!r} is not a pruner name or LABEL=NAME (labels use letters, digits, "
                         f"'_', '-' and '.')")
    return label, name


def _known_pruner(name: str) -> None:
    from nni_topo_pruner.registry import get_pruner

    try:
        get_pruner(name)
    except ValueError:
        raise  # unknown name: the registry's message lists the known ones
    except Exception:  # noqa: BLE001 - a known name whose module fails to import fails its runs, recorded
        pass


def _check_op_types(op_types: Sequence[str]) -> None:
    """Every entry names a layer class of ``torch.nn`` (exactly: NNI matches type names by case),
    so a typo stops the run here instead of failing every record."""
    import torch

    layers = {name for name in dir(torch.nn) if isinstance(getattr(torch.nn, name), type)
              and issubclass(getattr(torch.nn, name), torch.nn.Module)}
    for name in op_types:
        if name not in layers:
            close = [layer for layer in sorted(layers) if layer.lower() == str(name).lower()]
            hint = f"; did you mean {close[0]!r}?" if close else " (a torch.nn layer class name, e.g. Conv2d, Linear)"
            raise ValueError(f"op_types: {name!r} is not a torch.nn layer type{hint}")


def _is_registered(name: str) -> bool:
    from nni_topo_pruner.registry import get_pruner

    try:
        get_pruner(name)
    except ValueError:
        return False
    except Exception:  # noqa: BLE001 - registered, but its module fails to import
        return True
    return True


def validate(config: BenchmarkConfig) -> BenchmarkConfig:
    """Check every field; raise ``ValueError`` naming the key and the fix."""

    def positive_int(key: str, allow_zero: bool = False) -> None:
        value = getattr(config, key)
        low = 0 if allow_zero else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key} must be an int >= {low}, got {value!r}")

    def positive_float(key: str) -> None:
        value = getattr(config, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
            raise ValueError(f"{key} must be a positive finite number, got {value!r}")

    for key in ("baseline_epochs", "batch_size", "eval_batch_size", "latency_batch_size",
                "latency_repeats", "calibration_size"):
        positive_int(key)
    for key in ("train_size", "test_size", "finetune_epochs", "latency_warmup", "num_threads",
                "num_workers", "baseline_seed", "bn_batches"):
        positive_int(key, allow_zero=True)
    for key in ("width", "baseline_lr", "finetune_lr"):
        positive_float(key)
    for key in ("momentum", "weight_decay", "convergence_tolerance"):
        value = getattr(config, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    if not config.pruners:
        raise ValueError("pruners must name at least one pruner, e.g. --pruners l1,random")
    specs = [pruner_spec(spec) for spec in config.pruners]
    lowered = [label for label, _ in specs]
    if len(set(lowered)) != len(lowered):
        raise ValueError(f"pruners lists a name twice: {config.pruners}")
    for label, name in specs:
        _known_pruner(name)
        if label != name.lower() and _is_registered(label):
            raise ValueError(f"pruners: the label {label!r} in {label}={name} is the name of another registered pruner; "
                             f"a report would credit {name}'s records to {label} (e.g. as the random control). "
                             f"Choose a label of its own, e.g. {label}_{name.lower()}={name}")
    by_label: Dict[str, List[str]] = {}
    for name in config.pruner_options:
        by_label.setdefault(name.lower(), []).append(name)
    for label, names in by_label.items():
        if len(names) > 1:
            raise ValueError(f"pruner_options names pruner {label!r} twice ({', '.join(map(repr, names))}): keys are "
                             f"matched case-insensitively, so one would be dropped; merge them into one key")
    unknown_options = sorted({name.lower() for name in config.pruner_options} - set(lowered))
    if unknown_options:
        raise ValueError(f"pruner_options names pruner(s) {unknown_options} that are not in pruners {config.pruners}")
    for name, options in config.pruner_options.items():
        if not isinstance(options, dict):
            raise ValueError(f"pruner_options[{name!r}] must be a mapping of keyword arguments, got {options!r}")
    if not config.sparsities:
        raise ValueError("sparsities must hold at least one value in (0, 1), e.g. --sparsities 0.5")
    for value in config.sparsities:
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"sparsities: each value must lie strictly between 0 and 1, got {value!r}")
    if len(set(config.sparsities)) != len(config.sparsities):
        raise ValueError(f"sparsities lists a value twice: {config.sparsities}")
    if not config.seeds:
        raise ValueError("seeds must hold at least one int, e.g. --seeds 0,1,2")
    for value in config.seeds:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"seeds: each seed must be an int >= 0, got {value!r}")
    if len(set(config.seeds)) != len(config.seeds):
        raise ValueError(f"seeds lists a seed twice: {config.seeds}")
    if not config.op_types:
        raise ValueError("op_types must name at least one layer type, e.g. Conv2d")
    _check_op_types(config.op_types)
    unknown_scratch = sorted({label.lower() for label in config.scratch_e} - set(lowered))
    if unknown_scratch:
        raise ValueError(f"scratch_e names pruner label(s) {unknown_scratch} that are not in pruners "
                         f"{[label for label, _ in specs]}; e.g. --set scratch_e=l1,random")
    if len(set(label.lower() for label in config.scratch_e)) != len(config.scratch_e):
        raise ValueError(f"scratch_e lists a label twice: {config.scratch_e}")
    for key in ("ray_num_cpus", "ray_num_gpus"):
        value = getattr(config, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    if config.ray_num_cpus == 0 and config.ray_num_gpus == 0:
        raise ValueError("ray_num_cpus and ray_num_gpus are both 0: a Ray task must request some resource, "
                         "e.g. --set ray_num_cpus=1")
    for key, choices in (("precision", PRECISIONS), ("augmentation", AUGMENTATIONS),
                         ("baseline_schedule", BASELINE_SCHEDULES)):
        if getattr(config, key) not in choices:
            raise ValueError(f"{key} must be one of {list(choices)}, got {getattr(config, key)!r}")
    for key in ("nesterov", "channels_last"):
        if not isinstance(getattr(config, key), bool):
            raise ValueError(f"{key} must be true or false, got {getattr(config, key)!r}")
    if not isinstance(config.label_smoothing, (int, float)) or isinstance(config.label_smoothing, bool) \
            or not 0 <= config.label_smoothing < 1:
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {config.label_smoothing!r}")
    _check_backend(config)
    _check_schedule(config)
    if config.allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {list(ALLOCATIONS)}, got {config.allocation!r}")
    if not (config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {config.device!r}")
    if config.device.startswith("cuda:"):
        import torch

        try:
            torch.device(config.device)
        except RuntimeError:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' with N a GPU index, "
                             f"got {config.device!r}") from None
    return config


def _check_backend(config: BenchmarkConfig) -> None:
    backend = getattr(config, "backend", "nni")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(repr(b) for b in BACKENDS)} (--backend or --set backend=...), "
                         f"got {backend!r}")


def schedulable(pruner_class: type) -> bool:
    """Whether NNI's ``AGPPruner`` / ``LinearPruner`` can drive ``pruner_class``: NNI's norm pruners
    (``_NormPruner``: level, l1, l2, fpgm) and ours (``nni_topo_pruner.scheduled.ScheduledMasks``),
    the pruners with the ``interval_steps`` / ``total_times`` trigger that ``_ComboPruner`` needs."""
    from nni.compression.pruning.basic_pruner import _NormPruner

    from nni_topo_pruner.scheduled import ScheduledMasks

    return isinstance(pruner_class, type) and issubclass(pruner_class, (_NormPruner, ScheduledMasks))


def _check_schedule(config: BenchmarkConfig) -> None:
    schedule = getattr(config, "schedule", "oneshot")
    if schedule not in PRUNING_SCHEDULES:
        raise ValueError(f"schedule must be one of {list(PRUNING_SCHEDULES)}, got {schedule!r}")
    steps = getattr(config, "schedule_steps", 1)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"schedule_steps must be an int >= 1, got {steps!r}")
    batchnorm_masks = getattr(config, "batchnorm_masks", False)
    if not isinstance(batchnorm_masks, bool):
        raise ValueError(f"batchnorm_masks must be true or false, got {batchnorm_masks!r}")
    final_bn = getattr(config, "final_bn", True)
    if not isinstance(final_bn, bool):
        raise ValueError(f"final_bn must be true or false, got {final_bn!r}")
    bn_augmented = getattr(config, "bn_augmented", False)
    if not isinstance(bn_augmented, bool):
        raise ValueError(f"bn_augmented must be true or false, got {bn_augmented!r}")
    if bn_augmented and not config.bn_batches:
        raise ValueError("bn_augmented=true chooses the images of the BatchNorm re-estimation, and bn_batches=0 "
                         "turns it off; set bn_batches >= 1 or drop bn_augmented")
    if schedule == "oneshot":
        if not final_bn:
            raise ValueError("final_bn=false changes only a schedule's last step ('agp' / 'linear'): one-shot's "
                             "BatchNorm re-estimation is bn_batches (bn_batches=0 turns it off); drop it or set "
                             "schedule=agp")
        if batchnorm_masks:
            raise ValueError("batchnorm_masks=true changes only what a schedule trains ('agp' / 'linear'): one-shot "
                             "removes the channels, BatchNorm included, before any training; drop it or set "
                             "schedule=agp")
        return
    if config.finetune_epochs < 1:
        raise ValueError(f"schedule={schedule!r} updates the masks during the finetune_epochs of training: "
                         f"finetune_epochs must be >= 1, got {config.finetune_epochs}")
    if getattr(config, "backend", "nni") != "nni":
        raise ValueError(f"schedule={schedule!r} runs NNI's {'AGPPruner' if schedule == 'agp' else 'LinearPruner'} "
                         f"and needs backend='nni', got backend={config.backend!r} (Torch-Pruning's iterative_steps "
                         f"is not benchmarked); use --backend nni or schedule=oneshot")
    from nni_topo_pruner.registry import get_pruner

    for spec in config.pruners:
        _, name = pruner_spec(spec)
        try:
            pruner_class = get_pruner(name)
        except Exception:  # noqa: BLE001 - a module that fails to import fails its runs, recorded
            continue
        if not schedulable(pruner_class):
            raise ValueError(f"pruners: {spec!r} ({pruner_class.__name__}) cannot run under schedule={schedule!r}: "
                             f"NNI's scheduled pruners drive only pruners with the interval_steps/total_times "
                             f"trigger (l1, l2, fpgm, level, topological, random, betti); drop it or use "
                             f"schedule=oneshot")


def schedule_key(config: BenchmarkConfig) -> Dict[str, Any]:
    """What a scheduled run adds to its key (``{}`` for 'oneshot': older keys stay as they were).

    >>> schedule_key(BenchmarkConfig())
    {}
    >>> schedule_key(BenchmarkConfig(schedule="agp", schedule_steps=4))
    {'schedule': {'kind': 'agp', 'total_times': 4, 'interval': 'budget // (total_times + 1)'}}
    """
    schedule = getattr(config, "schedule", "oneshot")
    if schedule == "oneshot":
        return {}
    return {"schedule": {"kind": schedule, "total_times": config.schedule_steps,
                         "interval": "budget // (total_times + 1)",
                         # only when set: records made before the option existed keep their keys
                         **({"batchnorm_masks": True} if getattr(config, "batchnorm_masks", False) else {}),
                         **({"final_bn": False} if not getattr(config, "final_bn", True) else {})}}


def stable_hash(payload: Any, length: int = 16) -> str:
    """Short SHA-256 of the canonical JSON of ``payload``."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


BASELINE_KEYS: Sequence[str] = ("width", "baseline_epochs", "baseline_lr", "baseline_seed", "batch_size",
                                "momentum", "weight_decay")


def baseline_key(config: BenchmarkConfig, data_sha256: str) -> Dict[str, Any]:
    """What the cached baseline depends on: the data's content, the model and the training recipe."""
    return {"recipe_version": RECIPE_VERSION, "model": "cifar_vgg16", "data_content_sha256": data_sha256,
            **{key: getattr(config, key) for key in BASELINE_KEYS},
            **({"baseline_schedule": config.baseline_schedule} if config.baseline_schedule != "cosine" else {}),
            **training_recipe(config)}


def training_recipe(config: BenchmarkConfig) -> Dict[str, Any]:
    """The training fields of ``config`` that differ from :data:`TRAINING_RECIPE_DEFAULTS`."""
    return {key: getattr(config, key) for key, default in TRAINING_RECIPE_DEFAULTS.items()
            if getattr(config, key) != default}


#: fields of BenchmarkConfig that enter no key, and why (tests/test_full_data.py checks every other
#: field changes the baseline key or a run key)
NOT_IN_KEYS: Dict[str, str] = {
    "data": "keyed through the content digest of the arrays it loads",
    "train_size": "keyed through the content digest of the arrays it keeps",
    "test_size": "keyed through the content digest of the arrays it keeps",
    "pruners": "the plan: each record's key names its pruner",
    "sparsities": "the plan: each record's key holds its sparsity",
    "seeds": "the plan: each record's key holds its seed",
    "scratch_e": "the plan: Scratch-E records have keys of their own",
    "convergence_tolerance": "render-time: convergence is recomputed from the stored curves at the run's tolerance",
    "eval_batch_size": "execution: evaluation in eval mode does not depend on the batch split",
    "device": "execution: where records run (the record's machine info says)",
    "num_threads": "execution",
    "num_workers": "execution",
    "cache_dir": "execution: where the baseline is cached",
    "ray_num_cpus": "execution (--executor ray)",
    "ray_num_gpus": "execution (--executor ray)",
}


def pruner_options_for(config: BenchmarkConfig, label: str) -> Dict[str, Any]:
    """``pruner_options`` of the pruner labelled ``label`` (keys compared case-insensitively)."""
    for key, options in config.pruner_options.items():
        if key.lower() == label.lower():
            return dict(options)
    return {}


def run_key(config: BenchmarkConfig, baseline_hash: str, pruner: str, sparsity: float, seed: int) -> Dict[str, Any]:
    """What one (pruner, sparsity, seed) record depends on; a changed key means the record is redone."""
    label, name = pruner_spec(pruner)
    return {"recipe_version": RECIPE_VERSION, "baseline": baseline_hash, "pruner": label, "pruner_name": name.lower(),
            "bn_batches": config.bn_batches,
            "sparsity": float(sparsity), "seed": int(seed), "config_list": config.config_list(sparsity),
            "pruner_options": pruner_options_for(config, label), "calibration_size": config.calibration_size,
            "finetune_epochs": config.finetune_epochs, "finetune_lr": config.finetune_lr,
            "batch_size": config.batch_size, "momentum": config.momentum, "weight_decay": config.weight_decay,
            "latency": [config.latency_batch_size, config.latency_warmup, config.latency_repeats],
            # only when not NNI: records made before backends existed keep their keys (and are reused)
            **({"backend": config.backend} if getattr(config, "backend", "nni") != "nni" else {}),
            **({"allocation": config.allocation} if config.allocation != "uniform" else {}),
            # only when set: records made before the option existed keep their keys
            **({"bn_augmented": True} if getattr(config, "bn_augmented", False) else {}),
            **schedule_key(config),
            **training_recipe(config)}
