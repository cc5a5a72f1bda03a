"""Each optimized part of a model: its optimizer, schedule, gradient scaler, clipping and their state.

A task's model trains as one part, or as several with settings of their own (a GAN's generator and
discriminator; `src.engine.task.Part`). A checkpoint keeps the main part's state where single-part
runs always kept it (the training state's "optimizer", "scheduler" and "scaler"), so their files
keep one format; the other parts' state, weights included, sits under "parts".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.engine.optimizers import build_optimizer, current_lr, eval_weights, is_schedule_free
from src.engine.resume_check import apply_optimizer_changes
from src.engine.task import Part
from src.errors import ConfigError

log = logging.getLogger(__name__)


def _select(cfg: DictConfig, key: str) -> Any:
    if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
        raise ConfigError(f"{key}: a part's setting that the config does not have")
    return OmegaConf.select(cfg, key)


class TrainedPart:
    def __init__(self, name: str, part: Part, cfg: DictConfig, device: torch.device, amp_dtype: torch.dtype | None):
        self.name, self.optimizer_key = name, part.optimizer
        self.module = part.module.to(device)
        self.trained = self.module  # what the training step calls: its data-parallel wrapper once `wrap`ped
        self.parameters = list(part.parameters)
        # plain containers: optimizer hyper-parameters end up in checkpoints read with weights_only=True
        self.optimizer = build_optimizer(instantiate(_select(cfg, part.optimizer), _convert_="all"), self.parameters)
        self.scheduler_key, self.scheduler_cfg = part.scheduler, _select(cfg, part.scheduler)
        clip = _select(cfg, part.gradient_clip_norm)
        self.clip = float(clip) if clip else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    def schedule(self, total_steps: int, steps_per_epoch: int) -> None:
        if is_schedule_free(self.optimizer):
            log.info(
                "Schedule-Free optimizer (%s): lr is constant after its own warmup; %s is not used",
                self.optimizer_key,
                self.scheduler_key,
            )
            return
        multiplier = instantiate(self.scheduler_cfg)(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, multiplier)

    def backward(self, loss: torch.Tensor, accumulate: int, own_parameters_only: bool) -> None:
        """Accumulate the gradient of `loss`; `own_parameters_only`: into this part's parameters alone (a
        generator's loss also runs through the discriminator, which must not learn from it)."""
        self.scaler.scale(loss / accumulate).backward(inputs=self.parameters if own_parameters_only else None)

    def step(self) -> tuple[float, float | None]:
        """One update; returns the lr it used and the gradient norm before clipping."""
        grad_norm = None
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = current_lr(self.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()
        return lr, grad_norm

    def state_dict(self, with_weights: bool) -> dict[str, Any]:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
        }
        return {"module": self.module.state_dict(), **state} if with_weights else state

    def load_state_dict(self, state: dict[str, Any], changes: dict[str, tuple[str, str]]) -> None:
        """Continue from `state`; changed optimizer settings (`trainer.resume_changed`) take their new values."""
        if "module" in state:
            self.module.load_state_dict(state["module"])
        fresh_groups = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        apply_optimizer_changes(changes, self.optimizer, fresh_groups, self.scheduler, self.optimizer_key)
        self.scaler.load_state_dict(state["scaler"])


@contextlib.contextmanager
def parts_eval_weights(parts: Sequence[TrainedPart]) -> Iterator[None]:
    """`eval_weights` of every part's optimizer at once."""
    with contextlib.ExitStack() as stack:
        for part in parts:
            stack.enter_context(eval_weights(part.optimizer))
        yield
