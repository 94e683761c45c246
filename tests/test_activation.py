"""The BMVC paper's many-to-one activation: values, continuity, many-to-one, gradients, scripting."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from nni_topo_pruner.bmvc.activation import DEFAULT_CUTOFF, ManyToOne, many_to_one

C = DEFAULT_CUTOFF
S = math.sin(C)


def _f(x, **kw):
    return many_to_one(torch.as_tensor(x, dtype=torch.float64), **kw)


def test_cutoff_is_three_quarters_pi():
    assert C == pytest.approx(3 * math.pi / 4)


@pytest.mark.parametrize(
    "x, expected",
    [
        (-5.0, 0.0),                       # ReLU base
        (0.0, 0.0),
        (math.pi / 6, 0.5),                # first piece is plain sin(x)
        (math.pi / 2, 1.0),                # top of the first hump
        (C, S),                            # k = 1: sin(c) + sin(0)
        (C + math.pi / 2, S + 1.0),        # top of the second hump
        (3 * C + math.pi / 6, 3 * S + 0.5),
    ],
)
def test_values_at_known_points(x, expected):
    assert _f(x).item() == pytest.approx(expected, abs=1e-12)


def test_literal_form_follows_eq1_as_printed():
    # y = k sin(c) + sin(x - c), k = floor(x/c), 0 for x <= 0
    for x in [0.3, 1.0, 2.0, 2.5, 5.0, 7.7]:
        k = math.floor(x / C)
        assert _f(x, form="literal").item() == pytest.approx(k * S + math.sin(x - C), abs=1e-12)
    assert _f(-1.0, form="literal").item() == 0.0
    # and it is discontinuous at multiples of c (which is why it is not the default)
    eps = 1e-9
    jump = _f(C + eps, form="literal").item() - _f(C - eps, form="literal").item()
    assert jump == pytest.approx(S, abs=1e-6)


def test_continuous_form_is_continuous_at_every_piece_boundary():
    eps = 1e-9
    for k in range(0, 8):
        left, right = _f(k * C - eps).item(), _f(k * C + eps).item()
        assert abs(right - left) < 1e-6, f"jump at k={k}"
        assert _f(k * C).item() == pytest.approx(k * S, abs=1e-9)


def test_continuous_form_follows_a_relu_envelope():
    x = torch.linspace(0, 40, 4001, dtype=torch.float64)
    y = many_to_one(x)
    slope = S / C
    assert torch.all(y >= slope * x - S - 1e-9)   # never falls below the line by more than a step
    assert torch.all(y <= slope * x + 1.0 + 1e-9)
    assert y[-1].item() == pytest.approx(slope * 40, abs=1.0)


def test_many_to_one_regions_have_three_preimages():
    # values in ((k+1) sin c, k sin c + 1) are hit on the falling part of piece k, its
    # rising part, and the rising part of piece k+1
    x = np.linspace(0, 6 * C, 600001)
    y = _f(x).numpy()
    for k in range(3):
        level = (k + 1) * S + 0.5 * (1 - S)
        crossings = np.count_nonzero(np.diff(np.sign(y - level)) != 0)
        assert crossings == 3, f"piece {k}: {crossings} pre-images"
    # ReLU's many-to-one region: all negatives map to 0
    assert torch.all(_f(-np.linspace(0.1, 100, 50)) == 0)


def test_gradcheck_in_double_away_from_kinks():
    gen = torch.Generator().manual_seed(0)
    x = torch.empty(48, dtype=torch.float64).uniform_(-4, 12, generator=gen)
    # keep finite differences off the kinks at k*c (and 0)
    dist_to_kink = torch.remainder(x, C)
    x = x[(dist_to_kink > 1e-3) & (C - dist_to_kink > 1e-3) & (x.abs() > 1e-3)]
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: many_to_one(t), (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(lambda t: many_to_one(t), (x,), eps=1e-6, atol=1e-5)


def test_gradient_formula():
    x = torch.tensor([-2.0, 0.5, 2.0, 3.0, 8.0], dtype=torch.float64, requires_grad=True)
    many_to_one(x).sum().backward()
    k = torch.floor(x.detach().clamp(min=0) / C)
    expected = torch.where(x.detach() > 0, torch.cos(x.detach() - k * C), torch.zeros(()))
    assert torch.allclose(x.grad, expected)


def test_module_matches_functional_and_keeps_shape_and_dtype():
    x = torch.randn(4, 3, 5, 5) * 5
    m = ManyToOne()
    assert torch.equal(m(x), many_to_one(x))
    assert m(x).shape == x.shape and m(x).dtype == x.dtype
    assert m(x.double()).dtype == torch.float64
    assert "cutoff=2.35619" in repr(m)


def test_custom_cutoff():
    c = 1.0
    assert many_to_one(torch.tensor(c + 0.25), cutoff=c).item() == pytest.approx(math.sin(c) + math.sin(0.25), abs=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_cutoff(bad):
    with pytest.raises(ValueError, match="cutoff"):
        ManyToOne(cutoff=bad)


def test_bad_form():
    with pytest.raises(ValueError, match="form"):
        ManyToOne(form="sine")
    with pytest.raises(ValueError, match="form"):
        many_to_one(torch.zeros(1), form="sine")


def test_torchscript_module_and_function():
    x = torch.linspace(-3, 12, 301)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in 2.14
        scripted = torch.jit.script(ManyToOne())
        scripted_fn = torch.jit.script(many_to_one)
    assert torch.allclose(scripted(x), many_to_one(x))
    assert torch.allclose(scripted_fn(x, C, "literal"), many_to_one(x, form="literal"))


def test_torch_compile_graph_capture_cpu():
    # aot_eager: dynamo + AOTAutograd capture forward and backward, no C++ build (fast)
    torch._dynamo.reset()
    m = ManyToOne()
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    x1 = torch.linspace(-3, 12, 301, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    compiled(x1).pow(2).sum().backward()
    m(x2).pow(2).sum().backward()
    assert torch.allclose(x1.grad, x2.grad)


@pytest.mark.slow
def test_torch_compile_inductor_cpu():
    # inductor builds C++ with the machine's compiler (about 40 s on the 2-core dev box)
    torch._dynamo.reset()
    m = ManyToOne()
    compiled = torch.compile(m, backend="inductor")
    x = torch.linspace(-3, 12, 301)
    assert torch.allclose(compiled(x), m(x), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    x = torch.linspace(-3, 12, 301, dtype=torch.float64)
    assert torch.allclose(many_to_one(x.cuda()).cpu(), many_to_one(x))
