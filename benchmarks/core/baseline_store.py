"""Baselines committed to the repository, so a fresh machine neither retrains nor loses a
half-trained one.

A baseline lives in the cache (``benchmarks/cache/baseline-<hash>/``, not committed) while it
trains. ``publish`` copies it into ``benchmarks/baselines/baseline-<hash>/`` (committed):

- a finished baseline: ``model.pt`` (the float32 state dict) and ``info.json`` (its
  ``weights_sha256``, training history, accuracy);
- a baseline still training: its last per-epoch checkpoint, split in two files each under
  GitHub's 100 MB limit (``checkpoint-model.pt``: the weights; ``checkpoint-state.pt``: the
  optimiser, scheduler and history) and ``checkpoint.json`` (epochs done, the files' SHA-256).

:func:`restore` runs before the cache is read (``benchmarks.core.baseline.load_or_train_baseline``):
finished weights are checked against their digest and copied into the cache; a checkpoint is
copied in when the cache holds no finished baseline and no checkpoint at least as far along,
so training resumes where the committed one stopped. A file whose digest does not match stops
the run with a message naming it (never a silent retrain).

    python -m benchmarks.core.baseline_store publish --preset full     # after (or while) it trains
    python -m benchmarks.core.baseline_store status --preset full
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .config import PRESETS, apply_overrides, baseline_key, preset_config, stable_hash, validate
from .store import MOVED_PICKLE, atomic_torch_save, atomic_write_json, load_json_or_none, load_torch_or_none

_logger = logging.getLogger(__name__)

STORE_DIR = Path(__file__).resolve().parents[1] / "baselines"
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / "cache"
CHECKPOINT_PARTS = {"model": "checkpoint-model.pt", "state": "checkpoint-state.pt"}


class BaselineStoreError(RuntimeError):
    """A committed baseline file that cannot be used as it is (wrong digest, unreadable)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(state_dict: Dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values (independent of the file format):
    two baselines with the same key are the same network only if their digests are equal.

    >>> weights_digest({"w": torch.zeros(2)}) == weights_digest({"w": torch.zeros(2)})
    True
    >>> weights_digest({"w": torch.zeros(2)}) == weights_digest({"w": torch.tensor([0.0, 1e-30])})
    False
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes, any dtype
    return digest.hexdigest()


def cache_dir_for(config) -> Path:
    """The baseline cache of ``config``: ``config.cache_dir``, else ``benchmarks/cache``."""
    return Path(config.cache_dir) if config.cache_dir else DEFAULT_CACHE_DIR


def stored_folder(key_hash: str, store: Path = STORE_DIR) -> Path:
    """Where the baseline of key ``key_hash`` is committed.

    >>> stored_folder("0123abcd", Path("benchmarks/baselines")).as_posix()
    'benchmarks/baselines/baseline-0123abcd'
    """
    return Path(store) / f"baseline-{key_hash}"


def publish(cache_folder: Path, store: Path = STORE_DIR) -> Dict[str, Any]:
    """Copy the baseline in ``cache_folder`` (finished weights, else its last checkpoint) into the
    store; returns what was published (``{"kind": "weights"|"checkpoint", ...}``)."""

    cache_folder = Path(cache_folder)
    target = stored_folder(cache_folder.name.removeprefix("baseline-"), store)
    info = load_json_or_none(cache_folder / "info.json")
    model = load_torch_or_none(cache_folder / "model.pt", weights_only=True)
    target.mkdir(parents=True, exist_ok=True)
    if info is not None and model is not None:
        if info.get("weights_sha256") != weights_digest(model):
            raise BaselineStoreError(f"{cache_folder / 'model.pt'} does not match the weights_sha256 of its "
                                     "info.json; retrain it or restore the original file before publishing")
        shutil.copyfile(cache_folder / "model.pt", target / "model.pt")
        atomic_write_json(info, target / "info.json")
        for name in [*CHECKPOINT_PARTS.values(), "checkpoint.json"]:  # superseded by the weights
            (target / name).unlink(missing_ok=True)
        _logger.info("published the finished baseline (test acc %.4f) to %s", info.get("test_acc", float("nan")),
                     target)
        return {"kind": "weights", "folder": str(target), "weights_sha256": info["weights_sha256"]}
    checkpoint = load_torch_or_none(cache_folder / "train.ckpt")
    if checkpoint is None:
        raise BaselineStoreError(f"{cache_folder} holds neither a finished baseline (model.pt + info.json) nor a "
                                 "training checkpoint (train.ckpt); train it first (benchmarks.run --baseline-only)")
    parts = {"model": {"model": checkpoint["model"]},
             "state": {key: value for key, value in checkpoint.items() if key != "model"}}
    for part, payload in parts.items():
        atomic_torch_save(payload, target / CHECKPOINT_PARTS[part])
    key = load_json_or_none(cache_folder / "key.json")
    meta = {"key_hash": cache_folder.name.removeprefix("baseline-"), "key": key,
            "epochs_done": len(checkpoint["history"]), "epochs": checkpoint["epochs"], "seed": checkpoint["seed"],
            "last_test_acc": checkpoint["history"][-1]["test_acc"] if checkpoint["history"] else None,
            "history": checkpoint["history"],
            "sha256": {part: _sha256(target / name) for part, name in CHECKPOINT_PARTS.items()}}
    atomic_write_json(meta, target / "checkpoint.json")
    _logger.info("published the training checkpoint after epoch %d/%d to %s", meta["epochs_done"], meta["epochs"],
                 target)
    return {"kind": "checkpoint", "folder": str(target), "epochs_done": meta["epochs_done"]}


def _checkpoint_epochs(path: Path) -> int:
    state = load_torch_or_none(path)
    return len(state["history"]) if isinstance(state, dict) and "history" in state else -1


def restore(key_hash: str, cache_folder: Path, store: Path = STORE_DIR) -> Optional[str]:
    """Bring the committed baseline of ``key_hash`` into ``cache_folder`` when it is further along
    than what the cache holds; returns ``'weights'``, ``'checkpoint'`` or ``None`` (nothing copied)."""

    source = stored_folder(key_hash, store)
    cache_folder = Path(cache_folder)
    if not source.is_dir():
        return None
    cached_info = load_json_or_none(cache_folder / "info.json")
    if cached_info is not None and (cache_folder / "model.pt").is_file():
        return None  # a finished baseline is already cached (run_benchmark compares digests with the records)
    info = load_json_or_none(source / "info.json")
    if info is not None and (source / "model.pt").is_file():
        state = load_torch_or_none(source / "model.pt", weights_only=True)
        if state is None or info.get("weights_sha256") != weights_digest(state):
            raise BaselineStoreError(f"{source / 'model.pt'} does not match the weights_sha256 in "
                                     f"{source / 'info.json'}: the committed file is damaged; restore it from "
                                     "git (git checkout -- that path) or delete the folder to retrain")
        cache_folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "model.pt", cache_folder / "model.pt")
        atomic_write_json(info, cache_folder / "info.json")  # last: marks a finished baseline
        _logger.info("baseline %s: restored the committed weights from %s", key_hash, source)
        return "weights"
    meta = load_json_or_none(source / "checkpoint.json")
    if meta is None:
        return None
    if _checkpoint_epochs(cache_folder / "train.ckpt") >= meta["epochs_done"]:
        return None
    payload: Dict[str, Any] = {}
    for part, name in CHECKPOINT_PARTS.items():
        path = source / name
        if not path.is_file() or _sha256(path) != meta["sha256"][part]:
            raise BaselineStoreError(f"{path} is missing or does not match its SHA-256 in {source / 'checkpoint.json'}; "
                                     "restore it from git (git checkout -- that path) or delete the folder to retrain")
        payload.update(torch.load(path, map_location="cpu", weights_only=False, pickle_module=MOVED_PICKLE))
    cache_folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, cache_folder / "train.ckpt")
    _logger.info("baseline %s: restored the committed checkpoint (epoch %d/%d) from %s; training resumes there",
                 key_hash, meta["epochs_done"], meta["epochs"], source)
    return "checkpoint"


