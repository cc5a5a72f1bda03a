"""What `python -m src.bench` runs: the seed-001 loop against our trainer, side by side, in one process.

(a) re-encodes an image every iteration and trains on one point prompt (`benchmarks.training_speed.seed_loop`);
(b) is `src.train`'s trainer with the composed config (its defaults unless overridden), given the
same wall-clock budget: once with an empty embedding cache ("cold", the fill counted in its time)
and once with the cache it filled ("warm", as every later run or sweep job on the same data). Both
start from the same weights, learn with the same recipe (conf/bench.yaml), and are validated by the
trainer's own validation on the same fixed prompts, every `bench.eval_every_s` seconds of training:
time to quality is when val mIoU first reaches `bench.target_miou`. The table (and a profile of
where time goes) is printed and written to the run folder as bench.md, the curves of val mIoU
against seconds beside it as time_to_quality.png; both go to MLflow in a run of their own.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from benchmarks.training_speed.compare import Curve, Row, headline, seconds_to_target, table
from benchmarks.training_speed.measure import PeakMemory, profile_table
from benchmarks.training_speed.seed_loop import SeedLoop
from src.config import PROJECT_ROOT, check_combination, group_choices
from src.engine.task import to_device
from src.engine.trainer import Trainer
from src.errors import ConfigError
from src.tasks.segmentation.task import SegmentationTask
from src.utils.atomic import write_text_atomic
from src.utils.device import autocast, resolve_device, resolve_precision, set_cpu_threads
from src.utils.pictures import plot_curves, save_png
from src.utils.seeding import seed_everything, torch_generator

log = logging.getLogger(__name__)


def seed_loop_row(cfg: DictConfig, device: torch.device, amp_dtype: torch.dtype | None) -> tuple[Row, Curve, str]:
    """Run (a) for the budget, validating it as it goes; return its row, its curve and a profile of its iterations."""
    bench = cfg.bench
    seed_everything(int(cfg.trainer.seed))
    task = SegmentationTask(cfg, device)
    task.load_initial_weights()
    task.module.to(device)
    train, val = task.datasets()
    train.augment = None  # seed 001 does not augment
    iou_weight = float(cfg.loss.iou_weight)  # the loss both loops learn with (bench.loss)
    loop = SeedLoop(task.model, train, device, **bench.seed_loop, iou_weight=iou_weight, seed=int(cfg.trainer.seed))
    loader = DataLoader(val, batch_size=int(cfg.trainer.batch_size), collate_fn=task.collate)

    def validate() -> float:
        task.module.eval()
        with torch.no_grad():
            return task.evaluate(task.module, loader, device, lambda: autocast(device, amp_dtype)).metrics["miou"]

    with PeakMemory(device) as memory:
        result = loop.run(float(bench.budget_s), validate, float(bench.eval_every_s))
    miou = validate()
    curve = [*result.curve, (result.train_s, miou)]
    steps = int(bench.steps)
    row = Row(
        name="(a) seed loop",
        prompts_per_s=result.prompts / max(result.train_s, 1e-9),
        images_per_s=result.images / max(result.train_s, 1e-9),
        seconds_to_steps=result.step_ends[steps - 1] if len(result.step_ends) >= steps else math.nan,
        seconds_to_target=seconds_to_target(curve, float(bench.target_miou)),
        peak_mib=memory.peak_bytes / 2**20,
        miou=miou,
        steps=result.steps,
    )
    profile = profile_table(loop.step, int(bench.profile_steps)) if bench.profile_steps else ""
    return row, curve, profile


def trainer_row(
    cfg: DictConfig, name: str, run_dir: Path, device: torch.device, amp_dtype: torch.dtype | None
) -> tuple[Row, Curve, Trainer]:
    """Run (b), `src.train`'s trainer, for the budget; return its row, its curve and the trainer (for profiling)."""
    seed_everything(int(cfg.trainer.seed))
    task = SegmentationTask(cfg, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, task, instantiate(cfg.logger), run_dir, device, amp_dtype)
    with PeakMemory(device) as memory:
        trainer.fit(f"bench (b) {name}", {"mlflow.source.name": "src.bench", "bench.loop": name})
    timing, steps = trainer.timing, int(cfg.bench.steps)
    seconds = timing.prepare_s + timing.train_s  # a cold cache's fill is part of the cost
    # each validation after step k came at the training clock of step k, after the preparation
    clock = [0.0, *timing.step_ends]
    curve = sorted((timing.prepare_s + clock[step], miou) for step, miou in trainer.tracker.metric_history("val/miou"))
    row = Row(
        name=f"(b) trainer, {name}",
        prompts_per_s=timing.counts["prompts"] / max(seconds, 1e-9),
        images_per_s=timing.counts["images"] / max(seconds, 1e-9),
        seconds_to_steps=timing.prepare_s + timing.step_ends[steps - 1] if len(timing.step_ends) >= steps else math.nan,
        seconds_to_target=seconds_to_target(curve, float(cfg.bench.target_miou)),
        peak_mib=memory.peak_bytes / 2**20,
        miou=trainer.last_metrics.get("val/miou", math.nan),
        steps=len(timing.step_ends),
    )
    return row, curve, trainer


def trainer_profile(trainer: Trainer, repeats: int, seed: int) -> str:
    """Where (b)'s training steps spend their time, on one batch of its loader."""
    batch = to_device(next(iter(trainer.train_loader)), trainer.device)
    trainer.module.train()

    def step() -> None:
        with trainer.autocast():
            out = trainer.task.training_step(trainer.module, batch, torch_generator(seed))
        out.losses["loss"].backward()
        trainer.optimizer.zero_grad(set_to_none=True)

    return profile_table(step, repeats)


