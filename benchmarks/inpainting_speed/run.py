"""`python -m src.bench experiment=inpaint`: the inpainting generator's speed and what a budget buys.

One row per generator set-up, the command's config with `discriminator=none` and with
`discriminator=patch` (the GAN: its `discriminator.*` overrides apply there): training tiles/s
within `bench.budget_s`, inference megapixels/s at `bench.inference_size` (seed 003 fills
1080x1920 frames), peak memory of each, and the hole PSNR of the untrained model and after the
budget. Inference is the generator's alone, the same with or without the GAN.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from benchmarks.training_speed.measure import PeakMemory
from src.cli import command_line_overrides
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


def with_discriminator(choice: str) -> DictConfig:
    """The running command's config with `discriminator=choice`; its `discriminator.*` overrides only for a GAN."""
    if not HydraConfig.initialized():
        raise RuntimeError("the inpainting bench composes its rows from the running command (python -m src.bench)")
    overrides = [o for o in command_line_overrides() if not o.lstrip("+~").startswith("discriminator")]
    if choice != "none":
        overrides += [o for o in command_line_overrides() if o.startswith("discriminator.")]
    return compose(config_name=HydraConfig.get().job.config_name, overrides=[*overrides, f"discriminator={choice}"])


def trained_row(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, str], InpaintingTask]:
    """Train within the budget in `run_dir`; the row's training cells, and the task."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, "trainer.max_time", float(cfg.bench.budget_s))
    device = resolve_device(cfg.trainer.device)
    amp = resolve_precision(cfg.trainer.precision, device)
    seed_everything(int(cfg.trainer.seed))
    task = InpaintingTask(cfg, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, task, instantiate(cfg.logger), run_dir, device, amp)
    with PeakMemory(device) as train_memory:
        trainer.fit(f"bench inpainting, discriminator={cfg.discriminator.name}",
                    {"mlflow.source.name": "src.bench", "bench.loop": "inpainting"})  # fmt: skip
    timing = trainer.timing
    history = trainer.tracker.metric_history("val/hole_psnr")
    cells = {
        "tiles": f"{timing.counts.get('tiles', 0) / max(timing.train_s, 1e-9):.1f}",
        "train_mib": f"{train_memory.peak_bytes / 2**20:.0f}",
        "untrained": f"{history[0][1] if history else math.nan:.2f}",
        "after": f"{trainer.last_metrics.get('val/hole_psnr', math.nan):.2f}",
        "steps": str(len(timing.step_ends)),
    }
    return cells, task


def bench_inpainting(cfg: DictConfig) -> str:
    device = resolve_device(cfg.trainer.device)
    set_cpu_threads(cfg.trainer.get("cpu_threads"), "trainer.cpu_threads")
    amp = resolve_precision(cfg.trainer.precision, device)
    bench, run_dir = cfg.bench, Path(cfg.paths.run_dir)
    rows = []
    for label, choice in ((f"{cfg.model.name}, no GAN", "none"), ("with GAN (discriminator=patch)", "patch")):
        cells, task = trained_row(with_discriminator(choice), run_dir / f"discriminator_{choice}")
        mp_s, infer_mib = inference_speed(task.generator.to(device), list(bench.inference_size),
                                          int(bench.inference_repeats), device, amp)  # fmt: skip
        row = [label, cells["tiles"], cells["train_mib"], f"{mp_s:.2f}", f"{infer_mib:.0f}", cells["untrained"],
               cells["after"], cells["steps"]]  # fmt: skip
        rows.append(f"| {' | '.join(row)} |")
    params = sum(p.numel() for p in task.generator.parameters()) / 1e6
    gan_params = sum(p.numel() for p in task.discriminator.parameters()) / 1e6
    h, w = bench.inference_size
    lines = [
        f"inpainting bench on {device} ({str(amp or torch.float32).replace('torch.', '')}), "
        f"{params:.2f} M parameters (discriminator {gan_params:.2f} M), tiles {cfg.task.tile} px x batch "
        f"{cfg.trainer.batch_size}, budget {bench.budget_s} s each",
        "",
        f"| generator | tiles/s | train peak MiB | inference MP/s at {h}x{w} | inference peak MiB "
        f"| hole PSNR untrained | hole PSNR after budget | steps |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines)
    write_text_atomic(text + "\n", run_dir / "bench.md")
    print(text, flush=True)
    return text
