"""Draw the BMVC many-to-one activation (both readings of Eq. (1)) and its derivative.

    python -m benchmarks.bmvc.betti_activation_plot --out docs/img/many_to_one_activation.png
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from nni_topo_pruner.bmvc.activation import DEFAULT_CUTOFF, many_to_one  # noqa: E402

from ..core.cli import ConfigParser, require  # noqa: E402

FILE_NAME = "many_to_one_activation.png"


@dataclass
class ActivationPlotConfig:
    """What ``--preset`` / ``--set`` choose."""

    points: int = 4000  # samples of x in [-2, 5.5 c]
    dpi: int = 110


PRESETS = {"default": ActivationPlotConfig()}


def check(config: ActivationPlotConfig) -> None:
    require(config.points >= 2, "points", None, "be >= 2", config.points)
    require(config.dpi >= 1, "dpi", None, "be >= 1", config.dpi)


def plot(out: Path, config: ActivationPlotConfig = ActivationPlotConfig()) -> None:
    x = torch.linspace(-2.0, 5.5 * DEFAULT_CUTOFF, config.points, dtype=torch.float64, requires_grad=True)
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
    fig.savefig(out, dpi=config.dpi)
    plt.close(fig)


def build_parser() -> ConfigParser[ActivationPlotConfig]:
    parser = ConfigParser("python -m benchmarks.bmvc.betti_activation_plot", PRESETS, description=__doc__,
                          check=check, out_dir_help=f"write DIR/{FILE_NAME} (instead of --out)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the PNG to write (default: docs/img/{FILE_NAME}, or in --out-dir)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, config = parser.parse_config(argv)
    if args.out is not None and args.out_dir is not None:
        parser.usage_error("--out names the file, --out-dir its folder: give one of them")
    out = args.out or (args.out_dir or Path("docs/img")) / FILE_NAME
    plot(out, config)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
