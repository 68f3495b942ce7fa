"""The one train/validate loop shared by train_teacher.py, train_student.py and transfer_student.py.

A *task* (``Task``) says what a training step computes (``compute``) and which module is evaluated
and saved (``model``; also ``evaluated_model()`` and ``checkpoint_entries()`` when the network it
reports differs from the one it trains, as SimKD's); the loop owns everything else: lr schedule,
optimisation, device-side meters (no host sync per step), progress bar, NaN guard, logging, atomic
checkpoints, exact resume and graceful stop on SIGINT/SIGTERM. Under torchrun every rank runs the
loop on its share of each batch: gradients are averaged after backward, meters and validation
counts are summed over ranks, and only rank 0 prints, logs and writes checkpoints (see
helper/distributed.py).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from helper import distributed
from helper.checkpoint import save_checkpoint
from helper.errors import UserError
from helper.logger import RunLogger
from helper.run_folder import Stage, best_checkpoint, epoch_checkpoint, last_checkpoint, metrics_file, resumes_stage
from helper.util import capture_rng_state, learning_rate_at, restore_rng_state, set_learning_rate


@dataclass
class StepOutput:
    """What a task returns for one batch: logits for accuracy, named (unweighted) losses, the
    weighted total to back-propagate, and that total split by purpose for a ``LossGroupOptimizer``:
    'task' (the labels' loss) and 'distill' (the teacher's); none given: all of it is 'task'."""

    logits: Tensor | None
    losses: dict[str, Tensor]
    total: Tensor
    groups: dict[str, Tensor] = field(default_factory=dict)

    def loss_groups(self) -> dict[str, Tensor]:
        return self.groups or {"task": self.total}


@dataclass(frozen=True)
class Progress:
    """Where training is: 1-based ``epoch`` of ``epochs`` and 0-based ``step`` of ``steps`` per epoch."""

    epoch: int = 1
    epochs: int = 1
    step: int = 0
    steps: int = 1

    @property
    def fraction(self) -> float:
        """Share of the stage's steps done before this one, in [0, 1)."""
        return ((self.epoch - 1) * self.steps + self.step) / max(self.epochs * self.steps, 1)


