"""Is the fast training recipe as accurate as the fp32 one? A paired check.

The same network, data, schedule and seeds are trained twice: with the ``cpu`` preset's
arithmetic (fp32, per-image torchvision transforms) and with the ``full`` preset's (bf16
autocast, channels_last, batched uint8 augmentation). Both are evaluated in fp32 on the same
test images and compared image by image (``benchmarks.grid.summary.paired_difference``: McNemar per
seed, a bootstrap interval over seeds). Baselines are trained through the benchmark's own cache
(``load_or_train_baseline``), so a rerun with the same ``--cache-dir`` only re-evaluates.

    python -m benchmarks.studies.recipe_check --cache-dir /tmp/recipe-cache     # width 0.25, 10 epochs, seeds 0,1
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..core.baseline import load_or_train_baseline
from ..core.cli import ConfigParser, require
from ..core.config import apply_overrides, preset_config, validate
from ..core.data import evaluation_loader, load_data
from ..core.environment import machine_info, package_versions
from ..core.store import atomic_write_json, atomic_write_text
from ..grid.summary import paired_difference
from ..core.training import correct_per_image, hits_text

OUT_DIR = Path(__file__).resolve().parents[1] / "results" / "recipe_check"
FAST = ["precision=bf16", "channels_last=true", "augmentation=batched"]


def render(payload: Dict[str, Any]) -> str:
    rows = "\n".join(f"| {row['seed']} | {100 * row['fp32']:.2f} | {100 * row['fast']:.2f} | "
                     f"{100 * (row['fast'] - row['fp32']):+.2f} | {row['wins']} / {row['losses']} | "
                     f"{row['mcnemar_p']:.3f} | {row['fp32_seconds']:.0f} / {row['fast_seconds']:.0f} |"
                     for row in payload["seeds"])
    paired = payload["paired"]
    return f"""# The fast training recipe against fp32, image by image

Command: `{payload['command']}`. Machine: {payload['machine'].get('cpu_count')} cores, torch
{payload['packages'].get('torch')}; the training ran while other jobs shared the machine (times are not
comparable between rows; accuracy is). Setting: `cpu` preset (offline subset, 5170 training /
1017 test images), VGG-16 at width {payload['settings']['width']}, {payload['settings']['epochs']} epochs,
batch {payload['settings']['batch_size']}, cosine lr {payload['settings']['lr']}; the only change is the
arithmetic: fp32 + per-image transforms vs {', '.join(FAST)}. Evaluation in fp32 for both.

| seed | fp32 test acc (%) | fast test acc (%) | fast - fp32 (points) | images only fast / only fp32 gets right | McNemar p | training s (fp32 / fast) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{rows}

Over seeds, image by image: fast - fp32 = {100 * paired['difference']:+.2f} points, 95% bootstrap interval
[{100 * paired['ci95'][0]:+.2f}, {100 * paired['ci95'][1]:+.2f}] -> **{paired['verdict']}**.
"""


@dataclass
class RecipeCheckConfig:
    """What ``--preset`` / ``--set`` choose (the flags below set the same fields)."""

    cache_dir: str = ""  # baseline cache for the trained pairs; required
    seeds: List[int] = field(default_factory=lambda: [0, 1])
    width: float = 0.25
    epochs: int = 10


PRESETS = {"default": RecipeCheckConfig()}


def check(config: RecipeCheckConfig) -> None:
    require(bool(config.cache_dir), "cache_dir", "--cache-dir", "name the baseline cache for the trained pairs",
            config.cache_dir)
    require(config.width > 0, "width", "--width", "be > 0", config.width)
    require(config.epochs >= 1, "epochs", "--epochs", "be >= 1", config.epochs)


def build_parser() -> ConfigParser[RecipeCheckConfig]:
    parser = ConfigParser("python -m benchmarks.studies.recipe_check", PRESETS, description=__doc__.split("\n")[0],
                          check=check, out_dir=OUT_DIR,
                          out_dir_help="where results.json and README.md go (default: benchmarks/results/recipe_check)")
    parser.add_shorthand("--cache-dir", field="cache_dir", help="baseline cache for the trained pairs; required")
    parser.add_shorthand("--seeds", field="seeds", help="comma-separated seeds (default 0,1)")
    parser.add_shorthand("--width", field="width", type=float, help="default 0.25")
    parser.add_shorthand("--epochs", field="epochs", type=int, help="default 10")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args, config = build_parser().parse_config(argv)
    seeds = config.seeds
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    common = [f"width={config.width}", f"baseline_epochs={config.epochs}", "baseline_lr=0.05", "batch_size=128",
              f"cache_dir={config.cache_dir}"]
    base = validate(apply_overrides(preset_config("cpu"), common))
    arrays = load_data(base.data)
    device = torch.device("cpu")
    loader = evaluation_loader(arrays, 256)
    rows, fp32_records, fast_records = [], [], []
    for seed in seeds:
        result: Dict[str, Any] = {"seed": seed}
        for name, extra in (("fp32", []), ("fast", FAST)):
            config = validate(apply_overrides(base, [f"baseline_seed={seed}", *extra]))
            baseline = load_or_train_baseline(config, arrays, device, progress=False)
            hits = correct_per_image(baseline.fresh_model(), loader, device)
            result[name] = float(hits.mean())
            result[f"{name}_seconds"] = baseline.info["train_seconds_total"]
            (fp32_records if name == "fp32" else fast_records).append({"seed": seed, "hits_after_bn": hits_text(hits)})
        paired_seed = paired_difference([fast_records[-1]], [fp32_records[-1]], "acc_after_bn")["per_seed"][0]
        result.update(wins=paired_seed["wins"], losses=paired_seed["losses"], mcnemar_p=paired_seed["mcnemar_p"])
        rows.append(result)
    payload = {"command": " ".join(["python -m benchmarks.studies.recipe_check", *(argv if argv is not None else sys.argv[1:])]),
               "machine": machine_info(device), "packages": package_versions(),
               "settings": {"width": config.width, "epochs": config.epochs, "batch_size": 128, "lr": 0.05},
               "seeds": rows, "paired": paired_difference(fast_records, fp32_records, "acc_after_bn")}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(payload, args.out_dir / "results.json")
    atomic_write_text(render(payload), args.out_dir / "README.md")
    print(render(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
