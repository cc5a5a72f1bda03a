"""The training loop, the same for every task.

It owns what every run needs: optimizer and schedule, gradient accumulation and clipping, mixed
precision, periodic validation with early stopping, best/last checkpoints, resume, NaN guards,
progress bars and MLflow logging, data parallelism over processes, and a clean stop with a
checkpoint on preemption signals. What is learned comes from the task (`src.engine.task.Task`),
as one optimized part or several (a GAN's generator and discriminator, `src.engine.parts`).

Data-parallel runs (torchrun, or several SLURM tasks): each process trains on its shard of every
batch, gradients are averaged during backward (DDP), validation metrics are reduced over all
processes, and rank 0 alone logs to MLflow and writes files. With the same global batch, the run
follows the same path as a single process: each object's prompts come from its own seed, the loss
is weighted by each process's share of objects, and the shards of a batch together are that batch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.engine.checkpoints import CheckpointDir, find_checkpoint_dir
from src.engine.optimizers import current_lr, is_schedule_free
from src.engine.parts import TrainedPart, parts_eval_weights
from src.engine.resume_check import check_resume_changes, config_changes, describe
from src.engine.sampler import EpochSampler
from src.engine.stop_signals import StopSignals
from src.engine.task import Part, StepOutput, Task, to_device
from src.engine.timing import RunTiming
from src.errors import CheckpointError, ConfigError, DataError, TrainingDiverged, TrainingInterrupted
from src.tracking.params import command_choices, comparable_params
from src.tracking.runs import MlflowTracker
from src.utils.checkpoint_io import read_checkpoint, weights_file
from src.utils.device import autocast
from src.utils.distributed import World, any_rank, barrier, data_parallel, gather_from_ranks, sum_over_ranks
from src.utils.folders import folder_size, human_size
from src.utils.pictures import plot_curves, save_png
from src.utils.seeding import derive_seed, torch_generator

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where a run is; saved with every checkpoint so that a resumed run continues exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already used
    best_metric: float | None = None
    best_step: int | None = None
    stale_evals: int = 0  # evaluations since the monitored metric last improved
    last_eval_step: int | None = None
    mlflow_run_id: str | None = None


class Trainer:
    def __init__(
        self,
        cfg: DictConfig,
        task: Task,
        tracker: MlflowTracker | None,  # None on data-parallel processes other than rank 0
        run_dir: str | Path,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        world: World | None = None,
    ):
        self.cfg, self.tcfg = cfg, cfg.trainer
        self.task, self.tracker = task, tracker
        self.world = world or World()
        self.run_dir = Path(run_dir)
        self.device, self.amp_dtype = device, amp_dtype
        self.ckpt = CheckpointDir(self.run_dir / "checkpoints")
        self.monitor, self.mode = self.tcfg.early_stopping.monitor, self.tcfg.early_stopping.mode
        if self.mode not in ("min", "max"):
            raise ConfigError(f"trainer.early_stopping.mode={self.mode!r}: expected 'min' or 'max'")
        self.autocast = partial(autocast, device, amp_dtype)
        self.timing = RunTiming()
        self.last_metrics: dict[str, float] = {}  # the latest validation
        self.resumed_metrics: dict[str, float] = {}  # the validation saved with the checkpoint resumed from
        self.resume_changes = ""  # settings that differ from the run resumed, as "key: old -> new; ..."

    # ------------------------------------------------------------------ set-up
    def _loaders(self) -> tuple[DataLoader, EpochSampler, DataLoader]:
        if not self.world.is_main:
            barrier()  # rank 0 prepares the data first (e.g. generates it); the others then read it
        train_set, val_set = self.task.datasets()
        if self.world.is_main:
            barrier()
        data = self.cfg.data
        workers = int(data.num_workers)
        common = {
            "collate_fn": self.task.collate,
            "num_workers": workers,
            "pin_memory": bool(data.get("pin_memory", True)) and self.device.type == "cuda",
            "persistent_workers": bool(data.get("persistent_workers", True)) and workers > 0,
        }
        rank, world_size = self.world.rank, self.world.world_size
        sampler = EpochSampler(len(train_set), seed=int(self.tcfg.seed), rank=rank, world_size=world_size)
        if sampler.num_samples == 0:
            raise DataError(f"{len(train_set)} training images cannot be shared by {world_size} processes")
        train = DataLoader(train_set, batch_size=int(self.tcfg.batch_size), sampler=sampler, **common)
        val_shard = range(rank, len(val_set), world_size)  # plain indices: the same fixed prompts on any split
        val = DataLoader(val_set, batch_size=int(self.tcfg.batch_size), sampler=list(val_shard), **common)
        return train, sampler, val

    def _resume_source(self) -> CheckpointDir | None:
        """`trainer.resume`: auto (continue if this run folder has a checkpoint), true, false or a path."""
        resume = self.tcfg.resume
        own = self.ckpt.has_state()
        if resume == "auto":
            return self.ckpt if own else None
        if resume is True:
            if not own:
                raise ConfigError(
                    f"trainer.resume=true but {self.ckpt.state} does not exist; rerun with the same "
                    "hydra.run.dir, or pass trainer.resume=PATH_TO_AN_EARLIER_RUN_FOLDER"
                )
            return self.ckpt
        if resume is False or resume is None:
            if own:
                raise ConfigError(
                    f"{self.ckpt.directory} already holds a checkpoint and trainer.resume=false would overwrite it; "
                    "use trainer.resume=auto to continue it, or another hydra.run.dir"
                )
            return None
        return find_checkpoint_dir(str(resume))

    def _parts(self) -> list[TrainedPart]:
        """The task's optimized parts, the main one first; one (`module`) unless the task declares more."""
        declared = getattr(self.task, "parts", None)
        if declared is not None:
            parts = declared()
        else:
            parts = {"model": Part(self.task.module, self.task.trainable_parameters())}
        return [TrainedPart(name, part, self.cfg, self.device, self.amp_dtype) for name, part in parts.items()]

    # the main part's, for what reads one optimizer (the lr warnings, benchmarks)
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.parts[0].optimizer

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LambdaLR | None:
        return self.parts[0].scheduler

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return self.parts[0].parameters

    def _eval_weights(self) -> contextlib.AbstractContextManager:
        return parts_eval_weights(self.parts)

    # ------------------------------------------------------------------ the loop
    def fit(self, run_name: str, tags: dict[str, str]) -> dict[str, Any]:
        """Train; return the best monitored value and where training stopped."""
        self.timing = RunTiming()
        self.parts = self._parts()
        self.module = self.parts[0].module
        if self.tcfg.picture_every_steps and getattr(self.task, "picture", None) is None:
            raise ConfigError(
                f"trainer.picture_every_steps={self.tcfg.picture_every_steps}: task={self.cfg.task.name} draws no "
                "picture between validations; use trainer.picture_every_steps=null"
            )
        self.train_loader, self.sampler, self.val_loader = self._loaders()
        batch_size, accumulate = int(self.tcfg.batch_size), int(self.tcfg.accumulate_grad_batches)
        self.batches_per_epoch = math.ceil(self.sampler.num_samples / batch_size)
        steps_per_epoch = math.ceil(self.batches_per_epoch / accumulate)
        self.total_steps = int(self.tcfg.max_epochs) * steps_per_epoch
        if self.tcfg.max_steps is not None:
            self.total_steps = min(self.total_steps, int(self.tcfg.max_steps))
        for part in self.parts:
            part.schedule(self.total_steps, steps_per_epoch)

        state = self._restore()
        self._prepare_task()
        # after restoring, so that every process starts from the same weights
        find_unused = bool(self.tcfg.distributed.find_unused_parameters)
        for part in self.parts:
            part.trained = data_parallel(part.module, self.device, find_unused)
            if is_schedule_free(part.optimizer):
                part.optimizer.train()
        self.trained = self.parts[0].trained
        self._start_tracking(state, run_name, tags)
        status = "FAILED"
        with StopSignals(self.tcfg.stop_signals) as self.stop_signals:
            # inside the block: from this line on, a stop signal ends training with a checkpoint
            log.info(
                "training %d steps (%d per epoch, batch %d x %d accumulated x %d processes) on %s; run folder %s",
                self.total_steps,
                steps_per_epoch,
                batch_size,
                accumulate,
                self.world.world_size,
                self.device,
                self.run_dir,
            )
            try:
                if state.step == 0 and self.tcfg.eval_at_start:
                    self._evaluate(state)  # the starting weights count: best.pt is never worse than them
                stop_reason = self._loop(state)
                if state.last_eval_step != state.step:
                    stop_reason = self._evaluate(state) or stop_reason
                self._finish_artifacts(state)
                status = "FINISHED"
            except (KeyboardInterrupt, TrainingInterrupted):
                status = "KILLED"
                raise
            except TrainingDiverged as err:
                kept = (
                    f"the last good checkpoint is {self.ckpt.last}"
                    if self.ckpt.last.exists()
                    else "no checkpoint was written"
                )
                raise TrainingDiverged(f"{err}; {kept}. Lower optimizer.lr or set trainer.gradient_clip_norm") from err
            finally:
                if self.world.is_main:
                    self.tracker.finish(status)
        self._warn_about_the_outcome(state, stop_reason)
        log.info("the run folder %s holds %s", self.run_dir, human_size(folder_size(self.run_dir)))
        log.info(
            "done (%s): best %s = %s at step %s; checkpoints in %s",
            stop_reason or "all steps run",
            self.monitor,
            state.best_metric,
            state.best_step,
            self.ckpt.directory,
        )
        return {self.monitor: state.best_metric, "best_step": state.best_step, "steps": state.step}

    def _warn_about_the_outcome(self, state: TrainState, stop_reason: str | None) -> None:
        """What a user would otherwise find out from the curves: no gain over the start, a cut schedule."""
        if state.best_step == 0 and state.step > 0:
            log.warning(
                "training never improved on the starting weights (%s=%.4f at step 0): best.pt holds them. Try "
                "another optimizer.lr, more steps, or check the data",
                self.monitor,
                state.best_metric,
            )
        cut = stop_reason is not None and "time budget" in stop_reason and state.step < self.total_steps
        if cut and self.scheduler is not None:
            peak = float(self.optimizer.param_groups[0]["initial_lr"])  # set by LambdaLR
            log.warning(
                "the time budget stopped the run at step %d of %d, with the schedule cut where it stood (lr %.3g, "
                "%.0f%% of its peak): to finish the schedule inside the budget, set trainer.max_steps=%d",
                state.step,
                self.total_steps,
                current_lr(self.optimizer),
                100 * current_lr(self.optimizer) / peak,
                state.step,
            )

    def _prepare_task(self) -> None:
        """The task's one-off work with the starting weights in place (e.g. filling an embedding cache)."""
        prepare = getattr(self.task, "prepare", None)
        if prepare is None:
            return
        started = time.perf_counter()
        if not self.world.is_main:
            barrier()  # rank 0 fills shared files first; the others then find them done
        prepare(self.device, self.autocast)
        if self.world.is_main:
            barrier()
        self.timing.prepare_s = time.perf_counter() - started

    def _out_of_time(self) -> str | None:
        """`trainer.max_time` (everything counted) or `trainer.max_train_time` (validation not counted): a
        reason to stop once the run has used its budget."""
        budget = self.tcfg.get("max_time")
        if budget is not None and any_rank(self.timing.elapsed() >= float(budget)):
            return f"time budget trainer.max_time={budget}s used"
        training = self.tcfg.max_train_time
        if training is not None and any_rank(self.timing.elapsed() - self.timing.eval_s >= float(training)):
            return f"time budget trainer.max_train_time={training}s used"
        return None

    def _loop(self, state: TrainState) -> str | None:
        batch_size, accumulate = int(self.tcfg.batch_size), int(self.tcfg.accumulate_grad_batches)
        log_every, eval_every = int(self.tcfg.log_every_steps), self.tcfg.eval_every_steps
        eval_every_s = self.tcfg.eval_every_s
        clock_start, eval_before = time.perf_counter(), self.timing.eval_s
        next_eval_s = float(eval_every_s) if eval_every_s else math.inf  # in seconds of training
        meter = _Meter()
        stop_reason = None
        picture_every = self.tcfg.picture_every_steps
        for part in self.parts:
            part.module.train()
        bar = tqdm(
            total=self.total_steps,
            initial=state.step,
            desc="train",
            dynamic_ncols=True,
            mininterval=1.0,
            disable=not self.world.is_main,
        )
        while state.step < self.total_steps and stop_reason is None:
            self.sampler.set_epoch(state.epoch, start=state.batch_in_epoch * batch_size)
            bar.set_description(f"epoch {state.epoch}")
            for batch in self.train_loader:
                # the same on every process: all of a step's shards draw the same prompt kind
                seed = derive_seed(int(self.tcfg.seed), state.epoch, state.batch_in_epoch)
                state.batch_in_epoch += 1
                ends_step = not state.batch_in_epoch % accumulate or state.batch_in_epoch >= self.batches_per_epoch
                out = self._micro_step(batch, torch_generator(seed, self.device), accumulate, ends_step, state)
                meter.add(out)
                if out is not None:
                    self.timing.add_counts(out.counts)
                if not ends_step:
                    continue
                meter.add_step({"": self.parts[0].step(), **self.other_parts_stepped})
                state.step += 1
                train_clock = time.perf_counter() - clock_start - (self.timing.eval_s - eval_before)
                self.timing.step_ends.append(train_clock)
                bar.update(1)
                if state.step % log_every == 0:
                    summary = meter.summary(state.epoch)
                    if self.world.is_main:
                        self.tracker.log_metrics(summary, state.step)
                    bar.set_postfix(loss=f"{meter.last_loss:.4f}", best=state.best_metric)
                timed = eval_every_s is not None and any_rank(train_clock >= next_eval_s)
                if timed:
                    next_eval_s = train_clock + float(eval_every_s)
                if (eval_every and state.step % int(eval_every) == 0) or timed:
                    stop_reason = self._evaluate(state)
                if picture_every and state.step % int(picture_every) == 0:
                    self._log_picture(state)
                if any_rank(self.stop_signals.received is not None):
                    self._stop_on_signal(state)
                stop_reason = stop_reason or self._out_of_time()
                if state.step >= self.total_steps or stop_reason:
                    break
            if state.batch_in_epoch >= self.batches_per_epoch:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                if not eval_every and stop_reason is None and state.last_eval_step != state.step:
                    stop_reason = self._evaluate(state)
                if self.tcfg.save_every_epoch:
                    self._save_epoch(state)
        bar.close()
        return stop_reason

    def _micro_step(
        self, batch, generator: torch.Generator, accumulate: int, ends_step: bool, state: TrainState
    ) -> StepOutput | None:
        """Forward and backward of one micro-batch; processes synchronise gradients only before a step.

        With several parts the task's step updates the others itself (`_Updates`); the main part's loss is
        back-propagated into the main part alone, and the loop steps it.
        """
        batch = to_device(batch, self.device)
        main, several = self.parts[0], len(self.parts) > 1
        self.other_parts_stepped: dict[str, tuple[float, float | None]] = {}
        with contextlib.ExitStack() as no_sync:
            if self.world.distributed and not ends_step:
                for part in self.parts:
                    no_sync.enter_context(part.trained.no_sync())
            with self.autocast():
                if several:
                    updates = _Updates(self, accumulate, ends_step, state.step)
                    out = self.task.training_step(main.trained, batch, generator, updates)
                else:
                    out = self.task.training_step(main.trained, batch, generator)
            loss = data_parallel_loss(out, self.world, state.step + 1)
            if loss is None:
                return None
            main.backward(loss, accumulate, own_parameters_only=several)
        return StepOutput({k: v.detach() for k, v in out.losses.items()}, out.counts, out.loss_weight)

    # ------------------------------------------------------------------ evaluation and checkpoints
    def _evaluate(self, state: TrainState) -> str | None:
        """Validate, log and checkpoint; return a reason to stop, if any."""
        started = time.perf_counter()
        try:
            return self._validate(state)
        finally:
            self.timing.eval_s += time.perf_counter() - started  # checkpoints included: not training time

    def _validate(self, state: TrainState) -> str | None:
        with self._eval_weights():
            self.module.eval()
            with torch.no_grad():
                result = self.task.evaluate(self.module, self.val_loader, self.device, self.autocast)
            self.module.train()
            metrics = {f"val/{k}": v for k, v in result.metrics.items()}
            self.last_metrics = metrics
            if self.monitor not in metrics:
                raise ConfigError(
                    f"trainer.early_stopping.monitor={self.monitor!r} is not a validation metric; "
                    f"available: {', '.join(sorted(metrics))}"
                )
            log.info("step %d: %s", state.step, "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            self._record_evaluation(state, metrics)
            if self.world.is_main:  # after the checkpoint: tracking never holds back a save
                self.tracker.log_metrics(metrics, state.step)
                if result.image is not None:
                    path = save_png(result.image, self.run_dir / "samples" / f"step_{state.step:06d}.png")
                    self.tracker.log_artifact(path, "samples")
                self.tracker.sync()  # the store holds what the checkpoint holds (unless it is unreachable)
        patience = self.tcfg.early_stopping.patience
        if patience and state.stale_evals >= int(patience):
            return f"early stopping: {self.monitor} did not improve for {patience} evaluations"
        return None

    def _record_evaluation(self, state: TrainState, metrics: dict[str, float]) -> None:
        """Update the best value and the patience count, and checkpoint."""
        value = metrics[self.monitor]
        best = state.best_metric
        improved = not math.isnan(value) and (best is None or (value > best if self.mode == "max" else value < best))
        if improved:
            state.best_metric, state.best_step, state.stale_evals = value, state.step, 0
        else:
            state.stale_evals += 1
        state.last_eval_step = state.step
        self._save(state, metrics, improved)

    def _log_picture(self, state: TrainState) -> None:
        """`trainer.picture_every_steps`: the task's quick picture of its outputs, logged (not validation time)."""
        if not self.world.is_main:
            return
        started = time.perf_counter()
        with self._eval_weights():
            self.module.eval()
            with torch.no_grad():
                picture = self.task.picture(self.module, self.val_loader, self.device, self.autocast)
            self.module.train()
        if picture is not None:
            path = save_png(picture, self.run_dir / "pictures" / f"step_{state.step:06d}.png")
            self.tracker.log_artifact(path, "pictures")
        self.timing.eval_s += time.perf_counter() - started

    def _save_epoch(self, state: TrainState) -> None:
        """`trainer.save_every_epoch`: the weights after each epoch, kept (seed 003's --save-epoch)."""
        if not self.world.is_main:
            return
        with self._eval_weights():
            metrics = self.last_metrics if state.last_eval_step == state.step else {}  # of these weights only
            path = self.ckpt.save_epoch(self._weights(state, metrics), state.epoch)
        log.info("epoch %d: weights kept in %s", state.epoch, path)

    def _stop_on_signal(self, state: TrainState) -> None:
        """A stop signal reached a process: save where every process is, then stop all of them."""
        with self._eval_weights():
            self._save(state, {}, is_best=False)
        barrier()  # no process exits before the checkpoint is complete
        received = self.stop_signals.received.name if self.stop_signals.received else "a signal to another process"
        log.warning("%s: checkpoint saved after step %d, stopping", received, state.step)
        raise TrainingInterrupted(
            f"stopped by {received} after step {state.step}; the checkpoint in {self.ckpt.directory} continues the "
            "run (and its MLflow run) when the same command runs in the same run folder, as a requeued job does"
        )

    def _weights(self, state: TrainState, metrics: dict[str, float]) -> dict[str, Any]:
        """The main part's weights in the stock format, with where they come from."""
        weights = self.task.export_weights()
        weights["meta"] = {
            **weights.get("meta", {}),
            "dataset": self.cfg.dataset.name,  # inference takes it as its default dataset=
            "step": state.step,
            "epoch": state.epoch,
            "metrics": metrics,
            "mlflow_run_id": state.mlflow_run_id,  # links an evaluation of these weights to this run
        }
        return weights

    def _save(self, state: TrainState, metrics: dict[str, float], is_best: bool) -> None:
        """Checkpoint (rank 0 alone writes; every process holds the same weights)."""
        if not self.world.is_main:
            return
        weights = self._weights(state, metrics)
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        training_state = {
            "step": state.step,
            "train_state": asdict(state),
            **self.parts[0].state_dict(with_weights=False),  # where single-part runs always kept it
            "rng": rng,
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
        }
        if len(self.parts) > 1:
            training_state["parts"] = {part.name: part.state_dict(with_weights=True) for part in self.parts[1:]}
        task_state = getattr(self.task, "state_dict", None)
        if task_state is not None:
            training_state["task"] = task_state()
        self.ckpt.save(weights, training_state, is_best)
        after_save = getattr(self.task, "after_save", None)  # files beside the checkpoint (an adapter folder)
        if after_save is not None:
            self.tracker.log_metrics(after_save(self.run_dir, weights, is_best), state.step)

    def _restore(self) -> TrainState:
        """Continue from a checkpoint (`trainer.resume`) or start from other weights (`trainer.init_from`)."""
        if self.world.is_main:
            self.ckpt.tidy()  # what a killed save left behind
        barrier()
        source = self._resume_source()
        if source is not None:
            weights, saved = source.load()
            changes = config_changes(saved["config"], self.cfg)
            check_resume_changes(changes, str(source.newest()), bool(self.tcfg.resume_changed))
            if changes:
                log.warning("resuming with changed settings: %s", describe(changes))
                self.resume_changes = describe(changes)
            self.task.load_weights(weights, str(source.last))
            self.parts[0].load_state_dict(saved, changes)
            for part in self.parts[1:]:
                kept = (saved.get("parts") or {}).get(part.name)
                if kept is None:
                    raise CheckpointError(
                        f"{source.newest()}: its training state holds nothing for the part {part.name!r} this "
                        "run trains; start a new run (another hydra.run.dir), with trainer.init_from=PATH to keep "
                        "the weights"
                    )
                part.load_state_dict(kept, changes)
            load_task_state = getattr(self.task, "load_state_dict", None)
            if load_task_state is not None and "task" in saved:
                load_task_state(saved["task"])
            torch.set_rng_state(saved["rng"]["torch"])
            if "cuda" in saved["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
            state = TrainState(**saved["train_state"])
            self.resumed_metrics = dict(weights.get("meta", {}).get("metrics") or {})
            log.info("resuming from %s at step %d (epoch %d)", source.newest(), state.step, state.epoch)
            if self.tcfg.init_from:
                log.warning(
                    "trainer.init_from=%s is ignored: the run resumes from its own checkpoint", self.tcfg.init_from
                )
            return state
        if self.tcfg.init_from:
            path = weights_file(self.tcfg.init_from)
            self.task.load_weights(read_checkpoint(path), str(path))
            log.info("starting from the weights in %s with a fresh optimizer state", path)
        else:
            self.task.load_initial_weights()
        return TrainState()

    def _start_tracking(self, state: TrainState, run_name: str, tags: dict[str, str]) -> None:
        if not self.world.is_main:
            return
        self.tracker.unsent_file = self.run_dir / "mlflow_unsent.jsonl"
        if state.mlflow_run_id:
            state.mlflow_run_id = self.tracker.start(run_name, tags, run_id=state.mlflow_run_id)
            self.tracker.set_tags(tags)  # where this part of the run ran (e.g. a requeued job's restart count)
            if self.resume_changes:
                self.tracker.set_tags({f"resume.changed.step_{state.step}": self.resume_changes})
            # the checkpoint's evaluation, in case a kill came between saving and logging it (sent once only)
            self.tracker.log_metrics(self.resumed_metrics, state.step)
            return
        state.mlflow_run_id = self.tracker.start(run_name, tags)
        resolved = OmegaConf.to_container(self.cfg, resolve=True)
        self.tracker.log_params(comparable_params(resolved, command_choices()))
        train_set, val_set = self.train_loader.dataset, self.val_loader.dataset
        self.tracker.log_dataset(
            str(self.cfg.dataset.name),
            Path(str(self.cfg.dataset.root)),
            {"train": len(train_set), "val": len(val_set)},
        )
        trainable, total = (sum(p.numel() for p in params) for params in (self.params, self.module.parameters()))
        counts = {"trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total}
        counts.update({f"trainable_params_{part.name}": sum(p.numel() for p in part.parameters)
                       for part in self.parts[1:]})  # fmt: skip
        self.tracker.log_metrics({f"model/{k}": v for k, v in counts.items()}, 0)
        config_file = self.run_dir / "config_resolved.yaml"
        config_file.write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        self.tracker.log_artifact(config_file, "config")

    def _finish_artifacts(self, state: TrainState) -> None:
        """The best value (what sweeps compare), best weights and a picture of the learning curves."""
        if not self.world.is_main:
            return
        if state.best_metric is not None:
            best = {f"best/{self.monitor}": state.best_metric, "best/step": state.best_step}
            self.tracker.log_metrics({**best, **self.timing.summary()}, state.step)
        if self.ckpt.best.exists() and self.tracker.log_checkpoint:
            self.tracker.log_artifact(self.ckpt.best, "checkpoints")
        if self.ckpt.best.exists() and self.tracker.register_as:
            best = copy.deepcopy(self.task.exported_module()).cpu()
            best.load_state_dict(read_checkpoint(self.ckpt.best)["model"])
            version = self.tracker.register_model(best, self.ckpt.best)
            self.tracker.set_tags({"registered_model": f"{self.tracker.register_as}/{version}"})
        curves = plot_curves({key: self.tracker.metric_history(key) for key in ("train/loss", self.monitor)})
        if curves is not None:
            self.tracker.log_artifact(save_png(curves, self.run_dir / "samples" / "curves.png"), "samples")


class _Updates:
    """`PartUpdates` for one micro-batch: back-propagates a part's loss and steps the part when the micro-batch
    ends an optimizer step, recording its lr and gradient norm for the log."""

    def __init__(self, trainer: Trainer, accumulate: int, ends_step: bool, step: int):
        self.trainer, self.accumulate, self.ends_step, self.step = trainer, accumulate, ends_step, step
        self.modules = {part.name: part.trained for part in trainer.parts}

    def __call__(self, part: str, loss: torch.Tensor, loss_weight: float = 1.0) -> None:
        trainer = self.trainer
        found = next((p for p in trainer.parts[1:] if p.name == part), None)
        if found is None:
            raise ValueError(f"update({part!r}): not one of the other parts {[p.name for p in trainer.parts[1:]]}")
        weighted = data_parallel_loss(StepOutput({"loss": loss}, loss_weight=loss_weight), trainer.world, self.step + 1)
        found.backward(weighted, self.accumulate, own_parameters_only=True)
        if self.ends_step:
            trainer.other_parts_stepped[part] = found.step()


def data_parallel_loss(out: StepOutput | None, world: World, step: int) -> torch.Tensor | None:
    """The loss to back-propagate for step `step`, checked on every process; None: nothing to learn from.

    Processes are weighted by their share of the items the loss averages over (`loss_weight`), so
    that DDP's average over processes is the gradient of the mean over all their items: the
    gradient one process would compute on the whole batch.
    """
    weight = out.loss_weight if out is not None else 0.0
    finite = out is None or bool(torch.isfinite(out.losses["loss"]))
    total_weight, empty, diverged = sum_over_ranks([weight, float(out is None), float(not finite)])
    if diverged:
        if finite:
            raise TrainingDiverged(f"the loss became non-finite on another process at step {step}")
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in out.losses.items())
        raise TrainingDiverged(f"the loss became {out.losses['loss'].item()} at step {step} ({terms})")
    if not world.distributed:
        return None if out is None else out.losses["loss"]
    if empty:
        raise DataError(
            f"a training batch with no object to learn from at step {step}: data-parallel processes must all "
            "step together; check the dataset for images without objects, lower task.min_object_area, or raise "
            "trainer.batch_size"
        )
    return out.losses["loss"] * (weight * world.world_size / total_weight)


class _Meter:
    """Averages losses between two log lines and measures throughput."""

    def __init__(self) -> None:
        self.reset()
        self.last_loss = float("nan")

    def reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.micro_batches = 0
        self.grad_norms: dict[str, list[float]] = defaultdict(list)
        self.lrs: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, out: StepOutput | None) -> None:
        if out is None:
            return
        self.micro_batches += 1
        for name, value in out.losses.items():
            self.sums[name] += float(value)
        for name, count in out.counts.items():
            self.counts[name] += count

    def add_step(self, parts: dict[str, tuple[float, float | None]]) -> None:
        """Each stepped part's (lr, gradient norm or None); "" is the main part."""
        for name, (lr, grad_norm) in parts.items():
            self.lrs[name] = lr
            if grad_norm is not None:
                self.grad_norms[name].append(grad_norm)

    def summary(self, epoch: int) -> dict[str, float]:
        """Means since the last summary; over all processes in a data-parallel run (which all call this)."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        micro_batches = 0
        for part_sums, part_counts, part_batches in gather_from_ranks((self.sums, self.counts, self.micro_batches)):
            micro_batches += part_batches
            for name, value in part_sums.items():
                sums[name] += value
            for name, value in part_counts.items():
                counts[name] += value
        metrics = {f"train/{k}": v / max(micro_batches, 1) for k, v in sums.items()}
        metrics.update({f"train/{k}_per_s": v / elapsed for k, v in counts.items()})
        for name, norms in self.grad_norms.items():
            metrics[f"train/grad_norm{name and '_' + name}"] = sum(norms) / len(norms)
        metrics.update({f"train/lr{name and '_' + name}": lr for name, lr in self.lrs.items()})
        metrics["train/epoch"] = float(epoch)
        self.last_loss = metrics.get("train/loss", float("nan"))
        self.reset()
        return metrics