class Task:
    """What the loop trains: ``compute`` (one batch's outputs and losses) and ``model`` (the network
    it trains and saves); every other hook the loop calls has a default here."""

    model: nn.Module

    def compute(self, images: Tensor, labels: Tensor, index: Tensor, progress: Progress = Progress()) -> StepOutput:
        raise NotImplementedError

    def train_mode(self) -> None:
        """Put the modules in the mode a training step needs (before each epoch)."""
        self.model.train()

    def after_step(self) -> None:
        """Called after each optimizer step (e.g. a method's momentum update)."""

    def modules(self) -> list[nn.Module]:
        """The modules it trains, whose BatchNorm statistics are shared across ranks before validation."""
        return [self.model]

    def evaluated_model(self) -> nn.Module:
        """The network validated and reported each epoch (SimKD: its deployed model)."""
        return self.model

    def checkpoint_entries(self) -> dict[str, Any]:
        """Entries saved beside 'model' in its checkpoints (SimKD: what rebuilds its deployed model)."""
        return {}

    def epoch_scalars(self) -> dict[str, float]:
        """Values reported each epoch beside the losses (e.g. a learned temperature)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Its own state to resume (besides the model's and the optimizer's)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class ClassifierTask(Task):
    """Plain cross-entropy training of ``model`` (teachers, and linear probes in transfer)."""

    def __init__(self, model: nn.Module, frozen: Iterable[nn.Module] = ()) -> None:
        self.model = model
        self.frozen = list(frozen)  # modules kept in eval mode (e.g. a frozen backbone's BN)

    def train_mode(self) -> None:
        self.model.train()
        for module in self.frozen:
            module.eval()

    def compute(self, images: Tensor, labels: Tensor, index: Tensor, progress: Progress = Progress()) -> StepOutput:
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        return StepOutput(logits, {"ce": loss}, loss)


class DivergenceError(UserError):
    """A loss became NaN or infinite."""


class GracefulStop:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so the loop can save and exit.

    A second signal aborts at once, unless it follows the first within ``DUPLICATE_SECONDS``: under
    torchrun or Slurm one stop request often reaches a process twice (from the terminal or the
    scheduler, and again from the launcher that forwards it).
    """

    DUPLICATE_SECONDS = 2.0

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._received_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "GracefulStop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:  # second signal: give up immediately (unless a duplicate)
            if time.monotonic() - self._received_at < self.DUPLICATE_SECONDS:
                return
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self._received_at = time.monotonic()
        if distributed.is_main():
            print(f"\n{self.signal_name} received: finishing the current step, then saving a checkpoint ...",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def agreed(self) -> bool:
        """True once any rank received a signal (all ranks must call this at the same steps)."""
        requested = distributed.any_rank(self.requested)
        if requested and self.signal_name is None:
            self.signal_name = "SIGTERM"  # another rank was signalled; leave as it will
        return requested


@dataclass
class EpochMeters:
    """Device-side sums for one epoch; ``host()`` syncs once."""

    device: torch.device
    sums: dict[str, Tensor] = field(default_factory=dict)
    first_bad_step: dict[str, Tensor] = field(default_factory=dict)
    samples: int = 0

    def update(self, output: StepOutput, labels: Tensor, step: int) -> None:
        batch = labels.shape[0]
        self.samples += batch
        named = dict(output.losses, loss=output.total)
        for name, value in named.items():
            value = value.detach().float()
            if name not in self.sums:
                self.sums[name] = torch.zeros((), device=self.device)
                self.first_bad_step[name] = torch.full((), -1, dtype=torch.long, device=self.device)
            self.sums[name] += value * batch
            bad = ~torch.isfinite(value) & (self.first_bad_step[name] < 0)
            self.first_bad_step[name] = torch.where(bad, torch.full_like(self.first_bad_step[name], step),
                                                    self.first_bad_step[name])
        if output.logits is not None:
            correct = (output.logits.detach().argmax(dim=1) == labels).sum()
            self.sums["correct"] = self.sums.get("correct", torch.zeros((), device=self.device)) + correct

    def check_finite(self, epoch: int, last_checkpoint: Path | None) -> None:
        """Raise DivergenceError naming the first non-finite term (one host sync, at print time only;
        under torchrun the earliest step over all ranks, so that every rank stops together)."""
        first_bad = self.first_bad_step
        if distributed.is_distributed() and first_bad:
            names = list(first_bad)  # created in the same order on every rank
            never = torch.iinfo(torch.long).max
            steps = torch.stack([first_bad[name] for name in names])
            steps = distributed.all_reduce_min(torch.where(steps < 0, never, steps))
            first_bad = {name: torch.where(step == never, -1, step) for name, step in zip(names, steps)}
        bad = {name: int(step) for name, step in first_bad.items() if int(step) >= 0}
        if not bad:
            return
        name = min((term for term in bad if term != "loss"), key=bad.__getitem__, default="loss")
        step_value = bad[name]
        saved = (f"The last good checkpoint is '{last_checkpoint}'." if last_checkpoint and last_checkpoint.exists()
            else "No checkpoint of this run was written yet.")
        raise DivergenceError(
            f"The loss term '{name}' became NaN or infinite at epoch {epoch}, step {step_value}; training stopped "
            f"and no checkpoint was overwritten. {saved} Lower --learning_rate or this term's weight (-r/-a/-b), "
            "or disable --amp, then resume with --resume PATH or start a new --trial.")

    def _totals(self) -> tuple[dict[str, Tensor], int]:
        """Sums and sample count over all ranks (this rank's own in a single process)."""
        if not distributed.is_distributed():
            return self.sums, self.samples
        names = list(self.sums)  # created in the same order on every rank
        packed = torch.stack([*(self.sums[name].double() for name in names),
                              torch.tensor(float(self.samples), dtype=torch.float64, device=self.device)])
        packed = distributed.all_reduce_sum(packed)
        return dict(zip(names, packed[:-1])), int(packed[-1])

    def host(self) -> dict[str, float]:
        """Epoch means so far (accuracy in %), over all ranks; every rank must call it at the same step."""
        sums, samples = self._totals()
        if not samples:
            return {}
        values = {name: float(total) / samples for name, total in sums.items()}
        if "correct" in values:
            values["acc"] = 100.0 * values.pop("correct")
        return values

    def state_dict(self) -> dict[str, Any]:
        """The meters to resume from; under torchrun the sums over all ranks (rank 0 reloads them, the
        other ranks restart from zero, so the totals stay right)."""
        sums, samples = self._totals()
        return {"sums": {k: v.float().cpu() for k, v in sums.items()}, "samples": samples,
                "first_bad_step": {k: v.cpu() for k, v in self.first_bad_step.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.first_bad_step = {k: v.to(self.device) for k, v in state["first_bad_step"].items()}
        self.samples = state["samples"]


@runtime_checkable
class LossGroupOptimizer(Protocol):
    """An optimizer that needs each loss group's gradients apart ('task' and 'distill', from
    ``StepOutput.loss_groups``), so it runs the backward passes itself: ``backward_and_step`` replaces
    the loop's zero_grad, backward, gradient averaging over ranks (``reduce_gradients(optimizer)``
    after each pass) and step, scaling the losses with ``scaler`` (fp16) when given; the task's
    ``after_step`` follows, as after any step (helper/optimizers.py has one)."""

    def backward_and_step(self, groups: dict[str, Tensor], scaler: torch.amp.GradScaler | None,
                          reduce_gradients: Callable[[torch.optim.Optimizer], None]) -> None: ...


def train_step(task: Task, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor, index: Tensor,
               autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
               scaler: torch.amp.GradScaler | None = None, progress: Progress = Progress()) -> StepOutput:
    """One optimisation step of ``task`` on a batch (no host synchronisation)."""
    with autocast() if autocast else contextlib.nullcontext():
        output = task.compute(images, labels, index, progress)
    if isinstance(optimizer, LossGroupOptimizer):
        optimizer.backward_and_step(output.loss_groups(), scaler, distributed.average_gradients)
        task.after_step()
        return output
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(output.total).backward()
        distributed.average_gradients(optimizer)
        scaler.step(optimizer)
        scaler.update()
    else:
        output.total.backward()
        distributed.average_gradients(optimizer)
        optimizer.step()
    task.after_step()
    return output


@torch.inference_mode()
def validate(model: nn.Module, loader: Any, autocast: Callable[[], contextlib.AbstractContextManager] | None = None
             ) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy of ``model`` on ``loader`` (one host sync).

    Under torchrun each rank evaluates its shard of the split and the counts are summed."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for images, labels, _ in loader.iterate(0):
        with autocast() if autocast else contextlib.nullcontext():
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        count += labels.shape[0]
    model.train(was_training)
    if distributed.is_distributed():
        totals = distributed.all_reduce_sum(torch.stack([loss_sum.double(), top1.double(), top5.double(),
                                                         torch.tensor(float(count), device=device).double()]))
        loss_sum, top1, top5, count = totals[0], totals[1], totals[2], int(totals[3])
    return {"test_acc1": 100.0 * int(top1) / count, "test_acc5": 100.0 * int(top5) / count,
            "test_loss": float(loss_sum) / count}


@dataclass
class FitConfig:
    """Everything the loop needs to know about one training stage of one run."""

    epochs: int
    learning_rate: float
    lr_decay_epochs: list[int]
    lr_decay_rate: float
    run_dir: Path
    tb_dir: Path | None
    model_name: str            # file prefix: <model_name>_best.pth / _last.pth
    checkpoint_extra: dict[str, Any]   # stored in every checkpoint ('arch', 'opt', ...)
    print_freq: int = 100
    tb_freq: int = 500
    save_freq: int = 40
    stage: Stage = Stage.MAIN  # or Stage.INIT (abound/factor/fsp pre-training)
    validate_each_epoch: bool = True
    amp: str = "none"          # 'none' | 'bf16' | 'fp16'
    progress: bool = True


def autocast_factory(device: torch.device, amp: str) -> Callable[[], contextlib.AbstractContextManager] | None:
    if amp == "none":
        return None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class FitResult:
    best_acc: float
    last_acc: float
    epochs_done: int
    interrupted: str | None = None


def fit(task: Task, optimizer: torch.optim.Optimizer, train_loader: Any, test_loader: Any | None,
        config: FitConfig, resume: dict[str, Any] | None = None) -> FitResult:
    """Train ``task`` for ``config.epochs`` epochs (from ``resume`` when given), validating and
    checkpointing each epoch. Returns best/last accuracy; exits non-zero after a graceful stop."""
    run = StageRun(task, optimizer, train_loader, test_loader, config)
    start_epoch, start_step, partial_meters = run.restore(resume)
    result = FitResult(run.best_acc, run.last_acc, start_epoch - 1)
    with GracefulStop() as stop:
        for epoch in range(start_epoch, config.epochs + 1):
            first_step = start_step if epoch == start_epoch else 0
            meters, seconds_started = run.train_epoch(epoch, first_step, partial_meters, stop)
            result = run.finish_epoch(epoch, meters, seconds_started)
            if stop.agreed():
                _exit_after_stop(stop, run.last_path)
    if run.logger is not None:
        run.logger.close()
    distributed.barrier()
    return result


class StageRun:
    """The state of one stage while ``fit`` runs it: accuracies, paths, logger, precision."""

    def __init__(self, task: Task, optimizer: torch.optim.Optimizer, train_loader: Any, test_loader: Any | None,
                 config: FitConfig) -> None:
        self.task, self.optimizer, self.config = task, optimizer, config
        self.train_loader, self.test_loader = train_loader, test_loader
        self.device = next(task.model.parameters()).device
        self.autocast = autocast_factory(self.device, config.amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if config.amp == "fp16" else None
        self.last_path = last_checkpoint(config.run_dir, config.model_name)
        self.best_path = best_checkpoint(config.run_dir, config.model_name)
        self.best_acc, self.last_acc = 0.0, 0.0
        self.main_rank = distributed.is_main()
        self.logger: RunLogger | None = None
        self.loss_columns: list[str] = []
        self.resume_epoch = 0

    def restore(self, resume: dict[str, Any] | None) -> tuple[int, int, dict[str, Any] | None]:
        """Load a checkpoint of this stage; returns (first epoch, first step, the partial epoch's meters)."""
        if not resumes_stage(resume, self.config.stage):
            return 1, 0, None
        _check_world_size(resume)
        self.task.model.load_state_dict(resume["model"])
        self.task.load_state_dict(resume.get("task", {}))
        self.optimizer.load_state_dict(resume["optimizer"])
        if self.scaler is not None and "scaler" in resume:
            self.scaler.load_state_dict(resume["scaler"])
        self.best_acc, self.last_acc = resume.get("best_acc", 0.0), resume.get("accuracy", 0.0)
        start_epoch, start_step, partial_meters = resume["epoch"] + 1, 0, None
        if resume.get("partial"):
            start_epoch, start_step = resume["partial"]["epoch"], resume["partial"]["step"]
            partial_meters = resume["partial"]["meters"] if self.main_rank else None  # the sums over all ranks
        restore_rng_state(resume["rng"])
        self.resume_epoch = start_epoch - 1
        stage = "" if self.config.stage == Stage.MAIN else f"{self.config.stage} stage "
        print(f"Resuming {stage}at epoch {start_epoch}" + (f", step {start_step}" if start_step else "")
              + f" (best so far {self.best_acc:.2f})")
        return start_epoch, start_step, partial_meters

    def checkpoint_state(self, epoch: int, accuracy: float, partial: dict[str, Any] | None = None) -> dict[str, Any]:
        state = {"model": self.task.model.state_dict(), "epoch": epoch, "accuracy": accuracy,
                 "best_acc": self.best_acc, "optimizer": self.optimizer.state_dict(), "task": self.task.state_dict(),
                 "rng": capture_rng_state(), "stage": self.config.stage.value, "partial": partial,
                 "world_size": distributed.world_size(), **self.config.checkpoint_extra,
                 **self.task.checkpoint_entries()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def train_epoch(self, epoch: int, first_step: int, partial_meters: dict[str, Any] | None,
                    stop: GracefulStop) -> tuple[EpochMeters, float]:
        """Train one epoch from ``first_step``; on a stop request mid-epoch, save and exit."""
        config, steps = self.config, len(self.train_loader)
        lr = learning_rate_at(epoch, config.learning_rate, config.lr_decay_epochs, config.lr_decay_rate)
        set_learning_rate(self.optimizer, lr)
        self.task.train_mode()
        meters = EpochMeters(self.device)
        if first_step and partial_meters is not None:
            meters.load_state_dict(partial_meters)
        started = time.perf_counter()
        stage = "" if config.stage == Stage.MAIN else f"{config.stage} "
        bar = tqdm(total=steps, initial=first_step, desc=f"{stage}epoch {epoch}/{config.epochs}",
                   disable=not (config.progress and self.main_rank), leave=False, dynamic_ncols=True,
                   mininterval=1.0, file=sys.stderr)
        for step, (images, labels, index) in enumerate(self.train_loader.iterate(epoch, first_step), first_step):
            progress = Progress(epoch, config.epochs, step, steps)
            output = train_step(self.task, self.optimizer, images, labels, index, self.autocast, self.scaler, progress)
            meters.update(output, labels, step)
            bar.update(1)
            done = step + 1
            if done % config.print_freq == 0 or done == steps:
                self._report_running(meters, bar, lr, started, (epoch - 1) * steps + done, done, epoch)
            if stop.agreed():
                if done < steps:
                    self._save_partial(epoch, done, meters, bar, stop)
                break
        bar.close()
        return meters, started

    def _report_running(self, meters: EpochMeters, bar: tqdm, lr: float, started: float, global_step: int,
                        done: int, epoch: int) -> None:
        meters.check_finite(epoch, self.last_path)
        running = meters.host()
        images_per_s = meters.samples * distributed.world_size() / max(time.perf_counter() - started, 1e-9)
        postfix = {"loss": f"{running['loss']:.3f}", "img_s": f"{images_per_s:.0f}", "lr": f"{lr:.4g}"}
        if "acc" in running:
            postfix["acc"] = f"{running['acc']:.1f}"
        bar.set_postfix(postfix)
        if self.logger is not None and done % self.config.tb_freq == 0:
            self.logger.log_step(running, global_step)

    def _save_partial(self, epoch: int, done: int, meters: EpochMeters, bar: tqdm, stop: GracefulStop) -> None:
        meters.check_finite(epoch, self.last_path)
        partial = {"epoch": epoch, "step": done, "meters": meters.state_dict()}
        distributed.broadcast_norm_stats(self.task.modules())
        if self.main_rank:
            save_checkpoint(self.checkpoint_state(epoch - 1, self.last_acc, partial), self.last_path)
        bar.close()
        _exit_after_stop(stop, self.last_path)

    def _open_logger(self, train: dict[str, float], scalars: dict[str, float]) -> None:
        self.loss_columns = [name for name in train if name not in ("loss", "acc")]
        columns = ["epoch", "lr", "train_loss", "train_acc", "test_acc1", "test_acc5", "test_loss", "best_acc",
                   "epoch_seconds", *self.loss_columns, *scalars]
        filename = metrics_file(self.config.run_dir, self.config.stage).name
        if self.main_rank:
            main = self.config.stage == Stage.MAIN
            self.logger = RunLogger(self.config.run_dir, self.config.tb_dir if main else None,
                                    columns, resume_epoch=self.resume_epoch, filename=filename)

    def finish_epoch(self, epoch: int, meters: EpochMeters, started: float) -> FitResult:
        """Validate, log, print and checkpoint the epoch just trained."""
        config = self.config
        meters.check_finite(epoch, self.last_path)
        train = meters.host()
        scalars = self.task.epoch_scalars()
        if not self.loss_columns and self.logger is None:
            self._open_logger(train, scalars)
        distributed.broadcast_norm_stats(self.task.modules())  # one model to validate and save
        test = (validate(self.task.evaluated_model(), self.test_loader, self.autocast)
            if config.validate_each_epoch and self.test_loader else {})
        self.last_acc = test.get("test_acc1", 0.0)
        improved = bool(test) and (self.last_acc > self.best_acc or not self.best_path.exists())
        self.best_acc = max(self.best_acc, self.last_acc)
        seconds = time.perf_counter() - started
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, "lr": lr, "train_loss": train["loss"], "train_acc": train.get("acc", ""), **test,
               "best_acc": self.best_acc if test else "", "epoch_seconds": seconds,
               **{name: train[name] for name in self.loss_columns if name in train}, **scalars}
        if self.logger is not None:
            self.logger.log_epoch(row)
        print(_epoch_line(config, epoch, lr, train, test, self.best_acc, scalars, seconds,
                          meters.samples * distributed.world_size() / seconds), flush=True)
        if self.main_rank:
            state = self.checkpoint_state(epoch, self.last_acc)
            if improved:
                save_checkpoint(state, self.best_path)
            if config.stage == Stage.MAIN and epoch % config.save_freq == 0:
                save_checkpoint(state, epoch_checkpoint(config.run_dir, epoch))
            save_checkpoint(state, self.last_path)
        return FitResult(self.best_acc, self.last_acc, epoch)


def _epoch_line(config: FitConfig, epoch: int, lr: float, train: dict[str, float], test: dict[str, float],
                best_acc: float, scalars: dict[str, float], seconds: float, images_per_s: float) -> str:
    """'epoch 3/240 lr 0.05 loss 1.2345 train acc 61.20 test acc@1 58.10 (best 58.10) | 12.3s 530 img/s'."""
    stage = "" if config.stage == Stage.MAIN else f"{config.stage} stage "
    text = f"{stage}epoch {epoch}/{config.epochs} lr {lr:.4g} loss {train['loss']:.4f}"
    if "acc" in train:
        text += f" train acc {train['acc']:.2f}"
    if test:
        text += f" test acc@1 {test['test_acc1']:.2f} (best {best_acc:.2f})"
    text += "".join(f" {name} {value:.4g}" for name, value in scalars.items())
    return f"{text} | {seconds:.1f}s {images_per_s:.0f} img/s"


def _check_world_size(resume: dict[str, Any]) -> None:
    """A mid-epoch checkpoint counts steps of global batches: resume it with as many processes."""
    saved, now = int(resume.get("world_size", 1)), distributed.world_size()
    if resume.get("partial") and saved != now:
        raise UserError(f"The checkpoint was saved mid-epoch by {saved} process(es), but this run has {now}; a "
                        "mid-epoch position counts global batches of (processes x --batch_size) samples. Resume "
                        f"with {saved} process(es) (torchrun --nproc_per_node {saved}), or from a checkpoint "
                        "written at the end of an epoch.")


def _exit_after_stop(stop: GracefulStop, last_path: Path) -> None:
    if distributed.is_main():
        print(f"Stopped by {stop.signal_name}. State saved to '{last_path}'. Resume with the same command plus "
              "`--resume auto` (or `--resume <that file>`).", file=sys.stderr, flush=True)
    distributed.finish()  # every rank stops at this step
    sys.exit(143 if stop.signal_name == "SIGTERM" else 130)
