"""The BMVC paper's synthetic 3-D binary datasets and its 9 x 25 MLP (paper section 3.2, 3.5).

The paper borrows "nine ring" and "nine sphere" from Naitzat, Zhitnikov & Lim, *Topology of
deep neural networks* (JMLR 2020), shows them only as pictures, and gives their size
(16000 train / 2000 test). The geometry below is ours, built to the paper's description;
class 0 is "green", class 1 is "red", the classes are balanced.

nine rings
    A 3 x 3 grid of cells (spacing 4). Each cell holds a Hopf link: a green ring (circle of
    radius 1 in the xy-plane) and a red ring (radius 1 in the xz-plane, centred on the
    green ring's rim), the two circles 1 apart at their closest; each ring is thickened
    into a solid torus of tube radius 0.2. Designed Betti numbers per class (b0, b1, b2):
    green (9, 9, 0), red (9, 9, 0).
nine spheres
    A 3 x 3 grid of cells (spacing 4). Each cell holds, from the centre out: a red ball
    (radius 0.3), a green spherical shell (radii 0.7-0.75) and a red spherical shell (radii
    1.2-1.25) -- "nine green spheres and 18 red spheres enclosing each other". Designed
    Betti numbers: green (9, 0, 9), red (18, 0, 9). A ninth of the red points go to the
    balls, the rest to the shells (so that the shells are densely enough sampled for their
    voids to show at a scale below the ball-to-shell gap).

:data:`BETTI_CHECK_SCALE` is the scale (edge length, alpha complex) at which
``tests/test_synthetic.py`` recomputes these numbers with GUDHI.

Example:
    >>> data = nine_rings(n_train=900, n_test=90, seed=0)
    >>> data.x_train.shape, data.y_train.shape, sorted(set(data.y_train.tolist()))
    ((900, 3), (900,), [0, 1])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .activation import ManyToOne

GRID_SPACING = 4.0
RING_RADIUS = 1.0
TUBE_RADIUS = 0.2
SPHERE_RADII = {"red_ball": 0.3, "green_shell": (0.7, 0.75), "red_shell": (1.2, 1.25)}
RED_BALL_FRACTION = 1 / 9

#: designed Betti numbers (b0, b1, b2) per dataset and class (0 = green, 1 = red)
DESIGNED_BETTI: Dict[str, Dict[int, Tuple[int, int, int]]] = {
    "nine_rings": {0: (9, 9, 0), 1: (9, 9, 0)},
    "nine_spheres": {0: (9, 0, 9), 1: (18, 0, 9)},
}
#: alpha-complex scale (edge-length units, see ``topology.betti``) at which the designed
#: numbers are recomputed in the tests: above the sampling gaps, below every hole/void
BETTI_CHECK_SCALE = {"nine_rings": 0.6, "nine_spheres": 0.8}


@dataclass(frozen=True)
class SyntheticData:
    """Train/test split of a synthetic binary dataset (float32 points, int64 labels)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def class_cloud(self, label: int, n: Optional[int] = None, seed: int = 0, split: str = "train") -> np.ndarray:
        """Points of one class, optionally a random subsample of ``n`` (without replacement).

        Example:
            >>> nine_spheres(n_train=300, n_test=30).class_cloud(1, n=50).shape
            (50, 3)
        """
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        pts = x[y == label]
        if n is not None and n < len(pts):
            pts = pts[np.random.default_rng(seed).choice(len(pts), n, replace=False)]
        return pts


def nine_rings(n_train: int = 16000, n_test: int = 2000, seed: int = 0) -> SyntheticData:
    """The nine-ring dataset (see the module doc for the geometry)."""
    return _split("nine_rings", _sample_rings, n_train, n_test, seed)


def nine_spheres(n_train: int = 16000, n_test: int = 2000, seed: int = 0) -> SyntheticData:
    """The nine-sphere dataset (see the module doc for the geometry)."""
    return _split("nine_spheres", _sample_spheres, n_train, n_test, seed)


DATASETS: Dict[str, Callable[..., SyntheticData]] = {"nine_rings": nine_rings, "nine_spheres": nine_spheres}