def with_bench_loss(cfg: DictConfig) -> DictConfig:
    """`cfg` with the segmentation loss `bench.loss` names (a conf/loss/ choice), so every loop compared
    learns with the same one; chosen here rather than in the defaults list, which an inpainting bench
    (no `loss` group) shares."""
    name = str(cfg.bench.loss)
    if name not in group_choices("loss"):
        raise ConfigError(f"bench.loss={name}: expected one of {group_choices('loss')} (conf/loss/)")
    chosen = copy.deepcopy(cfg)
    OmegaConf.update(chosen, "loss", OmegaConf.load(PROJECT_ROOT / "conf" / "loss" / f"{name}.yaml"), merge=False)
    return chosen


def bench(cfg: DictConfig) -> str:
    """Run (a) and (b), write bench.md into the run folder; return the table."""
    check_combination(cfg)
    device = resolve_device(cfg.trainer.device)
    set_cpu_threads(cfg.trainer.get("cpu_threads"), "trainer.cpu_threads")  # the same for both loops
    amp_dtype = resolve_precision(cfg.trainer.precision, device)
    run_dir = Path(cfg.paths.run_dir)
    budget = float(cfg.bench.budget_s)

    baseline_cfg = copy.deepcopy(cfg)
    OmegaConf.update(baseline_cfg, "data.cache_embeddings", False)
    log.info("(a) the seed-001 loop for %g s", budget)
    baseline, baseline_curve, baseline_profile = seed_loop_row(baseline_cfg, device, amp_dtype)

    trainer_cfg = copy.deepcopy(cfg)
    OmegaConf.update(trainer_cfg, "trainer.max_train_time", budget)  # validation not counted, as for (a)
    OmegaConf.update(trainer_cfg, "trainer.eval_every_s", float(cfg.bench.eval_every_s))
    OmegaConf.update(trainer_cfg, "data.cache_dir", str(run_dir / "embeddings"))  # starts empty: "cold"
    cached = SegmentationTask.caches_embeddings(trainer_cfg)
    names = (["cold cache", "warm cache"] if cfg.bench.warm else ["cold cache"]) if cached else ["no cache"]
    rows, curves, trainer = [], {baseline.name: baseline_curve}, None
    for name in names:
        log.info("(b) the trainer, %s, for %g s", name, budget)
        trainer = None  # the previous run's loader workers end before this one is measured
        gc.collect()
        row, curves[f"(b) {name}"], trainer = trainer_row(
            trainer_cfg, name, run_dir / name.replace(" ", "_"), device, amp_dtype
        )
        rows.append(row)

    memory = "CUDA allocated" if device.type == "cuda" else "RSS"
    target = float(cfg.bench.target_miou)
    result = table(baseline, rows, int(cfg.bench.steps), budget, memory, target)
    result += "\n\n" + headline(baseline, rows, target)
    precision = str(amp_dtype or torch.float32).replace("torch.", "")
    about = (
        f"model={cfg.model.name} image_size={cfg.model.image_size} dataset={cfg.dataset.name} device={device} "
        f"precision={precision} trainer.batch_size={cfg.trainer.batch_size} optimizer.lr={cfg.optimizer.lr:g} "
        f"budget {budget:g} s per loop, validated every {float(cfg.bench.eval_every_s):g} s"
    )
    picture = run_dir / "time_to_quality.png"
    report = f"# Benchmark\n\n{about}\n\n{result}\n\n![val mIoU against seconds of training]({picture.name})\n"
    report += "\n" + curve_table(curves) + "\n"
    if cfg.bench.profile_steps:
        repeats = int(cfg.bench.profile_steps)
        profile = trainer_profile(trainer, repeats, int(cfg.trainer.seed))
        report += (
            f"\n## Where time goes: (a), {repeats} iterations\n\n```\n{baseline_profile}\n```\n"
            f"\n## Where time goes: (b) {names[-1]}, {repeats} training steps\n\n```\n{profile}\n```\n"
        )
    save_png(plot_curves({"val mIoU": curves}, xlabel="seconds of training"), picture)
    write_text_atomic(report, run_dir / "bench.md")
    log_summary(cfg, [baseline, *rows], run_dir / "bench.md", picture)
    print(f"\n{about}\n\n{result}\n\nwritten to {run_dir / 'bench.md'} and {picture}")
    return result


def curve_table(curves: dict[str, Curve]) -> str:
    """Each loop's validations as text: val mIoU at seconds of training."""
    lines = ["## val mIoU at seconds of training", ""]
    for name, curve in curves.items():
        lines.append(f"- {name}: " + ", ".join(f"{miou:.3f} @ {seconds:.0f} s" for seconds, miou in curve))
    return "\n".join(lines)


def log_summary(cfg: DictConfig, rows: list[Row], report: Path, picture: Path) -> None:
    """The table and the curves in an MLflow run of their own, beside the trainer's runs."""
    tracker = instantiate(cfg.logger)
    tracker.start("bench summary", {"mlflow.source.name": "src.bench", "bench.loop": "summary"})
    for index, row in enumerate(rows):
        tracker.set_tags({f"bench.row{index}": row.name})
        metrics = {"prompts_per_s": row.prompts_per_s, "seconds_to_target": row.seconds_to_target, "val_miou": row.miou}
        tracker.log_metrics({f"row{index}/{key}": value for key, value in metrics.items()}, 0)
    tracker.log_artifact(report)
    tracker.log_artifact(picture)
    tracker.finish()
