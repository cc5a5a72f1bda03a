"""`python -m src.bench` runs both loops on the same data and writes the comparison table."""

from __future__ import annotations


def test_bench_writes_a_table_with_both_loops_and_their_ratio(tmp_path):
    from tests.helpers import FAST_RUN, isolated_paths, run_module

    args = [
        *FAST_RUN,
        *isolated_paths(tmp_path),
        "dataset.generate.num_train=4",
        "dataset.generate.num_val=2",
        "bench.budget_s=3",
        "bench.steps=1",
        "bench.profile_steps=1",
    ]
    result = run_module("src.bench", args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = (tmp_path / "run" / "bench.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    assert "prompts/s" in rows["loop"] and "val mIoU @ 3 s" in rows["loop"]
    names = ["(a) seed loop", "(b) trainer, cold cache", "(b) trainer, warm cache"]
    assert set(names) <= set(rows)
    for name in names[1:]:
        ratio = rows[f"ratio {name} / (a) seed loop"].split("|")[2].strip()
        assert float(ratio) > 0  # prompts/s of (b) over (a)
    assert "sam2.decode" in report  # the profile of where time goes
    assert "(a) seed loop" in result.stdout  # printed as well
