"""CIFAR-10 for the benchmark: the offline ``.npz`` subset or ``torchvision.datasets.CIFAR10``.

A data spec is one of:

- ``auto``: ``../shared/data/cifar10.npz`` relative to the repository (the whole data set,
  offline machines), else ``../shared/data/cifar10_subset.npz`` beside it (with a warning);
- ``subset``: ``../shared/data/cifar10_subset.npz`` only (the small presets: 5170 / 1017 images);
- ``cifar10:ROOT``: torchvision's CIFAR-10 under ``ROOT`` (downloaded there if missing);
- a path to an ``.npz`` with ``x_train`` (N, 32, 32, 3) uint8, ``y_train``, ``x_test``, ``y_test``.

Training batches get the standard augmentation (random crop with 4 pixels of padding,
horizontal flip) and every image the per-channel normalisation.

Example
-------
>>> import numpy as np
>>> arrays = CifarArrays(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4) % 2,
...                      np.zeros((2, 32, 32, 3), np.uint8), np.arange(2), source="memory", location="-")
>>> x, y = evaluation_tensors(arrays)
>>> tuple(x.shape), y.tolist()
((2, 3, 32, 32), [0, 1])
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from .config import AUGMENTATIONS

_logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NPZ = REPO_ROOT.parent / "shared" / "data" / "cifar10_subset.npz"
DEFAULT_FULL_NPZ = REPO_ROOT.parent / "shared" / "data" / "cifar10.npz"

# Per-channel mean and standard deviation of the CIFAR-10 training set (RGB, in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10


@dataclass
class CifarArrays:
    """Images as (N, 32, 32, 3) uint8 HWC RGB arrays and int64 labels, plus where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    location: str
    file_sha256: Optional[str] = None
    subset: Dict[str, int] = field(default_factory=dict)
    _content_sha256: Optional[str] = field(default=None, init=False, repr=False, compare=False)

    def content_sha256(self) -> str:
        """SHA-256 over the four arrays actually used (identifies the data in cache keys and
        records); computed once per object (the arrays are not modified in place)."""
        if self._content_sha256 is None:
            self._content_sha256 = self._digest()
        return self._content_sha256

    def _digest(self) -> str:
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            contiguous = np.ascontiguousarray(array)
            digest.update(str((contiguous.shape, contiguous.dtype.str)).encode())
            digest.update(contiguous.tobytes())
        return digest.hexdigest()

    def describe(self) -> Dict[str, object]:
        """JSON-ready summary: source, location, sizes, checksums."""
        return {
            "source": self.source,
            "location": portable_path(self.location),
            "file_sha256": self.file_sha256,
            "content_sha256": self.content_sha256(),
            "train_images": int(len(self.y_train)),
            "test_images": int(len(self.y_test)),
            "subset": dict(self.subset),
        }


def portable_path(location: str) -> str:
    """``location`` relative to the repository when it is a path on this machine (``../shared/...``),
    so committed results carry no machine's absolute paths; anything else as it is.

    >>> portable_path(str(REPO_ROOT.parent / "shared" / "data" / "x.npz"))
    '../shared/data/x.npz'
    >>> portable_path("-")
    '-'
    """
    path = Path(location)
    if not path.is_absolute():
        return location
    try:
        return os.path.relpath(path, REPO_ROOT)
    except ValueError:  # another drive (Windows)
        return location


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_arrays(images: np.ndarray, labels: np.ndarray, name: str, where: str) -> None:
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise ValueError(f"{where}: x_{name} must be uint8 of shape (N, 32, 32, 3) (HWC RGB), "
                         f"got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{where}: y_{name} must have shape ({images.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{where}: y_{name} must hold class indices 0..{NUM_CLASSES - 1}")


