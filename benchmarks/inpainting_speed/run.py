"""`python -m src.bench experiment=inpaint`: the inpainting generator's speed and what a budget buys.

One row per generator set-up: training tiles/s within `bench.budget_s`, inference megapixels/s at
`bench.inference_size` (seed 003 fills 1080x1920 frames), peak memory of each, and the hole PSNR
of the untrained model and after the budget. A GAN row needs `discriminator=patch`, which this
project does not have yet.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from benchmarks.training_speed.measure import PeakMemory
from src.engine.trainer import Trainer
from src.tasks.inpainting.task import InpaintingTask
from src.utils.atomic import write_text_atomic
from src.utils.device import autocast, resolve_device, resolve_precision, set_cpu_threads
from src.utils.seeding import seed_everything


@torch.no_grad()
def inference_speed(generator: torch.nn.Module, size: list[int], repeats: int, device, amp) -> tuple[float, float]:
    """(megapixels/s, peak MiB) of filling `repeats` frames of `size` (one warm-up before)."""
    generator.eval()
    image = torch.rand(1, 3, *size, device=device)
    mask = torch.zeros(1, 1, *size, device=device)
    mask[..., size[0] // 3 : size[0] // 2, size[1] // 3 : size[1] // 2] = 1
    with PeakMemory(device) as memory, autocast(device, amp):
        generator(image, mask)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            generator(image, mask)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    return repeats * size[0] * size[1] / 1e6 / max(seconds, 1e-9), memory.peak_bytes / 2**20


def bench_inpainting(cfg: DictConfig) -> str:
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, "trainer.max_time", float(cfg.bench.budget_s))
    device = resolve_device(cfg.trainer.device)
    set_cpu_threads(cfg.trainer.get("cpu_threads"), "trainer.cpu_threads")
    amp = resolve_precision(cfg.trainer.precision, device)
    seed_everything(int(cfg.trainer.seed))
    bench = cfg.bench
    task = InpaintingTask(cfg, device)
    run_dir = Path(cfg.paths.run_dir)
    trainer = Trainer(cfg, task, instantiate(cfg.logger), run_dir, device, amp)
    with PeakMemory(device) as train_memory:
        trainer.fit("bench inpainting", {"mlflow.source.name": "src.bench", "bench.loop": "inpainting"})
    timing = trainer.timing
    history = trainer.tracker.metric_history("val/hole_psnr")
    untrained = history[0][1] if history else math.nan
    after = trainer.last_metrics.get("val/hole_psnr", math.nan)
    mp_s, infer_mib = inference_speed(task.generator.to(device), list(bench.inference_size),
                                      int(bench.inference_repeats), device, amp)  # fmt: skip
    params = sum(p.numel() for p in task.generator.parameters()) / 1e6
    h, w = bench.inference_size
    lines = [
        f"inpainting bench on {device} ({str(amp or torch.float32).replace('torch.', '')}), "
        f"{params:.2f} M parameters, tiles {cfg.task.tile} px x batch {cfg.trainer.batch_size}, "
        f"budget {bench.budget_s} s",
        "",
        f"| generator | tiles/s | train peak MiB | inference MP/s at {h}x{w} | inference peak MiB "
        f"| hole PSNR untrained | hole PSNR after budget | steps |",
        "|---|---|---|---|---|---|---|---|",
        f"| {cfg.model.name}, no GAN | {timing.counts.get('tiles', 0) / max(timing.train_s, 1e-9):.1f} "
        f"| {train_memory.peak_bytes / 2**20:.0f} | {mp_s:.2f} | {infer_mib:.0f} | {untrained:.2f} | {after:.2f} "
        f"| {len(timing.step_ends)} |",
        "| with GAN (discriminator=patch) | not built yet | | | | | | |",
    ]
    text = "\n".join(lines)
    write_text_atomic(text + "\n", run_dir / "bench.md")
    print(text, flush=True)
    return text