def make_dataset(name: str, n_train: int = 16000, n_test: int = 2000, seed: int = 0) -> SyntheticData:
    """Build a dataset by name (``nine_rings`` or ``nine_spheres``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name](n_train=n_train, n_test=n_test, seed=seed)


# ------------------------------------------------------------------------------ the MLP

ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "many_to_one": ManyToOne,
}


class BmvcMLP(nn.Module):
    """The paper's MLP: ``depth`` hidden layers of ``width`` units, then a linear classifier.

    ``activation`` names the hidden layers' activation (see :data:`ACTIVATIONS`);
    ``proposed_layers`` (0-based hidden-layer indices) put the many-to-one activation in
    those layers instead, as in the paper's Figure 6 ("added in few of the hidden layers in
    the middle"). ``hidden(x)`` returns the input and every hidden layer's output.

    Example:
        >>> net = BmvcMLP("relu", proposed_layers=(3, 4, 5))
        >>> [type(a).__name__ for a in net.activations][2:7]
        ['ReLU', 'ManyToOne', 'ManyToOne', 'ManyToOne', 'ReLU']
        >>> len(net.hidden(torch.zeros(2, 3)))
        10
    """

    def __init__(self, activation: str = "relu", depth: int = 9, width: int = 25, in_dim: int = 3,
                 n_classes: int = 2, proposed_layers: Iterable[int] = ()) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        proposed = set(proposed_layers)
        if any(not 0 <= i < depth for i in proposed):
            raise ValueError(f"proposed_layers must lie in [0, {depth}), got {sorted(proposed)}")
        dims = [in_dim] + [width] * depth
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.activations = nn.ModuleList(
            ManyToOne() if i in proposed else ACTIVATIONS[activation]() for i in range(depth))
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, act in zip(self.linears, self.activations):
            x = act(linear(x))
        return self.classifier(x)

    @torch.no_grad()
    def hidden(self, x: torch.Tensor) -> list:
        """``[x, h_1, ..., h_depth]``: the input and each hidden layer's activation output."""
        outs = [x]
        for linear, act in zip(self.linears, self.activations):
            x = act(linear(x))
            outs.append(x)
        return outs


# ------------------------------------------------------------------------------ sampling

def _grid_centres() -> np.ndarray:
    g = (np.arange(3) - 1) * GRID_SPACING
    return np.array([(x, y, 0.0) for x in g for y in g])


def _counts(n: int, parts: int) -> np.ndarray:
    base = np.full(parts, n // parts)
    base[: n % parts] += 1
    return base


def _ball(rng: np.random.Generator, n: int, r_in: float, r_out: float) -> np.ndarray:
    """Uniform in the shell r_in <= |p| <= r_out (a ball when r_in = 0)."""
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = (rng.uniform(r_in ** 3, r_out ** 3, size=n)) ** (1.0 / 3.0)
    return v * r[:, None]


def _ring(rng: np.random.Generator, n: int, plane: str) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi, n)
    c, s = RING_RADIUS * np.cos(t), RING_RADIUS * np.sin(t)
    circle = np.c_[c, s, np.zeros(n)] if plane == "xy" else np.c_[c + RING_RADIUS, np.zeros(n), s]
    return circle + _ball(rng, n, 0.0, TUBE_RADIUS)


def _sample_rings(rng: np.random.Generator, n_per_class: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for label, plane in ((0, "xy"), (1, "xz")):
        for centre, m in zip(_grid_centres(), _counts(n_per_class[label], 9)):
            xs.append(_ring(rng, m, plane) + centre)
            ys.append(np.full(m, label))
    return np.vstack(xs), np.concatenate(ys)


def _sample_spheres(rng: np.random.Generator, n_per_class: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    g_in, g_out = SPHERE_RADII["green_shell"]
    r_in, r_out = SPHERE_RADII["red_shell"]
    n_red_ball = int(round(n_per_class[1] * RED_BALL_FRACTION))
    for centre, m in zip(_grid_centres(), _counts(n_per_class[0], 9)):
        xs.append(_ball(rng, m, g_in, g_out) + centre)
        ys.append(np.zeros(m, dtype=np.int64))
    for centre, mb, ms in zip(_grid_centres(), _counts(n_red_ball, 9), _counts(n_per_class[1] - n_red_ball, 9)):
        xs.append(_ball(rng, mb, 0.0, SPHERE_RADII["red_ball"]) + centre)
        xs.append(_ball(rng, ms, r_in, r_out) + centre)
        ys.append(np.ones(mb + ms, dtype=np.int64))
    return np.vstack(xs), np.concatenate(ys)


def _split(name: str, sampler, n_train: int, n_test: int, seed: int) -> SyntheticData:
    if n_train < 18 or n_test < 2:
        raise ValueError(f"n_train must be >= 18 (two classes x nine cells) and n_test >= 2, got {n_train}, {n_test}")
    rng = np.random.default_rng(seed)
    out = []
    for n in (n_train, n_test):
        x, y = sampler(rng, (n - n // 2, n // 2))
        order = rng.permutation(len(x))
        out += [x[order].astype(np.float32), y[order].astype(np.int64)]
    return SyntheticData(name, *out)
