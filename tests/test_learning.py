"""The README's demo learns: validation mIoU ends clearly above where it started."""

from mlflow.tracking import MlflowClient

from tests.helpers import isolated_paths, run_module


def test_the_demo_run_raises_validation_miou(tmp_path):
    result = run_module("src.train", ["experiment=demo", *isolated_paths(tmp_path)])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    miou = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/miou")}
    loss = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    start, best = miou[0], max(v for step, v in miou.items() if step > 0)
    assert best > start + 0.15, miou
    assert sum(loss[-5:]) / 5 < 0.6 * sum(loss[:5]) / 5
