"""The training loop every trainer runs, and the set-up the two head trainers share.

A trainer builds its data and model, then hands the loop a :class:`Trainee`:
what learns, its parameter groups, one batch's loss and the validation. The
loop owns the rest, in the output folder:

- ``checkpoint.pt``: the trained module's state (under "model" for the whole
  colorizer, "head" for a head), the optimizer, the step, the best score, the
  history, the options and the trainee's ``state``; written every
  ``checkpoint_minutes`` and after each epoch, and resumed from when present;
- ``best.safetensors``: the whole model, written whenever the validation score improves;
- ``history.json``: one entry of metrics per epoch.

The learning rate follows a cosine from each group's peak to zero over the
run, after an optional linear warm-up.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from colorvid import atomic
from colorvid.errors import ColorizeError
from colorvid.models.effnet_unet import Colorizer, ModelConfig, save_model
from colorvid.training.options import TrainOptions

log = logging.getLogger("colorvid.train")

PROGRESS_LOG_SECONDS = 60.0
WEIGHT_DECAY = 1e-4


@dataclass
class Trainee:
    """What a trainer hands :class:`TrainingLoop`."""

    model: Colorizer  # written to best.safetensors
    trained: torch.nn.Module  # what learns: ``model`` itself, or one of its heads
    param_groups: list[dict]  # for AdamW; each group's "lr" is its peak learning rate
    steps_per_epoch: int
    batch_loss: Callable[[np.random.Generator], torch.Tensor]
    validate: Callable[[], tuple[dict[str, float], float]]  # (metrics, score); may update model.config for the file
    state: dict = field(default_factory=dict)  # more to checkpoint (class weights): restored into this dict on resume
    metadata: dict = field(default_factory=dict)  # added to best.safetensors' metadata
    warmup_steps: int = 0
    loss_name: str = "loss"  # the mean training loss's name in history.json


class TrainingLoop:
    """One training run in ``options.out_dir``. Creating it sets the threads and the seed and makes
    the folder, so build the model after it; :meth:`run` then trains, resuming when it can."""

    def __init__(self, options: TrainOptions):
        if options.threads:
            torch.set_num_threads(options.threads)
        torch.manual_seed(options.seed)
        options.out_dir.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.started = time.time()
        self.checkpoint_path = options.out_dir / "checkpoint.pt"
        self.best_path = options.out_dir / "best.safetensors"
        self.history_path = options.out_dir / "history.json"

    def run(self, trainee: Trainee, progress: bool = True) -> Path:
        """Train for ``options.epochs`` epochs in all; returns best.safetensors."""
        options = self.options
        optimizer = torch.optim.AdamW(trainee.param_groups, weight_decay=WEIGHT_DECAY)
        peak_lrs = [group["lr"] for group in optimizer.param_groups]
        total_steps = trainee.steps_per_epoch * options.epochs
        key = "model" if trainee.trained is trainee.model else "head"
        step, best_score, history = 0, -math.inf, []
        if self.checkpoint_path.exists():
            saved = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
            saved = {**saved.pop("state", {}), **saved}  # head checkpoints once nested the trainee's state
            trainee.trained.load_state_dict(saved[key])
            optimizer.load_state_dict(saved["optimizer"])
            step, best_score, history = saved["step"], saved.get("best_score", -math.inf), saved["history"]
            trainee.state.update({name: saved[name] for name in trainee.state})
            epoch = step // trainee.steps_per_epoch
            log.info("resumed from %s at step %d (epoch %d)", self.checkpoint_path, step, epoch)
        rng = np.random.default_rng(options.seed + step)

        def save_checkpoint(step: int) -> None:
            checkpoint = {key: trainee.trained.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                          "best_score": best_score, "history": history, **trainee.state,
                          "options": {k: str(v) for k, v in options.__dict__.items()}}
            with atomic.atomic_path(self.checkpoint_path) as temp:
                torch.save(checkpoint, temp)

        def train_step(step: int) -> float:
            scale = 0.5 * (1 + math.cos(math.pi * step / total_steps))
            warm = min(1.0, (step + 1) / trainee.warmup_steps) if trainee.warmup_steps else 1.0
            for group, peak in zip(optimizer.param_groups, peak_lrs):
                group["lr"] = peak * scale * warm
            loss = trainee.batch_loss(rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.item()

        def end_epoch(epoch: int, step: int, mean_loss: float) -> None:
            nonlocal best_score
            metrics, score = trainee.validate()
            minutes = (time.time() - self.started) / 60
            metrics.update({"epoch": epoch, "step": step, trainee.loss_name: mean_loss, "minutes": minutes})
            history.append(metrics)
            rounded = json.dumps({k: round(v, 4) for k, v in metrics.items()})
            log.info("epoch %d: %s", epoch, rounded)
            if score > best_score:
                best_score = score
                with atomic.atomic_path(self.best_path) as temp:
                    save_model(trainee.model, temp, half=True, metadata={"metrics": rounded, **trainee.metadata})
            save_checkpoint(step)
            atomic.write_text(self.history_path, json.dumps(history, indent=1))

        run_epochs(options, step, trainee.steps_per_epoch, train_step, end_epoch, save_checkpoint, progress)
        return self.best_path


def run_epochs(
    options: TrainOptions, step: int, steps_per_epoch: int, train_step: Callable[[int], float],
    end_epoch: Callable[[int, int, float], None], save_checkpoint: Callable[[int], None], progress: bool,
    log_seconds: float = PROGRESS_LOG_SECONDS,
) -> None:
    """The epochs of :meth:`TrainingLoop.run`: ``train_step(step)`` -> loss, a progress bar per epoch,
    a checkpoint every ``options.checkpoint_minutes``, and ``end_epoch(epoch, step, mean loss)``.

    Without a progress bar (training in the background, output to a log file) a
    line with the step, the loss and the time left in the epoch is logged every
    ``log_seconds`` instead, so a long epoch never looks stalled.
    """
    from tqdm import tqdm

    total_steps = steps_per_epoch * options.epochs
    last_save = last_log = time.time()
    while step < total_steps:
        epoch = step // steps_per_epoch
        bar = tqdm(total=steps_per_epoch, initial=step % steps_per_epoch, desc=f"epoch {epoch + 1}/{options.epochs}",
                   disable=not progress, unit="batch", dynamic_ncols=True)
        running, n_running, epoch_start = 0.0, 0, time.time()
        while step < (epoch + 1) * steps_per_epoch:
            running += train_step(step)
            n_running += 1
            step += 1
            bar.set_postfix(loss=f"{running / n_running:.4f}")
            bar.update()
            if not progress and time.time() - last_log >= log_seconds:
                done = step - epoch * steps_per_epoch
                rate = n_running / max(1e-9, time.time() - epoch_start)
                log.info("epoch %d/%d: step %d/%d, loss %.4f, %.2f steps/s, about %.0f min left in the epoch",
                         epoch + 1, options.epochs, done, steps_per_epoch, running / n_running, rate,
                         (steps_per_epoch - done) / max(rate, 1e-9) / 60)
                last_log = time.time()
            if time.time() - last_save > options.checkpoint_minutes * 60:
                save_checkpoint(step)
                last_save = time.time()
        bar.close()
        end_epoch(epoch + 1, step, running / max(1, n_running))
        last_save = time.time()


# --- training one head of a trained colorizer ----------------------------------------


def with_head(
    path: str | os.PathLike, config: ModelConfig, state: dict[str, torch.Tensor], head: str
) -> Colorizer:
    """A colorizer of ``config`` with the weights ``state`` (read from ``path``) loaded. Only those of
    ``head`` ("temporal", "confidence") may be missing: the head then starts fresh."""
    model = Colorizer(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, _ = model.load_state_dict(state, strict=False)
    if any(not k.startswith(f"{head}.") and not k.endswith("num_batches_tracked") for k in missing):
        raise ColorizeError(f"{path}: weights do not match the architecture")
    return model


def head_param_groups(model: Colorizer, head: torch.nn.Module, lr: float) -> list[dict]:
    """Freeze ``model`` but for ``head``, in eval mode so the trunk's batch norm keeps its statistics;
    returns the head's parameters as the one group of a :class:`Trainee`."""
    model.eval()
    model.requires_grad_(False)
    head.requires_grad_(True)
    return [{"params": list(head.parameters()), "lr": lr}]