def _cache_folder(preset: str, assignments: List[str], data: Optional[str]) -> Path:
    from .data import load_data, subsample

    config = apply_overrides(preset_config(preset), assignments)
    if data:
        config = apply_overrides(config, [f"data={data}"])
    validate(config)
    arrays = subsample(load_data(config.data), config.train_size, config.test_size)
    return cache_dir_for(config) / f"baseline-{stable_hash(baseline_key(config, arrays.content_sha256()))}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.core.baseline_store",
                                     description="Publish a cached baseline into the repository, or show its state.")
    parser.add_argument("action", choices=("publish", "status"))
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--data", default=None, help="data spec, as for benchmarks.run")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        folder = _cache_folder(args.preset, args.assignments, args.data)
    except (ValueError, FileNotFoundError) as error:
        print(f"benchmarks.core.baseline_store: {error}", file=sys.stderr)
        return 2
    if args.action == "status":
        stored = stored_folder(folder.name.removeprefix("baseline-"))
        print(json.dumps({"cache": str(folder), "cache_finished": (folder / "info.json").is_file(),
                          "cache_checkpoint_epochs": _checkpoint_epochs(folder / "train.ckpt"),
                          "store": str(stored), "store_finished": (stored / "info.json").is_file(),
                          "store_checkpoint": load_json_or_none(stored / "checkpoint.json") is not None}, indent=2))
        return 0
    try:
        print(json.dumps(publish(folder), indent=2))
    except BaselineStoreError as error:
        print(f"benchmarks.core.baseline_store: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
