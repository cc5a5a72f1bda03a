"""`python -m src.bench` runs both loops on the same data and writes the comparison table, with time
to quality: each loop's val mIoU against seconds of training, and when it first reached the target."""

from __future__ import annotations

import math

from mlflow.tracking import MlflowClient

from benchmarks.training_speed.compare import seconds_to_target


def test_seconds_to_target_is_the_first_validation_at_or_above_it():
    curve = [(0.0, 0.1), (5.0, 0.32), (10.0, 0.28), (15.0, 0.5)]
    assert seconds_to_target(curve, 0.3) == 5.0
    assert seconds_to_target(curve, 0.5) == 15.0
    assert math.isnan(seconds_to_target(curve, 0.6))


def test_bench_writes_a_table_with_both_loops_their_ratio_and_time_to_quality(tmp_path):
    from tests.helpers import FAST_RUN, isolated_paths, run_module

    args = [
        *FAST_RUN,
        *isolated_paths(tmp_path),
        "dataset.generate.num_train=4",
        "dataset.generate.num_val=2",
        "bench.budget_s=3",
        "bench.steps=1",
        "bench.profile_steps=1",
        "bench.eval_every_s=1",
        "bench.target_miou=0.0",  # reached at the first validation: a number in the table, not n/a
    ]
    result = run_module("src.bench", args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run = tmp_path / "run"
    report = (run / "bench.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    header = [cell.strip() for cell in rows["loop"].split("|")]
    assert "prompts/s" in header and "val mIoU @ 3 s" in header and "s to val mIoU 0" in header
    names = ["(a) seed loop", "(b) trainer, cold cache", "(b) trainer, warm cache"]
    assert set(names) <= set(rows)
    column = header.index("s to val mIoU 0")
    for name in names:
        assert 0 <= float(rows[name].split("|")[column]) < 3 + 60  # the first validation, after any cache fill
    for name in names[1:]:
        ratio = rows[f"ratio {name} / (a) seed loop"].split("|")[2].strip()
        assert float(ratio) > 0  # prompts/s of (b) over (a)
        assert f"- {name}: " in report and "x sooner" in report  # the headline
    # the curves: validated at the start and at least once more (every second of a 3 s budget), per loop
    curves = dict(line[2:].split(": ", 1) for line in report.splitlines() if line.startswith("- (") and " @ " in line)
    for name in ["(a) seed loop", "(b) cold cache", "(b) warm cache"]:
        assert curves[name].count(" s") >= 2, curves
    assert (run / "time_to_quality.png").stat().st_size > 1000
    assert "sam2.decode" in report  # the profile of where time goes
    assert "(a) seed loop" in result.stdout  # printed as well

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bench")
    (summary,) = client.search_runs([experiment.experiment_id], "tags.`bench.loop` = 'summary'")
    assert {a.path for a in client.list_artifacts(summary.info.run_id)} >= {"bench.md", "time_to_quality.png"}
    assert summary.data.metrics["row0/seconds_to_target"] >= 0
