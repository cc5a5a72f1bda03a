"""`python -m src.bench experiment=inpaint` prints its table (the figures themselves are measured, not tested)."""

from __future__ import annotations

from tests.helpers import isolated_paths, run_module
from tests.inpaint_helpers import INPAINT_RUN, output, prepared_samples


def test_inpainting_bench_prints_speed_memory_and_psnr(tmp_path):
    root = prepared_samples(tmp_path, train=2, val=1)
    result = run_module(
        "src.bench",
        [*INPAINT_RUN, *isolated_paths(tmp_path), f"dataset.root={root}", "bench.budget_s=5",
         "bench.inference_size=[64,96]", "bench.inference_repeats=2", "discriminator=patch",
         "discriminator.network.channels=[8,16]"],  # the GAN row takes these; the other one drops them
    )  # fmt: skip
    assert result.returncode == 0, output(result)[-4000:]
    for label in ("| light_inpaint, no GAN", "| with GAN (discriminator=patch)"):
        row = next(line for line in result.stdout.splitlines() if line.startswith(label))
        cells = row.split("|")[2:-1]
        tiles, train_mib, mp_s, infer_mib, untrained, after, steps = (float(v) for v in cells)
        assert tiles > 0 and mp_s > 0 and train_mib > 0 and infer_mib > 0 and steps >= 1
        assert untrained > 0 and after > 0
        assert row in (tmp_path / "run" / "bench.md").read_text()