def load_npz(path: Path) -> CifarArrays:
    """Read an ``.npz`` in the layout of ``cifar10_subset.npz`` and check it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}; pass --data PATH.npz or --data cifar10:ROOT")
    with np.load(path) as archive:
        missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in archive]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}; expected x_train, y_train, x_test, y_test")
        arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    for split in ("train", "test"):
        _check_arrays(arrays[f"x_{split}"], arrays[f"y_{split}"], split, str(path))
    return CifarArrays(arrays["x_train"], arrays["y_train"].astype(np.int64),
                       arrays["x_test"], arrays["y_test"].astype(np.int64),
                       source="npz", location=str(path.resolve()), file_sha256=file_sha256(path))


def load_torchvision_cifar10(root: Path, download: bool = True) -> CifarArrays:
    """torchvision's CIFAR-10 under ``root`` (downloads ~170 MB there when missing)."""
    from torchvision.datasets import CIFAR10

    root = Path(root)
    train = CIFAR10(str(root), train=True, download=download)
    test = CIFAR10(str(root), train=False, download=download)
    archive = root / "cifar-10-python.tar.gz"
    return CifarArrays(np.asarray(train.data), np.asarray(train.targets, dtype=np.int64),
                       np.asarray(test.data), np.asarray(test.targets, dtype=np.int64),
                       source="torchvision.datasets.CIFAR10", location=str(root.resolve()),
                       file_sha256=file_sha256(archive) if archive.is_file() else None)


def load_data(spec: str) -> CifarArrays:
    """Load the data named by ``spec`` (``auto``, ``cifar10:ROOT`` or an ``.npz`` path)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data spec must be 'auto', 'subset', 'cifar10:ROOT' or a path to an .npz file, got {spec!r}")
    if spec == "auto" and DEFAULT_FULL_NPZ.is_file():
        return load_npz(DEFAULT_FULL_NPZ)
    if spec in ("auto", "subset"):
        if not DEFAULT_NPZ.is_file():
            looked = f"{DEFAULT_FULL_NPZ} or {DEFAULT_NPZ}" if spec == "auto" else str(DEFAULT_NPZ)
            raise FileNotFoundError(
                f"data={spec} looks for the offline CIFAR-10 at {looked}, which does not exist; "
                "pass --data cifar10:ROOT (downloads CIFAR-10 into ROOT) or --data PATH.npz")
        if spec == "auto":
            _logger.warning("data=auto: %s not found, using the subset %s (5170 / 1017 images)",
                            DEFAULT_FULL_NPZ, DEFAULT_NPZ)
        return load_npz(DEFAULT_NPZ)
    if spec.startswith("cifar10:"):
        root = spec[len("cifar10:"):]
        if not root:
            raise ValueError("data spec 'cifar10:' needs a root directory, e.g. --data cifar10:data/cifar10")
        return load_torchvision_cifar10(Path(root).expanduser())
    if not spec.endswith(".npz"):
        raise ValueError(f"data spec {spec!r}: use 'auto', 'subset', 'cifar10:ROOT' or a path ending in .npz")
    return load_npz(Path(spec).expanduser())


def _fixed_subset(n_total: int, n_wanted: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n_total)[:n_wanted]
    return np.sort(order)


def subsample(arrays: CifarArrays, train_size: int = 0, test_size: int = 0, seed: int = 0) -> CifarArrays:
    """Keep a fixed random subset (``0`` = all images) of each split, for smoke runs.

    The subset depends only on ``seed`` and the sizes, never on the run's seed, so every
    pruner and every seed sees the same images.
    """
    result = arrays
    for split, wanted in (("train", train_size), ("test", test_size)):
        if not isinstance(wanted, int) or wanted < 0:
            raise ValueError(f"{split}_size must be an int >= 0 (0 = all images), got {wanted!r}")
        total = len(getattr(arrays, f"y_{split}"))
        if wanted == 0 or wanted >= total:
            if wanted > total:
                _logger.warning("%s_size=%d exceeds the %d images available; using all", split, wanted, total)
            continue
        keep = _fixed_subset(total, wanted, seed)
        result = replace(result, **{f"x_{split}": getattr(result, f"x_{split}")[keep],
                                    f"y_{split}": getattr(result, f"y_{split}")[keep]},
                         subset={**result.subset, f"{split}_size": wanted, "subset_seed": seed})
    return result


def _normalise() -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)])


def _to_chw_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


class AugmentedCifar(Dataset):
    """Training images with random crop (padding 4) + horizontal flip + normalisation.

    Randomness comes from torch's global RNG in the loading process: seed it per epoch
    (``benchmarks.core.training`` does) for reproducible epochs.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = _to_chw_tensor(images)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), _normalise()])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class BatchedAugmentedCifar:
    """The same augmentation as :class:`AugmentedCifar` (random crop with 4 pixels of zero
    padding, horizontal flip with probability 1/2, normalisation), drawn for a whole batch
    at once on uint8 tensors: one gather per batch instead of ``batch_size`` transform calls.

    Not a ``Dataset`` of items: ``batch(indices, generator)`` returns normalised float32
    images (optionally channels_last) and labels; draws come from ``generator`` only, so a
    batch is a function of its indices and the generator's state.

    >>> import numpy as np, torch
    >>> data = BatchedAugmentedCifar(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4))
    >>> x, y = data.batch(torch.arange(4), torch.Generator().manual_seed(0))
    >>> tuple(x.shape), x.dtype, y.tolist()
    ((4, 3, 32, 32), torch.float32, [0, 1, 2, 3])
    """

    PAD = 4

    def __init__(self, images: np.ndarray, labels: np.ndarray, channels_last: bool = False):
        images = _to_chw_tensor(images)
        # padded once: (N, 3, 40, 40) uint8 with zero borders, the same fill as RandomCrop(padding=4)
        self.padded = torch.nn.functional.pad(images, (self.PAD,) * 4)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.channels_last = channels_last
        self.mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1) * 255.0

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        count, side = len(indices), 32
        offsets = torch.randint(0, 2 * self.PAD + 1, (count, 2), generator=generator)
        flips = torch.rand(count, generator=generator) < 0.5
        steps = torch.arange(side)
        rows = (offsets[:, 0:1] + steps).view(count, 1, side, 1)
        cols = offsets[:, 1:2] + steps
        cols = torch.where(flips.view(count, 1), cols.flip(1), cols).view(count, 1, 1, side)
        crops = self.padded[indices.view(count, 1, 1, 1), torch.arange(3).view(1, 3, 1, 1), rows, cols]
        if self.channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        images = (crops.float() - self.mean) / self.std
        return images, self.labels[indices]


