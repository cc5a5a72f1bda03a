"""`python -m src.bench`: the seed-001 loop against our trainer, side by side, in one process.

The table (prompts/s, seconds to N steps, peak memory, validation mIoU after the same budget) and
a profile of where time goes are printed and written to the run folder as bench.md; see
`benchmarks/training_speed/` and conf/bench.yaml. `bench.compare=adapters` compares ways of tuning
the image encoder instead (`benchmarks/training_speed/adapters.py`).
"""

from __future__ import annotations

from omegaconf import DictConfig

from benchmarks.inpainting_speed.run import bench_inpainting
from benchmarks.training_speed.adapters import bench_adapters
from benchmarks.training_speed.run import bench, with_bench_loss
from src.cli import hydra_entry


@hydra_entry("bench")
def main(cfg: DictConfig) -> str:
    if cfg.task.name == "inpainting":  # python -m src.bench experiment=inpaint
        return bench_inpainting(cfg)
    cfg = with_bench_loss(cfg)
    if cfg.bench.compare == "adapters":  # adapter=none, adapter=lora and full fine-tuning, side by side
        return bench_adapters(cfg)
    return bench(cfg)


if __name__ == "__main__":
    main()
