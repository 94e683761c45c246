"""Draw the BMVC many-to-one activation (both readings of Eq. (1)) and its derivative.

    python -m benchmarks.bmvc.betti_activation_plot --out docs/img/many_to_one_activation.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from nni_topo_pruner.bmvc.activation import DEFAULT_CUTOFF, many_to_one  # noqa: E402


def plot(out: Path) -> None:
    x = torch.linspace(-2.0, 5.5 * DEFAULT_CUTOFF, 4000, dtype=torch.float64, requires_grad=True)
    y = many_to_one(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    xs = x.detach().numpy()
    fig, (ax, axd) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(xs, torch.relu(x).detach().numpy(), color="0.7", lw=1, label="ReLU")
    ax.plot(xs, y.detach().numpy(), lw=2, label="continuous (default): k sin c + sin(x - k c)")
    lit = many_to_one(x.detach(), form="literal").numpy()
    ax.plot(xs, lit, lw=1, ls="--", label="literal Eq. (1): k sin c + sin(x - c)")
    for k in range(1, 6):
        ax.axvline(k * DEFAULT_CUTOFF, color="0.85", lw=0.8, zorder=0)
    ax.set(title=f"many-to-one activation, c = 3pi/4 = {DEFAULT_CUTOFF:.4f}", xlabel="x", ylabel="y")
    ax.legend(fontsize=8, loc="upper left")
    axd.plot(xs, grad.numpy(), lw=1.5)
    axd.set(title="derivative (autograd) of the default form", xlabel="x", ylabel="dy/dx")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/img/many_to_one_activation.png"))
    args = parser.parse_args()
    plot(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
