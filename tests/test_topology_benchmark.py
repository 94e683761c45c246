"""The engine benchmark's --quick mode runs and its checks hold (numbers are not asserted)."""
from __future__ import annotations

from benchmarks.speed.engine_speed import main


def test_engine_benchmark_quick_mode(tmp_path, capsys):
    out = tmp_path / "engine.json"
    report = main(["--quick", "--json", str(out)])
    assert out.exists()
    text = capsys.readouterr().out
    for heading in ("evaluations per second", "Scaling", "VGG-16", "GA quality"):
        assert heading in text
    assert all(row["max_abs_diff"] < 1e-9 for row in report["evals"])  # engine == GUDHI reference
    assert {tuple(r["dims"]) for r in report["scaling"]} == {(0,), (0, 1)}
    for row in report["quality"]:
        assert row["lower_bound"] - 1e-12 <= row["ga"] <= row["salience_only"] + 1e-12
    for res in report["vgg"].values():
        assert all(layer["best"] <= layer["initial"] + 1e-12 for layer in res["layers"])
