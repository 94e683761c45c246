"""Nine-ring / nine-sphere generators (designed Betti numbers recomputed with GUDHI) and the 9x25 MLP."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_topo_pruner.bmvc.activation import ManyToOne
from nni_topo_pruner.bmvc.synthetic import (
    BETTI_CHECK_SCALE,
    DESIGNED_BETTI,
    RING_RADIUS,
    BmvcMLP,
    _grid_centres,
    make_dataset,
    nine_rings,
    nine_spheres,
)
from nni_topo_pruner.topology.betti import betti_numbers


def _betti(points, name):
    return betti_numbers(points, dims=(0, 1, 2), scale=BETTI_CHECK_SCALE[name],
                         scale_reference="absolute", complex="alpha")


@pytest.mark.parametrize("maker", [nine_rings, nine_spheres])
def test_sizes_balance_and_types(maker):
    d = maker()
    assert d.x_train.shape == (16000, 3) and d.x_test.shape == (2000, 3)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert np.bincount(d.y_train).tolist() == [8000, 8000]
    assert np.bincount(d.y_test).tolist() == [1000, 1000]


def test_deterministic_by_seed():
    a, b, c = nine_rings(900, 90, seed=3), nine_rings(900, 90, seed=3), nine_rings(900, 90, seed=4)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_classes_do_not_touch():
    # the two classes are separable: nearest opposite-class points are far apart
    from scipy.spatial import cKDTree

    for maker, min_gap in ((nine_rings, 0.5), (nine_spheres, 0.3)):
        d = maker(8000, 100, seed=0)
        g, r = d.class_cloud(0), d.class_cloud(1)
        assert cKDTree(r).query(g)[0].min() > min_gap


def _ring_cell(d, label, cell):
    centre = _grid_centres()[cell] + (np.array([RING_RADIUS, 0.0, 0.0]) if label == 1 else 0.0)
    pts = d.class_cloud(label)
    return pts[np.linalg.norm(pts - centre, axis=1) < 1.3]


def _sphere_cell(d, label, cell):
    pts = d.class_cloud(label)
    return pts[np.linalg.norm(pts - _grid_centres()[cell], axis=1) < 1.3]


@pytest.mark.parametrize("label, expected", [(0, (1, 1, 0)), (1, (1, 1, 0))])
def test_nine_rings_one_cell_is_a_solid_torus(label, expected):
    d = nine_rings(seed=1)
    for cell in (0, 4):
        assert _betti(_ring_cell(d, label, cell), "nine_rings") == expected


@pytest.mark.parametrize("label, expected", [(0, (1, 0, 1)), (1, (2, 0, 1))])
def test_nine_spheres_one_cell(label, expected):
    d = nine_spheres(seed=1)
    for cell in (0, 4):
        assert _betti(_sphere_cell(d, label, cell), "nine_spheres") == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nine_rings", "nine_spheres"])
@pytest.mark.parametrize("seed", [0, 1])
def test_designed_betti_numbers_of_whole_classes(name, seed):
    d = make_dataset(name, seed=seed)
    for label in (0, 1):
        assert _betti(d.class_cloud(label), name) == DESIGNED_BETTI[name][label]


def test_designed_numbers_are_what_the_docs_say():
    import re
    from pathlib import Path

    text = " ".join((Path(__file__).parents[1] / "docs" / "bmvc.md").read_text().split())
    found = re.search(r"Designed Betti numbers \(b0, b1, b2\): rings green (\(.*?\)), red (\(.*?\)); "
                      r"spheres green (\(.*?\)), red (\(.*?\))\.", text)
    assert found, "docs/bmvc.md no longer states the designed Betti numbers in the expected sentence"
    stated = [tuple(int(v) for v in group.strip("()").split(",")) for group in found.groups()]
    assert [DESIGNED_BETTI["nine_rings"][0], DESIGNED_BETTI["nine_rings"][1],
            DESIGNED_BETTI["nine_spheres"][0], DESIGNED_BETTI["nine_spheres"][1]] == stated


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        make_dataset("nine_tori")
    with pytest.raises(ValueError, match="n_train"):
        nine_rings(n_train=10)


def test_mlp_architecture():
    net = BmvcMLP("tanh")
    assert len(net.linears) == 9 and all(l.out_features == 25 for l in net.linears)
    assert net.linears[0].in_features == 3 and net.classifier.out_features == 2
    assert all(isinstance(a, torch.nn.Tanh) for a in net.activations)
    outs = net.hidden(torch.zeros(5, 3))
    assert len(outs) == 10 and outs[0].shape == (5, 3) and all(o.shape == (5, 25) for o in outs[1:])
    assert net(torch.zeros(5, 3)).shape == (5, 2)


def test_mlp_proposed_layers():
    net = BmvcMLP("relu", proposed_layers=(3, 4, 5))
    kinds = [type(a) for a in net.activations]
    assert kinds[3:6] == [ManyToOne] * 3 and kinds.count(torch.nn.ReLU) == 6
    assert all(isinstance(a, ManyToOne) for a in BmvcMLP("many_to_one").activations)


def test_mlp_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        BmvcMLP("swish")
    with pytest.raises(ValueError, match="proposed_layers"):
        BmvcMLP("relu", proposed_layers=(9,))