def evaluation_tensors(arrays: CifarArrays) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised test images (N, 3, 32, 32) float32 and labels."""
    return _normalise()(_to_chw_tensor(arrays.x_test)), torch.as_tensor(arrays.y_test, dtype=torch.int64)


def train_dataset(arrays: CifarArrays, augmentation: str = "per_image",
                  channels_last: bool = False) -> Union[AugmentedCifar, BatchedAugmentedCifar]:
    """The augmented training set: ``'per_image'`` (:class:`AugmentedCifar`, torchvision v2 per
    image) or ``'batched'`` (:class:`BatchedAugmentedCifar`, the same transforms per batch)."""
    if augmentation == "batched":
        return BatchedAugmentedCifar(arrays.x_train, arrays.y_train, channels_last=channels_last)
    if augmentation != "per_image":
        raise ValueError(f"augmentation must be one of {list(AUGMENTATIONS)}, got {augmentation!r}")
    return AugmentedCifar(arrays.x_train, arrays.y_train)


def evaluation_loader(arrays: CifarArrays, batch_size: int) -> DataLoader:
    """Deterministic loader over the normalised test set."""
    return DataLoader(TensorDataset(*evaluation_tensors(arrays)), batch_size=batch_size, shuffle=False)


def calibration_loader(arrays: CifarArrays, size: int, batch_size: int, seed: int,
                       augmented: bool = False) -> DataLoader:
    """``size`` training images chosen by ``seed``, as (input, target) batches.

    Data-dependent pruners (``requires_calibration_data = True``) get this loader, and the
    benchmark re-estimates BatchNorm on it, without augmentation. ``augmented=True`` gives the
    same images with the training augmentation (random crop with 4 pixels of zero padding,
    horizontal flip; :class:`BatchedAugmentedCifar`), drawn once from ``seed``.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"calibration_size must be an int >= 1, got {size!r}")
    keep = _fixed_subset(len(arrays.y_train), min(size, len(arrays.y_train)), seed)
    if augmented:
        images, labels = BatchedAugmentedCifar(arrays.x_train[keep], arrays.y_train[keep]).batch(
            torch.arange(len(keep)), torch.Generator().manual_seed(seed))
    else:
        images = _normalise()(_to_chw_tensor(arrays.x_train[keep]))
        labels = torch.as_tensor(arrays.y_train[keep], dtype=torch.int64)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)
